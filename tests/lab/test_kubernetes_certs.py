"""`hardened-cluster certs` on the live cluster: it lists what the nodes really hold (compared with `openssl x509`
there), exits 0 on a fresh cluster, names a member holding an older, soon expiring etcd certificate and exits 1,
and is clean again once apply has put the state store's copy back.

`hardened-cluster rotate kubeadm-certs` renews nothing within a window no certificate is in, and with the
default window renews every kubeadm certificate: the API server then serves a new certificate, the static
pods were restarted, the admin kubeconfig in the state store carries a new client certificate that works,
and a full rerun on the control plane changes nothing. A certificate falling due (a year on, simulated by a
wider window) moves the rerun fingerprint, so a no-op apply does not skip it, and drift names it.
"""
from __future__ import annotations

import base64
import ipaddress
import json
import os
import ssl
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

import live_cluster
from hardened_cluster.deliver.rerun import fingerprints
from hardened_cluster.plan import role_vars as role_vars_module
from hardened_cluster.plan.render import render_plan
from hardened_cluster.secrets.store import resolve_secrets
from live_cluster import apply, kubectl

pytestmark = pytest.mark.lab

CP = "cp-1"
APISERVER = "/etc/kubernetes/pki/apiserver.crt"
ETCD_SERVER = "/etc/etcd/pki/server.crt"
MEMBER = "etcd-2"


@pytest.fixture(scope="module")
def cluster(lab, lab_spec, lab_state, bundle):
    """Every phase applied to the lab (from empty when this module runs alone)."""
    assert "kubernetes" in apply(lab_spec, lab_state).phases
    return live_cluster.access(lab_state, bundle)


def certs(lab_spec, lab_state) -> tuple[int, dict]:
    """`hardened-cluster certs --json` against the lab's state store: exit code and report."""
    env = {**os.environ, "HC_STATE_DIR": str(lab_state.parent)}
    run = subprocess.run([sys.executable, "-m", "hardened_cluster.cli.main", "certs", "--spec", str(lab_spec.path), "--json"],
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


def rotate_kubeadm_certs(lab_spec, lab_state, *extra) -> dict:
    env = {**os.environ, "HC_STATE_DIR": str(lab_state.parent)}
    run = subprocess.run([sys.executable, "-m", "hardened_cluster.cli.main", "rotate", "kubeadm-certs", "--spec",
                          str(lab_spec.path), "--json", *extra], capture_output=True, text=True, env=env, timeout=1200)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return json.loads(run.stdout)


def served_serial(lab_spec) -> int:
    """The serial of the certificate cp-1's API server presents."""
    address = str(lab_spec.spec.node(CP).address)
    port = lab_spec.spec.cluster.api_port
    pem = ssl.get_server_certificate((address, port), timeout=10)
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


def admin_client_serial(lab_state) -> int:
    user = yaml.safe_load((lab_state / "admin.conf").read_text())["users"][0]["user"]
    return x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"])).serial_number


def control_plane_containers(lab) -> dict[str, str]:
    found = json.loads(on_node(lab, CP, "crictl ps --state running -o json"))["containers"]
    return {c["metadata"]["name"]: c["id"] for c in found
            if c["metadata"]["name"] in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")}


def test_a_certificate_falling_due_moves_the_fingerprint_and_drift_names_it(cluster, lab, lab_spec, lab_state,
                                                                          monkeypatch):
    """Time passing changes no file, so a no-op apply would skip the renewal forever if the fingerprint did
    not run the role's own check of what is due. A year from now is simulated by a window that every
    kubeadm certificate (valid one year) is in: the fingerprint moves, and drift names each certificate."""
    plan = render_plan(lab_spec, resolve_secrets(lab_spec, lab_state))
    now = fingerprints(lab_spec, plan, [CP], ["kubernetes"])[CP][1]
    assert now is not None and fingerprints(lab_spec, plan, [CP], ["kubernetes"])[CP][1] == now
    monkeypatch.setattr(role_vars_module, "RENEW_BEFORE", timedelta(days=400))
    assert fingerprints(lab_spec, plan, [CP], ["kubernetes"])[CP][1] != now
    found = live_cluster.drift(lab_spec, lab_state, phases=["kubernetes"], hosts=[CP])
    named = [c.item for c in found.get(CP, []) if c.task == "Report the certificates apply would renew"]
    assert {"apiserver", "apiserver-kubelet-client", "front-proxy-client", "admin.conf"} <= set(named), found


def test_kubeadm_certificates_are_renewed_and_served_after_the_static_pods_restart(cluster, lab, lab_spec, lab_state):
    serial, admin, containers = served_serial(lab_spec), admin_client_serial(lab_state), control_plane_containers(lab)
    assert len(containers) == 3

    # A fresh cluster has nothing expiring within a day: nothing is renewed, nothing restarts.
    narrow = rotate_kubeadm_certs(lab_spec, lab_state, "--within", "1")
    assert narrow["succeeded"] and narrow["renewed"] == {CP: []}, narrow
    assert (served_serial(lab_spec), control_plane_containers(lab)) == (serial, containers)

    every = rotate_kubeadm_certs(lab_spec, lab_state)
    assert every["succeeded"], every
    assert {"apiserver", "apiserver-kubelet-client", "front-proxy-client", "admin.conf", "controller-manager.conf",
            "scheduler.conf"} <= set(every["renewed"][CP]), every
    restarted = control_plane_containers(lab)
    assert set(restarted) == set(containers) and not set(restarted.values()) & set(containers.values())
    assert served_serial(lab_spec) != serial
    # The state store's admin kubeconfig is the renewed one, and it works.
    assert admin_client_serial(lab_state) != admin
    assert kubectl(cluster, "get", "--raw", "/readyz").stdout.strip() == "ok"
    assert on_node(lab, CP, "find /etc/kubernetes/pki /etc/kubernetes/*.conf -type f ! -perm 0600") == ""
    rc, report = certs(lab_spec, lab_state)
    assert (rc, report["findings"]) == (0, [])
    # What the renewal left is what the role wants: every task on the control plane, nothing to change.
    rerun = apply(lab_spec, lab_state, hosts=[CP], full=True)
    assert rerun.hosts[CP].changed == 0, [c.describe() for c in rerun.hosts[CP].changes]
