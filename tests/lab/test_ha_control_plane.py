"""Two control planes behind a load-balancer node (inventories/lab-ha/cluster.yaml, docs/load-balancer.md).

This module runs its own lab from that spec, before the session's lab starts (tests/conftest.py orders it
first), and takes it down. It applies every phase but the benchmark from empty: kubeadm init --upload-certs on
cp-1, cp-2 joining with the certificate key, haproxy on lb-1 serving the endpoint. Then, on the live cluster:
both control planes' Nodes Ready, both API servers ready, the endpoint answering through haproxy while one API
server is stopped (its static pod manifest moved away) and after it is back, and a rerun that changes nothing.
"""
import json
import os
import re
import subprocess
import sys
import time

import pytest

from hardened_cluster.cli.lab import start
from hardened_cluster.lab.lab import Lab
from hardened_cluster.lab.pytest_plugin import spec_path
from hardened_cluster.plan.render import FILES, _first_cp
from hardened_cluster.resources import ROOT
from hardened_cluster.spec.load import load_spec
from live_cluster import CLUSTER_PHASES, access, apply, kubectl, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.long]

HA_SPEC = ROOT / "inventories" / "lab-ha" / "cluster.yaml"
MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"
AWAY = "/etc/kubernetes/kube-apiserver.yaml.away"
# The cluster's CA and service-account keys the plan delivers to the first control plane only: what
# `kubeadm init --upload-certs` puts into the kubeadm-certs Secret for the others (external etcd: no etcd CA).
UPLOADED = [r.path for r in FILES if r.when is _first_cp and r.path.startswith("/etc/kubernetes/pki/")]


@pytest.fixture(scope="module")
def ha(tmp_path_factory, bundle):
    """The HA lab spec on this run's lab subnet (the session spec's), its nodes up, known_hosts beside it."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("the lab needs root on Linux")
    prefix = re.search(r"node_cidrs: \[(\d+\.\d+\.\d+\.)0/24\]", spec_path().read_text()).group(1)
    text = HA_SPEC.read_text().replace("10.231.0.", prefix)
    text = re.sub(r"(?m)^  bundle: .*$", f"  bundle: {bundle.root}", text)
    directory = tmp_path_factory.mktemp("lab-ha")
    (directory / "cluster.yaml").write_text(text)
    lab = Lab()
    try:  # also a start that failed half-way is taken down
        start(directory / "cluster.yaml", lab)
        yield lab, load_spec(directory / "cluster.yaml")
    finally:
        lab.down()


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    return tmp_path_factory.mktemp("state") / "lab-ha"  # short: ssh's ControlPath lives below it


@pytest.fixture(scope="module")
def cluster(ha, state, bundle):
    _, loaded = ha
    apply(loaded, state, phases=CLUSTER_PHASES)
    return access(state, bundle)


def _readyz(cluster, server=None, port=None) -> bool:
    args = ["--server", f"https://{server}:{port}"] if server else []
    try:
        result = kubectl(cluster, *args, "get", "--raw", "/readyz", "--request-timeout=5s", check=False, timeout=15)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0 and result.stdout.strip() == "ok"


def _addresses(loaded, role):
    return {n.name: str(n.address) for n in loaded.spec.nodes_with(role)}


def test_both_control_planes_joined_and_ready(ha, cluster):
    _, loaded = ha
    endpoint = loaded.spec.cluster.control_plane_endpoint
    assert loaded.spec.cluster.api_host == str(loaded.spec.nodes_with("load-balancer")[0].address)
    config = json.loads(kubectl(cluster, "config", "view", "-o", "json").stdout)
    assert [c["cluster"]["server"] for c in config["clusters"]] == [f"https://{endpoint}"]

    def ready():
        nodes = json.loads(kubectl(cluster, "get", "nodes", "-o", "json").stdout)["items"]
        return {n["metadata"]["name"]: any(c["type"] == "Ready" and c["status"] == "True"
                                           for c in n["status"]["conditions"])
                for n in nodes if "node-role.kubernetes.io/control-plane" in n["metadata"]["labels"]}

    seen = {}

    def both():
        seen.update(last=ready())
        return seen["last"] == {"cp-1": True, "cp-2": True}

    try:
        wait_for("both control planes Ready", both, timeout=300)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; control-plane Nodes Ready: {seen.get('last')}") from None
    # cp-2 runs its own control plane, from the certificates cp-1 uploaded.
    pods = json.loads(kubectl(cluster, "-n", "kube-system", "get", "pods", "-o", "json").stdout)["items"]
    running = {p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"}
    for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert {f"{component}-cp-1", f"{component}-cp-2"} <= running, running


def test_second_control_plane_got_its_keys_from_the_certificate_upload(ha, state, cluster):
    lab, _ = ha
    plan = state / "plan"
    # cp-2 gets the join configuration with the certificate key instead, and kubeadm join fetches and
    # decrypts the uploaded keys.
    assert len(UPLOADED) == 6, UPLOADED
    for key in UPLOADED:
        assert (plan / "cp-1" / key.lstrip("/")).is_file(), key
        assert not (plan / "cp-2" / key.lstrip("/")).exists(), key
    join = (plan / "cp-2" / "etc/kubernetes/kubeadm/kubeadm-join.yaml").read_text()
    assert re.search(r'(?m)^  certificateKey: "[0-9a-f]{64}"$', join), "no controlPlane.certificateKey"

    def digests(node):
        out = lab.exec(node, ["sha256sum", *UPLOADED]).stdout.decode().split()
        return dict(zip(out[1::2], out[0::2]))

    assert digests("cp-2") == digests("cp-1")
    assert len(digests("cp-2")) == len(UPLOADED)


def test_each_api_server_and_the_endpoint_serve_readyz(ha, cluster):
    _, loaded = ha
    for name, address in _addresses(loaded, "control-plane").items():
        port = loaded.spec.cluster.api_port
        assert wait_for(f"{name}'s /readyz", lambda: _readyz(cluster, address, port), timeout=60)
    assert _readyz(cluster)  # through haproxy on lb-1


def test_endpoint_keeps_answering_while_one_api_server_is_stopped(ha, cluster):
    lab, loaded = ha
    stopped, port = _addresses(loaded, "control-plane")["cp-1"], loaded.spec.cluster.api_port
    lab.exec("cp-1", ["mv", MANIFEST, AWAY])
    try:
        wait_for("cp-1's API server to stop", lambda: not _readyz(cluster, stopped, port), timeout=120)
        # haproxy retries a refused connection on cp-2 and takes cp-1 out within two checks (4 s).
        answers = []
        for _ in range(10):
            answers.append(_readyz(cluster))
            time.sleep(1)
        assert answers == [True] * 10, answers
        assert not _readyz(cluster, stopped, port)  # still stopped: cp-2 answered all of them
        nodes = kubectl(cluster, "get", "nodes", "-o", "name").stdout.split()
        assert "node/cp-1" in nodes and "node/cp-2" in nodes
    finally:
        lab.exec("cp-1", ["mv", AWAY, MANIFEST])
    assert wait_for("cp-1's API server back", lambda: _readyz(cluster, stopped, port), timeout=180)
    assert _readyz(cluster)


def test_rerun_changes_nothing(ha, state, cluster):
    _, loaded = ha
    result = apply(loaded, state, phases=CLUSTER_PHASES)
    assert {h: [c.describe() for c in r.changes] for h, r in result.hosts.items() if r.changed} == {}
    assert set(result.hosts) == {n.name for n in loaded.spec.nodes}


def test_a_stopped_haproxy_is_seen_and_started_again(ha, state, cluster):
    lab, loaded = ha
    lab.exec("lb-1", ["systemctl", "stop", "haproxy.service"])
    assert not _readyz(cluster)  # the endpoint is down with it
    # The no-op shortcut (converged.py) looks at haproxy's unit state, so lb-1 is not skipped.
    result = apply(loaded, state, phases=CLUSTER_PHASES)
    changed = {h: [c.describe() for c in r.changes] for h, r in result.hosts.items() if r.changed}
    assert list(changed) == ["lb-1"] and len(changed["lb-1"]) == 1, changed
    assert "load_balancer" in changed["lb-1"][0] and "Enable and start haproxy" in changed["lb-1"][0], changed
    assert lab.exec("lb-1", ["systemctl", "is-active", "haproxy.service"]).stdout.decode().strip() == "active"
    assert wait_for("the endpoint back", lambda: _readyz(cluster), timeout=60)
