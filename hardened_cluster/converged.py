"""Skip Ansible on hosts that are exactly as the last successful apply left them.

After an apply succeeds, each host's managed state is fingerprinted over SSH: the planned files
(content, mode, owner), the metadata of everything under the system directories the roles touch, the
units they run, the runtime sysctls of the drop-in, the firewall's live table and swap. A later run
whose plan, roles and phases are unchanged, on a host whose fingerprint still matches, has nothing
to do there, so Ansible runs only on the hosts that differ. Any doubt (no stamp, an unreadable host,
another plan) means Ansible runs.
"""
from __future__ import annotations

import hashlib
import json
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hardened_cluster.deliver import REPO_ROOT, host_vars
from hardened_cluster.errors import DeliveryError
from hardened_cluster.plan import Plan
from hardened_cluster.preflight import ssh_run
from hardened_cluster.secrets import write_private
from hardened_cluster.spec import LoadedSpec, Node

WALKED = ["/etc", "/usr/local", "/usr/bin", "/usr/sbin", "/var/lib/hardened-cluster"]
# Directories whose entries change in normal operation: only their own mode and owner count.
STAT_ONLY = ["/root", "/var/lib/kubelet"]
UNITS_BY_PHASE = {
    "hosts": ["ssh.service", "nftables.service"],
    "etcd": ["etcd.service", "etcd-snapshot.timer"],
    "runtime": ["containerd.service"],
    "kubernetes": ["kubelet.service"],
}
SYSCTL_DROPIN = "/etc/sysctl.d/90-hardened-cluster.conf"

END = "hc-fingerprint-end"


def script(request: dict) -> str:
    """Shell that prints everything the fingerprint covers, in a stable order, then END.

    Plain find, sha256sum and cat: no interpreter start-up per host. The caller hashes the text.
    """
    q = shlex.quote
    walk = " ".join(q(p) for p in request["walk"])
    lines = [
        "exec </dev/null",
        f"find {walk} -xdev \\( -type d -printf '%p %m %U %G\\n' \\) -o -printf '%p %m %U %G %s %T@\\n' 2>&1 | LC_ALL=C sort",
        "stat -c '%n %a %u %g' -- " + " ".join(q(p) for p in request["stat"]) + " 2>&1",
        "sha256sum -- " + " ".join(q(p) for p in request["files"]) + " 2>&1",
        "for k in " + " ".join(q(k.replace(".", "/")) for k in request["sysctl"])
        + '; do printf "%s=" "$k"; cat "/proc/sys/$k" 2>/dev/null || echo absent; done',
        "systemctl show --property=Id,LoadState,ActiveState,UnitFileState -- " + " ".join(q(u) for u in request["units"]),
        "nft list table inet hardened_cluster 2>&1; echo \"nft $?\"",
        "cat /proc/swaps",
        f"echo {END}",
    ]
    return "\n".join(lines) + "\n"


def _request(plan: Plan, node: Node, phases: list[str]) -> dict:
    host = plan.hosts[node.name]
    units = [u for p in phases for u in UNITS_BY_PHASE.get(p, [])]
    units += [f"{s}.service" for s in plan.spec.os_hardening.disable_services]
    dropin = host.files.get(SYSCTL_DROPIN)
    keys = []
    for line in (dropin.content.splitlines() if dropin else []):
        key, sep, _ = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            keys.append(key.strip().lstrip("-"))
    stat = STAT_ONLY + [str(plan.spec.etcd.data_dir), str(plan.spec.etcd.snapshot.directory)]
    return {"walk": WALKED, "stat": stat, "files": sorted(host.files), "sysctl": keys, "units": units}


def fingerprint_command(plan: Plan, node: Node, phases: list[str]) -> str:
    """The command whose output is `node`'s fingerprint. Preflight facts (Kata) change file contents
    only, not which files, units or sysctls are looked at, so any render of the plan will do."""
    return shlex.join(["sudo", "-n", "sh", "-c", script(_request(plan, node, phases))])


def parse_fingerprint(answer: tuple[int, str, str] | None) -> str | None:
    """sha256 of the output, or None when the command did not run to its end."""
    if answer is None:
        return None
    rc, out, _ = answer
    if rc != 0 or not out.endswith(f"{END}\n"):
        return None
    return hashlib.sha256(out.encode()).hexdigest()


def _fingerprint(loaded: LoadedSpec, plan: Plan, node: Node, phases: list[str]) -> str | None:
    try:
        return parse_fingerprint(ssh_run(loaded, node, fingerprint_command(plan, node, phases), timeout=60))
    except DeliveryError:
        return None


def fingerprints(loaded: LoadedSpec, plan: Plan, hosts: list[str], phases: list[str]) -> dict[str, str | None]:
    nodes = [plan.hosts[h].node for h in hosts]
    with ThreadPoolExecutor(max_workers=min(32, max(1, len(nodes)))) as pool:
        found = list(pool.map(lambda n: _fingerprint(loaded, plan, n, phases), nodes))
    return dict(zip(hosts, found))


def _code_digest() -> str:
    """The roles and playbooks: new hardening code means every host is converged again."""
    digest = hashlib.sha256()
    for top in ("roles", "playbooks", "ansible.cfg"):
        base = REPO_ROOT / top
        paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for path in paths:
            digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def plan_key(plan: Plan, state: Path, node: Node, phases: list[str], code: str) -> str:
    """What a host was converged to: its files and role variables, the phases and the role code."""
    variables = host_vars(plan, node, state / "plan")
    blob = json.dumps({"vars": variables, "phases": sorted(phases), "code": code}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class Stamps:
    """Per host: the plan key and fingerprint recorded after its last successful apply (0600)."""

    def __init__(self, state: Path) -> None:
        self.path = state / "converged.json"
        self.data: dict[str, dict[str, str]] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.code = _code_digest()

    def unchanged(self, plan: Plan, state: Path, phases: list[str], found: dict[str, str | None]) -> set[str]:
        """Hosts whose recorded plan key and fingerprint both still hold."""
        out = set()
        for name, fingerprint in found.items():
            stamp = self.data.get(name)
            key = plan_key(plan, state, plan.hosts[name].node, phases, self.code)
            if fingerprint and stamp == {"plan": key, "fingerprint": fingerprint}:
                out.add(name)
        return out

    def record(self, plan: Plan, state: Path, phases: list[str], found: dict[str, str | None]) -> None:
        for name, fingerprint in found.items():
            if fingerprint:
                key = plan_key(plan, state, plan.hosts[name].node, phases, self.code)
                self.data[name] = {"plan": key, "fingerprint": fingerprint}
            else:
                self.data.pop(name, None)
        write_private(self.path, json.dumps(self.data, indent=1, sort_keys=True))

    def forget(self, hosts: list[str]) -> None:
        for name in hosts:
            self.data.pop(name, None)
        if self.path.exists() or self.data:
            write_private(self.path, json.dumps(self.data, indent=1, sort_keys=True))
