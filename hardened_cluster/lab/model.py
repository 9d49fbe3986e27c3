"""Shared value types, naming conventions and the subprocess helper of the lab."""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

# A second lab can run beside the first (HC_LAB_INSTANCE=1: prefix hclab1, 10.232.0.0/24), each on
# its own bridge, isolated from the other; its specs use that subnet's addresses.
INSTANCE = int(os.environ.get("HC_LAB_INSTANCE", "0"))
PREFIX = "hclab" if INSTANCE == 0 else f"hclab{INSTANCE}"
SUBNET = ipaddress.IPv4Network(f"10.{231 + INSTANCE}.0.0/24")
CONTROLLER_ADDRESS = str(SUBNET[1])
OUTSIDER_ADDRESS = str(SUBNET[250])
RUNTIME_DIR = Path("/run/hardened-cluster-lab" + ("" if INSTANCE == 0 else f"-{INSTANCE}"))
# The runtime dirs of every instance: each keeps the image it runs on.
RUNTIME_DIRS = "/run/hardened-cluster-lab*"
OUTSIDER_NETNS = f"{PREFIX}-outside"
BRIDGE = f"{PREFIX}-br0"
NFT_TABLE = PREFIX
NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Capabilities that act on the whole machine rather than on the node's namespaces.
DROPPED_CAPS = (
    "sys_time",
    "sys_module",
    "sys_boot",
    "sys_rawio",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "mac_admin",
    "mac_override",
    "audit_control",
)

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
_RESERVED = {
    SUBNET.network_address,
    SUBNET.broadcast_address,
    ipaddress.IPv4Address(CONTROLLER_ADDRESS),
    ipaddress.IPv4Address(OUTSIDER_ADDRESS),
}


class LabError(Exception):
    """A lab operation failed; the message is one line."""


@dataclass(frozen=True)
class LabNode:
    name: str
    address: str
    # Where the node's sshd listens, as on a host whose spec says `ssh.port`.
    ssh_port: int = 22


def netns_name(node: str) -> str:
    return f"{PREFIX}-{node}"


def cgroup_name(node: str) -> str:
    return f"{PREFIX}-{node}"


def host_veth(address: str) -> str:
    return f"{PREFIX}-v{address.rsplit('.', 1)[1]}"


def validate_nodes(nodes: list[LabNode]) -> None:
    if not nodes:
        raise LabError("no lab nodes given")
    names: set[str] = set()
    addresses: set[ipaddress.IPv4Address] = set()
    for node in nodes:
        if not _NAME_RE.match(node.name) or node.name == "outside":
            raise LabError(f"invalid lab node name {node.name!r}")
        try:
            address = ipaddress.IPv4Address(node.address)
        except ValueError:
            raise LabError(f"invalid address {node.address!r} for node {node.name}") from None
        if address not in SUBNET or address in _RESERVED:
            raise LabError(f"address {node.address} of node {node.name} is not a free host address in {SUBNET}")
        if node.name in names or address in addresses:
            raise LabError(f"duplicate lab node name or address: {node.name} {node.address}")
        names.add(node.name)
        addresses.add(address)


def one_line(text: str | bytes, limit: int = 300) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:limit]


def run(
    argv: list[str],
    *,
    input: bytes | None = None,
    check: bool = True,
    timeout: float | None = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(argv, input=input, capture_output=True, timeout=timeout, env=env)
    except FileNotFoundError:
        raise LabError(f"{argv[0]} not found: install it on this machine (see docs/lab.md)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(argv)} timed out after {timeout} s") from None
    if check and result.returncode != 0:
        detail = one_line(result.stderr) or one_line(result.stdout)
        raise LabError(f"{' '.join(argv)} exited {result.returncode}: {detail}")
    return result


def write_file(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    path.chmod(mode)
