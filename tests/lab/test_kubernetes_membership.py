"""A worker leaves the spec and comes back, on the live cluster.

With worker-2 gone from the spec, drift names it, and apply drains it (a Deployment's pod there is evicted and
rescheduled on worker-1, none lost), deletes its Node and resets it before the other hosts converge. With
worker-2 back in the spec, apply joins it again and it is Ready; a full check of it finds nothing to change.
(Unit tests cover what is refused: etcd members and control planes joining or leaving.)
"""
from __future__ import annotations

import json
import shutil

import pytest
import yaml

import live_cluster
from live_cluster import CLUSTER_PHASES, TOOLBOX, assert_clean, drift, kubectl, wait_for

from hardened_cluster.spec.load import load_spec
from hardened_cluster.verify.live_cluster import RESTRICTED

pytestmark = [pytest.mark.lab, pytest.mark.long]

LEAVING, STAYING = "worker-2", "worker-1"
APP = "hc-membership"


@pytest.fixture(scope="module")
def cluster(lab, lab_spec, lab_state, bundle):
    live_cluster.apply(lab_spec, lab_state, phases=CLUSTER_PHASES)
    return live_cluster.access(lab_state, bundle)


def without_leaving(lab_spec, tmp_path):
    """The lab spec without the leaving worker (and without it in the runtimes' node lists)."""
    data = yaml.safe_load(lab_spec.path.read_text())
    data["nodes"] = [n for n in data["nodes"] if n["name"] != LEAVING]
    for runtime in data.get("runtimes", {}).values():
        if isinstance(runtime, dict) and "nodes" in runtime:
            runtime["nodes"] = [n for n in runtime["nodes"] if n != LEAVING]
    directory = tmp_path / "without"
    directory.mkdir()
    (directory / "cluster.yaml").write_text(yaml.safe_dump(data))
    shutil.copy(lab_spec.path.parent / "known_hosts", directory / "known_hosts")
    return load_spec(directory / "cluster.yaml")


def deployment() -> str:
    """Two replicas that prefer different workers."""
    labels = {"app": APP}
    spread = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": labels},
                                             "topologyKey": "kubernetes.io/hostname"}}]}}
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": APP, "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"affinity": spread, "automountServiceAccountToken": False, "containers": [
                {"name": "c", "image": TOOLBOX, "imagePullPolicy": "Never",
                 "command": ["/bin/busybox", "sleep", "3600"], "securityContext": RESTRICTED}]}}}})


def running_pods(cluster) -> dict[str, str]:
    """The Deployment's running, ready pods: name -> node."""
    found = json.loads(kubectl(cluster, "-n", "default", "get", "pods", "-l", f"app={APP}", "-o", "json").stdout)
    return {p["metadata"]["name"]: p["spec"].get("nodeName") for p in found["items"]
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
            and all(c.get("ready") for c in p["status"].get("containerStatuses", []))}


def node_ready(cluster, name) -> bool:
    answer = kubectl(cluster, "get", "node", name, "-o", "json", check=False)
    if answer.returncode != 0:
        return False
    conditions = json.loads(answer.stdout)["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_a_worker_leaving_the_spec_is_drained_deleted_and_reset_and_joins_again(cluster, lab, lab_spec, lab_state,
                                                                                tmp_path):
    kubectl(cluster, "apply", "-f", "-", input=deployment())
    try:
        before = wait_for("both replicas running", lambda: (p := running_pods(cluster)) and len(p) == 2 and p)
        assert set(before.values()) == {STAYING, LEAVING}, before
        smaller = without_leaving(lab_spec, tmp_path)

        found = drift(smaller, lab_state)
        assert [c.task for c in found.get(LEAVING, [])] == ["Remove the node that left the spec"], found

        result = live_cluster.apply(smaller, lab_state, phases=CLUSTER_PHASES)
        assert [c.detail for c in result.hosts[LEAVING].changes] == ["drained, deleted from the API and reset"]
        assert kubectl(cluster, "get", "node", LEAVING, check=False).returncode != 0
        # The evicted pod was rescheduled on the remaining worker: two replicas run, none lost.
        after = wait_for("both replicas running again", lambda: (p := running_pods(cluster)) and len(p) == 2 and p)
        assert set(after.values()) == {STAYING}, after
        assert set(after) != set(before)
        reset = lab.lab.exec(LEAVING, ["sh", "-c", "test -e /etc/kubernetes/kubelet.conf && echo joined; "
                                       "systemctl is-active kubelet"], check=False).stdout.decode().split()
        assert "joined" not in reset and "active" not in reset, reset
        # Nothing left to remove: the membership is recorded.
        assert LEAVING not in drift(smaller, lab_state)
    finally:
        live_cluster.apply(lab_spec, lab_state, phases=CLUSTER_PHASES)
        kubectl(cluster, "-n", "default", "delete", "deployment", APP, "--ignore-not-found")
    wait_for(f"{LEAVING} Ready again", lambda: node_ready(cluster, LEAVING), timeout=240)
    assert_clean(lab_spec, lab_state, [LEAVING])
