"""Checks from the outside: etcd health over mutual TLS, and port scans against the firewall matrix."""
from __future__ import annotations

import ipaddress
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass

from hardened_cluster.deliver.preflight import ssh_run
from hardened_cluster.plan.firewall import node_rules
from hardened_cluster.spec.model import LoadedSpec, Node, Spec

# Runs on the scanning host (python3 is on every node Ansible manages).
SCANNER = r"""
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
targets = json.loads(sys.argv[1])
def probe(target):
    host, port = target
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.settimeout(1.5)
    try:
        sock.connect((host, port))
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "filtered"
    finally:
        sock.close()
with ThreadPoolExecutor(64) as pool:
    print(json.dumps(list(pool.map(probe, targets))))
"""

WELL_KNOWN_PORTS = (22, 2379, 2380, 6443, 10250, 10257, 10259)


@dataclass(frozen=True)
class Probe:
    node: str
    port: int
    state: str  # open | refused (a host answered: the firewall let it through) | filtered
    allowed: bool  # what the matrix says for this source

    @property
    def passes(self) -> bool:
        return self.state != "filtered"

    @property
    def as_expected(self) -> bool:
        return self.passes == self.allowed


def _ports(spec: Spec, node: Node) -> list[int]:
    ports = set(WELL_KNOWN_PORTS) | {spec.ssh_port(node)}
    for rule in node_rules(spec, node):
        if "-" not in rule.port and rule.protocol == "tcp":
            ports.add(int(rule.port))
    return sorted(ports)


def allowed(spec: Spec, node: Node, port: int, source: str) -> bool:
    address = ipaddress.ip_address(source)
    return any(
        rule.protocol == "tcp" and rule.port == str(port) and any(address in net for net in rule.sources)
        for rule in node_rules(spec, node)
    )


def scan(loaded: LoadedSpec, source: str, *, via_node: Node | None = None, runner=None) -> list[Probe]:
    """Scan every node's interesting TCP ports from `source`.

    The scanner runs on `via_node` over SSH, through `runner(argv) -> (rc, stdout, stderr)` (e.g. in a
    lab netns), or on this machine when neither is given.
    """
    spec = loaded.spec
    targets = [(node, port) for node in spec.nodes if node is not via_node for port in _ports(spec, node)]
    payload = json.dumps([[str(n.address), p] for n, p in targets])
    if via_node is not None:
        rc, out, err = ssh_run(loaded, via_node, shlex.join(["python3", "-c", SCANNER, payload]), timeout=120)
    elif runner is not None:
        rc, out, err = runner(["python3", "-c", SCANNER, payload])
    else:
        proc = subprocess.run([sys.executable, "-c", SCANNER, payload], capture_output=True, text=True, timeout=120)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    if rc != 0:
        raise RuntimeError(f"port scan from {source} failed: {err.strip()[:300]}")
    states = json.loads(out)
    return [Probe(n.name, p, s, allowed(spec, n, p, source)) for (n, p), s in zip(targets, states)]


def etcdctl_argv(spec: Spec) -> list[str]:
    """etcdctl on a member, against its own client port with the health-check client certificate."""
    return [
        f"{spec.etcd_bin_dir}/etcdctl",
        f"--endpoints=https://127.0.0.1:{spec.etcd.client_port}",
        "--cacert=/etc/etcd/pki/ca.crt",
        "--cert=/etc/etcd/pki/healthcheck-client.crt",
        "--key=/etc/etcd/pki/healthcheck-client.key",
    ]


def etcd_health(loaded: LoadedSpec) -> list[dict]:
    """`etcdctl endpoint health --cluster` with the health-check client certificate, from the first member."""
    spec = loaded.spec
    member = spec.nodes_with("etcd")[0]
    command = " ".join(["sudo", "env", "ETCDCTL_API=3", *etcdctl_argv(spec), "endpoint", "health", "--cluster", "-w", "json"])
    rc, out, err = ssh_run(loaded, member, command, timeout=60)
    if not out.strip().startswith("["):
        return [{"endpoint": member.name, "health": False, "error": (err or out).strip()[:300]}]
    return json.loads(out)
