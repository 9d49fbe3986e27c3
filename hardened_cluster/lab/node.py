"""One node on the machine's side: its state directory, seeded files, boot process and PID 1."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import cgroups
from .image import ADMIN_USER
from .model import CONTROLLER_ADDRESS, DROPPED_CAPS, NODE_PATH, LabError, LabNode, cgroup_name, netns_name, one_line, run

POWEROFF = signal.SIGRTMIN + 4


@dataclass(frozen=True)
class NodeDirs:
    base: Path

    @property
    def upper(self) -> Path:
        return self.base / "upper"

    @property
    def work(self) -> Path:
        return self.base / "work"

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def containerd(self) -> Path:
        return self.base / "containerd"

    @property
    def console(self) -> Path:
        return self.base / "console.log"


def _passwd_ids(image: Path, user: str) -> tuple[int, int]:
    for line in (image / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise LabError(f"user {user} missing from image {image}")


def _upper_dir(image: Path, upper: Path, rel: Path) -> Path:
    """Make rel in the upper layer with the lower layer's owner and mode, so the merged view keeps them."""
    target = upper
    for part in rel.parts:
        target = target / part
        lower = image / target.relative_to(upper)
        if not target.exists():
            st = lower.stat()
            target.mkdir(mode=0o700)
            os.chown(target, st.st_uid, st.st_gid)
            target.chmod(st.st_mode & 0o7777)
    return target


def _seed(image: Path, upper: Path, rel: str, data: str, mode: int, owner: tuple[int, int] = (0, 0)) -> None:
    path = _upper_dir(image, upper, Path(rel).parent) / Path(rel).name
    path.write_text(data)
    os.chown(path, *owner)
    path.chmod(mode)


def _sshd_config(image: Path, port: int) -> str:
    """The image's sshd_config listening on `port` instead of 22, as an operator's host would be set up."""
    text = (image / "etc/ssh/sshd_config").read_text()
    changed, count = re.subn(r"(?m)^#?Port 22$", f"Port {port}", text, count=1)
    if not count:
        raise LabError(f"{image}/etc/ssh/sshd_config has no 'Port 22' line to change to port {port}")
    return changed


def prepare(image: Path, dirs: NodeDirs, node: LabNode, all_nodes: list[LabNode], admin_pub: str) -> subprocess.Popen:
    """Create the node's state and files; return the running ssh-keygen that makes its host key."""
    for d in (dirs.upper, dirs.work, dirs.root, dirs.containerd):
        d.mkdir(parents=True)
    hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    hosts += "".join(f"{n.address}\t{n.name}\n" for n in all_nodes)
    _seed(image, dirs.upper, "etc/hostname", f"{node.name}\n", 0o644)
    _seed(image, dirs.upper, "etc/hosts", hosts, 0o644)
    _seed(image, dirs.upper, "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
    # A resolver for programs that insist on one (CoreDNS forwards to it): the controller's address on
    # the bridge, where no DNS server answers; names outside the lab do not resolve, as there is no way out.
    _seed(image, dirs.upper, "etc/resolv.conf", f"nameserver {CONTROLLER_ADDRESS}\n", 0o644)
    admin = _passwd_ids(image, ADMIN_USER)
    _seed(image, dirs.upper, f"home/{ADMIN_USER}/.ssh/authorized_keys", admin_pub, 0o600, admin)
    if node.ssh_port != 22:
        _seed(image, dirs.upper, "etc/ssh/sshd_config", _sshd_config(image, node.ssh_port), 0o644)
    key = _upper_dir(image, dirs.upper, Path("etc/ssh")) / "ssh_host_ed25519_key"
    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{node.name}", "-f", str(key)]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def host_key(dirs: NodeDirs) -> str:
    fields = (dirs.upper / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
    return f"{fields[0]} {fields[1]}"


def start(image: Path, dirs: NodeDirs, node: LabNode) -> subprocess.Popen:
    cgroup_dirs = cgroups.node_dirs(cgroup_name(node.name))
    cgroups.create(cgroup_dirs)
    config = {
        "image": str(image),
        "upper": str(dirs.upper),
        "work": str(dirs.work),
        "root": str(dirs.root),
        "containerd": str(dirs.containerd),
        "netns": netns_name(node.name),
        "cgroups": [str(d) for d in cgroup_dirs],
        "hierarchies": [[str(h.mountpoint), h.fstype, list(h.options)] for h in cgroups.hierarchies()],
        "dropped_caps": list(DROPPED_CAPS),
    }
    for value in (config["image"], config["upper"], config["work"]):
        if any(c in value for c in ",:"):
            raise LabError(f"path {value} cannot be used in an overlay mount (contains ',' or ':')")
    with open(dirs.console, "wb") as console:
        return subprocess.Popen(
            [sys.executable, "-m", "hardened_cluster.lab.nodeinit", "enter", json.dumps(config)],
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={"PATH": NODE_PATH, "LANG": "C.UTF-8"},
        )


def start_time(pid: int) -> int | None:
    """The process's start time, or None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def alive(pid: int, start: int) -> bool:
    return start_time(pid) == start


def init_pid(launcher: int) -> int | None:
    """PID (on the machine) of the node's PID 1, the child that unshare forked."""
    try:
        children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def exec_argv(pid: int, argv: list[str]) -> list[str]:
    caps = ",".join(f"-{cap}" for cap in DROPPED_CAPS)
    return ["nsenter", "-t", str(pid), "-a", "--", "/usr/bin/setpriv", f"--bounding-set={caps}", "--", *argv]


def exec_env() -> dict[str, str]:
    return {"PATH": NODE_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}


def console_tail(dirs: NodeDirs) -> str:
    try:
        return one_line(dirs.console.read_bytes())
    except OSError:
        return ""


def system_state(pid: int) -> str:
    result = run(exec_argv(pid, ["systemctl", "is-system-running"]), check=False, timeout=30, env=exec_env())
    return result.stdout.decode().strip() or "unknown"


def failed_units(pid: int) -> list[str]:
    argv = exec_argv(pid, ["systemctl", "list-units", "--state=failed", "--plain", "--no-legend", "--no-pager"])
    result = run(argv, check=False, timeout=30, env=exec_env())
    return [line.split()[0] for line in result.stdout.decode().splitlines() if line.strip()]


def ns_init_pids(pids: set[int]) -> set[int]:
    """Those of pids that are PID 1 of a child PID namespace."""
    inits = set()
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:") and len(line.split()) > 2 and line.split()[-1] == "1":
                inits.add(pid)
    return inits


def signal_all(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    """Wait until the processes have exited; return those still there."""
    starts = {pid: start_time(pid) for pid in pids}
    deadline = time.monotonic() + timeout
    while True:
        left = {pid for pid, start in starts.items() if start is not None and start_time(pid) == start}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)
