"""A namespace created after apply gets the baseline from the namespace-baseline controller: default deny
with DNS and same-namespace traffic allowed, Pod Security labels, no service-account token automount, and
a baseline object deleted by hand comes back. Real cluster, real kube-router, real admission.

kube-system is the other side of the traffic checks: it has no NetworkPolicy, so what is refused there is
refused by the new namespace's own policies (egress for its client, ingress for its server).
"""
from __future__ import annotations

import json

import pytest

from hardened_cluster.deliver.converge import converge
import live_cluster
from live_cluster import kubectl, pod, wait_for

pytestmark = pytest.mark.lab

LATER = "hc-later"
POLICIES = {"default-deny", "allow-dns", "allow-same-namespace"}


@pytest.fixture(scope="module")
def cluster(lab, lab_spec, lab_state, bundle):
    """Every phase applied to the lab (as tests/lab/test_kubernetes_cluster.py), the controller rolled out."""
    lines: list[str] = []
    result, _ = converge(lab_spec, check=False, state=lab_state, progress=lines.append)
    assert result.succeeded, "\n".join(lines[-40:])
    assert "objects" in result.phases
    cluster = live_cluster.access(lab_state, bundle)
    kubectl(cluster, "-n", "kube-system", "rollout", "status", "deployment/namespace-baseline", "--timeout=180s",
            timeout=200)
    return cluster


@pytest.fixture(scope="module")
def later(cluster):
    """A namespace created after apply, once the controller has given it the baseline."""
    kubectl(cluster, "create", "namespace", LATER)
    try:
        wait_for("the baseline in the new namespace",
                 lambda: policies(cluster) == POLICIES and default_sa(cluster).get("automountServiceAccountToken") is False
                 and labels(cluster).get("pod-security.kubernetes.io/enforce") == "restricted", timeout=120)
        yield LATER
    finally:
        kubectl(cluster, "delete", "namespace", LATER, "--wait=false", check=False)


def get(cluster, *args) -> dict:
    return json.loads(kubectl(cluster, "get", *args, "-o", "json").stdout)


def policies(cluster) -> set[str]:
    return {p["metadata"]["name"] for p in get(cluster, "-n", LATER, "networkpolicies")["items"]}


def default_sa(cluster) -> dict:
    found = kubectl(cluster, "-n", LATER, "get", "serviceaccount", "default", "-o", "json", check=False)
    return json.loads(found.stdout) if found.returncode == 0 else {}


def labels(cluster) -> dict:
    return get(cluster, "namespace", LATER)["metadata"].get("labels", {})


def server(cluster, name, namespace, node) -> str:
    """An HTTP server pod; its address once it runs."""
    kubectl(cluster, "apply", "-f", "-",
            input=pod(name, namespace, ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/etc"], node=node))

    def address():
        status = get(cluster, "-n", namespace, "pod", name)["status"]
        return status.get("phase") == "Running" and status.get("podIP")
    return wait_for(f"pod {namespace}/{name}", address)


def exit_code(cluster, name, namespace, script, node="worker-1") -> int:
    """Run `script` in a pod to completion; its exit code."""
    kubectl(cluster, "apply", "-f", "-", input=pod(name, namespace, ["/bin/busybox", "sh", "-c", script], node=node))
    try:
        def terminated():
            for c in get(cluster, "-n", namespace, "pod", name)["status"].get("containerStatuses", []):
                if "terminated" in c.get("state", {}):
                    return c["state"]["terminated"]
            return None
        return wait_for(f"pod {namespace}/{name}", terminated, timeout=240)["exitCode"]
    finally:
        kubectl(cluster, "-n", namespace, "delete", "pod", name, "--wait=false", check=False)


# kube-router admits a new pod's address to its sets within seconds: a reachable target is retried for a
# while; an unreachable one is tried only after that while, so a policy not yet in place cannot pass for one.
def reaches(ip: str) -> str:
    return (f"for i in 1 2 3 4 5 6 7 8 9 10; do /bin/busybox nc -w 3 {ip} 8080 </dev/null && exit 0; "
            "/bin/busybox sleep 2; done; exit 1")


def refused(ip: str) -> str:
    return (f"/bin/busybox sleep 15; for i in 1 2 3; do /bin/busybox nc -w 3 {ip} 8080 </dev/null && exit 0; "
            "done; exit 1")


def test_a_later_namespace_gets_labels_policies_and_no_token_automount(cluster, later):
    ns = get(cluster, "namespace", later)["metadata"]
    for mode in ("enforce", "audit", "warn"):
        assert ns["labels"][f"pod-security.kubernetes.io/{mode}"] == "restricted"
    deny = get(cluster, "-n", later, "networkpolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    assert default_sa(cluster)["automountServiceAccountToken"] is False
    # A pod that does not say: no token is mounted into it.
    kubectl(cluster, "apply", "-f", "-", input=pod("hc-notoken", later, ["/bin/busybox", "true"], automount=None))
    try:
        volumes = get(cluster, "-n", later, "pod", "hc-notoken")["spec"].get("volumes", [])
        assert [v["name"] for v in volumes if v["name"].startswith("kube-api-access")] == []
    finally:
        kubectl(cluster, "-n", later, "delete", "pod", "hc-notoken", "--wait=false", check=False)


def test_a_privileged_pod_is_rejected_in_a_later_namespace(cluster, later):
    answer = kubectl(cluster, "apply", "-f", "-", check=False,
                     input=pod("hc-privileged", later, ["/bin/busybox", "true"], security={"privileged": True}))
    assert answer.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in answer.stderr and "privileged" in answer.stderr


def test_a_later_namespace_is_isolated_but_same_namespace_and_dns_work(cluster, later):
    inside = server(cluster, "hc-web", later, "worker-2")
    outside = server(cluster, "hc-web-outside", "kube-system", "worker-2")
    try:
        assert exit_code(cluster, "hc-same", later, reaches(inside)) == 0
        assert exit_code(cluster, "hc-dns", later,
                         "for i in 1 2 3 4 5; do /bin/busybox nslookup kubernetes.default.svc.cluster.local "
                         "&& exit 0; /bin/busybox sleep 2; done; exit 1") == 0
        # The server outside is up (a kube-system pod reaches it), but not from the new namespace (egress)...
        assert exit_code(cluster, "hc-control", "kube-system", reaches(outside)) == 0
        assert exit_code(cluster, "hc-egress", later, refused(outside)) != 0
        # ...and the new namespace's server is not reachable from outside it (ingress).
        assert exit_code(cluster, "hc-ingress", "kube-system", refused(inside)) != 0
    finally:
        kubectl(cluster, "-n", later, "delete", "pod", "hc-web", "--wait=false", check=False)
        kubectl(cluster, "-n", "kube-system", "delete", "pod", "hc-web-outside", "--wait=false", check=False)


def test_a_policy_or_label_removed_by_hand_comes_back(cluster, later):
    before = get(cluster, "-n", later, "networkpolicy", "default-deny")["metadata"]["uid"]
    kubectl(cluster, "-n", later, "delete", "networkpolicy", "default-deny")
    back = wait_for("default-deny again", lambda: "default-deny" in policies(cluster), timeout=60)
    assert back
    assert get(cluster, "-n", later, "networkpolicy", "default-deny")["metadata"]["uid"] != before
    kubectl(cluster, "label", "namespace", later, "pod-security.kubernetes.io/enforce-")
    wait_for("the enforce label again",
             lambda: labels(cluster).get("pod-security.kubernetes.io/enforce") == "restricted", timeout=60)
    kubectl(cluster, "-n", later, "patch", "serviceaccount", "default", "-p", '{"automountServiceAccountToken": true}')
    wait_for("no token automount again", lambda: default_sa(cluster).get("automountServiceAccountToken") is False,
             timeout=60)


def test_the_spec_namespaces_and_system_namespaces_are_left_alone(cluster, later):
    # apps is the spec's (cluster_objects keeps it); kube-system is a system namespace.
    for namespace in ("apps", "kube-system"):
        managers = {m["manager"] for m in get(cluster, "namespace", namespace)["metadata"].get("managedFields", [])}
        assert "namespace-baseline" not in managers, namespace
    assert get(cluster, "-n", "kube-system", "networkpolicies")["items"] == []
