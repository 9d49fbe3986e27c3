"""Guards of the control_plane role on the real cluster: kubeadm's PKI is readable by root alone (a loosened
file is found by drift and fixed by apply), and a rerun on the initialised control plane never runs
`kubeadm init` again.
"""
from __future__ import annotations

import json
import subprocess

import pytest

import live_cluster
from hardened_cluster.deliver.converge import converge

pytestmark = [pytest.mark.lab, pytest.mark.long]

CP = "cp-1"
PKI = "/etc/kubernetes/pki"
PKI_CIS = "1.1.19, 1.1.20, 1.1.21"
# kubeadm writes these (external etcd: no etcd/ CA); certificates 0644, keys 0600, before the role runs.
KUBEADM_PKI = {"ca.crt", "ca.key", "apiserver.crt", "apiserver.key", "apiserver-kubelet-client.crt",
               "apiserver-kubelet-client.key", "front-proxy-ca.crt", "front-proxy-ca.key", "front-proxy-client.crt",
               "front-proxy-client.key", "sa.key", "sa.pub"}


@pytest.fixture(scope="module")
def cluster(lab, lab_spec, lab_state, bundle):
    """Every phase applied to the lab from empty (as tests/lab/test_kubernetes_cluster.py)."""
    lines: list[str] = []
    result, _ = converge(lab_spec, check=False, state=lab_state, progress=lines.append)
    assert result.succeeded, "\n".join(lines[-40:])
    assert "kubernetes" in result.phases
    return live_cluster.access(lab_state, bundle)


def sh(lab, script: str, check: bool = True) -> str:
    return lab.lab.exec(CP, ["sh", "-c", script], check=check).stdout.decode().strip()


def kubectl(cluster, *args) -> str:
    return subprocess.run([cluster["kubectl"], "--kubeconfig", str(cluster["kubeconfig"]), *args],
                          capture_output=True, text=True, check=True, timeout=120).stdout


def readable_by_nobody(lab) -> list[str]:
    """The PKI files an unprivileged user on the node can read."""
    return sh(lab, f"find {PKI} -type f | while read -r f; do "
                   "setpriv --reuid=65534 --regid=65534 --clear-groups cat \"$f\" >/dev/null 2>&1 && echo \"$f\"; "
                   "done; true").split()


def test_kubeadm_pki_is_root_only_and_a_loosened_file_is_found_and_fixed(cluster, lab, lab_spec, lab_state):
    files = dict(line.split(" ", 1)[::-1] for line in sh(lab, f"find {PKI} -type f -printf '%m:%U:%G %P\\n'").splitlines())
    assert KUBEADM_PKI <= set(files), files
    assert {f: m for f, m in files.items() if m != "600:0:0"} == {}
    assert readable_by_nobody(lab) == []

    # As kubeadm leaves them: a certificate and a key world-readable, and a user on the node reads the key.
    sh(lab, f"chmod 0644 {PKI}/ca.crt {PKI}/apiserver.key")
    assert sorted(readable_by_nobody(lab)) == [f"{PKI}/apiserver.key", f"{PKI}/ca.crt"]

    drift, _ = converge(lab_spec, check=True, phases=["kubernetes"], hosts=[CP], state=lab_state, full=True)
    assert drift.succeeded
    found = {(c.item, c.cis) for c in drift.hosts[CP].changes if c.role == "control_plane"}
    assert {(f"{PKI}/ca.crt", PKI_CIS), (f"{PKI}/apiserver.key", PKI_CIS)} <= found, found
    assert readable_by_nobody(lab) != []  # drift changed nothing

    # The rerun shortcut notices the mode change: a plain apply fixes it.
    fixed, _ = converge(lab_spec, check=False, phases=["kubernetes"], hosts=[CP], state=lab_state)
    assert fixed.succeeded and not fixed.hosts[CP].unchanged
    assert readable_by_nobody(lab) == []
    assert sh(lab, f"stat -c '%a' {PKI}/ca.crt {PKI}/apiserver.key").split() == ["600", "600"]

    clean, _ = converge(lab_spec, check=True, phases=["kubernetes"], hosts=[CP], state=lab_state, full=True)
    assert clean.succeeded and not clean.changed, [c.describe() for c in clean.hosts[CP].changes]


def _identity(cluster, lab) -> dict:
    """What `kubeadm init` run again would replace: manifests, kubeconfigs and certificates (content and
    change time), the running API server container, the cluster's kube-system namespace."""
    files = sh(lab, "stat -c '%n %Z' /etc/kubernetes/manifests/*.yaml /etc/kubernetes/*.conf "
                    f"{PKI}/*.crt {PKI}/*.key && sha256sum /etc/kubernetes/manifests/*.yaml /etc/kubernetes/*.conf "
                    f"{PKI}/*.crt")
    apiserver = sh(lab, "crictl ps --name kube-apiserver --state running -q")
    namespace = json.loads(kubectl(cluster, "get", "namespace", "kube-system", "-o", "json"))["metadata"]["uid"]
    return {"files": files, "apiserver": apiserver, "kube-system": namespace}


def test_a_rerun_on_the_initialised_control_plane_never_runs_kubeadm_init(cluster, lab, lab_spec, lab_state):
    before = _identity(cluster, lab)
    assert before["apiserver"] and len(before["files"].splitlines()) > 20
    # Every role on the control plane, no fingerprint shortcut: the bootstrap tasks are evaluated on the live
    # cluster (every host's full rerun is tests/lab/test_kubernetes_rerun.py).
    lines: list[str] = []
    rerun, _ = converge(lab_spec, check=False, state=lab_state, full=True, hosts=[CP], progress=lines.append)
    assert rerun.succeeded, "\n".join(lines[-40:])
    assert not rerun.hosts[CP].unchanged
    assert {h: [c.describe() for c in r.changes] for h, r in rerun.hosts.items() if r.changed} == {}
    assert _identity(cluster, lab) == before
