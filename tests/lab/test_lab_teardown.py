"""`down` leaves nothing behind, even after a crashed run. Runs last: it takes the session's lab down."""

import subprocess
from pathlib import Path

import paramiko
import pytest

from hardened_cluster.lab import Lab
from hardened_cluster.lab.cgroups import hierarchies, own_paths
from hardened_cluster.lab.node import start_time

pytestmark = pytest.mark.lab


def _process_leftovers(pids):
    found = [f"process {pid}" for pid in pids if start_time(pid) is not None]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroup = (entry / "cgroup").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if start_time(int(entry.name)) is not None and (
            "/hclab-" in cgroup or b"hardened_cluster.lab.nodeinit" in cmdline
        ):
            found.append(f"process {entry.name}")
    return found


def leftovers(runtime_dir, pids=()):
    found = []
    netns = Path("/run/netns")
    if netns.is_dir():
        found += [f"netns {p.name}" for p in netns.iterdir() if p.name.startswith("hclab")]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    found += [f"link {line.split(':')[1].strip()}" for line in links.splitlines() if "hclab" in line]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    found += [f"nft {line}" for line in tables.splitlines() if "hclab" in line]
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mountpoint = line.split()[4]
        if "hclab" in line or mountpoint.startswith(str(runtime_dir)):
            found.append(f"mount {mountpoint}")
    for h in hierarchies():
        found += [f"cgroup {p}" for p in h.mountpoint.rglob("hclab*") if p.is_dir()]
    found += _process_leftovers(pids)
    if Path(runtime_dir).exists():
        found.append(f"runtime dir {runtime_dir}")
    return found


def test_down_removes_everything(lab):
    pids = [s["pid"] for s in lab.lab.status()]
    assert pids and all(pids)
    lab.lab.down()
    assert leftovers(lab.lab.runtime_dir, pids) == []
    lab.lab.down()
    assert lab.lab.status() == []


def test_fresh_node_accepts_password_login_so_hardening_is_observable(lab, tmp_path):
    fresh = Lab(lab.lab.runtime_dir, lab.lab.cache_dir)
    node = lab.nodes[0]
    fresh.write_known_hosts(tmp_path / "known_hosts", fresh.up([node]), [node])
    try:
        with paramiko.SSHClient() as ssh:
            ssh.load_host_keys(str(tmp_path / "known_hosts"))
            ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
            ssh.connect(
                node.address,
                username=fresh.admin_user,
                password=fresh.admin_password,
                look_for_keys=False,
                allow_agent=False,
                timeout=10,
            )
            _, stdout, _ = ssh.exec_command("id -un", timeout=30)
            assert stdout.read().decode().strip() == fresh.admin_user
    finally:
        fresh.down()


def _crash_debris(runtime_dir: Path) -> None:
    """What an interrupted run can leave: a netns, a cgroup and a mount that no state file records."""
    subprocess.run(["ip", "netns", "add", "hclab-crashed"], check=True)
    memory = next(h for h in hierarchies() if "memory" in h.options)
    (memory.mountpoint / own_paths()[frozenset({"memory"})].lstrip("/") / "hclab-crashed" / "child").mkdir(parents=True)
    debris = runtime_dir / "nodes" / "crashed" / "root"
    debris.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(debris)], check=True)


def test_up_and_down_clean_up_after_a_crashed_run(lab):
    node = lab.nodes[0]
    crashed = Lab(lab.lab.runtime_dir, lab.lab.cache_dir)
    crashed.up([node])
    pids = [s["pid"] for s in crashed.status()]
    (lab.lab.runtime_dir / "state.json").unlink()
    _crash_debris(lab.lab.runtime_dir)

    fresh = Lab(lab.lab.runtime_dir, lab.lab.cache_dir)
    keys = fresh.up([node])
    assert [s["state"] for s in fresh.status()] == ["running"]
    assert keys[node.name] != lab.host_keys[node.name]
    pids += [s["pid"] for s in fresh.status()]
    (lab.lab.runtime_dir / "state.json").unlink()
    _crash_debris(lab.lab.runtime_dir)

    Lab(lab.lab.runtime_dir, lab.lab.cache_dir).down()
    assert leftovers(lab.lab.runtime_dir, pids) == []
