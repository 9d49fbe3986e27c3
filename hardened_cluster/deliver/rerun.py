"""Skip Ansible on hosts that are exactly as the last successful apply left them.

After an apply succeeds, each host's managed state is fingerprinted over SSH: the metadata of the
planned files, of the paths os_hardening enforces, of dpkg's package status and of everything under
the system directories the roles touch (mode, owner, size, modification and change times), the
units they run, the runtime sysctls of the drop-in, the firewall's live table, swap, and which kubeadm
certificates are due for renewal (time passing changes no file). A later run
whose plan and roles are unchanged, with the same phases or fewer, on a host whose fingerprint still
matches, has nothing to do there, so Ansible runs only on the hosts that differ. Any doubt (no stamp,
an unreadable host, another plan) means Ansible runs.
"""
from __future__ import annotations

import hashlib
import json
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from hardened_cluster import resources
from hardened_cluster.deliver.ansible import delivered_digest
from hardened_cluster.deliver.preflight import Command, ssh_run
from hardened_cluster.errors import DeliveryError
from hardened_cluster.plan import access, kubeadm
from hardened_cluster.plan.render import Plan
from hardened_cluster.plan.role_vars import role_vars
from hardened_cluster.plan.sysctl import node_sysctls
from hardened_cluster.secrets.store import write_private
from hardened_cluster.spec.model import LoadedSpec, Node
from hardened_cluster.verify.probes import etcdctl_argv

WALKED = ["/etc", "/usr/local", "/var/lib/hardened-cluster"]
# Packages the roles install or remove change it.
DPKG_STATUS = "/var/lib/dpkg/status"
# Directories whose entries change in normal operation: only their own mode and owner count.
STAT_ONLY = ["/root", "/var/lib/kubelet"]
UNITS_BY_PHASE = {
    "hosts": ["ssh.service", "nftables.service"],
    "etcd": ["etcd.service", "etcd-snapshot.timer"],
    "runtime": ["containerd.service"],
    # haproxy: the endpoint on load-balancer nodes (roles/load_balancer's load_balancer_service).
    "kubernetes": ["kubelet.service", "haproxy.service"],
}
SYSCTL_DROPIN = "/etc/sysctl.d/90-hardened-cluster.conf"

END = "hc-fingerprint-end"


def _glob_literal(path: str) -> str:
    """`path` as a find -path pattern that matches only itself."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in path)


def script(request: dict) -> str:
    """Shell that prints the sha256 of everything the fingerprint covers, then END.

    The node's CPU is what a rerun waits for, so few processes: one find prints the metadata of
    every walked entry and named file, the change time included (any write, chmod or chown moves
    it, and nothing sets it back), and only mode and owner of the stat-only directories; one grep
    reads the runtime sysctls and swaps. find lists each directory in its own order, which holds
    while the directory is unchanged; a reordering only means Ansible runs. Whether a unit is
    enabled or masked is a symlink under /etc/systemd, which the walk covers, target included.
    """
    q = shlex.quote
    outside = [f for f in request["files"] if not any(f.startswith(w.rstrip("/") + "/") for w in request["walk"])]
    starts = " ".join(q(p) for p in dict.fromkeys(request["walk"] + request["stat"] + outside))
    stat_only = " -o ".join(f"-path {q(_glob_literal(p))}" for p in request["stat"])
    expression = [f"\\( {stat_only} \\) -printf '%p %m %U %G\\n' -prune"] if request["stat"] else []
    expression += ["-type d -printf '%p %m %U %G\\n'", "-printf '%p %m %U %G %s %T@ %C@ %l\\n'"]
    sysctls = " ".join(q("/proc/sys/" + k.replace(".", "/")) for k in request["sysctl"])
    # Older stamps lack the keys below; their requests still give the fingerprint they recorded.
    users = " ".join(q(u) for u in request.get("users", []))
    trees = [
        f"find {q(t['root'])} -xdev -mindepth 1 \\( ! -user {q(t['owner'])} -o ! -group {q(t['group'])}"
        f" -o -perm /{~int(t['mode'], 8) & 0o7777:o} \\) -printf '%p %m %U %G\\n' 2>&1 | head -n 50"
        for t in request.get("trees", [])
    ]
    health = [f"{shlex.join(argv)} >/dev/null 2>&1; echo \"health $?\"" for argv in request.get("health", [])]
    # The cluster objects' identities and versions: an object deleted or changed through the API moves them.
    objects = [f"{shlex.join(argv)} 2>&1" for argv in request.get("objects", [])]
    # The certificates due for renewal: one falling due moves them, though no file changed.
    due = [f"{shlex.join(argv)} 2>&1" for argv in request.get("due", [])]
    lines = [
        "set -f",  # unit names and key directories are expanded unquoted below
        "{",
        "keydirs=",
        f"for u in {users}; do"
        ' h=$(getent passwd "$u" | cut -d: -f6); if [ -n "$h" ]; then keydirs="$keydirs $h/.ssh"; fi; done',
        f"find {starts} $keydirs -xdev " + " -o ".join(expression) + " 2>&1",
        *trees,
        *health,
        *objects,
        *due,
        f"grep -H '' -- {sysctls} /proc/swaps 2>&1",
        f"units={q(' '.join(request['units']))}",
        # A service the host does not have cannot run; asking systemd about it costs PID 1 a unit load.
        f"for u in {' '.join(q(u) for u in request['disabled'])}; do"
        ' if [ -e "/etc/systemd/system/$u" ] || [ -e "/usr/lib/systemd/system/$u" ] || [ -e "/lib/systemd/system/$u" ];'
        ' then units="$units $u"; else echo "$u not installed"; fi; done',
        # A unit restarting on its own moves NRestarts even when it is active again.
        "systemctl show --property=Id,ActiveState,SubState,NRestarts -- $units",
        "nft list table inet hardened_cluster 2>&1; echo \"nft $?\"",
        "} </dev/null | sha256sum",
        f"echo {END}",
    ]
    return "\n".join(lines) + "\n"


def fingerprint_request(plan: Plan, node: Node, phases: list[str]) -> dict:
    """What `node`'s fingerprint looks at: paths, sysctl keys and units, no contents."""
    host = plan.hosts[node.name]
    units = [u for p in phases for u in UNITS_BY_PHASE.get(p, [])]
    disabled = [f"{s}.service" for s in plan.spec.os_hardening.disable_services]
    keys = [s.key for _, group in node_sysctls(node) for s in group] if SYSCTL_DROPIN in host.files else []
    spec = plan.spec
    stat = STAT_ONLY + [str(spec.etcd.data_dir), str(spec.etcd.snapshot.directory)]
    files = sorted(set(host.files) | set(_os_hardening_paths()) | {DPKG_STATUS})
    users = [u["user"] for u in access.authorized_keys(spec, node)] if "hosts" in phases else []
    etcd = "etcd" in phases and "etcd" in node.roles
    # The data directory's entries change in normal operation; only a wrong owner or mode counts.
    trees = [{"root": str(spec.etcd.data_dir), "owner": "etcd", "group": "etcd", "mode": "0700"}] if etcd else []
    health = [["env", "ETCDCTL_API=3", *etcdctl_argv(spec), "--command-timeout=5s", "endpoint", "health"]] if etcd else []
    objects = _objects_commands(plan) if "objects" in phases and node.name == _objects_host(plan) else []
    due = _certs_due_commands(plan, node) if "kubernetes" in phases and "control-plane" in node.roles else []
    return {"walk": WALKED, "stat": stat, "files": files, "sysctl": keys, "units": units, "disabled": disabled,
            "users": users, "trees": trees, "health": health, "objects": objects, "due": due}


def _certs_due_commands(plan: Plan, node: Node) -> list[list[str]]:
    """The control_plane role's own check of kubeadm's certificates due for renewal (files/certs_due.py,
    with the role's variables): a certificate entering the window changes its output."""
    control_plane = role_vars(plan, node, Path("."), ["control_plane"]).get("control_plane")
    if not control_plane:  # no Kubernetes binaries: the kubernetes phase does not run
        return []
    script = (resources.ROLES / "control_plane" / "files" / "certs_due.py").read_text()
    return [["/usr/bin/python3", "-c", script, control_plane["control_plane_bin_dir"] + "/kubeadm",
             control_plane["control_plane_render_config"], str(control_plane["control_plane_certs_renew_within_days"])]]


def _objects_host(plan: Plan) -> str | None:
    """The node cluster_objects runs on (the first control plane), if any."""
    control_planes = plan.spec.nodes_with("control-plane")
    return control_planes[0].name if control_planes and plan.manifests else None


def _objects_commands(plan: Plan) -> list[list[str]]:
    """kubectl on the first control plane listing every planned object's UID and resourceVersion,
    one call per namespace: a deleted or changed object changes the output, so the host is not skipped."""
    # The role's own kubectl; the plan tree's place does not matter here.
    objects = role_vars(plan, plan.spec.node(_objects_host(plan)), Path("."), ["cluster_objects"]).get("cluster_objects")
    if not objects:  # no Kubernetes binaries: the objects phase does not run
        return []
    kubectl = objects["cluster_objects_kubectl"]
    by_namespace: dict[str, list[str]] = {}
    for manifest in plan.manifests.values():
        for doc in yaml.safe_load_all(manifest.content):
            if doc:
                meta = doc["metadata"]
                by_namespace.setdefault(meta.get("namespace", "default"), []).append(f"{doc['kind']}/{meta['name']}")
    columns = "custom-columns=KIND:.kind,NAME:.metadata.name,UID:.metadata.uid,VERSION:.metadata.resourceVersion"
    return [[kubectl, "--kubeconfig", kubeadm.ADMIN_KUBECONFIG, "--request-timeout=10s", "-n", namespace, "get",
             *refs, "--ignore-not-found", "--no-headers", "-o", columns]
            for namespace, refs in sorted(by_namespace.items())]


def _os_hardening_paths() -> list[str]:
    """The paths whose permissions and setuid bits os_hardening enforces, from the role's defaults."""
    defaults = yaml.safe_load((resources.ROLES / "os_hardening" / "defaults" / "main.yml").read_text())
    return [p["path"] for p in defaults["os_hardening_sensitive_paths"]] + defaults["os_hardening_setuid_remove"]


def fingerprint_command(request: dict) -> Command:
    """The command whose output is the fingerprint of what `request` names."""
    return Command("exec sudo -n sh -s", script(request))


def parse_fingerprint(answer: tuple[int, str, str] | None) -> str | None:
    """The digest the host printed, or None when the command did not run to its end."""
    if answer is None:
        return None
    rc, out, _ = answer
    digest, _, rest = out.partition("  -\n")
    if rc != 0 or rest != f"{END}\n" or len(digest) != 64:
        return None
    return digest


def _fingerprint(loaded: LoadedSpec, node: Node, request: dict) -> str | None:
    try:
        return parse_fingerprint(ssh_run(loaded, node, fingerprint_command(request), timeout=60))
    except DeliveryError:
        return None


def fingerprints(
    loaded: LoadedSpec, plan: Plan, hosts: list[str], phases: list[str]
) -> dict[str, tuple[dict, str | None]]:
    """Per host: the fingerprint request for this plan and what the host answered to it."""
    requests = {h: fingerprint_request(plan, plan.hosts[h].node, phases) for h in hosts}
    with ThreadPoolExecutor(max_workers=min(32, max(1, len(hosts)))) as pool:
        found = list(pool.map(lambda h: _fingerprint(loaded, plan.hosts[h].node, requests[h]), hosts))
    return {h: (requests[h], f) for h, f in zip(hosts, found)}


def _code_digest() -> str:
    """The roles and playbooks: new hardening code means every host is converged again."""
    digest = hashlib.sha256()
    for top in ("roles", "playbooks", "ansible.cfg"):
        base = resources.ROOT / top
        paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for path in paths:
            digest.update(str(path.relative_to(resources.ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def plan_key(plan: Plan, node: Node, phases: list[str], code: str) -> str:
    """What a host was converged to: what the phases deliver to it (the Pulumi tiers' inputs), the
    phases and the role code."""
    blob = json.dumps({"delivered": delivered_digest(plan, node, phases), "phases": sorted(phases), "code": code},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class Stamps:
    """Per host, after its last successful apply: the plan key, the fingerprint and the request that
    produced it (0600). A rerun asks each host the recorded request before anything is rendered;
    a fingerprint compares only with one taken by the same request."""

    def __init__(self, state: Path) -> None:
        self.path = state / "converged.json"
        self.data: dict[str, dict] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.code = _code_digest()

    def requests(self, hosts: list[str]) -> dict[str, dict]:
        """The recorded fingerprint request of each of `hosts` that has one."""
        return {h: self.data[h]["request"] for h in hosts if "request" in self.data.get(h, {})}

    def unchanged(self, plan: Plan, phases: list[str], found: dict[str, str | None]) -> set[str]:
        """Hosts whose recorded plan key and fingerprint both still hold.

        A host converged to more phases than these, and untouched since, is converged to these too
        (`apply --phases etcd` after a full apply): its stamp's key is computed over the stamp's phases."""
        out = set()
        for name, fingerprint in found.items():
            stamp = self.data.get(name, {})
            stamped = stamp.get("phases", phases)
            if not set(phases) <= set(stamped):
                continue
            key = plan_key(plan, plan.hosts[name].node, stamped, self.code)
            if fingerprint and stamp.get("plan") == key and stamp.get("fingerprint") == fingerprint:
                out.add(name)
        return out

    def record(self, plan: Plan, phases: list[str], found: dict[str, tuple[dict, str | None]]) -> None:
        for name, (request, fingerprint) in found.items():
            if fingerprint:
                key = plan_key(plan, plan.hosts[name].node, phases, self.code)
                self.data[name] = {"plan": key, "phases": sorted(phases), "fingerprint": fingerprint,
                                   "request": request}
            else:
                self.data.pop(name, None)
        write_private(self.path, json.dumps(self.data, indent=1, sort_keys=True))

    def forget(self, hosts: list[str]) -> None:
        for name in hosts:
            self.data.pop(name, None)
        if self.path.exists() or self.data:
            write_private(self.path, json.dumps(self.data, indent=1, sort_keys=True))
