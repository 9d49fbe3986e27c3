"""`hardened-cluster upgrade --to 1.36.3` on a live 1.35.4 cluster: kubeadm upgrade on the control plane,
the workers drained and upgraded one by one, the hardened API server kept, a Deployment never lost.

The upgrade changes the cluster's release for good, so this module runs a lab of its own (tests/conftest.py
OWN_LAB_MODULES: before the session's lab starts, same instance) and takes it down. It needs both bundles:
1.35.4 (the lab's) and 1.36.3 (`hardened-cluster artifacts build --kubernetes 1.36.3`).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import yaml

from hardened_cluster.cli.lab import start
from hardened_cluster.deliver import bundle as bundles
from hardened_cluster.deliver.converge import converge
from hardened_cluster.plan import kubeadm
from hardened_cluster.plan.render import etcd_endpoints
from hardened_cluster.spec.load import load_spec
from hardened_cluster.verify.live_cluster import RESTRICTED, anonymous_status
from live_cluster import TOOLBOX, kubectl, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.long]

FROM, TO = bundles.DEFAULT_KUBERNETES, "1.36.3"
APP = "survivor"
REPLICAS = 2


def _bundle(version):
    try:
        return bundles.load(bundles.default_out(version))
    except bundles.BundleError as exc:
        pytest.skip(f"needs the {version} bundle: {exc}")


def cli(state_base, *args, timeout=3600) -> subprocess.CompletedProcess:
    """The `hardened-cluster` command with its state under `state_base` (state_base/<cluster name>)."""
    return subprocess.run([sys.executable, "-m", "hardened_cluster.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HC_STATE_DIR": str(state_base)})


@pytest.fixture(scope="module")
def old_lab(tmp_path_factory, bundle_spec_text):
    """A 1.35.4 cluster applied from empty on a lab of this module's own, and its spec and state."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("the lab needs root on Linux")
    old, new = _bundle(FROM), _bundle(TO)
    directory = tmp_path_factory.mktemp("upgrade")
    spec = directory / "cluster.yaml"
    spec.write_text(bundle_spec_text(old.root))
    base = tmp_path_factory.mktemp("st")  # short: ssh's ControlPath lives below it
    lab, _, _ = start(spec)
    try:
        loaded = load_spec(spec)
        state = base / loaded.spec.cluster.name
        lines: list[str] = []
        result, _ = converge(loaded, check=False, state=state, progress=lines.append)
        assert result.succeeded, "\n".join(lines[-40:])
        cluster = {"kubeconfig": state / "admin.conf", "kubectl": str(old.path("kubectl"))}
        yield {"lab": lab, "spec": spec, "base": base, "state": state, "cluster": cluster, "new": new}
    finally:
        lab.down()


def _deployment() -> str:
    labels = {"app": APP}
    container = {"name": "c", "image": TOOLBOX, "imagePullPolicy": "Never", "command": ["/bin/busybox", "sleep", "86400"],
                 "securityContext": RESTRICTED}
    return yaml.safe_dump_all([
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": APP, "namespace": "apps"},
         "spec": {"replicas": REPLICAS, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels},
                               # The control plane may take a pod too: a lab with one worker still has
                               # somewhere to reschedule while that worker is drained.
                               "spec": {"automountServiceAccountToken": False, "containers": [container],
                                        "terminationGracePeriodSeconds": 1,
                                        "tolerations": [{"key": "node-role.kubernetes.io/control-plane",
                                                         "operator": "Exists", "effect": "NoSchedule"}]}}}},
        # A drain evicts one of them at a time: the other keeps running while the first is rescheduled.
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": APP, "namespace": "apps"},
         "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}}},
    ])


def _pods(cluster) -> dict[str, dict]:
    items = json.loads(kubectl(cluster, "-n", "apps", "get", "pods", "-l", f"app={APP}", "-o", "json").stdout)["items"]
    return {p["metadata"]["uid"]: {"node": p["spec"].get("nodeName"), "phase": p["status"].get("phase"),
                                   "deleted": "deletionTimestamp" in p["metadata"],
                                   "ready": any(c["type"] == "Ready" and c["status"] == "True"
                                                for c in p["status"].get("conditions", []))} for p in items}


@pytest.fixture(scope="module")
def upgraded(old_lab):
    """The Deployment running, then `hardened-cluster upgrade --to 1.36.3`, sampling the Deployment's
    ready pods every second all along."""
    cluster = old_lab["cluster"]
    kubectl(cluster, "apply", "-f", "-", input=_deployment())
    wait_for("the Deployment ready", lambda: sum(p["ready"] for p in _pods(cluster).values()) == REPLICAS, 240)
    before = _pods(cluster)
    samples: list[int] = []
    seen: dict[str, dict] = dict(before)
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                pods = _pods(cluster)
            except Exception:  # the API server restarting: no sample this time
                pods = None
            if pods is not None:
                samples.append(sum(p["ready"] for p in pods.values()))
                seen.update(pods)
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        done = cli(old_lab["base"], "upgrade", "--spec", str(old_lab["spec"]), "--to", TO, "--quiet")
    finally:
        stop.set()
        sampler.join(30)
    return {"code": done.returncode, "out": done.stdout + done.stderr, "seconds": time.monotonic() - started, "before": before, "samples": samples,
            "seen": seen, **old_lab}


def test_the_upgrade_succeeds_and_reports_every_step(upgraded):
    assert upgraded["code"] == 0, upgraded["out"][-4000:]
    report_line = [line for line in upgraded["out"].splitlines() if line.startswith(f"upgrade {FROM} -> {TO}")]
    assert report_line and "succeeded" in report_line[0], upgraded["out"][-4000:]
    path = report_line[0].rsplit("report: ", 1)[1]
    report = json.loads(open(path).read())
    assert report["succeeded"] and report["from_version"] == FROM and report["to_version"] == TO
    spec = load_spec(upgraded["spec"]).spec
    workers = [n.name for n in spec.nodes_with("worker")]
    steps = [(s["step"], s["host"]) for s in report["steps"]]
    assert steps == [("images", None), ("control-plane", "cp-1"), *[("worker", w) for w in workers], ("converge", None)]
    nodes = report["steps"][1:-1]
    for step in nodes:
        assert (step["before"], step["after"]) == (f"v{FROM}", f"v{TO}"), step
    # The control plane's step ran kubeadm's upgrade; the workers' ran `kubeadm upgrade node`.
    assert any("Upgrade the control plane with kubeadm" in c for c in nodes[0]["changed"])
    assert all(any("Upgrade the node with kubeadm" in c for c in s["changed"]) for s in nodes[1:])


def test_every_node_and_the_api_server_report_the_new_release(upgraded):
    cluster = upgraded["cluster"]
    nodes = json.loads(kubectl(cluster, "get", "nodes", "-o", "json").stdout)["items"]
    kube_nodes = [n.name for n in load_spec(upgraded["spec"]).spec.nodes if {"control-plane", "worker"} & set(n.roles)]
    assert {n["metadata"]["name"]: n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes} == {
        name: f"v{TO}" for name in kube_nodes}
    assert not [n["metadata"]["name"] for n in nodes if n["spec"].get("unschedulable")]
    version = json.loads(kubectl(cluster, "version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    assert version == f"v{TO}"
    for node in kube_nodes:
        for binary, args in (("kubeadm", ["version", "-o", "short"]), ("kubelet", ["--version"]),
                             ("kubectl", ["version", "--client"])):
            printed = upgraded["lab"].exec(node, [f"/usr/local/bin/{binary}", *args]).stdout.decode()
            assert f"v{TO}" in printed, (node, binary, printed)


def test_the_deployment_kept_running_through_the_drains(upgraded):
    samples, before, seen = upgraded["samples"], upgraded["before"], upgraded["seen"]
    assert len(samples) > 30, samples  # sampled all along
    assert min(samples) >= 1, samples  # never lost: a ready pod at every sample
    cluster = upgraded["cluster"]
    wait_for("the Deployment ready", lambda: sum(p["ready"] for p in _pods(cluster).values()) == REPLICAS, 240)
    now = _pods(cluster)
    # The drains evicted the pods that ran before; their replacements run elsewhere. An evicted pod ends
    # Failed while it is deleted (its sleep is killed); none failed otherwise.
    assert not set(before) & set(now), (before, now)
    assert not [p for p in seen.values() if p["phase"] == "Failed" and not p["deleted"]], seen
    assert len({p["node"] for p in seen.values()}) >= 2, seen


def test_the_api_server_still_runs_with_the_hardened_flags(upgraded):
    lab, spec = upgraded["lab"], load_spec(upgraded["spec"])
    target = spec.spec.model_copy(update={"cluster": spec.spec.cluster.model_copy(update={"kubernetes_version": TO})})
    node = next(n for n in target.nodes if n.name == "cp-1")
    planned = kubeadm.component_flags("kube-apiserver", kubeadm.cluster_configuration(target, etcd_endpoints(target)),
                                      kubeadm.local_api_endpoint(target, node))
    cmdline = lab.exec("cp-1", ["sh", "-c", "cat /proc/$(pidof kube-apiserver)/cmdline"]).stdout.decode().split("\0")
    running = dict(arg[2:].split("=", 1) for arg in cmdline if arg.startswith("--") and "=" in arg)
    assert {k: running.get(k) for k in planned} == planned
    assert running["encryption-provider-config"] and running["audit-policy-file"]
    manifest = lab.exec("cp-1", ["cat", "/etc/kubernetes/manifests/kube-apiserver.yaml"]).stdout.decode()
    assert f"kube-apiserver:v{TO}" in manifest
    endpoint = spec.spec.cluster.control_plane_endpoint
    assert anonymous_status(f"https://{endpoint}/api/v1/namespaces/kube-system/secrets") == 401


def test_the_new_plan_passes_check_and_a_rerun_changes_nothing(upgraded):
    data = yaml.safe_load(upgraded["spec"].read_text())
    data["cluster"]["kubernetes_version"] = TO
    data["runtimes"]["bundle"] = str(upgraded["new"].root)
    spec = upgraded["spec"].with_name("cluster-1.36.yaml")
    spec.write_text(yaml.safe_dump(data))
    # `check` judges the new plan as it judged the old one: the lab spec's one FAIL (1.2.11: no
    # AlwaysPullImages, since no registry serves the bundle's images) and nothing else.
    checked = cli(upgraded["base"], "check", "--spec", str(spec))
    before = cli(upgraded["base"], "check", "--spec", str(upgraded["spec"]))

    def fails(out):
        return sorted(line.split()[1] + " " + line.rsplit("[", 1)[-1] for line in out.splitlines() if line.startswith("FAIL "))

    assert fails(checked.stdout) == fails(before.stdout) and checked.returncode == before.returncode, checked.stdout[-2000:]
    assert fails(checked.stdout) in ([], ["1.2.11 cp-1]"]), checked.stdout[-2000:]
    # The spec now names the release the cluster runs: apply is an ordinary apply, and finds it converged.
    applied = cli(upgraded["base"], "apply", "--spec", str(spec), "--quiet")
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-2000:]
    assert "upgrading it" not in applied.stdout
    result, _ = converge(load_spec(spec), check=True, state=upgraded["state"], full=True,
                         phases=["hosts", "etcd", "runtime", "kubernetes", "objects"])
    assert result.succeeded and not result.changed, {h: [c.describe() for c in r.changes]
                                                      for h, r in result.hosts.items() if r.changed}


def test_apply_of_the_old_release_is_refused_as_a_downgrade(upgraded):
    refused = cli(upgraded["base"], "apply", "--spec", str(upgraded["spec"]), "--quiet")
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert f"cluster.kubernetes_version: {FROM} from {TO}: a downgrade" in refused.stderr
    assert "Traceback" not in refused.stderr
