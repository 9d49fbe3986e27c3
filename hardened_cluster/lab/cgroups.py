"""Per-node cgroups on the machine's hybrid hierarchy (cgroup v1 controllers, name=systemd, cgroup2)."""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .model import PREFIX, LabError

# Devices a node may use (besides creating nodes): what its private /dev binds, and what runc grants containers.
DEVICE_ALLOW = (
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:200 rwm",
    "c 10:232 rwm",
)
_V1_FLAGS = {"rw", "ro", "noprefix", "clone_children", "xattr", "cpuset_v2_mode", "favordynmods"}


@dataclass(frozen=True)
class Hierarchy:
    mountpoint: Path
    fstype: str
    options: tuple[str, ...]

    @property
    def key(self) -> frozenset[str]:
        return frozenset(self.options) if self.fstype == "cgroup" else frozenset()


def hierarchies() -> list[Hierarchy]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        mountpoint = before.split()[4]
        fstype, _source, super_options = after.split()[:3]
        if fstype not in ("cgroup", "cgroup2") or not mountpoint.startswith("/sys/fs/cgroup/"):
            continue
        options = tuple(o for o in super_options.split(",") if o not in _V1_FLAGS and not o.startswith("release_agent"))
        found.append(Hierarchy(Path(mountpoint), fstype, options if fstype == "cgroup" else ()))
    if not any(h.fstype == "cgroup" and "name=systemd" in h.options for h in found) and not any(
        h.fstype == "cgroup2" for h in found
    ):
        raise LabError("no cgroup hierarchy under /sys/fs/cgroup: the lab needs cgroup v1 or v2 mounted there")
    return found


def own_paths(pid: int | str = "self") -> dict[frozenset[str], str]:
    paths = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        paths[frozenset(controllers.split(",")) if controllers else frozenset()] = path
    return paths


def node_dirs(node_cgroup: str) -> list[Path]:
    """The node's cgroup directory in every hierarchy, under the caller's own cgroup."""
    own = own_paths()
    dirs = []
    for h in hierarchies():
        parent = own.get(h.key, "/")
        dirs.append(h.mountpoint / parent.lstrip("/") / node_cgroup)
    return dirs


def create(dirs: list[Path]) -> None:
    for d in dirs:
        d.mkdir(exist_ok=True)
        if (d / "cpuset.cpus").exists():
            for name in ("cpuset.cpus", "cpuset.mems"):
                (d / name).write_text((d.parent / name).read_text())
        if (d / "devices.deny").exists():
            (d / "devices.deny").write_text("a")
            for rule in DEVICE_ALLOW:
                (d / "devices.allow").write_text(rule)


def join(dirs: list[Path]) -> None:
    for d in dirs:
        (d / "cgroup.procs").write_text(str(os.getpid()))


def find_lab_cgroups() -> list[Path]:
    """Every cgroup named with the lab prefix, in any hierarchy, without descending into them."""
    found = []
    for h in hierarchies():
        for dirpath, dirnames, _ in os.walk(h.mountpoint):
            for name in list(dirnames):
                if name.startswith(f"{PREFIX}-"):
                    found.append(Path(dirpath) / name)
                    dirnames.remove(name)
    return found


def pids(cgroup: Path) -> set[int]:
    result = set()
    for dirpath, _, filenames in os.walk(cgroup):
        if "cgroup.procs" in filenames:
            try:
                text = (Path(dirpath) / "cgroup.procs").read_text()
            except OSError:
                continue
            result.update(int(p) for p in text.split())
    return result


def remove(cgroup: Path, timeout: float = 10) -> None:
    """Remove a cgroup tree deepest first, waiting for exiting processes to leave it."""
    deadline = time.monotonic() + timeout
    while True:
        busy = None
        for dirpath, _, _ in os.walk(cgroup, topdown=False):
            try:
                os.rmdir(dirpath)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise LabError(f"cannot remove cgroup {dirpath}: {exc.strerror}") from None
                busy = dirpath
        if busy is None:
            return
        if time.monotonic() > deadline:
            raise LabError(f"cgroup {busy} still busy after {timeout} s")
        time.sleep(0.05)
