"""Helpers of the lab tests: etcdctl on a member, and the live Kubernetes cluster (a `cluster` dict:
kubectl, kubeconfig) with the pods the tests run on it."""
from __future__ import annotations

import json
import subprocess
import time

import yaml

from hardened_cluster.deliver.ansible import PHASES
from hardened_cluster.deliver.bundle import kube_router_image
from hardened_cluster.deliver.converge import converge
from hardened_cluster.spec.model import Spec
from hardened_cluster.verify.live_cluster import pod_manifest
from hardened_cluster.verify.probes import etcdctl_argv

# Every phase but the kube-bench gate (it has its own tests, and runs kube-bench on each changed host).
CLUSTER_PHASES = [p for p in PHASES if p != "benchmark"]

# busybox is in the bundle's kube-router image, on every node; no registry is reachable.
TOOLBOX = kube_router_image()


def etcdctl(spec: Spec, *, client_cert: bool = True) -> list[str]:
    """etcdctl on a member as the health checks run it (verify.etcdctl_argv), or without the client certificate."""
    argv = etcdctl_argv(spec)
    if not client_cert:
        argv = [a for a in argv if not a.startswith(("--cert=", "--key="))]
    return ["env", "ETCDCTL_API=3", *argv]


def kubectl(cluster, *args, input=None, check=True, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([cluster["kubectl"], "--kubeconfig", str(cluster["kubeconfig"]), *args], input=input,
                          capture_output=True, text=True, check=check, timeout=timeout)


def wait_for(what, predicate, timeout=180, every=2.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def apply(loaded, state, **options):
    """converge() applying `options` (phases, hosts...); asserts it succeeded, showing the last progress lines."""
    lines: list[str] = []
    result, _ = converge(loaded, check=False, state=state, progress=lines.append, **options)
    assert result.succeeded, ({h: r.errors for h, r in result.hosts.items() if r.errors}, lines[-40:])
    return result


def drift(loaded, state, *, phases=CLUSTER_PHASES, full=False, hosts=None) -> dict[str, list]:
    """The drifted hosts and their changes."""
    result, _ = converge(loaded, check=True, phases=phases, state=state, full=full, hosts=hosts)
    assert result.succeeded, {h: r.errors for h, r in result.hosts.items() if r.errors}
    return {h: r.changes for h, r in result.hosts.items() if r.changed}


def assert_clean(loaded, state, hosts: list[str], phases=CLUSTER_PHASES) -> None:
    """Check mode of every role on `hosts` (no fingerprint shortcut) finds nothing: what a test changed
    there is restored. Every host's full rerun is tests/lab/test_kubernetes_rerun.py, after every module."""
    found = drift(loaded, state, phases=phases, full=True, hosts=hosts)
    assert found == {}, {h: [c.describe() for c in cs] for h, cs in found.items()}


def access(state, bundle) -> dict:
    """The `cluster` dict: the bundle's kubectl and the admin kubeconfig the control plane handed back."""
    return {"kubeconfig": state / "admin.conf", "kubectl": str(bundle.path("kubectl"))}


def pod(name, namespace, command, runtime_class=None, node=None, security=None, labels=None, automount=False) -> str:
    """A pod of the toolbox image running `command` (verify.live_cluster.pod_manifest), as YAML."""
    return yaml.safe_dump(pod_manifest(name, namespace, command, TOOLBOX, runtime_class, node, security, labels,
                                       automount))


def finished(cluster, name, namespace) -> dict | None:
    """The pod's terminated state once it has run to completion, else None."""
    status = json.loads(kubectl(cluster, "-n", namespace, "get", "pod", name, "-o", "json").stdout)["status"]
    for container in status.get("containerStatuses", []):
        terminated = container.get("state", {}).get("terminated")
        if terminated:
            return terminated
    return None


def run_pod(cluster, manifest, name, namespace, timeout=180) -> dict:
    kubectl(cluster, "apply", "-f", "-", input=manifest)
    try:
        return wait_for(f"pod {namespace}/{name}", lambda: finished(cluster, name, namespace), timeout)
    finally:
        kubectl(cluster, "-n", namespace, "delete", "pod", name, "--wait=false", check=False)
