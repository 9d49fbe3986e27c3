import ipaddress
import json
import os
import uuid
from pathlib import Path

import pytest

from hardened_cluster.lab.model import DROPPED_CAPS, SUBNET

pytestmark = pytest.mark.lab

CAP_NUMBERS = {
    "sys_time": 25,
    "sys_module": 16,
    "sys_boot": 22,
    "sys_rawio": 17,
    "syslog": 34,
    "wake_alarm": 35,
    "block_suspend": 36,
    "mac_admin": 33,
    "mac_override": 32,
    "audit_control": 30,
}


def out(lab, node, argv, **kwargs):
    return lab.lab.exec(node, argv, **kwargs).stdout.decode().strip()


def test_systemd_is_pid1_and_system_running(lab):
    for node in lab.nodes:
        assert out(lab, node.name, ["cat", "/proc/1/comm"]) == "systemd"
    states = {s["name"]: (s["state"], s["failed_units"]) for s in lab.lab.status()}
    assert states == {n.name: ("running", []) for n in lab.nodes}


def test_up_again_with_same_nodes_keeps_nodes_and_keys(lab):
    pids = {s["name"]: s["pid"] for s in lab.lab.status()}
    assert lab.lab.up(lab.nodes) == lab.host_keys
    assert {s["name"]: s["pid"] for s in lab.lab.status()} == pids


def test_each_node_has_its_own_hostname(lab):
    hostnames = [out(lab, n.name, ["hostname"]) for n in lab.nodes]
    assert hostnames == [n.name for n in lab.nodes]
    assert len(set(hostnames)) == len(lab.nodes)


def test_file_written_in_etc_stays_on_its_node(lab):
    first, *others = lab.nodes
    name = f"/etc/hclab-probe-{uuid.uuid4().hex}"
    lab.lab.exec(first.name, ["sh", "-c", f"echo probe > {name}"])
    try:
        assert out(lab, first.name, ["cat", name]) == "probe"
        for node in others:
            assert lab.lab.exec(node.name, ["test", "-e", name], check=False).returncode == 1
        assert not Path(name).exists()
    finally:
        lab.lab.exec(first.name, ["rm", "-f", name])


def test_each_node_has_its_own_address_and_no_default_route(lab):
    for node in lab.nodes:
        links = json.loads(out(lab, node.name, ["ip", "-j", "-4", "addr", "show", "dev", "eth0"]))
        addresses = [a["local"] for a in links[0]["addr_info"]]
        assert addresses == [node.address]
        assert out(lab, node.name, ["ip", "route", "show", "default"]) == ""
        routes = json.loads(out(lab, node.name, ["ip", "-j", "-4", "route", "show"]))
        assert all(ipaddress.ip_network(r["dst"]).subnet_of(SUBNET) for r in routes)


def test_node_cannot_reach_beyond_the_lab(lab):
    # 192.0.2.1 is TEST-NET-1: with no route the connect fails before any packet is sent.
    probe = (
        "import socket, errno\n"
        "s = socket.socket()\n"
        "s.settimeout(3)\n"
        "print(errno.errorcode[s.connect_ex(('192.0.2.1', 80))])\n"
    )
    for node in lab.nodes:
        assert out(lab, node.name, ["python3", "-c", probe]) == "ENETUNREACH"


def test_nodes_controller_and_outsider_reach_each_other_in_the_lab(lab):
    probe = "import socket, sys; socket.create_connection((sys.argv[1], 22), timeout=5).close()"
    first, second = lab.nodes[0], lab.nodes[-1]
    lab.lab.exec(first.name, ["python3", "-c", probe, second.address])
    lab.lab.exec(first.name, ["busybox", "ping", "-c1", "-W2", lab.lab.controller_address])
    lab.lab.exec_outside(["python3", "-c", probe, first.address])


def test_machine_drops_forwarding_from_and_to_the_lab(lab):
    from hardened_cluster.lab import network

    assert network.nft_table_exists()
    table = network.run(["nft", "list", "table", "inet", "hclab"]).stdout.decode()
    assert 'iifname "hclab-br0" oifname != "hclab-br0"' in table
    assert 'oifname "hclab-br0" iifname != "hclab-br0"' in table


@pytest.mark.parametrize(
    "key, path",
    [("kernel.domainname", "/proc/sys/kernel/domainname"), ("vm.swappiness", "/proc/sys/vm/swappiness")],
)
def test_node_cannot_change_machine_wide_sysctls(lab, key, path):
    before = Path(path).read_text()
    node = lab.nodes[0].name
    assert lab.lab.exec(node, ["sysctl", "-w", f"{key}=7"], check=False).returncode != 0
    assert lab.lab.exec(node, ["sh", "-c", f"echo 7 > {path}"], check=False).returncode != 0
    assert Path(path).read_text() == before


def test_node_changes_its_own_net_sysctls_only(lab):
    path = "/proc/sys/net/ipv4/ip_forward"
    machine = Path(path).read_text().strip()
    wanted = "0" if machine == "1" else "1"
    first, second = lab.nodes[0].name, lab.nodes[1].name
    before = out(lab, first, ["cat", path])
    lab.lab.exec(first, ["sysctl", "-w", f"net.ipv4.ip_forward={wanted}"])
    try:
        assert out(lab, first, ["cat", path]) == wanted
        assert out(lab, second, ["cat", path]) == before
        assert Path(path).read_text().strip() == machine
    finally:
        lab.lab.exec(first, ["sysctl", "-w", f"net.ipv4.ip_forward={before}"])


@pytest.mark.parametrize("key", ["kernel.panic", "vm.overcommit_memory", "kernel.keys.root_maxkeys"])
def test_kubelet_checked_sysctls_are_node_local(lab, key):
    """The values kubelet's protectKernelDefaults checks: a node sets its own, the machine keeps its."""
    path = Path("/proc/sys") / key.replace(".", "/")
    machine = path.read_text().strip()
    wanted = str(int(machine) + 3)
    first, second = lab.nodes[0].name, lab.nodes[1].name
    before = out(lab, first, ["cat", str(path)])
    assert before == machine
    lab.lab.exec(first, ["sysctl", "-w", f"{key}={wanted}"])
    try:
        assert out(lab, first, ["sysctl", "-n", key]) == wanted
        assert out(lab, second, ["cat", str(path)]) == machine
        assert path.read_text().strip() == machine
    finally:
        lab.lab.exec(first, ["sysctl", "-w", f"{key}={before}"])


def test_node_lacks_machine_wide_capabilities(lab):
    for node in lab.nodes:
        status = out(lab, node.name, ["cat", "/proc/1/status"])
        bounding = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapBnd:")), 16)
        assert not [cap for cap in DROPPED_CAPS if bounding & (1 << CAP_NUMBERS[cap])]
    clock = lab.lab.exec(lab.nodes[0].name, ["date", "-s", "2001-01-01"], check=False)
    assert clock.returncode != 0 and b"not permitted" in clock.stderr


def test_node_cannot_open_the_machine_disk(lab):
    root = os.stat("/").st_dev
    major, minor = os.major(root), os.minor(root)
    disk = "/root/hclab-disk"
    script = f"mknod {disk} b {major} {minor} && head -c 1 {disk}; rc=$?; rm -f {disk}; exit $rc"
    result = lab.lab.exec(lab.nodes[0].name, ["sh", "-c", script], check=False)
    assert result.returncode != 0 and b"not permitted" in result.stderr
