"""The Lab: several systemd nodes in namespaces on this machine, for tests, CI and the demo."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import cgroups, image, network
from . import node as lab_node
from .model import (
    CONTROLLER_ADDRESS,
    OUTSIDER_ADDRESS,
    OUTSIDER_NETNS,
    PREFIX,
    RUNTIME_DIR,
    RUNTIME_DIRS,
    LabError,
    LabNode,
    netns_name,
    one_line,
    run,
    validate_nodes,
)

BOOT_TIMEOUT = 90.0
POWEROFF_TIMEOUT = 6.0
KILL_TIMEOUT = 5.0
BOOTING_STATES = ("initializing", "starting", "offline", "unknown")


def _require_root() -> None:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        raise LabError("the lab needs root on Linux")


def _unescape_mount(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def _mountpoints() -> list[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [_unescape_mount(line.split()[4]) for line in lines]


def _processes_in_netns(inodes: set[int]) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            link = os.readlink(entry / "ns/net")
        except OSError:
            continue
        if int(link.split("[", 1)[1].rstrip("]")) in inodes:
            found.add(int(entry.name))
    return found


def _ssh_ready(node: LabNode) -> bool:
    try:
        with socket.create_connection((node.address, node.ssh_port), timeout=1) as conn:
            conn.settimeout(2)
            return conn.recv(8).startswith(b"SSH-")
    except OSError:
        return False


class Lab:
    admin_user = image.ADMIN_USER
    admin_password = image.ADMIN_PASSWORD
    controller_address = CONTROLLER_ADDRESS
    outsider_address = OUTSIDER_ADDRESS

    def __init__(
        self,
        runtime_dir: Path = RUNTIME_DIR,
        cache_dir: Path = Path("/var/cache/hardened-cluster/lab"),
    ) -> None:
        self.runtime_dir = Path(runtime_dir)
        self.cache_dir = Path(cache_dir)
        self.admin_key = self.cache_dir / "admin_ed25519"
        self._launchers: list[subprocess.Popen] = []

    @property
    def _state_file(self) -> Path:
        return self.runtime_dir / "state.json"

    def _node_dirs(self, name: str) -> lab_node.NodeDirs:
        return lab_node.NodeDirs(self.runtime_dir / "nodes" / name)

    def _load_state(self) -> dict:
        try:
            return json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _running(self) -> dict[str, dict]:
        nodes = self._load_state().get("nodes", [])
        return {n["name"]: n for n in nodes}

    def _pid(self, name: str) -> int:
        entry = self._running().get(name)
        if entry is None or not lab_node.alive(entry["pid"], entry["start"]):
            raise LabError(f"lab node {name} is not running")
        return entry["pid"]

    def build_image(self) -> Path:
        _require_root()
        # Every lab on this machine (each instance has its own runtime dir) keeps the image it runs on.
        keep = set()
        for state_file in map(Path, glob.glob(f"{RUNTIME_DIRS}/state.json")):
            try:
                keep.add(Path(json.loads(state_file.read_text())["image"]))
            except (OSError, ValueError, KeyError):
                continue
        return image.build(self.cache_dir, keep)

    def _ensure_admin_key(self) -> str:
        if not self.admin_key.exists():
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    f"{self.admin_user}@{PREFIX}",
                    "-f",
                    str(self.admin_key),
                ]
            )
        self.admin_key.chmod(0o600)
        return self.admin_key.with_suffix(".pub").read_text()

    def up(self, nodes: list[LabNode]) -> dict[str, str]:
        _require_root()
        validate_nodes(nodes)
        running = self._running()
        wanted = {(n.name, n.address, n.ssh_port) for n in nodes}
        if wanted == {(e["name"], e["address"], e.get("ssh_port", 22)) for e in running.values()} and all(
            lab_node.alive(e["pid"], e["start"]) for e in running.values()
        ):
            return {name: e["host_key"] for name, e in running.items()}
        self.down()
        try:
            return self._start(nodes)
        except BaseException:
            self.down()
            raise

    def _start(self, nodes: list[LabNode]) -> dict[str, str]:
        img = self.build_image()
        admin_pub = self._ensure_admin_key()
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        network.create_bridge()
        network.add_netns(OUTSIDER_NETNS, OUTSIDER_ADDRESS)
        keygens = {}
        for n in nodes:
            network.add_netns(netns_name(n.name), n.address)
            keygens[n.name] = lab_node.prepare(img, self._node_dirs(n.name), n, nodes, admin_pub)
        for name, keygen in keygens.items():
            _, err = keygen.communicate(timeout=60)
            if keygen.returncode != 0:
                raise LabError(f"ssh-keygen for node {name} failed: {one_line(err)}")
        launchers = {}
        for n in nodes:
            launchers[n.name] = lab_node.start(img, self._node_dirs(n.name), n)
            self._launchers.append(launchers[n.name])
        entries = []
        for n in nodes:
            pid = self._wait_init(n.name, launchers[n.name])
            entries.append(
                {
                    "name": n.name,
                    "address": n.address,
                    "ssh_port": n.ssh_port,
                    "pid": pid,
                    "start": lab_node.start_time(pid),
                    "host_key": lab_node.host_key(self._node_dirs(n.name)),
                }
            )
        self._state_file.write_text(json.dumps({"image": str(img), "nodes": entries}, indent=2))
        self._wait_ready(nodes)
        return {e["name"]: e["host_key"] for e in entries}

    def _wait_init(self, name: str, launcher: subprocess.Popen) -> int:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if launcher.poll() is not None:
                break
            pid = lab_node.init_pid(launcher.pid)
            if pid is not None:
                return pid
            time.sleep(0.01)
        tail = lab_node.console_tail(self._node_dirs(name))
        raise LabError(f"lab node {name} did not start: {tail or 'no output'}")

    def _wait_ready(self, nodes: list[LabNode]) -> None:
        running = self._running()
        pending = {n.name: n for n in nodes}
        states = {name: "starting" for name in pending}
        deadline = time.monotonic() + BOOT_TIMEOUT
        while pending:
            for name, n in list(pending.items()):
                entry = running[name]
                if not lab_node.alive(entry["pid"], entry["start"]):
                    tail = lab_node.console_tail(self._node_dirs(name))
                    raise LabError(f"lab node {name} stopped while booting: {tail or 'no output'}")
                if lab_node.comm(entry["pid"]) != "systemd":
                    continue
                if states[name] in BOOTING_STATES:
                    states[name] = lab_node.system_state(entry["pid"])
                if states[name] in BOOTING_STATES:
                    continue
                if states[name] not in ("running", "degraded"):
                    failed = ", ".join(lab_node.failed_units(entry["pid"])) or "none"
                    raise LabError(f"lab node {name} booted into state {states[name]} (failed units: {failed})")
                if _ssh_ready(n):
                    del pending[name]
            if pending and time.monotonic() > deadline:
                detail = ", ".join(f"{name}: {states[name]}" for name in pending)
                raise LabError(f"lab nodes not ready after {BOOT_TIMEOUT:.0f} s ({detail})")
            if pending:
                time.sleep(0.1)

    def down(self) -> None:
        _require_root()
        lab_cgroups = cgroups.find_lab_cgroups()
        in_cgroups = set().union(*(cgroups.pids(c) for c in lab_cgroups)) if lab_cgroups else set()
        inits = lab_node.ns_init_pids(in_cgroups)
        inits |= {e["pid"] for e in self._running().values() if lab_node.alive(e["pid"], e["start"])}
        lab_node.signal_all(inits, lab_node.POWEROFF)
        left = lab_node.wait_gone(inits, POWEROFF_TIMEOUT)
        deadline = time.monotonic() + KILL_TIMEOUT
        while True:
            victims = _processes_in_netns(network.netns_inodes()) | left
            for c in cgroups.find_lab_cgroups():
                victims |= cgroups.pids(c)
            victims.discard(os.getpid())
            if not victims:
                break
            if time.monotonic() > deadline:
                raise LabError(f"lab processes survive SIGKILL: {sorted(victims)[:10]}")
            lab_node.signal_all(victims, signal.SIGKILL)
            left = lab_node.wait_gone(victims, 1)
        for launcher in self._launchers:
            launcher.wait(timeout=KILL_TIMEOUT)
        self._launchers.clear()
        for c in sorted(cgroups.find_lab_cgroups(), key=lambda p: len(p.parts), reverse=True):
            cgroups.remove(c)
        network.teardown()
        self._unmount_leftovers()
        if self.runtime_dir.exists():
            shutil.rmtree(self.runtime_dir)

    def _unmount_leftovers(self) -> None:
        def ours(mountpoint: str) -> bool:
            return (
                mountpoint.startswith(f"{self.runtime_dir}/")
                or mountpoint == str(self.runtime_dir)
                or f"/{PREFIX}-" in mountpoint
            )

        for mountpoint in sorted(filter(ours, _mountpoints()), key=len, reverse=True):
            run(["umount", "--lazy", mountpoint], check=False)
        left = [m for m in _mountpoints() if ours(m)]
        if left:
            raise LabError(f"lab mounts remain: {', '.join(left[:5])}")

    def status(self) -> list[dict]:
        result = []
        for name, entry in self._running().items():
            up = lab_node.alive(entry["pid"], entry["start"])
            state = lab_node.system_state(entry["pid"]) if up else "stopped"
            result.append(
                {
                    "name": name,
                    "address": entry["address"],
                    "pid": entry["pid"] if up else None,
                    "state": state,
                    "failed_units": lab_node.failed_units(entry["pid"]) if state == "degraded" else [],
                }
            )
        return result

    def exec(
        self,
        node: str,
        argv: list[str],
        input: bytes | None = None,
        check: bool = True,
        timeout: float | None = 300,
    ) -> subprocess.CompletedProcess:
        pid = self._pid(node)
        result = run(lab_node.exec_argv(pid, argv), input=input, check=False, timeout=timeout, env=lab_node.exec_env())
        if check and result.returncode != 0:
            detail = one_line(result.stderr) or one_line(result.stdout)
            raise LabError(f"{node}: {' '.join(argv)} exited {result.returncode}: {detail}")
        return result

    def exec_outside(
        self, argv: list[str], check: bool = True, timeout: float | None = 300
    ) -> subprocess.CompletedProcess:
        if OUTSIDER_NETNS not in network.lab_netns():
            raise LabError("the lab is not up (no outsider netns)")
        result = run(
            ["nsenter", f"--net={network.NETNS_DIR / OUTSIDER_NETNS}", "--", *argv], check=False, timeout=timeout
        )
        if check and result.returncode != 0:
            detail = one_line(result.stderr) or one_line(result.stdout)
            raise LabError(f"outsider: {' '.join(argv)} exited {result.returncode}: {detail}")
        return result

    def write_known_hosts(self, path: Path, keys: dict[str, str], nodes: list[LabNode]) -> None:
        lines = [",".join(h if n.ssh_port == 22 else f"[{h}]:{n.ssh_port}" for h in (n.address, n.name))
                 + f" {keys[n.name]}\n" for n in nodes]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(lines))
        path.chmod(0o644)
