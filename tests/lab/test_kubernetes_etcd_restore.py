"""etcd disaster recovery under a running Kubernetes: `hardened-cluster restore etcd`, run as operators run it
(a subprocess, the lab's state directory).

- An unknown snapshot is refused with exit 2 naming --snapshot, and nothing on any host changed (etcd's and the
  API server's processes are the same).
- A Secret and a ConfigMap are written, the snapshot service takes a snapshot, a ConfigMap is written after it;
  then the disaster: etcd stopped and its data directory wiped on every member.
- The restore (the newest snapshot by default) stops the API server, restores every member, brings the API
  server back and waits for the nodes: afterwards the API serves the objects from before the snapshot and not
  the one from after it, every node is Ready, the restored Secret is stored encrypted in etcd (read raw with
  etcdctl) under the key's prefix, and drift of the etcd and control-plane hosts is clean.
"""
from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import time

import pytest
import live_cluster
from live_cluster import CLUSTER_PHASES, assert_clean, etcdctl, kubectl

from hardened_cluster.secrets.store import encryption_key_names
from hardened_cluster.verify.live_cluster import stored_prefix

pytestmark = [pytest.mark.lab, pytest.mark.long]

NAMESPACE = "default"
SECRET, CONFIGMAP, LATER = "hc-restore-secret", "hc-restore-cm", "hc-restore-later"
RAW_TIMEOUTS = ["--dial-timeout=20s", "--command-timeout=60s"]


@pytest.fixture(scope="module")
def cluster(lab, lab_spec, lab_state, bundle):
    """The cluster applied (a rerun when an earlier module brought it up in this session)."""
    live_cluster.apply(lab_spec, lab_state, phases=CLUSTER_PHASES)
    return live_cluster.access(lab_state, bundle)


def restore(lab_spec, lab_state, *extra) -> subprocess.CompletedProcess:
    assert lab_state.name == lab_spec.spec.cluster.name  # HC_STATE_DIR/<cluster> is the lab's state
    env = {**os.environ, "HC_STATE_DIR": str(lab_state.parent)}
    return subprocess.run([sys.executable, "-m", "hardened_cluster.cli.main", "restore", "etcd", "--spec",
                           str(lab_spec.path), *extra], env=env, capture_output=True, text=True, timeout=1800)


def sh(lab, node, script, check=True) -> str:
    return lab.lab.exec(node, ["sh", "-c", script], check=check).stdout.decode().strip()


def processes(lab, etcd, control_planes) -> dict[str, str]:
    """etcd's main PID per member, the running kube-apiserver container per control plane."""
    out = {n: sh(lab, n, "systemctl show -p MainPID --value etcd") for n in etcd}
    out |= {n: sh(lab, n, "/usr/local/bin/crictl ps --state running --name '^kube-apiserver$' -q") for n in control_planes}
    return out


def ready_nodes(cluster) -> set[str]:
    nodes = json.loads(kubectl(cluster, "get", "nodes", "-o", "json").stdout)["items"]
    return {n["metadata"]["name"] for n in nodes
            if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])}


def test_restore_under_kubernetes_brings_back_the_snapshot_and_every_node(cluster, lab, lab_spec, lab_state):
    spec = lab_spec.spec
    etcd = [n.name for n in spec.nodes_with("etcd")]
    control_planes = [n.name for n in spec.nodes_with("control-plane")]
    data_dir, snapshots = str(spec.etcd.data_dir), str(spec.etcd.snapshot.directory)
    before = processes(lab, etcd, control_planes)
    assert all(before.values()), before

    # Bad input: refused before anything changes.
    bad = restore(lab_spec, lab_state, "--snapshot", "etcd-19700101T000000Z.db.age")
    assert bad.returncode == 2, bad.stdout[-2000:] + bad.stderr[-2000:]
    assert "--snapshot: etcd-19700101T000000Z.db.age is not in" in bad.stderr and "Traceback" not in bad.stderr
    assert processes(lab, etcd, control_planes) == before

    values = {SECRET: secrets.token_hex(16), CONFIGMAP: secrets.token_hex(16)}
    kubectl(cluster, "-n", NAMESPACE, "create", "secret", "generic", SECRET, f"--from-literal=v={values[SECRET]}")
    kubectl(cluster, "-n", NAMESPACE, "create", "configmap", CONFIGMAP, f"--from-literal=v={values[CONFIGMAP]}")
    snapshot = sh(lab, etcd[0], "systemctl start etcd-snapshot.service && ls -1t "
                                f"{snapshots}/etcd-*.db.age | head -1").rsplit("/", 1)[1]
    kubectl(cluster, "-n", NAMESPACE, "create", "configmap", LATER, "--from-literal=v=after-the-snapshot")

    try:
        # The disaster: every member's data gone. The snapshot timer stops too: its service Requires etcd, so
        # firing meanwhile it would start etcd again (the restore starts the timer again).
        for node in etcd:
            sh(lab, node, f"systemctl stop etcd-snapshot.timer etcd && rm -rf {data_dir}")
        started = time.monotonic()
        run = restore(lab_spec, lab_state, "--json", "--quiet")
        seconds = time.monotonic() - started
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
        report = json.loads(run.stdout)
        print(f"restore etcd: {seconds:.1f}s (report: {report['seconds']}s)")
        assert report["succeeded"] and report["snapshot"] == snapshot, report
        steps = {s["step"]: s for s in report["steps"]}
        assert list(steps) == ["prepare", "stop", "etcd", "start", "nodes"]
        for node in control_planes:
            # The API server was stopped and started again, as the report says.
            assert any("kube-apiserver" in c for c in steps["stop"]["changed"][node]), steps["stop"]
            assert any("kube-apiserver" in c for c in steps["start"]["changed"][node]), steps["start"]
        for node in etcd:
            assert any("Restore the snapshot" in c for c in steps["etcd"]["changed"][node]), steps["etcd"]

        after = processes(lab, etcd, control_planes)
        assert all(after.values()) and not set(after.items()) & set(before.items()), (before, after)
        secret = kubectl(cluster, "-n", NAMESPACE, "get", "secret", SECRET, "-o", "jsonpath={.data.v}").stdout
        assert base64.b64decode(secret).decode() == values[SECRET]
        assert kubectl(cluster, "-n", NAMESPACE, "get", "configmap", CONFIGMAP,
                       "-o", "jsonpath={.data.v}").stdout == values[CONFIGMAP]
        later = kubectl(cluster, "-n", NAMESPACE, "get", "configmap", LATER, check=False)
        assert later.returncode != 0 and "NotFound" in later.stderr, later
        everyone = {n.name for n in spec.nodes_with("control-plane") + spec.nodes_with("worker")}
        assert ready_nodes(cluster) >= everyone
        # The API accepts writes again.
        kubectl(cluster, "-n", NAMESPACE, "create", "configmap", LATER, "--from-literal=v=after-the-restore")

        key = encryption_key_names(lab_spec, lab_state / "secrets")[0]
        raw = lab.lab.exec(etcd[-1], etcdctl(spec) + RAW_TIMEOUTS + [
            "get", f"/registry/secrets/{NAMESPACE}/{SECRET}", "--print-value-only"]).stdout
        assert raw.startswith(stored_prefix(spec.encryption.provider, key).encode()), raw[:60]
        assert values[SECRET].encode() not in raw
        for node in etcd:
            assert sh(lab, node, f"stat -c '%a %U %G' {data_dir}") == "700 etcd etcd"
            assert sh(lab, node, "test -e /var/lib/etcd-restore || echo gone", check=False) == "gone"
        for node in control_planes:
            assert sh(lab, node, "test -e /etc/kubernetes/restore-held || echo gone", check=False) == "gone"

        assert_clean(lab_spec, lab_state, etcd + control_planes)
    finally:
        for kind, name in (("secret", SECRET), ("configmap", CONFIGMAP), ("configmap", LATER)):
            kubectl(cluster, "-n", NAMESPACE, "delete", kind, name, "--ignore-not-found", check=False)
        sh(lab, etcd[0], f"rm -f {snapshots}/{snapshot} {snapshots}/{snapshot}.sha256")
        for node in etcd:
            sh(lab, node, f"rm -rf {data_dir}.pre-restore-*")
