"""`hardened-cluster certs` on the live cluster: it lists what the nodes really hold (compared with `openssl x509`
there), exits 0 on a fresh cluster, names a member holding an older, soon expiring etcd certificate and exits 1,
and is clean again once apply has put the state store's copy back.
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from live_cluster import apply

pytestmark = pytest.mark.lab

CP = "cp-1"
APISERVER = "/etc/kubernetes/pki/apiserver.crt"
ETCD_SERVER = "/etc/etcd/pki/server.crt"
MEMBER = "etcd-2"


@pytest.fixture(scope="module")
def cluster(lab, lab_spec, lab_state, bundle):
    """Every phase applied to the lab (from empty when this module runs alone)."""
    assert "kubernetes" in apply(lab_spec, lab_state).phases


def certs(lab_spec, lab_state) -> tuple[int, dict]:
    """`hardened-cluster certs --json` against the lab's state store: exit code and report."""
    env = {**os.environ, "HC_STATE_DIR": str(lab_state.parent)}
    run = subprocess.run([sys.executable, "-m", "hardened_cluster.cli", "certs", "--spec", str(lab_spec.path), "--json"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode in (0, 1), run.stderr
    return run.returncode, json.loads(run.stdout)


def on_node(lab, node: str, script: str, input: bytes | None = None) -> str:
    return lab.lab.exec(node, ["sh", "-c", script], input=input).stdout.decode().strip()


def entry(report: dict, host: str, path: str) -> dict:
    [found] = [c for c in report["hosts"][host]["certificates"] if c["path"] == path]
    return found


def openssl(lab, node: str, path: str) -> dict:
    """Serial, expiry, SANs and SHA-256 fingerprint as openssl on the node reads the file."""
    out = on_node(lab, node, f"openssl x509 -in {path} -noout -serial -enddate -fingerprint -sha256 -ext subjectAltName")
    fields = dict(line.split("=", 1) for line in out.splitlines() if "=" in line and not line.startswith(" "))
    sans = [line.strip() for line in out.splitlines() if line.startswith(" ")]
    return {"serial": int(fields["serial"], 16),
            "not_after": datetime.strptime(fields["notAfter"], "%b %d %H:%M:%S %Y %Z").replace(tzinfo=timezone.utc),
            "sha256": next(v for k, v in fields.items() if k.endswith("Fingerprint")).replace(":", "").lower(),
            "sans": {_san(s.strip()) for s in ",".join(sans).split(",") if s.strip()}}


def _san(text: str) -> str:
    kind, _, value = text.partition(":")
    return f"IP:{ipaddress.ip_address(value)}" if kind in ("IP", "IP Address") else f"{kind}:{value}"


def test_the_listing_shows_what_the_nodes_hold_and_a_fresh_cluster_has_no_finding(cluster, lab, lab_spec, lab_state):
    rc, report = certs(lab_spec, lab_state)
    assert (rc, report["findings"]) == (0, [])

    apiserver = entry(report, CP, APISERVER)
    seen = openssl(lab, CP, APISERVER)
    assert int(apiserver["serial"], 16) == seen["serial"]
    assert datetime.fromisoformat(apiserver["not_after"]) == seen["not_after"]
    assert apiserver["sha256"] == seen["sha256"]
    assert {_san(s) for s in apiserver["sans"]} == seen["sans"]
    assert {"DNS:kubernetes.default.svc", f"IP:{lab_spec.spec.nodes_with('control-plane')[0].address}"} <= seen["sans"]
    kubernetes_ca = next(c for c in report["store"] if c["path"] == "ca.crt")["subject"]
    assert (apiserver["subject"], apiserver["issuer"]) == ("CN=kube-apiserver", kubernetes_ca)

    # Each member's serving certificate is the store's, as openssl on the member reads it.
    for node in lab_spec.spec.nodes_with("etcd"):
        store = x509.load_pem_x509_certificate((lab_state / "pki" / "etcd" / node.name / "server.crt").read_bytes())
        stored = store.fingerprint(hashes.SHA256()).hex()
        assert entry(report, node.name, ETCD_SERVER)["sha256"] == openssl(lab, node.name, ETCD_SERVER)["sha256"] == stored
        assert next(c for c in report["store"] if c["path"] == f"etcd/{node.name}/server.crt")["sha256"] == stored

    # What kubeadm and the kubelet wrote is there too: a kubeconfig's embedded client certificate and the
    # kubelet's current client and serving certificates.
    assert entry(report, CP, "/etc/kubernetes/admin.conf client-certificate-data")["issuer"] == kubernetes_ca
    for worker in ("worker-1", "worker-2"):
        assert entry(report, worker, "/var/lib/kubelet/pki/kubelet-client-current.pem")["subject"].startswith(
            f"CN=system:node:{worker}")
        assert entry(report, worker, "/var/lib/kubelet/pki/kubelet-server-current.pem")["sans"]


def test_an_older_etcd_certificate_on_a_member_is_named_and_apply_restores_the_stores(cluster, lab, lab_spec, lab_state):
    pki = lab_state / "pki" / "etcd"
    store = x509.load_pem_x509_certificate((pki / MEMBER / "server.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    # The member's certificate as the CA issued it a year ago: same name, SANs and key (etcd keeps serving), 10 days left.
    builder = (x509.CertificateBuilder().subject_name(store.subject).issuer_name(ca.subject)
               .public_key(store.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(days=355)).not_valid_after(now + timedelta(days=10)))
    for extension in store.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    older = builder.sign(ca_key, hashes.SHA256())
    on_node(lab, MEMBER, f"cat > {ETCD_SERVER}", input=older.public_bytes(serialization.Encoding.PEM))
    assert openssl(lab, MEMBER, ETCD_SERVER)["serial"] == older.serial_number

    rc, report = certs(lab_spec, lab_state)
    expires = f"{older.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
    assert rc == 1
    assert report["findings"] == [
        f"{MEMBER} {ETCD_SERVER}: expires within 30 days ({expires})",
        f"{MEMBER} {ETCD_SERVER}: stale: an older copy than the state store (the store's expires "
        f"{store.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}, serial {store.serial_number:x})",
    ]
    assert entry(report, MEMBER, ETCD_SERVER)["days_left"] in (9, 10)

    restored = apply(lab_spec, lab_state, phases=["etcd"], hosts=[MEMBER])
    assert not restored.hosts[MEMBER].unchanged
    assert openssl(lab, MEMBER, ETCD_SERVER)["serial"] == store.serial_number
    rc, report = certs(lab_spec, lab_state)
    assert (rc, report["findings"]) == (0, [])
