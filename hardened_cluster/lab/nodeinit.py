"""Node bootstrap, run as `python -m hardened_cluster.lab.nodeinit STAGE CONFIG_JSON`.

Stage "enter" runs on the machine: it joins the node's cgroups, then execs unshare inside the node's netns.
Stage "boot" is PID 1 of the new namespaces: it assembles the root file system, pivots into it and execs systemd.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .cgroups import join
from .model import NODE_PATH

OLD_ROOT = "run/.oldroot"
DEVICES = ("null", "zero", "full", "random", "urandom", "tty", "net/tun", "kvm")
# Machine-wide knobs in /proc that stay read-only in the node (all of /proc/sys but net is handled apart).
READ_ONLY_PROC = ("sysrq-trigger", "irq", "bus", "fs", "acpi", "scsi")
# Kernel-wide sysctls that kubelet's protectKernelDefaults checks: each node sees (and its sysctl
# writes) a node-local copy, starting from the machine's value, so hardening a node never changes
# the machine's kernel.
NODE_LOCAL_SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                      "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")
NODE_LOCAL_SYSCTL_DIR = "run/hclab/sysctl"


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def enter(config: dict) -> None:
    join([Path(d) for d in config["cgroups"]])
    argv = [
        "nsenter",
        f"--net=/run/netns/{config['netns']}",
        "--",
        "unshare",
        "--mount",
        "--uts",
        "--ipc",
        "--pid",
        "--cgroup",
        "--fork",
        "--propagation",
        "private",
        "--",
        sys.executable,
        "-m",
        "hardened_cluster.lab.nodeinit",
        "boot",
        json.dumps(config),
    ]
    os.execvp(argv[0], argv)


def _dev(root: Path) -> None:
    dev = root / "dev"
    mount("-t", "tmpfs", "-o", "nosuid,noexec,mode=0755,size=4m", "tmpfs", str(dev))
    for name in DEVICES:
        source = Path("/dev") / name
        if not source.exists():
            continue
        target = dev / name
        target.parent.mkdir(exist_ok=True)
        target.touch()
        mount("--bind", str(source), str(target))
    (dev / "console").touch()
    mount("--bind", "/dev/null", str(dev / "console"))
    # kubelet's OOM watcher opens /dev/kmsg; the machine's kernel log stays out of the node (as kind does).
    (dev / "kmsg").symlink_to("console")
    (dev / "pts").mkdir()
    mount("-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620,gid=5,nosuid,noexec", "devpts", str(dev / "pts"))
    (dev / "ptmx").symlink_to("pts/ptmx")
    (dev / "shm").mkdir()
    mount("-t", "tmpfs", "-o", "nosuid,nodev,mode=1777", "tmpfs", str(dev / "shm"))
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        (dev / name).symlink_to(target)


def _proc(root: Path) -> None:
    proc = root / "proc"
    mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", str(proc))
    mount("--bind", str(proc / "sys"), str(proc / "sys"))
    mount("-o", "remount,bind,ro,nosuid,nodev,noexec", str(proc / "sys"))
    mount("--bind", str(proc / "sys/net"), str(proc / "sys/net"))
    mount("-o", "remount,bind,rw,nosuid,nodev,noexec", str(proc / "sys/net"))
    for name in READ_ONLY_PROC:
        path = proc / name
        if path.exists():
            mount("--bind", str(path), str(path))
            mount("-o", "remount,bind,ro,nosuid,nodev,noexec", str(path))


def _node_local_sysctls(root: Path) -> None:
    """Bind a node-local file over each of NODE_LOCAL_SYSCTLS (after /run is mounted)."""
    views = root / NODE_LOCAL_SYSCTL_DIR
    views.mkdir(parents=True)
    for key in NODE_LOCAL_SYSCTLS:
        view = views / key.replace("/", ".")
        view.write_text((root / "proc/sys" / key).read_text())
        mount("--bind", str(view), str(root / "proc/sys" / key))


def _sys(root: Path, hierarchies: list[list]) -> None:
    sysfs = root / "sys"
    mount("-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", str(sysfs))
    cgroup_root = sysfs / "fs/cgroup"
    mount("-t", "tmpfs", "-o", "nosuid,nodev,noexec,mode=0755,size=64k", "tmpfs", str(cgroup_root))
    for mountpoint, fstype, options in hierarchies:
        target = cgroup_root / Path(mountpoint).relative_to("/sys/fs/cgroup")
        target.mkdir(parents=True)
        opts = ",".join(["nosuid,nodev,noexec", *options])
        mount("-t", fstype, "-o", opts, fstype, str(target))


def boot(config: dict) -> None:
    root = Path(config["root"])
    mount(
        "-t",
        "overlay",
        "-o",
        f"lowerdir={config['image']},upperdir={config['upper']},workdir={config['work']}",
        "overlay",
        str(root),
    )
    mount("--bind", config["containerd"], str(root / "var/lib/containerd"))
    _proc(root)
    _sys(root, config["hierarchies"])
    _dev(root)
    mount("-t", "tmpfs", "-o", "nosuid,nodev,mode=0755", "tmpfs", str(root / "run"))
    mount("-t", "tmpfs", "-o", "nosuid,nodev,mode=1777", "tmpfs", str(root / "tmp"))
    _node_local_sysctls(root)
    (root / OLD_ROOT).mkdir()
    os.chdir(root)
    subprocess.run(["pivot_root", ".", OLD_ROOT], check=True)
    os.chdir("/")
    subprocess.run(["umount", "--lazy", f"/{OLD_ROOT}"], check=True)
    os.rmdir(f"/{OLD_ROOT}")
    caps = ",".join(f"-{cap}" for cap in config["dropped_caps"])
    argv = ["setpriv", f"--bounding-set={caps}", "--", "/lib/systemd/systemd"]
    os.execve("/usr/bin/setpriv", argv, {"container": "hclab", "PATH": NODE_PATH, "LANG": "C.UTF-8"})


def main() -> None:
    stage, config = sys.argv[1], json.loads(sys.argv[2])
    {"enter": enter, "boot": boot}[stage](config)


if __name__ == "__main__":
    main()
