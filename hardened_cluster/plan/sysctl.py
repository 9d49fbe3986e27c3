"""The kernel settings os_hardening's drop-in sets: its template only formats them, and the rerun
fingerprint reads the same keys back from /proc/sys."""
from __future__ import annotations

from dataclasses import dataclass

from hardened_cluster.spec.model import Node


@dataclass(frozen=True)
class Sysctl:
    key: str
    value: int
    optional: bool = False  # may be absent on a host: the drop-in's '-' prefix

    def __str__(self) -> str:
        return f"{'-' if self.optional else ''}{self.key} = {self.value}"


def _settings(*pairs: tuple[str, int]) -> tuple[Sysctl, ...]:
    return tuple(Sysctl(k.lstrip("-"), v, k.startswith("-")) for k, v in pairs)


_KUBELET = _settings(
    ("vm.overcommit_memory", 1), ("vm.panic_on_oom", 0), ("kernel.panic", 10), ("kernel.panic_on_oops", 1),
    ("kernel.keys.root_maxkeys", 1000000), ("kernel.keys.root_maxbytes", 25000000),
)
_KERNEL = _settings(
    ("kernel.kptr_restrict", 2), ("kernel.dmesg_restrict", 1), ("kernel.randomize_va_space", 2), ("kernel.sysrq", 0),
    ("-kernel.yama.ptrace_scope", 1), ("kernel.unprivileged_bpf_disabled", 1), ("-net.core.bpf_jit_harden", 2),
    ("fs.protected_hardlinks", 1), ("fs.protected_symlinks", 1), ("fs.suid_dumpable", 0),
)
_BRIDGE = _settings(("-net.bridge.bridge-nf-call-iptables", 1), ("-net.bridge.bridge-nf-call-ip6tables", 1))
_NETWORK = _settings(
    ("net.ipv4.conf.all.send_redirects", 0), ("net.ipv4.conf.default.send_redirects", 0),
    ("net.ipv4.conf.all.accept_redirects", 0), ("net.ipv4.conf.default.accept_redirects", 0),
    ("net.ipv4.conf.all.secure_redirects", 0), ("net.ipv4.conf.default.secure_redirects", 0),
    ("net.ipv4.conf.all.accept_source_route", 0), ("net.ipv4.conf.default.accept_source_route", 0),
    ("net.ipv4.conf.all.log_martians", 1), ("net.ipv4.conf.default.log_martians", 1),
    ("net.ipv4.conf.all.rp_filter", 1), ("net.ipv4.conf.default.rp_filter", 1),
    ("net.ipv4.icmp_echo_ignore_broadcasts", 1), ("net.ipv4.icmp_ignore_bogus_error_responses", 1),
    ("net.ipv4.tcp_syncookies", 1),
    ("net.ipv6.conf.all.accept_redirects", 0), ("net.ipv6.conf.default.accept_redirects", 0),
    ("net.ipv6.conf.all.accept_source_route", 0), ("net.ipv6.conf.default.accept_source_route", 0),
    ("net.ipv6.conf.all.accept_ra", 0), ("net.ipv6.conf.default.accept_ra", 0),
)


def node_sysctls(node: Node) -> tuple[tuple[str, tuple[Sysctl, ...]], ...]:
    """The drop-in's settings for `node`, in groups, each with why it is set."""
    kube = bool({"control-plane", "worker"} & set(node.roles))
    forwarding = _settings(("net.ipv4.ip_forward", int(kube)), ("net.ipv6.conf.all.forwarding", int(kube)))
    return (
        ("Values kubelet's protectKernelDefaults expects.", _KUBELET),
        ("Kernel hardening.", _KERNEL),
        ("Network hardening; pods need forwarding, etcd hosts do not.",
         forwarding + (_BRIDGE if kube else ()) + _NETWORK),
    )
