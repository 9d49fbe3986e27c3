"""`hardened-cluster certs`: the listing's parts on certificates made here, its node script run by a real shell
on a file tree laid out as a node's, and `check`'s warning for the state store."""
from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hardened_cluster.errors import DeliveryError
from hardened_cluster.plan.render import HostPlan, Plan, render_plan
from hardened_cluster.secrets.pki import CA_VALIDITY, RENEW_BEFORE, CertKey, Member, ensure_pki
from hardened_cluster.secrets.store import resolve_secrets
from hardened_cluster.spec.load import load_spec
from hardened_cluster.verify import certs, cis

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "inventories" / "sample" / "cluster.yaml"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture(scope="module")
def plan(tmp_path_factory) -> Plan:
    loaded = load_spec(SAMPLE)
    return render_plan(loaded, resolve_secrets(loaded, tmp_path_factory.mktemp("state") / "prod-eu1"))


def issue(ca: CertKey, cn: str, not_before: datetime, not_after: datetime) -> tuple[str, str]:
    """A certificate (and its key) signed by `ca`, valid between the two moments."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def load(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def node_tree(root: Path, host: HostPlan) -> HostPlan:
    """`host` with its files moved under `root`, and its delivered certificates placed there as apply would."""
    files = {f"{root}{p}": dataclasses.replace(f, path=f"{root}{p}") for p, f in host.files.items()}
    rooted = HostPlan(host.node, files, [])
    for path, content in certs.delivered(rooted).items():
        write(Path(path), content)
    return rooted


def write(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)


def listing(root: Path, host: HostPlan, monkeypatch) -> str:
    """What the node script prints, run by sh on the tree under `root`."""
    monkeypatch.setattr(certs, "NODE_GLOBS", tuple(f"{root}{g}" for g in certs.NODE_GLOBS))
    script = certs.script(sorted(certs.delivered(host)))
    return subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, check=True).stdout


def kubeconfig(ca_pem: str, cert_pem: str | None, key_pem: str | None) -> str:
    b64 = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    user = (f"    client-certificate-data: {b64(cert_pem)}\n    client-key-data: {b64(key_pem)}\n" if cert_pem
            else "    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n")
    return ("apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n"
            f"    certificate-authority-data: {b64(ca_pem)}\n    server: https://10.20.0.21:6443\n  name: prod-eu1\n"
            f"users:\n- name: someone\n  user:\n{user}")


@pytest.mark.parametrize(("left", "problem"), [
    (RENEW_BEFORE + timedelta(days=1), None),
    (RENEW_BEFORE + timedelta(seconds=1), None),
    (RENEW_BEFORE, "expires within 30 days (2026-05-31T12:00:00Z)"),
    (timedelta(days=10), "expires within 30 days (2026-05-11T12:00:00Z)"),
    (timedelta(0), "expired 2026-05-01T12:00:00Z"),
    (-timedelta(days=3), "expired 2026-04-28T12:00:00Z"),
])
def test_expiry_threshold_is_renew_before(plan, left, problem):
    pem, _ = issue(plan.pki.etcd_ca, "someone", NOW - timedelta(days=300), NOW + left)
    cert = certs.describe("x.crt", load(pem), NOW)
    assert cert.problems == ((problem,) if problem else ())
    assert cert.days_left == left // timedelta(days=1)
    assert (cert.subject, cert.issuer, cert.sans) == ("CN=someone", "CN=etcd-ca,O=prod-eu1", ("DNS:someone",))


def test_the_store_lists_its_certificates_and_a_fresh_one_has_no_finding(plan):
    store = certs.store_certificates(plan.pki)
    members = [n.name for n in plan.spec.nodes_with("etcd")]
    assert [c.path for c in store] == [
        "etcd/ca.crt", "ca.crt", "front-proxy-ca.crt", *[f"etcd/{m}/server.crt" for m in members],
        *[f"etcd/{m}/peer.crt" for m in members], "etcd/healthcheck-client.crt", "apiserver-etcd-client.crt"]
    assert [c for c in store if c.problems] == []
    assert {c.path: c.days_left for c in store}["ca.crt"] == CA_VALIDITY.days - 1
    server = next(c for c in store if c.path == "etcd/etcd-1/server.crt")
    assert ("DNS:etcd-1", "IP:10.20.0.11") == server.sans[:1] + server.sans[2:3]


def test_node_script_prints_certificates_and_never_a_key(plan, tmp_path, monkeypatch):
    cp = node_tree(tmp_path, plan.hosts["cp-1"])
    ca = plan.pki.kubernetes_ca
    admin, admin_key = issue(ca, "kubernetes-admin", NOW, NOW + timedelta(days=365))
    kubelet, kubelet_key = issue(ca, "system:node:cp-1", NOW, NOW + timedelta(days=365))
    old, old_key = issue(ca, "system:node:cp-1", NOW - timedelta(days=400), NOW - timedelta(days=35))
    pki = tmp_path / "var/lib/kubelet/pki"
    write(tmp_path / "etc/kubernetes/admin.conf", kubeconfig(ca.cert_pem, admin, admin_key))
    write(tmp_path / "etc/kubernetes/kubelet.conf", kubeconfig(ca.cert_pem, None, None))
    write(tmp_path / "etc/kubernetes/pki/apiserver.key", admin_key)
    write(pki / "kubelet-client-2026-05-01.pem", kubelet + kubelet_key)
    write(pki / "kubelet-client-2025-03-27.pem", old + old_key)  # rotated away: not in use, not listed
    (pki / "kubelet-client-current.pem").symlink_to("kubelet-client-2026-05-01.pem")

    out = listing(tmp_path, cp, monkeypatch)
    assert "PRIVATE KEY" not in out
    assert not any(k.splitlines()[1] in out for k in (admin_key, kubelet_key, old_key))
    assert base64.b64encode(admin_key.encode()).decode()[:40] not in out

    found = certs.host_certs(cp, out, NOW)
    assert found.problems == []
    by_path = {c.path: c for c in found.certs}
    conf = f"{tmp_path}/etc/kubernetes"
    assert by_path[f"{conf}/admin.conf client-certificate-data"].subject == "CN=kubernetes-admin"
    assert by_path[f"{conf}/admin.conf certificate-authority-data"].subject == "CN=kubernetes,O=prod-eu1"
    assert by_path[f"{conf}/kubelet.conf certificate-authority-data"].issuer == "CN=kubernetes,O=prod-eu1"
    assert f"{conf}/kubelet.conf client-certificate-data" not in by_path
    assert by_path[f"{pki}/kubelet-client-current.pem"].subject == "CN=system:node:cp-1"
    assert not any("2025-03-27" in p for p in by_path)
    # The plan's copies of the store's certificates on a control plane, all current.
    assert {f"{conf}/pki/etcd/ca.crt", f"{conf}/pki/ca.crt", f"{conf}/pki/apiserver-etcd-client.crt"} <= set(by_path)
    assert [f for c in found.certs for f in c.problems] == []


def test_a_kubeconfig_certificate_near_expiry_is_a_finding(plan, tmp_path, monkeypatch):
    cp = node_tree(tmp_path, plan.hosts["cp-2"])
    soon, soon_key = issue(plan.pki.kubernetes_ca, "system:kube-scheduler", NOW - timedelta(days=340),
                           NOW + timedelta(days=20))
    write(tmp_path / "etc/kubernetes/scheduler.conf", kubeconfig(plan.pki.kubernetes_ca.cert_pem, soon, soon_key))
    found = certs.host_certs(cp, listing(tmp_path, cp, monkeypatch), NOW)
    report = certs.CertReport(NOW, [], {"cp-2": found})
    assert report.findings() == [f"cp-2 {tmp_path}/etc/kubernetes/scheduler.conf client-certificate-data: "
                                 f"expires within 30 days (2026-05-21T12:00:00Z)"]


def test_a_stale_or_missing_delivered_copy_is_a_finding(plan, tmp_path, monkeypatch):
    etcd = node_tree(tmp_path, plan.hosts["etcd-1"])
    pki_dir = f"{tmp_path}/etc/etcd/pki"
    clean = certs.host_certs(etcd, listing(tmp_path, etcd, monkeypatch), utcnow())
    assert (clean.problems, [c.problems for c in clean.certs if c.problems]) == ([], [])
    assert {c.path for c in clean.certs} == {f"{pki_dir}/{n}.crt" for n in ("ca", "server", "peer", "healthcheck-client")}

    store = load(plan.pki.etcd_server["etcd-1"].cert_pem)
    # An older copy, signed by the same CA and still valid for 10 days; and the peer cert gone.
    older, _ = issue(plan.pki.etcd_ca, "etcd-1", utcnow() - timedelta(days=355), utcnow() + timedelta(days=10))
    write(Path(f"{pki_dir}/server.crt"), older)
    Path(f"{pki_dir}/peer.crt").unlink()
    found = certs.host_certs(etcd, listing(tmp_path, etcd, monkeypatch), utcnow())
    report = certs.CertReport(utcnow(), [], {"etcd-1": found})
    expires = load(older).not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert report.findings() == [
        f"etcd-1: {pki_dir}/peer.crt: missing (the plan delivers the state store's copy)",
        f"etcd-1 {pki_dir}/server.crt: expires within 30 days ({expires})",
        f"etcd-1 {pki_dir}/server.crt: stale: an older copy than the state store (the store's expires "
        f"{store.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}, serial {store.serial_number:x})",
    ]

    # Another member's certificate (valid, newer) in place of this one's: stale too, though not older.
    write(Path(f"{pki_dir}/server.crt"), plan.pki.etcd_server["etcd-2"].cert_pem)
    found = certs.host_certs(etcd, listing(tmp_path, etcd, monkeypatch), utcnow())
    [server] = [c for c in found.certs if c.path.endswith("/server.crt")]
    assert server.problems == (f"stale: not the copy in the state store (the store's expires "
                               f"{store.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}, serial {store.serial_number:x})",)


def test_an_unfinished_listing_or_unreadable_certificate_is_a_finding(plan):
    etcd = plan.hosts["etcd-2"]
    assert certs.host_certs(etcd, "== /etc/etcd/pki/ca.crt\n", NOW).problems == ["the listing did not run to its end"]
    out = "== /x.crt\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\nhc-certs-end\n"
    assert certs.host_certs(etcd, out, NOW).problems == ["/x.crt: not a readable certificate"]


def test_json_report_and_table(plan):
    pem, _ = issue(plan.pki.etcd_ca, "etcd-2", NOW - timedelta(days=360), NOW + timedelta(days=5))
    host = certs.HostCerts(("etcd",), "10.20.0.12", [certs.describe("/etc/etcd/pki/server.crt", load(pem), NOW)],
                           ["/etc/etcd/pki/peer.crt: missing (the plan delivers the state store's copy)"])
    report = certs.CertReport(NOW, certs.store_certificates(plan.pki, NOW), {"etcd-2": host})
    data = json.loads(report.to_json())
    assert set(data) == {"now", "renew_before_days", "store", "hosts", "findings"}
    assert (data["now"], data["renew_before_days"]) == ("2026-05-01T12:00:00Z", 30)
    assert len(data["store"]) == len(plan.pki.certificates())
    [entry] = data["hosts"]["etcd-2"]["certificates"]
    assert set(entry) == {"path", "subject", "issuer", "serial", "not_after", "days_left", "sans", "sha256", "problems"}
    assert (entry["not_after"], entry["days_left"], entry["sans"]) == ("2026-05-06T12:00:00Z", 5, ["DNS:etcd-2"])
    assert data["hosts"]["etcd-2"]["roles"] == ["etcd"]
    assert data["findings"] == report.findings() == [
        "etcd-2: /etc/etcd/pki/peer.crt: missing (the plan delivers the state store's copy)",
        "etcd-2 /etc/etcd/pki/server.crt: expires within 30 days (2026-05-06T12:00:00Z)"]

    text = certs.lines(report)
    assert text[0] == "state store"
    assert text[1].split() == ["PATH", "SUBJECT", "ISSUER", "NOT", "AFTER", "DAYS"]
    assert "etcd-2 (etcd, 10.20.0.12)" in text
    assert any(line.split() == ["/etc/etcd/pki/server.crt", "CN=etcd-2", "CN=etcd-ca,O=prod-eu1",
                                "2026-05-06T12:00:00Z", "5"] for line in text)
    assert text[-1] == f"{len(plan.pki.certificates()) + 1} certificates ({len(plan.pki.certificates())} in the "\
                       "state store, the rest on 1 hosts); 2 findings"


def test_check_warns_for_state_store_certificates_expiring_within_renew_before(tmp_path):
    loaded = load_spec(SAMPLE)
    state = tmp_path / "prod-eu1"
    members = [Member(n.name, str(n.address)) for n in loaded.spec.nodes_with("etcd")]
    # CAs made 10 days short of their validity ago; ensure_pki reissues the (long expired) leaves, never a CA.
    ensure_pki(state / "pki", "prod-eu1", members, now=utcnow() - CA_VALIDITY + timedelta(days=10))
    findings = cis.check_plan(render_plan(loaded, resolve_secrets(loaded, state)))
    warned = {f.id: f for f in findings if f.id.startswith("PKI.")}
    assert set(warned) == {"PKI.etcd/ca.crt", "PKI.ca.crt", "PKI.front-proxy-ca.crt"}
    assert {f.status for f in warned.values()} == {"WARN"}
    assert warned["PKI.ca.crt"].detail.startswith("CN=kubernetes,O=prod-eu1: expires within 30 days (")


def test_check_has_no_certificate_warning_for_a_fresh_store(plan):
    assert [f for f in cis.check_plan(plan) if f.id.startswith("PKI.")] == []


def test_without_the_ssh_key_no_host_is_contacted(plan, tmp_path):
    spec = plan.spec
    spec = spec.model_copy(update={"ssh": spec.ssh.model_copy(update={"private_key_file": tmp_path / "absent"})})
    keyless = dataclasses.replace(plan, loaded=plan.loaded.model_copy(update={"spec": spec}))
    with pytest.raises(DeliveryError, match=f"^ssh.private_key_file: {tmp_path}/absent does not exist$"):
        certs.list_certificates(keyless)
