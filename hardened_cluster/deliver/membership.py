"""What apply may change in a running cluster's membership.

After a successful apply the state directory keeps the spec as it was applied (`applied-spec.json`, 0600:
the validated document, where it was read from, the host keys it pinned). A new worker or control plane
joins as kubeadm joins any (a control plane by the certificate upload). Refused, naming the node, before any
host is touched: a node leaving the spec (nothing drains, deletes and resets it yet), an etcd member joining (no `etcdctl member add` yet), a node changing role,
and another first control plane (the one kubeadm initialised).
"""
from __future__ import annotations

import json
from pathlib import Path

from hardened_cluster.secrets.store import write_private
from hardened_cluster.spec.model import LoadedSpec, Node, Spec, SpecError, SpecIssue

APPLIED_SPEC = "applied-spec.json"
# The roles a node never gains or loses by apply.
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
                    "apply does not change a node's role")))
        if old is None and "etcd" in node.roles:
            issues.append(SpecIssue(f"nodes[{index}]", (
                f"{node.name} is a new etcd member; apply does not add etcd members yet (etcdctl member add)")))
    for node in departed(previous, loaded):
        issues.append(SpecIssue("nodes", (
            f"{node.name} ({', '.join(node.roles)}) is no longer in the spec; apply does not remove nodes yet "
            "(drain, delete, reset): put it back")))
    first, now = previous.spec.nodes_with("control-plane"), loaded.spec.nodes_with("control-plane")
    if first and now and first[0].name != now[0].name and first[0].name in {n.name for n in now}:
        issues.append(SpecIssue("nodes", (
            f"the first control plane is {now[0].name}, but kubeadm initialised the cluster on {first[0].name}; "
            f"keep {first[0].name} the first control-plane node")))
    if issues:
        raise SpecError(issues, str(loaded.path or ""))
