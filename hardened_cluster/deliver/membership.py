"""Nodes that left the spec since the last successful apply: drained, deleted from the API, then reset.

After a successful apply the state directory keeps the spec as it was applied (`applied-spec.json`, 0600:
the validated document, where it was read from, the host keys it pinned), so the next apply still knows
how to reach a node the spec no longer names. A worker that left is drained first (its pods are evicted and
rescheduled elsewhere, within their disruption budgets), deleted from the API, and reset by the `reset`
play, before the remaining hosts converge (their firewalls then stop admitting it).

A new control plane joins as kubeadm joins any (the certificate upload gives it the shared keys). etcd
members joining or leaving, control planes leaving, a node changing role and another first control plane
(the one kubeadm initialised) are refused, naming the node, before any host is touched: apply does not run
`etcdctl member add/remove` nor remove control planes yet.
"""
from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from pathlib import Path

from hardened_cluster.deliver.ansible import RunResult
from hardened_cluster.deliver.artifacts import INSTALL
from hardened_cluster.deliver.preflight import ssh_run
from hardened_cluster.errors import DeliveryError, SpecError, SpecIssue
from hardened_cluster.plan import kubeadm
from hardened_cluster.secrets.store import write_private
from hardened_cluster.spec.model import LoadedSpec, Node, Spec

APPLIED_SPEC = "applied-spec.json"
# How long evicting a leaving worker's pods may take (kubectl drain --timeout).
DRAIN_TIMEOUT = 300
# The roles a node changes or leaves only by hand yet.
FIXED_ROLES = ("etcd", "control-plane")


def remember(loaded: LoadedSpec, state: Path) -> None:
    """Keep the spec a successful apply converged to."""
    doc = {"spec": loaded.spec.model_dump(mode="json", by_alias=True),
           "path": str(loaded.path) if loaded.path else None, "host_keys": loaded.host_keys}
    write_private(state / APPLIED_SPEC, json.dumps(doc, indent=1))


def applied(state: Path) -> LoadedSpec | None:
    """The spec of the last successful apply, if one was kept."""
    path = state / APPLIED_SPEC
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    return LoadedSpec(spec=Spec.model_validate(doc["spec"]), path=Path(doc["path"]) if doc["path"] else None,
                      host_keys=doc["host_keys"])


def departed(previous: LoadedSpec | None, loaded: LoadedSpec) -> list[Node]:
    """The nodes of the last applied spec that this spec no longer names."""
    if previous is None:
        return []
    names = {n.name for n in loaded.spec.nodes}
    return [n for n in previous.spec.nodes if n.name not in names]


def refuse_unsupported(previous: LoadedSpec | None, loaded: LoadedSpec) -> None:
    """SpecError for what apply cannot do to a running cluster yet (see the module's docstring); without it,
    apply would re-form etcd with another member list or leave a control plane half removed."""
    if previous is None:
        return
    issues = []
    before = {n.name: n for n in previous.spec.nodes}
    for index, node in enumerate(loaded.spec.nodes):
        old = before.get(node.name)
        for role in FIXED_ROLES:
            if old is not None and (role in node.roles) != (role in old.roles):
                issues.append(SpecIssue(f"nodes[{index}].roles", (
                    f"{node.name} {'gains' if role in node.roles else 'loses'} the {role} role since the last apply; "
                    "apply does not change a node's role: remove the node, then add it anew")))
        if old is None and "etcd" in node.roles:
            issues.append(SpecIssue(f"nodes[{index}]", (
                f"{node.name} is a new etcd member; apply does not add etcd members yet (etcdctl member add)")))
    for node in departed(previous, loaded):
        for role in FIXED_ROLES:
            if role in node.roles:
                issues.append(SpecIssue("nodes", (
                    f"{node.name} ({role}) is no longer in the spec; apply removes workers only, not {role} "
                    "nodes yet: put it back")))
    first, now = previous.spec.nodes_with("control-plane"), loaded.spec.nodes_with("control-plane")
    if first and now and first[0].name != now[0].name and first[0].name in {n.name for n in now}:
        issues.append(SpecIssue("nodes", (
            f"the first control plane is {now[0].name}, but kubeadm initialised the cluster on {first[0].name}; "
            f"keep {first[0].name} the first control-plane node")))
    if issues:
        raise SpecError(issues, str(loaded.path or ""))


def _on_control_plane(loaded: LoadedSpec, script: str, timeout: float) -> tuple[int, str, str]:
    node = loaded.spec.nodes_with("control-plane")[0]
    return ssh_run(loaded, node, "sudo -n sh -c " + shlex.quote(script), timeout=timeout)


def drain_and_delete(loaded: LoadedSpec, name: str) -> str:
    """Drain node `name` and delete it from the API, from the first control plane; what was done."""
    kubectl = shlex.join([INSTALL["kubectl"], "--kubeconfig", kubeadm.ADMIN_KUBECONFIG])
    node = shlex.quote(name)
    script = (f"if ! {kubectl} get node {node} >/dev/null 2>&1; then echo 'not in the API'; exit 0; fi; "
              f"{kubectl} drain {node} --ignore-daemonsets --delete-emptydir-data --timeout={DRAIN_TIMEOUT}s >&2 "
              f"&& {kubectl} delete node {node} >&2 && echo 'drained and deleted'")
    rc, out, err = _on_control_plane(loaded, script, DRAIN_TIMEOUT + 60)
    if rc != 0:
        raise DeliveryError(f"{name}: draining or deleting the node failed (exit {rc}): {err.strip()[-300:]}")
    return out.strip()


def remove_departed(loaded: LoadedSpec, previous: LoadedSpec, state: Path,
                    reset: Callable[[LoadedSpec, list[str]], RunResult], say: Callable[[str], None]) -> list[str]:
    """Drain, delete and reset every worker that left the spec; the names removed. `reset(previous, hosts)`
    runs the reset play there (the caller's deliver path)."""
    removed = []
    for node in departed(previous, loaded):
        say(f"  {node.name}: left the spec: draining it and deleting it from the API")
        say(f"  {node.name}: {drain_and_delete(loaded, node.name)}")
        run = reset(previous, [node.name])
        if not run.succeeded:
            host = run.hosts.get(node.name)
            why = "; ".join(host.errors) if host and host.errors else f"ansible {run.status}, rc {run.rc}"
            raise DeliveryError(f"{node.name}: the reset play failed ({why}); it is out of the API, rerun apply to retry")
        say(f"  {node.name}: reset (kubeadm reset, kubelet state and CNI configuration removed)")
        removed.append(node.name)
    return removed
