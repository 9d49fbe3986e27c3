"""Encryption key rotation on the live cluster: `hardened-cluster rotate encryption-key`, run as operators
run it (a subprocess, the lab's state directory).

- The first run is killed (SIGKILL) as soon as it reports step 2 done: every Secret still reads back, and
  the record in the state store says where it stopped.
- The rerun continues there with the same new key and finishes: Secrets and the ConfigMap made before
  the rotation read back unchanged, and etcd (read raw with etcdctl on etcd-1) holds each of them, and
  every other Secret and ConfigMap, under the new key's prefix; the control plane's configuration lists
  only the new key; the old key's file has left the active store.
- Afterwards `drift --full` of the control planes is clean and a rerun of every phase there changes nothing.
"""
from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys

import pytest
import yaml
import live_cluster
from live_cluster import CLUSTER_PHASES, assert_clean, etcdctl, kubectl

from hardened_cluster.secrets.store import encryption_key_names, load_rotation
from hardened_cluster.verify.live_cluster import stored_prefix

pytestmark = [pytest.mark.lab, pytest.mark.long]

NAMESPACE = "default"
SECRETS = [f"hc-rotation-{i}" for i in range(3)]
CONFIGMAP = "hc-rotation-cm"
ENCRYPTION_CONFIG = "/etc/kubernetes/encryption/encryption-config.yaml"
# etcdctl's 2 s dial default timed out once on the shared 2-core machine.
RAW_TIMEOUTS = ["--dial-timeout=20s", "--command-timeout=60s"]


@pytest.fixture(scope="module")
def cluster(lab, lab_spec, lab_state, bundle):
    """The cluster applied (a rerun when an earlier module brought it up in this session)."""
    apply(lab_spec, lab_state)
    return live_cluster.access(lab_state, bundle)


def apply(loaded, state, **options):
    return live_cluster.apply(loaded, state, phases=CLUSTER_PHASES, **options)


@pytest.fixture(scope="module")
def objects(cluster):
    """Secrets and a ConfigMap written before the rotation, with their values."""
    values = {name: secrets.token_hex(16) for name in SECRETS + [CONFIGMAP]}
    for name in SECRETS:
        kubectl(cluster, "-n", NAMESPACE, "create", "secret", "generic", name, f"--from-literal=v={values[name]}")
    kubectl(cluster, "-n", NAMESPACE, "create", "configmap", CONFIGMAP, f"--from-literal=v={values[CONFIGMAP]}")
    yield values
    for name in SECRETS:
        kubectl(cluster, "-n", NAMESPACE, "delete", "secret", name, "--ignore-not-found", check=False)
    kubectl(cluster, "-n", NAMESPACE, "delete", "configmap", CONFIGMAP, "--ignore-not-found", check=False)


def rotate_command(lab_spec, lab_state, *extra) -> tuple[list[str], dict[str, str]]:
    assert lab_state.name == lab_spec.spec.cluster.name  # HC_STATE_DIR/<cluster> is the lab's state
    env = {**os.environ, "HC_STATE_DIR": str(lab_state.parent)}
    return [sys.executable, "-m", "hardened_cluster.cli.main", "rotate", "encryption-key", "--spec", str(lab_spec.path),
            *extra], env


def read_back(cluster, kind, name) -> str:
    data = kubectl(cluster, "-n", NAMESPACE, "get", kind, name, "-o", "jsonpath={.data.v}").stdout
    return base64.b64decode(data).decode() if kind == "secret" else data


def stored(lab, spec, resource, name) -> bytes:
    argv = etcdctl(spec) + RAW_TIMEOUTS + ["get", f"/registry/{resource}/{NAMESPACE}/{name}", "--print-value-only"]
    return lab.lab.exec("etcd-1", argv).stdout


def stored_prefixes(lab, spec, resource) -> dict[str, bytes]:
    """Every key under /registry/<resource>/ and how its value starts."""
    argv = etcdctl(spec) + RAW_TIMEOUTS + ["get", "--prefix", f"/registry/{resource}/", "-w", "json"]
    out = lab.lab.exec("etcd-1", argv).stdout
    kvs = json.loads(out).get("kvs") or []
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"])[:64] for kv in kvs}


def test_an_interrupted_rotation_resumes_and_leaves_every_object_under_the_new_key(cluster, objects, lab, lab_spec,
                                                                                    lab_state):
    secrets_dir = lab_state / "secrets"
    provider = lab_spec.spec.encryption.provider
    [old_key] = encryption_key_names(lab_spec, secrets_dir)
    for name in SECRETS:
        assert stored(lab, lab_spec.spec, "secrets", name).startswith(stored_prefix(provider, old_key).encode())

    command, env = rotate_command(lab_spec, lab_state)
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in first.stdout:
        lines.append(line)
        if line.startswith("step 2/4 write: done"):
            first.kill()
            break
    first.wait(timeout=60)
    assert first.returncode == -9, "".join(lines[-40:])
    interrupted = load_rotation(secrets_dir)
    assert interrupted.step in ("write", "rewrite") and interrupted.old == (old_key,), interrupted
    # Stopped half-way, nothing is unreadable, and the old key is still in the store.
    assert (secrets_dir / f"encryption-{old_key}").is_file()
    for name in SECRETS:
        assert read_back(cluster, "secret", name) == objects[name]

    command, env = rotate_command(lab_spec, lab_state, "--json", "--quiet")
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-4000:]
    report = json.loads(rerun.stdout)
    assert report["succeeded"] and report["resumed_at"] == interrupted.step
    assert report["new_key"] == interrupted.new and report["old_keys"] == [old_key]
    steps = {s["step"]: s for s in report["steps"]}
    assert list(steps)[-2:] == ["rewrite", "remove"]
    assert steps["rewrite"]["keys"] == [interrupted.new, old_key] and steps["remove"]["keys"] == [interrupted.new]
    assert steps["rewrite"]["rewritten"]["secrets"] >= len(SECRETS)
    assert steps["rewrite"]["stored_under_new_key"]["configmaps"] >= 1
    # The API server restarted with the key list of the last step.
    assert "/etc/kubernetes/manifests/kube-apiserver.yaml" in steps["remove"]["hosts"]["cp-1"]
    assert "step 4/4 remove: done" in rerun.stderr

    new_prefix = stored_prefix(provider, interrupted.new).encode()
    for name in SECRETS:
        assert read_back(cluster, "secret", name) == objects[name]
        value = stored(lab, lab_spec.spec, "secrets", name)
        assert value.startswith(new_prefix) and objects[name].encode() not in value
    assert read_back(cluster, "configmap", CONFIGMAP) == objects[CONFIGMAP]
    assert stored(lab, lab_spec.spec, "configmaps", CONFIGMAP).startswith(new_prefix)
    for resource in ("secrets", "configmaps"):
        found = stored_prefixes(lab, lab_spec.spec, resource)
        assert found and {k: v for k, v in found.items() if not v.startswith(new_prefix)} == {}, resource

    config = yaml.safe_load(lab.lab.exec("cp-1", ["cat", ENCRYPTION_CONFIG]).stdout)
    assert [k["name"] for k in config["resources"][0]["providers"][0][provider]["keys"]] == [interrupted.new]
    assert load_rotation(secrets_dir).step == "done"
    assert not (secrets_dir / f"encryption-{old_key}").exists()
    assert (secrets_dir / "retired" / f"encryption-{old_key}").stat().st_mode & 0o777 == 0o600


def test_after_the_rotation_drift_is_clean_and_a_rerun_changes_nothing(cluster, lab_spec, lab_state):
    rotation = load_rotation(lab_state / "secrets")
    assert rotation is not None and rotation.step == "done", "runs after the rotation above"
    control_planes = [n.name for n in lab_spec.spec.nodes_with("control-plane")]
    # The rotation touches the control planes only: check mode of every role there, then a rerun.
    assert_clean(lab_spec, lab_state, control_planes)
    result = apply(lab_spec, lab_state, full=True, hosts=control_planes)
    assert set(result.hosts) == set(control_planes)
    assert {h: r.changed for h, r in result.hosts.items() if r.changed} == {}
