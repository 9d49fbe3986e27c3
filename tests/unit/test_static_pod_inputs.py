"""The digest of the files the API server reads only when it starts (kubeadm.start_inputs_digest),
on the rendered sample plan: it follows the audit policy, admission and encryption configuration (a key
rotation waits for each API server's restart), and reaches the role as a host variable."""
from __future__ import annotations


import yaml
from test_render import render

from hardened_cluster.plan import kubeadm
from hardened_cluster.plan.render import CONTROL_PLANE_CONFIG
from hardened_cluster.plan.role_vars import host_vars


def _digest(plan, node: str, replaced: dict[str, str] | None = None) -> str:
    host = plan.hosts[node]
    cluster = next(d for d in yaml.safe_load_all(host.files[CONTROL_PLANE_CONFIG].content)
                   if d["kind"] == "ClusterConfiguration")
    files = {f.path: f.sha256 for f in host.for_role("control_plane")} | (replaced or {})
    return kubeadm.start_inputs_digest(cluster, files)


def test_the_digest_follows_the_start_time_inputs_only(tmp_path):
    plan, _ = render("sample", tmp_path / "state")
    base = _digest(plan, "cp-1")
    assert _digest(plan, "cp-1", {"/etc/kubernetes/audit/audit-policy.yaml": "0" * 64}) != base
    assert _digest(plan, "cp-1", {"/etc/kubernetes/admission/admission-config.yaml": "0" * 64}) != base
    # Reloaded by the API server itself too, but only a restart tells when each one serves with the keys.
    assert _digest(plan, "cp-1", {"/etc/kubernetes/encryption/encryption-config.yaml": "0" * 64}) != base
    # Not mounted into the pod.
    assert _digest(plan, "cp-1", {"/etc/kubernetes/kubeadm/kubeadm-init.yaml": "0" * 64}) == base
    assert host_vars(plan, plan.spec.node("cp-1"), tmp_path / "plan")["control_plane_apiserver_inputs_sha256"] == base


def test_the_kubeadm_configurations_name_the_patch_directory(tmp_path):
    plan, _ = render("sample", tmp_path / "state")
    for node in ("cp-1", "cp-2"):
        docs = list(yaml.safe_load_all(plan.hosts[node].files[CONTROL_PLANE_CONFIG].content))
        assert docs[0]["patches"] == {"directory": "/etc/kubernetes/kubeadm/patches"}
        # The same cluster on every control plane, its own endpoint.
        assert docs[0]["localAPIEndpoint"]["advertiseAddress"] == str(plan.spec.node(node).address)
    first = [d for d in yaml.safe_load_all(plan.hosts["cp-1"].files[CONTROL_PLANE_CONFIG].content)]
    second = [d for d in yaml.safe_load_all(plan.hosts["cp-2"].files[CONTROL_PLANE_CONFIG].content)]
    assert first[1] == second[1]
    init = list(yaml.safe_load_all(plan.hosts["cp-1"].files["/etc/kubernetes/kubeadm/kubeadm-init.yaml"].content))
    assert first[1] == next(d for d in init if d["kind"] == "ClusterConfiguration")
