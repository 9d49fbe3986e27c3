"""Day-1 changes on the live cluster: a changed spec reaches the running control plane, and drift finds
(and apply undoes) what was changed by hand on a node or through the API.

- An admission plugin switched on in the spec is in the running kube-apiserver's command line (read from
  /proc) and acts on pods after `apply`; switched off again, it is gone.
- A changed audit policy (a mounted file, no flag changes) restarts the API server through the digest
  annotation, and the audit log follows the new level.
- A hand-edited static pod manifest and a changed kubelet config take effect on their nodes, `drift`
  names each by host, file and CIS ID, `apply` restores both and their effect.
- A deleted NetworkPolicy and a removed RuntimeClass: `drift` (with the rerun fingerprint, as users run
  it) names them, `apply` brings them back.

After each change: `drift --full` of the hosts it touched is clean. Each test leaves the cluster as it found
it (tests/lab/test_kubernetes_rerun.py, after every module, proves it with a full rerun of every host).
"""
from __future__ import annotations

import json
import re
import shutil
import time

import pytest
import live_cluster
from live_cluster import CLUSTER_PHASES, assert_clean, drift, kubectl, pod, wait_for

from hardened_cluster.deliver.artifacts import INSTALL
from hardened_cluster.spec.load import load_spec
from hardened_cluster.spec.model import LoadedSpec

pytestmark = pytest.mark.lab

CRICTL = f"{INSTALL['crictl']}/crictl"
KUBECTL = INSTALL["kubectl"]
APISERVER_MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"
KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
DIGEST_ANNOTATION = "hardened-cluster.io/start-inputs-sha256"
# The running API server's container ID, again after its /readyz answers, then its command line.
READ_APISERVER = (
    f"id=$({CRICTL} ps --name '^kube-apiserver$' --state running -q) && [ -n \"$id\" ] && echo \"$id\" && "
    f"{KUBECTL} --kubeconfig /etc/kubernetes/admin.conf get --raw /readyz >/dev/null && "
    f"{CRICTL} ps --name '^kube-apiserver$' --state running -q && "
    f"pid=$({CRICTL} inspect -o go-template --template '{{{{.info.pid}}}}' \"$id\") && cat /proc/$pid/cmdline"
)


@pytest.fixture(scope="module")
def cluster(lab, lab_spec, lab_state, bundle):
    """The cluster applied (a rerun when test_kubernetes_cluster.py brought it up in this session)."""
    apply(lab_spec, lab_state)
    return live_cluster.access(lab_state, bundle)


def apply(loaded: LoadedSpec, state, **options):
    return live_cluster.apply(loaded, state, phases=CLUSTER_PHASES, **options)


def variant(lab_spec: LoadedSpec, tmp_path, change) -> LoadedSpec:
    """The lab spec with `change` applied to its text, beside the same pinned host keys."""
    text = lab_spec.path.read_text()
    changed = change(text)
    assert changed != text
    directory = tmp_path / "variant"
    directory.mkdir()
    (directory / "cluster.yaml").write_text(changed)
    shutil.copy(lab_spec.path.parent / "known_hosts", directory / "known_hosts")
    return load_spec(directory / "cluster.yaml")


def sh(lab, node, script, check=True) -> str:
    return lab.lab.exec(node, ["sh", "-c", script], check=check).stdout.decode()


def apiserver(lab) -> tuple[str, dict[str, str]]:
    """cp-1's running kube-apiserver once it is ready: its container ID and the flags in its process's
    /proc cmdline, read twice around a /readyz so both belong to one container that serves."""
    def read():
        result = lab.lab.exec("cp-1", ["sh", "-c", READ_APISERVER], check=False)
        if result.returncode != 0:
            return None
        first, second, cmdline = result.stdout.split(b"\n", 2)
        return (first.decode(), cmdline) if first == second else None

    container, cmdline = wait_for("cp-1's kube-apiserver ready", read, timeout=240)
    argv = cmdline.split(b"\0")
    assert argv[0].endswith(b"kube-apiserver"), argv[0]
    flags = dict(a.decode()[2:].partition("=")[::2] for a in argv[1:] if a.startswith(b"--"))
    return container, flags


def plugins(flags: dict[str, str]) -> list[str]:
    return flags["enable-admission-plugins"].split(",")


def pull_policy(cluster) -> str:
    """The imagePullPolicy the API server admits a pod asking for `Never` with (a server-side dry run)."""
    manifest = pod("hc-pull", "default", ["/bin/busybox", "true"])
    return kubectl(cluster, "create", "--dry-run=server", "-f", "-", "-o",
                   "jsonpath={.spec.containers[0].imagePullPolicy}", input=manifest).stdout


def changed_items(changes) -> dict[str, str | None]:
    return {c.item: c.cis for c in changes}


def test_an_admission_plugin_switched_on_in_the_spec_reaches_the_running_api_server(cluster, lab, lab_spec,
                                                                                     lab_state, tmp_path):
    before, flags = apiserver(lab)
    assert "AlwaysPullImages" not in plugins(flags)
    assert pull_policy(cluster) == "Never"
    pulling = variant(lab_spec, tmp_path, lambda t: t.replace("always_pull_images: false", "always_pull_images: true"))
    try:
        result = apply(pulling, lab_state)
        assert APISERVER_MANIFEST in changed_items(result.hosts["cp-1"].changes)
        during, flags = apiserver(lab)
        assert during != before
        assert "AlwaysPullImages" in plugins(flags)
        # The plugin acts: a pod that asks never to pull is admitted with Always.
        assert pull_policy(cluster) == "Always"
    finally:
        apply(lab_spec, lab_state)
    after, flags = apiserver(lab)
    assert after != during
    assert "AlwaysPullImages" not in plugins(flags)
    assert pull_policy(cluster) == "Never"
    assert drift(lab_spec, lab_state) == {}


def _audit_level(cluster, lab, lab_spec, name: str) -> str:
    """The level the audit log records a ServiceAccount's creation at (a resource the spec's level governs)."""
    kubectl(cluster, "-n", "default", "create", "serviceaccount", name)
    kubectl(cluster, "-n", "default", "delete", "serviceaccount", name)
    log = str(lab_spec.spec.audit.log_path)

    def level():
        lines = [json.loads(line) for line in sh(lab, "cp-1", f"cat {log}").splitlines() if f'"{name}"' in line]
        return next((e["level"] for e in lines if e["verb"] == "create"), None)
    return wait_for(f"the audit event of {name}", level, timeout=30)


def test_a_changed_audit_policy_restarts_the_api_server_by_the_digest_of_its_inputs(cluster, lab, lab_spec,
                                                                                    lab_state, tmp_path):
    assert lab_spec.spec.audit.level == "Metadata"
    before, flags_before = apiserver(lab)
    manifest_before = sh(lab, "cp-1", f"cat {APISERVER_MANIFEST}")
    assert _audit_level(cluster, lab, lab_spec, f"hc-audit-{int(time.time())}") == "Metadata"
    requests = variant(lab_spec, tmp_path, lambda t: t.rstrip("\n") + "\naudit:\n  level: Request\n")
    try:
        result = apply(requests, lab_state)
        changed = changed_items(result.hosts["cp-1"].changes)
        assert "/etc/kubernetes/audit/audit-policy.yaml" in changed and APISERVER_MANIFEST in changed
        during, flags = apiserver(lab)
        # Restarted with the very same flags: the file it reads at start changed, and the digest with it.
        assert during != before and flags == flags_before
        manifest = sh(lab, "cp-1", f"cat {APISERVER_MANIFEST}")
        old = re.search(f"{DIGEST_ANNOTATION}: (\\S+)", manifest_before).group(1)
        new = re.search(f"{DIGEST_ANNOTATION}: (\\S+)", manifest).group(1)
        assert old != new
        assert _audit_level(cluster, lab, lab_spec, f"hc-audit-{int(time.time())}") == "Request"
    finally:
        apply(lab_spec, lab_state)
    after, _ = apiserver(lab)
    assert after != during
    assert sh(lab, "cp-1", f"cat {APISERVER_MANIFEST}") == manifest_before
    assert _audit_level(cluster, lab, lab_spec, f"hc-audit-{int(time.time())}") == "Metadata"


def _read_only_port_answers(lab, node) -> bool:
    return sh(lab, node, "python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:10255/healthz',"
              " timeout=3).read().decode())\" 2>/dev/null", check=False).strip() == "ok"


def test_a_hand_edited_manifest_and_kubelet_config_are_reported_by_file_and_cis_id_and_restored(
        cluster, lab, lab_spec, lab_state):
    before, flags = apiserver(lab)
    assert flags["profiling"] == "false"
    try:
        sh(lab, "cp-1", f"sed -i 's/--profiling=false/--profiling=true/' {APISERVER_MANIFEST}")
        sh(lab, "worker-1",
           f"sed -i 's/^readOnlyPort: 0$/readOnlyPort: 10255/' {KUBELET_CONFIG} && systemctl restart kubelet")
        # Both edits take effect: the kubelet restarts the API server with profiling on, worker-1 serves
        # the unauthenticated read-only port.
        wait_for("the tampered API server", lambda: apiserver(lab)[1].get("profiling") == "true", timeout=240)
        wait_for("the read-only port", lambda: _read_only_port_answers(lab, "worker-1"), timeout=120)

        found = drift(lab_spec, lab_state)
        assert set(found) == {"cp-1", "worker-1"}, {h: [c.describe() for c in cs] for h, cs in found.items()}
        cp = changed_items(found["cp-1"])
        assert "1.1.1" in cp[APISERVER_MANIFEST] and "1.2." in cp[APISERVER_MANIFEST], cp
        assert changed_items(found["worker-1"]).get(KUBELET_CONFIG) == "4.1.9, 4.1.10", found["worker-1"]
    finally:
        # Restored however the test ends, so a failure here does not fail the next tests too.
        apply(lab_spec, lab_state)
    _, flags = apiserver(lab)
    assert flags["profiling"] == "false"
    assert not _read_only_port_answers(lab, "worker-1")
    assert_clean(lab_spec, lab_state, ["cp-1", "worker-1"])


def _runtime_class_admitted(cluster) -> tuple[bool, str]:
    manifest = pod("hc-gvisor", "default", ["/bin/busybox", "true"], runtime_class="gvisor")
    answer = kubectl(cluster, "create", "--dry-run=server", "-f", "-", input=manifest, check=False)
    return answer.returncode == 0, answer.stderr


def test_a_deleted_network_policy_and_runtime_class_are_reported_and_restored(cluster, lab_spec, lab_state):
    policies = kubectl(cluster, "-n", "apps", "get", "networkpolicy", "-o", "name").stdout.split()
    assert policies, "the apps namespace has its baseline policies"
    assert _runtime_class_admitted(cluster)[0]
    try:
        kubectl(cluster, "-n", "apps", "delete", policies[0])
        kubectl(cluster, "delete", "runtimeclass", "gvisor")
        admitted, reason = _runtime_class_admitted(cluster)
        assert not admitted and 'RuntimeClass "gvisor" not found' in reason, reason

        # The default drift, with the rerun fingerprint: nothing on any node changed, the API's objects did.
        found = drift(lab_spec, lab_state)
        assert set(found) == {"cp-1"}, {h: [c.describe() for c in cs] for h, cs in found.items()}
        items = changed_items(found["cp-1"])
        assert items.get("manifests/networkpolicies.yaml") == "5.3.2", items
        assert "manifests/runtimeclass-gvisor.yaml" in items, items
    finally:
        apply(lab_spec, lab_state)
    assert kubectl(cluster, "-n", "apps", "get", "networkpolicy", "-o", "name").stdout.split() == policies
    assert _runtime_class_admitted(cluster)[0]
    assert_clean(lab_spec, lab_state, ["cp-1"])
