"""The local lab: systemd nodes in Linux namespaces on this machine (see docs/lab.md)."""

from __future__ import annotations

import ipaddress

from .lab import Lab
from .model import SUBNET, LabError, LabNode

__all__ = ["Lab", "LabError", "LabNode", "default_nodes", "lab_down", "lab_status", "lab_up"]

FIRST_NODE_HOST = 11


def default_nodes(n: int) -> list[LabNode]:
    """node-1..node-N at 10.231.0.11 upwards."""
    if not 1 <= n <= 200:
        raise LabError(f"the lab holds 1 to 200 nodes, not {n}")
    base = SUBNET.network_address + FIRST_NODE_HOST
    return [LabNode(f"node-{i + 1}", str(ipaddress.IPv4Address(base + i))) for i in range(n)]


def lab_up(nodes: list[LabNode]) -> dict[str, str]:
    return Lab().up(nodes)


def lab_down() -> None:
    Lab().down()


def lab_status() -> list[dict]:
    return Lab().status()
