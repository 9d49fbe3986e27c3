"""The node image: a debootstrap root file system, built once and cached by recipe hash."""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from .model import NODE_PATH, LabError, run, write_file

SUITE = "bookworm"
RECIPE_VERSION = 3
ADMIN_USER = "hcadmin"
ADMIN_PASSWORD = "hcadmin-lab"
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-apt",
    "sudo",
    "iproute2",
    "procps",
    "etcd-server",
    "etcd-client",
    "nftables",
    "containerd",
    "runc",
    "runsc",
    "busybox-static",
    # What kubeadm's preflight and the kubelet look for on a node (the roles install them on real hosts).
    "conntrack",
    "iptables",
    "socat",
    "ethtool",
    "openssl",
    "ca-certificates",
    # etcd snapshots are encrypted with age (roles/etcd installs it on real hosts).
    "age",
    # The API endpoint's load balancer on load-balancer nodes (roles/load_balancer installs it on real hosts).
    "haproxy",
)
MASKED_UNITS = (
    "getty.target",
    "getty@.service",
    "serial-getty@.service",
    "console-getty.service",
    "container-getty@.service",
    "getty-static.service",
    "apt-daily.timer",
    "apt-daily.service",
    "apt-daily-upgrade.timer",
    "apt-daily-upgrade.service",
    "systemd-timesyncd.service",
    "sys-fs-fuse-connections.mount",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "proc-sys-fs-binfmt_misc.automount",
)
# Installed but left to the project's roles to enable and start.
DISABLED_UNITS = ("etcd.service", "containerd.service", "nftables.service", "haproxy.service")
SOURCES_GLOBS = ("sources.list.d/*.sources",)
ONE_LINE_SOURCES = ("sources.list", "sources.list.d/*.list")


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None


def image_key(packages: tuple[str, ...] = PACKAGES) -> str:
    recipe = {"recipe": RECIPE_VERSION, "suite": SUITE, "packages": sorted(packages)}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _parse_deb822(text: str) -> list[AptSource]:
    sources = []
    for paragraph in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in paragraph.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:
                fields[key] += "\n" + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        signed_by = fields.get("signed-by")
        if signed_by and "\n" in signed_by:
            signed_by = None
        for uri in fields.get("uris", "").split():
            sources.append(
                AptSource(
                    uri, tuple(fields.get("suites", "").split()), tuple(fields.get("components", "").split()), signed_by
                )
            )
    return sources


def _parse_one_line(text: str) -> list[AptSource]:
    sources = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        options: dict[str, str] = {}
        words = words[1:]
        if words and words[0].startswith("["):
            opts = []
            while words:
                word = words.pop(0)
                opts.append(word.strip("[]"))
                if word.endswith("]"):
                    break
            options = dict(opt.split("=", 1) for opt in opts if "=" in opt)
        if len(words) >= 3:
            sources.append(AptSource(words[0], (words[1],), tuple(words[2:]), options.get("signed-by")))
    return sources


def host_sources(apt_dir: Path = Path("/etc/apt")) -> list[AptSource]:
    sources: list[AptSource] = []
    for pattern in SOURCES_GLOBS:
        for path in sorted(apt_dir.glob(pattern)):
            sources += _parse_deb822(path.read_text())
    for pattern in ONE_LINE_SOURCES:
        for path in sorted(apt_dir.glob(pattern)):
            sources += _parse_one_line(path.read_text())
    return sources


def select_sources(sources: list[AptSource]) -> list[AptSource]:
    """The machine's sources for SUITE and its -updates/-security suites, main component only."""
    wanted = (SUITE, f"{SUITE}-updates", f"{SUITE}-security")
    selected = []
    for source in sources:
        suites = tuple(s for s in source.suites if s in wanted)
        if suites and "main" in source.components:
            selected.append(AptSource(source.uri.rstrip("/"), suites, ("main",), source.signed_by))
    if not any(SUITE in s.suites for s in selected):
        raise LabError(f"no apt source for Debian {SUITE} main in /etc/apt: configure one (see docs/lab.md)")
    return selected


def _sources_file(sources: list[AptSource]) -> str:
    paragraphs = []
    for s in sources:
        lines = ["Types: deb", f"URIs: {s.uri}", f"Suites: {' '.join(s.suites)}", "Components: main"]
        if s.signed_by:
            lines.append(f"Signed-By: {s.signed_by}")
        paragraphs.append("\n".join(lines) + "\n")
    return "\n".join(paragraphs)


def _isolated(argv: list[str], root: Path | None = None) -> list[str]:
    """Run argv in throwaway mount and PID namespaces, chrooted into root if given."""
    base = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child"]
    if root is None:
        return base + ["--", *argv]
    return base + [f"--mount-proc={root}/proc", "--", "chroot", str(root), *argv]


def _chroot(root: Path, argv: list[str], input: bytes | None = None, timeout: float = 600) -> None:
    env = {"PATH": NODE_PATH, "HOME": "/root", "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    run(_isolated(argv, root), input=input, timeout=timeout, env=env)


def _bootstrap(rootfs: Path, sources: list[AptSource]) -> None:
    main = next(s for s in sources if SUITE in s.suites)
    argv = ["debootstrap", "--variant=minbase", "--components=main"]
    if main.signed_by:
        argv.append(f"--keyring={main.signed_by}")
    run(_isolated(argv + [SUITE, str(rootfs), main.uri]), timeout=900)
    for source in sources:
        if source.signed_by and not (rootfs / source.signed_by.lstrip("/")).exists():
            target = rootfs / source.signed_by.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source.signed_by, target)
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    write_file(rootfs / "etc/apt/sources.list.d/debian.sources", _sources_file(sources))
    write_file(
        rootfs / "etc/apt/apt.conf.d/90hclab", 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
    )
    write_file(rootfs / "usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755)
    shutil.copyfile("/etc/resolv.conf", rootfs / "etc/resolv.conf")
    _chroot(rootfs, ["apt-get", "update", "-q"])
    _chroot(rootfs, ["apt-get", "install", "-y", "-q", *PACKAGES], timeout=900)
    _chroot(rootfs, ["apt-get", "dist-upgrade", "-y", "-q"], timeout=900)


def _configure(rootfs: Path) -> None:
    _chroot(rootfs, ["useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo", ADMIN_USER])
    _chroot(rootfs, ["chpasswd"], input=f"{ADMIN_USER}:{ADMIN_PASSWORD}\n".encode())
    _chroot(rootfs, ["install", "-d", "-m", "0700", "-o", ADMIN_USER, "-g", ADMIN_USER, f"/home/{ADMIN_USER}/.ssh"])
    (rootfs / "var/lib/containerd").mkdir(mode=0o711, exist_ok=True)
    write_file(rootfs / f"etc/sudoers.d/{ADMIN_USER}", f"{ADMIN_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n", 0o440)
    _chroot(rootfs, ["systemctl", "mask", *MASKED_UNITS])
    _chroot(rootfs, ["systemctl", "disable", *DISABLED_UNITS])
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    _chroot(rootfs, ["apt-get", "clean"])
    (rootfs / "usr/sbin/policy-rc.d").unlink()
    write_file(rootfs / "etc/resolv.conf", "")
    write_file(rootfs / "etc/machine-id", "", 0o444)
    write_file(rootfs / "etc/hostname", "localhost\n")
    write_file(rootfs / "etc/fstab", "")


def build(cache_dir: Path, keep: Collection[Path] = ()) -> Path:
    """Return the cached image for the current recipe, building it first if missing."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    image = cache_dir / f"image-{image_key()}"
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image.is_dir():
            return image
        partial = image.with_name(image.name + ".partial")
        if partial.exists():
            shutil.rmtree(partial)
        sources = select_sources(host_sources())
        _bootstrap(partial, sources)
        _configure(partial)
        partial.rename(image)
        for stale in cache_dir.glob("image-*"):
            if stale != image and stale not in keep and stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
    return image
