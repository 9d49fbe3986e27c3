"""The port matrix on the lab, forward path included, checked against tables written out by hand.

The expected results below come from the documented matrix (README, docs/lab.md), not from
hardened_cluster.plan.firewall: a change to the code that opens or closes anything makes a table disagree.

Forward path: a netns behind worker-1 stands in for a pod (10.244.1.10, inside the lab's pod CIDR), with
a TCP and a UDP listener. A kube-proxy-style nat table on worker-1 DNATs a NodePort (TCP and UDP), a
hostPort-style port outside the NodePort range and a ClusterIP to it, as kube-proxy and the portmap
plugin do in prerouting. The probes go from the outsider netns, a worker, the control plane node and
the admin address (this machine on the lab bridge) over TCP, UDP and ICMP. The lab is IPv4 only.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from hardened_cluster.deliver.converge import converge
from hardened_cluster.lab.model import BRIDGE, netns_name
from hardened_cluster.plan.render import render_plan
from hardened_cluster.secrets.store import resolve_secrets
from hardened_cluster.spec.load import parse_spec

pytestmark = pytest.mark.lab

PHASES = ["hosts", "etcd"]  # as tests/lab/test_cluster.py, so the two share one converged state
WORKER = "worker-1"
WORKER_ADDRESS = "10.231.0.31"
POD_NETNS = "hclab-fwdpod"  # the lab's prefix: `lab down` removes it if a crash leaves it behind
POD_GATEWAY = "10.244.1.1"
POD = "10.244.1.10"
CLUSTER_IP = "10.96.0.10"  # inside the lab's service CIDR
NODEPORT_TCP, NODEPORT_UDP, HOSTPORT = 30080, 30081, 8088
KUBE_PROXY = f"""table ip hc_lab_kube_proxy {{
	chain prerouting {{
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr {WORKER_ADDRESS} tcp dport {NODEPORT_TCP} dnat to {POD}:8080
		ip daddr {WORKER_ADDRESS} udp dport {NODEPORT_UDP} dnat to {POD}:8081
		ip daddr {WORKER_ADDRESS} tcp dport {HOSTPORT} dnat to {POD}:8080
		ip daddr {CLUSTER_IP} tcp dport 80 dnat to {POD}:8080
	}}
}}
"""
LISTENER = r"""
import socket, sys, threading
tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("0.0.0.0", 8080)); tcp.listen(64)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("0.0.0.0", 8081))
def echo():
    while True:
        data, peer = udp.recvfrom(512)
        udp.sendto(b"pod:" + data, peer)
threading.Thread(target=echo, daemon=True).start()
print("ready", flush=True)
while True:
    conn, _ = tcp.accept()
    conn.sendall(b"pod\n")
    conn.close()
"""
# open: an answer; refused: a RST or ICMP unreachable (the firewall let it through to a closed port);
# filtered: nothing within the timeout.
PROBER = r"""
import json, os, socket, struct, sys, time
from concurrent.futures import ThreadPoolExecutor
TIMEOUT = 1.5
def tcp(host, port):
    with socket.socket() as s:
        s.settimeout(TIMEOUT)
        try:
            s.connect((host, port)); return "open"
        except ConnectionRefusedError:
            return "refused"
        except OSError:
            return "filtered"
def udp(host, port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        s.connect((host, port))
        try:
            s.send(b"probe"); s.recv(512); return "open"
        except ConnectionRefusedError:
            return "refused"
        except OSError:
            return "filtered"
def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF); total += total >> 16
    return ~total & 0xFFFF
def icmp(host, ident):
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        header = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"hc-probe"
        s.sendto(header[:2] + struct.pack("!H", checksum(header)) + header[4:], (host, 0))
        deadline = time.monotonic() + TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                packet, (peer, _) = s.recvfrom(1024)
            except OSError:
                break
            offset = (packet[0] & 0x0F) * 4
            kind, _, _, got, _ = struct.unpack("!BBHHH", packet[offset:offset + 8])
            if peer == host and kind == 0 and got == ident:
                return "open"
        return "filtered"
def probe(item):
    index, (proto, host, port) = item
    if proto == "icmp":
        return icmp(host, (os.getpid() + index) & 0xFFFF)
    return (tcp if proto == "tcp" else udp)(host, port)
targets = json.loads(sys.argv[1])
with ThreadPoolExecutor(64) as pool:
    print(json.dumps(list(pool.map(probe, enumerate(targets)))))
"""

NODES = {"etcd-1": "10.231.0.11", "etcd-2": "10.231.0.12", "etcd-3": "10.231.0.13",
         "cp-1": "10.231.0.21", "worker-1": "10.231.0.31", "worker-2": "10.231.0.32"}
ROLE = {"etcd-1": "etcd", "etcd-2": "etcd", "etcd-3": "etcd", "cp-1": "control-plane",
        "worker-1": "worker", "worker-2": "worker"}
ADMIN, OUTSIDER = "10.231.0.1", "10.231.0.250"
# Where each probe comes from: a netns (None: this machine, which is the admin address).
SOURCES = {"admin": None, "outsider": "hclab-outside", "worker": netns_name("worker-2"), "control-plane": netns_name("cp-1")}
SOURCE_NODE = {"worker": "worker-2", "control-plane": "cp-1"}

TCP_PORTS = (22, 2379, 2380, 6443, 10250, 10257, 10259, 30080)
UDP_PORTS = (53, 4789, 8472, 30080)
# The lab's matrix (cni: none, NodePorts off, no extra ports), by hand: the TCP ports of each role that a
# source reaches. Everything else in TCP_PORTS is filtered; no UDP port is open anywhere; ICMP echo
# reaches every node from everyone.
INPUT_TCP = {
    "etcd": {"admin": {22}, "outsider": set(), "worker": set(), "control-plane": {2379}},
    "control-plane": {"admin": {22, 6443}, "outsider": set(), "worker": {6443}},
    "worker": {"admin": {22}, "outsider": set(), "worker": set(), "control-plane": {10250}},
}

FORWARD_TARGETS = {
    "nodeport-tcp": ("tcp", WORKER_ADDRESS, NODEPORT_TCP),
    "nodeport-udp": ("udp", WORKER_ADDRESS, NODEPORT_UDP),
    "hostport-tcp": ("tcp", WORKER_ADDRESS, HOSTPORT),
    "clusterip-tcp": ("tcp", CLUSTER_IP, 80),
    "pod-tcp": ("tcp", POD, 8080),
    "pod-udp": ("udp", POD, 8081),
    "pod-icmp": ("icmp", POD, 0),
}
NODE_TO_POD = {"clusterip-tcp", "pod-tcp", "pod-udp", "pod-icmp"}
NODEPORTS = {"nodeport-tcp", "nodeport-udp"}
# The forward path by hand, for each firewall.nodeport_range setting: what reaches the pod from each source.
# Nodes reach pods (directly and through a ClusterIP); nobody else does. A NodePort reaches the pod only
# from its sources (the admin CIDRs when none are named); a DNAT-ed port outside the NodePort range never.
FORWARD = {
    "nodeports-off": {"admin": set(), "outsider": set(), "worker": NODE_TO_POD, "control-plane": NODE_TO_POD},
    "nodeports-on": {"admin": NODEPORTS, "outsider": set(), "worker": NODE_TO_POD, "control-plane": NODE_TO_POD},
    "nodeports-outsider": {"admin": set(), "outsider": NODEPORTS, "worker": NODE_TO_POD,
                           "control-plane": NODE_TO_POD},
}
NODEPORT_SETTINGS = {
    "nodeports-off": None,  # the lab spec as applied
    "nodeports-on": {"enabled": True},
    "nodeports-outsider": {"enabled": True, "sources": [f"{OUTSIDER}/32"]},
}


def run(argv, **kwargs):
    return subprocess.run(argv, check=True, capture_output=True, timeout=120, **kwargs)


def in_netns(netns, argv):
    return argv if netns is None else ["ip", "netns", "exec", netns, *argv]


def probe(source: str, targets: list[tuple[str, str, int]]) -> list[str]:
    out = run(in_netns(SOURCES[source], [sys.executable, "-c", PROBER, json.dumps(targets)])).stdout
    return json.loads(out)


def passing(states):
    return {name for name, state in states.items() if state != "filtered"}


@pytest.fixture(scope="module")
def applied(lab, lab_spec, lab_state):
    result, _ = converge(lab_spec, check=False, phases=PHASES, state=lab_state)
    assert result.succeeded, {h: r.errors for h, r in result.hosts.items()}
    assert {n.name: str(n.address) for n in lab_spec.spec.nodes} == NODES
    return result


@pytest.fixture(scope="module")
def pod(applied, lab):
    """The pod netns behind worker-1, its listeners, the DNAT table, and routes to it from the probing sources."""
    worker_ns = netns_name(WORKER)
    routes = [(netns, f"{address}/32") for netns in SOURCES.values() for address in (POD, CLUSTER_IP)]
    listener = None
    try:
        run(["ip", "netns", "add", POD_NETNS])
        run(["ip", "link", "add", POD_NETNS, "type", "veth", "peer", "name", "eth0", "netns", POD_NETNS])
        run(["ip", "link", "set", POD_NETNS, "netns", worker_ns])
        run(["ip", "-n", worker_ns, "addr", "add", f"{POD_GATEWAY}/24", "dev", POD_NETNS])
        run(["ip", "-n", worker_ns, "link", "set", POD_NETNS, "up"])
        for argv in (["addr", "add", f"{POD}/24", "dev", "eth0"], ["link", "set", "eth0", "up"],
                     ["link", "set", "lo", "up"], ["route", "add", "default", "via", POD_GATEWAY]):
            run(["ip", "-n", POD_NETNS, *argv])
        # The worker forwards because its sysctl drop-in says so, not because this test turns it on.
        forwarding = run(["ip", "netns", "exec", worker_ns, "sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip()
        assert forwarding == b"1"
        run(["ip", "netns", "exec", worker_ns, "nft", "-f", "-"], input=KUBE_PROXY.encode())
        for netns, prefix in routes:
            via = ["via", WORKER_ADDRESS] + (["dev", BRIDGE] if netns is None else [])
            run(["ip", *(["-n", netns] if netns else []), "route", "replace", prefix, *via])
        listener = subprocess.Popen(["ip", "netns", "exec", POD_NETNS, sys.executable, "-c", LISTENER],
                                    stdout=subprocess.PIPE)
        assert listener.stdout.readline().strip() == b"ready"
        yield
    finally:
        if listener is not None:
            listener.terminate()
            listener.wait(10)
        for netns, prefix in routes:
            subprocess.run(["ip", *(["-n", netns] if netns else []), "route", "del", prefix], capture_output=True)
        subprocess.run(["ip", "netns", "exec", worker_ns, "nft", "delete", "table", "ip", "hc_lab_kube_proxy"],
                       capture_output=True)
        subprocess.run(["ip", "netns", "delete", POD_NETNS], capture_output=True)


def _worker_ruleset(lab_spec, setting) -> str:
    data = yaml.safe_load(lab_spec.path.read_text())
    data.setdefault("firewall", {})["nodeport_range"] = copy.deepcopy(setting)
    loaded = parse_spec(data, lab_spec.path)
    with tempfile.TemporaryDirectory() as state:
        plan = render_plan(loaded, resolve_secrets(loaded, Path(state) / "lab"))
    return plan.hosts[WORKER].files["/etc/nftables.conf"].content


def test_input_chains_match_the_matrix(applied):
    for source in SOURCES:
        targets = [(name, "tcp", address, port) for name, address in NODES.items()
                   if name != SOURCE_NODE.get(source) for port in TCP_PORTS]
        targets += [(name, "udp", address, port) for name, address in NODES.items()
                    if name != SOURCE_NODE.get(source) for port in UDP_PORTS]
        targets += [(name, "icmp", address, 0) for name, address in NODES.items() if name != SOURCE_NODE.get(source)]
        states = probe(source, [t[1:] for t in targets])
        got = {(name, proto, port) for (name, proto, _, port), state in zip(targets, states) if state != "filtered"}
        expected = {(name, "tcp", port) for name in NODES if name != SOURCE_NODE.get(source)
                    for port in INPUT_TCP[ROLE[name]][source]}
        expected |= {(name, "icmp", 0) for name in NODES if name != SOURCE_NODE.get(source)}
        assert got == expected, (source, sorted(got ^ expected))


@pytest.mark.parametrize("setting", list(FORWARD))
def test_forward_path_matches_the_matrix(setting, pod, lab, lab_spec):
    worker_ns = netns_name(WORKER)
    applied_table = lab.lab.exec(WORKER, ["nft", "list", "table", "inet", "hardened_cluster"]).stdout
    if NODEPORT_SETTINGS[setting] is not None:
        ruleset = _worker_ruleset(lab_spec, NODEPORT_SETTINGS[setting])
        run(["ip", "netns", "exec", worker_ns, "nft", "-f", "-"], input=ruleset.encode())
    try:
        for source, expected in FORWARD[setting].items():
            states = dict(zip(FORWARD_TARGETS, probe(source, list(FORWARD_TARGETS.values()))))
            assert passing(states) == expected, (setting, source, states)
            # What got through reached the listener itself, not just a closed port behind the firewall.
            assert all(states[name] == "open" for name in expected), (setting, source, states)
    finally:
        # Back to the applied ruleset, loaded from the delivered file as the firewall role does.
        lab.lab.exec(WORKER, ["nft", "-f", "/etc/nftables.conf"])
        assert lab.lab.exec(WORKER, ["nft", "list", "table", "inet", "hardened_cluster"]).stdout == applied_table
