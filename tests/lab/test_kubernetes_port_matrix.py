"""The firewall's port matrix with the real cluster running: the kubelet (10250), the controller manager
(10257), the scheduler (10259), etcd (2379/2380), the API server (6443) and a real NodePort Service backed
by a pod, probed over TCP from the outsider netns, a worker, the control-plane node and the admin address.

The expected table is written by hand from docs/firewall.md's matrix (lab spec: NodePorts off, no extra
ports), not computed from hardened_cluster.plan.firewall. The lab's addresses depend on its instance; the table
is by role.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml

from hardened_cluster.deliver.converge import converge
from live_cluster import kubectl
from hardened_cluster.lab.model import CONTROLLER_ADDRESS, OUTSIDER_NETNS, netns_name

pytestmark = pytest.mark.lab

NODEPORT = 30080
TARGETS = {"etcd-1": (2379, 2380), "cp-1": (6443, 10250, 10257, 10259), "worker-1": (10250, NODEPORT)}
# Where each probe comes from: a netns (None: this machine, the lab's admin address).
SOURCES = {"admin": None, "outsider": OUTSIDER_NETNS, "worker": netns_name("worker-2"),
           "control-plane": netns_name("cp-1")}
# By hand, from docs/firewall.md: the (node, port) pairs each source reaches; every other probe is dropped
# (filtered, not refused). 6443 from the admin CIDRs and the nodes; 2379 from control-plane nodes (and
# members); 2380 from members only; 10250 from control-plane nodes only; 10257/10259 from nobody; a NodePort
# from nobody while firewall.nodeport_range is off (the forward chain drops a DNAT-ed NodePort).
OPEN = {
    "admin": {("cp-1", 6443)},
    "outsider": set(),
    "worker": {("cp-1", 6443)},
    "control-plane": {("etcd-1", 2379), ("worker-1", 10250)},
}
PROBER = r"""
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
def tcp(target):
    host, port = target
    with socket.socket() as s:
        s.settimeout(2.0)
        try:
            s.connect((host, port)); return "open"
        except ConnectionRefusedError:
            return "refused"
        except OSError:
            return "filtered"
with ThreadPoolExecutor(32) as pool:
    print(json.dumps(list(pool.map(tcp, json.loads(sys.argv[1])))))
"""


def probe(source: str, targets: list[tuple[str, int]]) -> list[str]:
    netns = SOURCES[source]
    argv = [sys.executable, "-c", PROBER, json.dumps(targets)]
    argv = argv if netns is None else ["ip", "netns", "exec", netns, *argv]
    return json.loads(subprocess.run(argv, check=True, capture_output=True, timeout=120).stdout)


@pytest.fixture(scope="module")
def cluster(lab, lab_spec, lab_state, bundle):
    lines: list[str] = []
    result, _ = converge(lab_spec, check=False, state=lab_state, progress=lines.append)
    assert result.succeeded, "\n".join(lines[-40:])
    assert not lab_spec.spec.firewall.nodeport_range.enabled  # the table above is for NodePorts off
    return {"kubeconfig": lab_state / "admin.conf", "kubectl": str(bundle.path("kubectl")),
            "addresses": {n.name: str(n.address) for n in lab_spec.spec.nodes},
            "service_cidr": str(lab_spec.spec.network.service_cidr)}


@pytest.fixture(scope="module")
def nodeport(cluster):
    """A NodePort Service on NODEPORT backed by an HTTP server pod on worker-1 (in kube-system, which has no
    NetworkPolicy: what stops a probe is the host firewall); its ClusterIP."""
    objects = [
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "hc-nodeport", "namespace": "kube-system", "labels": {"app": "hc-nodeport"}},
         "spec": {"nodeName": "worker-1", "automountServiceAccountToken": False, "containers": [{
             "name": "c", "image": "docker.io/cloudnativelabs/kube-router:v2.1.0", "imagePullPolicy": "Never",
             "command": ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/etc"],
             "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "allowPrivilegeEscalation": False,
                                 "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hc-nodeport", "namespace": "kube-system"},
         "spec": {"type": "NodePort", "selector": {"app": "hc-nodeport"},
                  "ports": [{"port": 80, "targetPort": 8080, "nodePort": NODEPORT}]}},
    ]
    kubectl(cluster, "apply", "-f", "-", input=yaml.safe_dump_all(objects))
    try:
        kubectl(cluster, "-n", "kube-system", "wait", "--for=condition=Ready", "pod/hc-nodeport", "--timeout=180s")
        service = json.loads(kubectl(cluster, "-n", "kube-system", "get", "service", "hc-nodeport", "-o", "json").stdout)
        yield service["spec"]["clusterIP"]
    finally:
        kubectl(cluster, "-n", "kube-system", "delete", "service,pod", "hc-nodeport", "--wait=false", check=False)


def test_the_port_matrix_holds_with_the_cluster_running(cluster, nodeport):
    addresses = cluster["addresses"]
    assert CONTROLLER_ADDRESS not in addresses.values()
    # The Service is real: a node reaches its pod through the ClusterIP (node-to-pod is allowed), retried
    # while kube-proxy programs it. Lab nodes have no default route, so a node's socket to a ClusterIP
    # fails before kube-proxy's DNAT (in the output hook) sees it: for this probe, worker-2 routes the
    # Service CIDR onto the lab's bridge, as a real node's default route would.
    worker = ["ip", "-n", SOURCES["worker"], "route"]
    subprocess.run([*worker, "replace", cluster["service_cidr"], "dev", "eth0"], check=True)
    try:
        deadline = time.monotonic() + 60
        while probe("worker", [(nodeport, 80)]) != ["open"]:
            assert time.monotonic() < deadline, "the NodePort Service's ClusterIP never answered from a worker"
            time.sleep(2)
    finally:
        subprocess.run([*worker, "del", cluster["service_cidr"]], check=True)
    for source, expected in OPEN.items():
        # A node's probes of its own address go over loopback, which its input chain accepts.
        pairs = [(node, port) for node, ports in TARGETS.items() for port in ports
                 if SOURCES[source] != netns_name(node)]
        states = dict(zip(pairs, probe(source, [(addresses[node], port) for node, port in pairs])))
        assert {pair for pair, state in states.items() if state == "open"} == expected, (source, states)
        assert {pair for pair, state in states.items() if state != "open"} == {p for p in pairs if p not in expected}
        assert "refused" not in states.values(), (source, states)
