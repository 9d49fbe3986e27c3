"""Each role's variables for a host, computed once from the typed plan.

The inventory is these variables; the rerun key and the Pulumi tier inputs are digests of the same
variables (deliver.delivered_digest), so what Ansible gets, what a rerun compares and what `pulumi up`
diffs cannot disagree. Every variable is named after its role (`<role>_...`); how the controller
reaches the host is under CONNECTION.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hardened_cluster.deliver import artifacts
from hardened_cluster.plan import access, kubeadm
from hardened_cluster.secrets.pki import RENEW_BEFORE
from hardened_cluster.verify import kube_bench
from hardened_cluster.plan.render import (CONTROL_PLANE_CONFIG, SANDBOX_HANDLERS, UPGRADE_CONFIG, HostFacts, HostPlan, Plan, etcd_cluster_token,
                                   etcd_endpoints)
from hardened_cluster.spec.model import Node

CONNECTION = "connection"
# Each builder below gives only its role's variables; artifacts.host_vars gives these two roles' at once.
_ARTIFACT_ROLES = ("container_runtime", "kubernetes_node")


def role_vars(plan: Plan, node: Node, plan_dir: Path, roles: Iterable[str] | None = None) -> dict[str, dict]:
    """Per role that has variables or planned files on `node` (of `roles`, default all), its variables;
    under CONNECTION how the host is reached. `plan_dir` is where the plan tree is written (the files' src)."""
    spec = plan.spec
    host = plan.hosts[node.name]
    wanted = None if roles is None else set(roles)

    def want(role: str) -> bool:
        return wanted is None or role in wanted

    out: dict[str, dict] = {CONNECTION: {
        "ansible_host": str(node.address),
        "ansible_port": spec.ssh_port(node),
        "ansible_user": spec.ssh_user(node),
    }}
    if want("validate"):
        out["validate"] = {"validate_node_address": str(node.address)}
    if want("os_hardening"):
        hardening = spec.os_hardening
        out["os_hardening"] = {
            "os_hardening_sysctl_enabled": hardening.sysctl,
            "os_hardening_swap_enabled": hardening.swap_off,
            "os_hardening_permissions_enabled": hardening.sensitive_file_permissions,
            "os_hardening_setuid_enabled": hardening.remove_setuid,
            "os_hardening_motd_enabled": hardening.remove_dynamic_motd,
            "os_hardening_services_enabled": bool(hardening.disable_services),
            "os_hardening_disable_services": list(hardening.disable_services),
        }
    if want("ssh_hardening"):
        out["ssh_hardening"] = {
            "ssh_hardening_enabled": spec.ssh_hardening.enabled,
            "ssh_hardening_admin_user": spec.ssh_user(node),
            "ssh_hardening_node_address": str(node.address),
            "ssh_hardening_port": spec.ssh_port(node),
        }
    if want("access"):
        out["access"] = {
            "access_admin_key": access.admin_public_key(spec) or "",
            "access_authorized_keys": access.authorized_keys(spec, node),
        }
    if want("firewall"):
        # The lockout guard: the planned ruleset must admit this port from where the controller's session comes.
        out["firewall"] = {"firewall_ssh_port": spec.ssh_port(node)}
        controller = plan.facts.get(node.name, HostFacts()).controller_address
        if controller:
            out["firewall"]["firewall_controller_address"] = controller
    if want("etcd") and "etcd" in node.roles:
        snap = spec.etcd.snapshot
        out["etcd"] = {
            "etcd_members": [{"name": n.name, "address": str(n.address)} for n in spec.nodes_with("etcd")],
            "etcd_client_port": spec.etcd.client_port,
            "etcd_peer_port": spec.etcd.peer_port,
            "etcd_data_dir": str(spec.etcd.data_dir),
            "etcd_cluster_token": etcd_cluster_token(spec),
            "etcd_bin_dir": spec.etcd_bin_dir,
            **artifacts.etcd_host_vars(spec),
            "etcd_snapshot_enabled": snap.enabled,
            "etcd_snapshot_dir": str(snap.directory),
            "etcd_snapshot_encrypted": snap.encryption_key is not None,
        }
    if want("load_balancer") and "load-balancer" in node.roles:
        out["load_balancer"] = {
            "load_balancer_address": str(node.address),
            "load_balancer_port": spec.cluster.api_port,
        }
    kube_roles = {"container_runtime", "kubernetes_node", "control_plane", "worker", "cluster_objects", "kube_bench"}
    if host.runtimes and any(want(r) for r in kube_roles):
        out.update(_kubernetes_vars(plan, host, plan_dir, want))
    for role in sorted({f.role for f in host.files.values()}):
        if want(role):
            out.setdefault(role, {})[f"{role}_files"] = _file_entries(host, role, plan_dir)
    return out


def host_vars(plan: Plan, node: Node, plan_dir: Path) -> dict:
    """The inventory's variables for `node`: every role's, side by side."""
    return {k: v for variables in role_vars(plan, node, plan_dir).values() for k, v in variables.items()}


def _file_entries(host: HostPlan, role: str, plan_dir: Path) -> list[dict]:
    return [
        {"dest": f.path, "src": str(plan_dir / host.node.name / f.path.lstrip("/")), "mode": f.mode,
         "owner": f.owner, "group": f.group, "secret": f.secret, "sha256": f.sha256}
        for f in sorted(host.for_role(role), key=lambda f: f.path)
    ]


def _kubernetes_vars(plan: Plan, host: HostPlan, plan_dir: Path, want) -> dict[str, dict]:
    """The runtime's and Kubernetes roles' variables, from the spec and the typed plan."""
    spec, node = plan.spec, host.node
    shared = artifacts.host_vars(spec, host)
    out = {role: {k: v for k, v in shared.items() if k.startswith(role + "_")} for role in _ARTIFACT_ROLES if want(role)}
    bin_dir = shared["kubernetes_node_bin_dir"]
    first_cp = spec.nodes_with("control-plane")[0].name
    if "control-plane" in node.roles:
        init = node.name == first_cp
        if want("control_plane"):
            cluster = kubeadm.cluster_configuration(spec, etcd_endpoints(spec))
            endpoint = kubeadm.local_api_endpoint(spec, node)
            out["control_plane"] = {
                "control_plane_bin_dir": bin_dir,
                "control_plane_init": init,
                "control_plane_init_host": first_cp,
                "control_plane_apiserver_flags": kubeadm.component_flags("kube-apiserver", cluster, endpoint),
                "control_plane_render_config": CONTROL_PLANE_CONFIG,
                "control_plane_apiserver_inputs_sha256": kubeadm.start_inputs_digest(
                    cluster, {f.path: f.sha256 for f in host.for_role("control_plane")}),
                "control_plane_admin_conf_dest": str(plan_dir.parent / "admin.conf"),
                "control_plane_certs_renew_within_days": RENEW_BEFORE.days,
                "control_plane_upgrade_config": UPGRADE_CONFIG,
            }
        if want("cluster_objects"):
            labelled = {name: _sandboxes(other) for name, other in plan.hosts.items() if _sandboxes(other)}
            out["cluster_objects"] = {
                "cluster_objects_kubectl": f"{bin_dir}/kubectl",
                "cluster_objects_manifests": [
                    {"name": f.path, "src": str(plan_dir / "cluster" / f.path)} for f in plan.manifests.values()
                ] if init else [],
                "cluster_objects_node_labels": {
                    name: {kubeadm.runtime_label(r): "true" for r in sandboxes} for name, sandboxes in labelled.items()
                } if init else {},
                "cluster_objects_nodes": {
                    n.name: str(n.address) for n in spec.nodes if {"control-plane", "worker"} & set(n.roles)
                } if init else {},
            }
    elif "worker" in node.roles and want("worker"):
        out["worker"] = {"worker_bin_dir": bin_dir, "worker_token_host": first_cp, "worker_upgrade_config": UPGRADE_CONFIG}
    if spec.runtimes.artifacts == "bundle" and want("kube_bench"):
        out["kube_bench"] = kube_bench.host_vars(spec, node)
    return out


def _sandboxes(host: HostPlan) -> list[str]:
    """Sandbox runtimes (RuntimeClass names) a host's containerd has."""
    return [r for r in host.runtimes if r in SANDBOX_HANDLERS]
