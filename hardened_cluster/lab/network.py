"""The lab network: one bridge, a named netns and a veth per node, and a host table that stops forwarding."""

from __future__ import annotations

import json
from pathlib import Path

from .model import (
    BRIDGE,
    CONTROLLER_ADDRESS,
    NFT_TABLE,
    PREFIX,
    SUBNET,
    LabError,
    host_veth,
    run,
)

NETNS_DIR = Path("/run/netns")


def _nft_ruleset() -> str:
    # Traffic between lab ports stays on the bridge; anything routed from or to it is dropped.
    return f"""table inet {NFT_TABLE} {{
    chain forward {{
        type filter hook forward priority filter - 10; policy accept;
        iifname "{BRIDGE}" oifname != "{BRIDGE}" counter drop
        oifname "{BRIDGE}" iifname != "{BRIDGE}" counter drop
    }}
}}
"""


def create_bridge() -> None:
    run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    run(["ip", "addr", "add", f"{CONTROLLER_ADDRESS}/{SUBNET.prefixlen}", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])
    run(["nft", "-f", "-"], input=_nft_ruleset().encode())


def add_netns(netns: str, address: str) -> None:
    """Create a named netns wired to the bridge with address on eth0 and no route beyond the lab subnet."""
    veth = host_veth(address)
    run(["ip", "netns", "add", netns])
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])
    run(["ip", "link", "set", veth, "master", BRIDGE, "up"])
    run(["ip", "-n", netns, "addr", "add", f"{address}/{SUBNET.prefixlen}", "dev", "eth0"])
    run(["ip", "-n", netns, "link", "set", "lo", "up"])
    run(["ip", "-n", netns, "link", "set", "eth0", "up"])


def lab_netns() -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(f"{PREFIX}-"))


def netns_inodes() -> set[int]:
    inodes = set()
    for name in lab_netns():
        try:
            inodes.add((NETNS_DIR / name).stat().st_ino)
        except OSError:
            continue
    return inodes


def lab_links() -> list[str]:
    links = json.loads(run(["ip", "-j", "link", "show"]).stdout or b"[]")
    return [link["ifname"] for link in links if link["ifname"].startswith(f"{PREFIX}-")]


def nft_table_exists() -> bool:
    return run(["nft", "list", "table", "inet", NFT_TABLE], check=False).returncode == 0


def teardown() -> None:
    """Remove every lab netns, link and the host table, whoever made them."""
    for name in lab_netns():
        run(["ip", "netns", "delete", name], check=False)
    links = lab_links()
    for link in sorted(links, key=lambda name: name == BRIDGE):
        run(["ip", "link", "delete", link], check=False)
    if nft_table_exists():
        run(["nft", "delete", "table", "inet", NFT_TABLE])
    left = lab_netns() + lab_links()
    if left:
        raise LabError(f"could not remove lab network objects: {', '.join(left)}")
