"""The kubelet serving CSR approver: only a node's own request, naming only itself, is approved."""
from __future__ import annotations

import base64
import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SCRIPT = Path(__file__).resolve().parents[2] / "roles/cluster_objects/files/kubelet_serving_csrs.py"
NODES = {"worker-1": "10.231.0.31", "worker-2": "10.231.0.32"}


def request(node: str, dns: list[str], ips: list[str]) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                                    x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node}")]))
           .add_extension(x509.SubjectAlternativeName(names), critical=False)
           .sign(key, hashes.SHA256()))
    return base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode()


def csr(name, user, pem, signer="kubernetes.io/kubelet-serving", usages=("digital signature", "server auth"),
        groups=("system:nodes", "system:authenticated"), conditions=()):
    return {"metadata": {"name": name},
            "spec": {"signerName": signer, "username": user, "groups": list(groups), "usages": list(usages),
                     "request": pem},
            "status": {"conditions": [{"type": c} for c in conditions]}}


def verdict(items):
    out = subprocess.run([sys.executable, str(SCRIPT), json.dumps({"nodes": NODES})],
                         input=json.dumps({"items": items}), capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_a_nodes_own_request_is_approved():
    own = request("worker-1", ["worker-1"], ["10.231.0.31"])
    assert verdict([csr("a", "system:node:worker-1", own)]) == {"approve": ["a"], "refused": []}


@pytest.mark.parametrize("case, item, reason", [
    ("another node's names", csr("b", "system:node:worker-2", request("worker-2", ["worker-1"], ["10.231.0.31"])),
     "names ['worker-1'] and addresses ['10.231.0.31'], want worker-2 and 10.231.0.32"),
    ("an extra address", csr("c", "system:node:worker-1", request("worker-1", ["worker-1"], ["10.231.0.31", "8.8.8.8"])),
     "addresses ['10.231.0.31', '8.8.8.8']"),
    ("an extra name", csr("d", "system:node:worker-1", request("worker-1", ["worker-1", "api.example.com"], ["10.231.0.31"])),
     "names ['api.example.com', 'worker-1']"),
    ("no address", csr("e", "system:node:worker-1", request("worker-1", ["worker-1"], [])), "addresses []"),
    ("a node not in the spec", csr("f", "system:node:intruder", request("intruder", ["intruder"], ["10.231.0.99"])),
     "requested by system:node:intruder, not a node of the spec"),
    ("a user, not a node", csr("g", "alice", request("worker-1", ["worker-1"], ["10.231.0.31"])),
     "requested by alice, not a node of the spec"),
    ("client usages", csr("h", "system:node:worker-1", request("worker-1", ["worker-1"], ["10.231.0.31"]),
                          usages=("digital signature", "client auth")), "usages client auth, digital signature"),
    ("outside system:nodes", csr("i", "system:node:worker-1", request("worker-1", ["worker-1"], ["10.231.0.31"]),
                                 groups=("system:authenticated",)), "requester is not in system:nodes"),
])
def test_anything_else_is_left_pending_with_the_reason(case, item, reason):
    result = verdict([item])
    assert result["approve"] == []
    [refused] = result["refused"]
    assert reason in refused["reason"], case


def test_other_signers_and_decided_requests_are_ignored():
    own = request("worker-1", ["worker-1"], ["10.231.0.31"])
    items = [csr("j", "system:node:worker-1", own, signer="kubernetes.io/kube-apiserver-client-kubelet"),
             csr("k", "system:node:worker-1", own, conditions=("Approved",)),
             csr("l", "system:node:worker-1", own, conditions=("Denied",))]
    assert verdict(items) == {"approve": [], "refused": []}
