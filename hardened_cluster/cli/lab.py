"""`hardened-cluster lab up|down|status`: the lab's nodes taken from a spec, host keys written beside it."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from hardened_cluster.lab import Lab, LabError, LabNode, default_nodes
from hardened_cluster.lab.from_spec import spec_nodes

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def start(spec_path: Path, lab: Lab | None = None) -> tuple[Lab, list[LabNode], dict[str, str]]:
    lab = lab or Lab()
    nodes, known_hosts = spec_nodes(spec_path)
    keys = lab.up(nodes)
    lab.write_known_hosts(known_hosts, keys, nodes)
    return lab, nodes, keys


def run(args) -> int:
    if os.geteuid() != 0:
        print("error: the lab needs root on Linux (network namespaces, mounts, cgroups)", file=sys.stderr)
        return EXIT_FAILED
    lab = Lab()
    try:
        if args.lab_command == "up":
            if args.spec:
                _, nodes, keys = start(args.spec, lab)
            else:
                nodes = default_nodes(args.nodes or 3)
                keys = lab.up(nodes)
            for node in nodes:
                print(f"{node.name:<10} {node.address:<14} {keys[node.name]}")
            ports = sorted({n.ssh_port for n in nodes})
            port = "" if ports == [22] else f" -p {ports[0]}" if len(ports) == 1 else " -p <port>"
            print(f"admin: ssh -i {lab.admin_key}{port} {lab.admin_user}@<address>")
        elif args.lab_command == "down":
            lab.down()
            print("lab is down: no nodes, mounts, cgroups, namespaces or links left")
        else:
            rows = lab.status()
            for row in rows:
                print(f"{row['name']:<10} {row['address']:<14} pid={row['pid']} {row['state']}")
            if not rows:
                print("no lab nodes running")
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
