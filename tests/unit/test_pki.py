import hashlib
import ipaddress
import os
import shutil
import socket
import ssl
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hardened_cluster.secrets.pki import CertKey, Member, PKIError, ensure_pki, fingerprint

MEMBERS = [Member("etcd-1", "10.0.0.1"), Member("etcd-2", "10.0.0.2"), Member("etcd-3", "fd00::3")]
SERVER_CLIENT = {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
CLIENT = {ExtendedKeyUsageOID.CLIENT_AUTH}
LEAVES = [f"etcd/{m.name}/{kind}" for m in MEMBERS for kind in ("server", "peer")] + [
    "etcd/healthcheck-client",
    "apiserver-etcd-client",
]
CAS = ["etcd/ca", "ca", "front-proxy-ca"]


def utcnow():
    return datetime.now(timezone.utc).replace(microsecond=0)  # certificates hold whole seconds


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Content and inode of every file: a rewrite changes the inode even if content matched."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_ino)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def cert_at(root: Path, stem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((root / f"{stem}.crt").read_bytes())


def ext(cert: x509.Certificate, cls):
    return cert.extensions.get_extension_for_class(cls)


def expected_sans(member: Member) -> set:
    return {
        x509.DNSName(member.name),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address(member.address)),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    }


@pytest.fixture
def pki_dir(tmp_path):
    return tmp_path / "pki"


def test_generated_once_then_reused(pki_dir):
    first = ensure_pki(pki_dir, "lab", MEMBERS)
    before = snapshot(pki_dir)
    assert "generated etcd CA (etcd/ca.crt)" in first.notes
    assert "issued etcd server certificate for etcd-3" in first.notes

    second = ensure_pki(pki_dir, "lab", MEMBERS)

    assert second.notes == []
    assert snapshot(pki_dir) == before
    for name in ("etcd_ca", "etcd_server", "etcd_peer", "etcd_healthcheck_client", "apiserver_etcd_client",
                 "kubernetes_ca", "front_proxy_ca", "service_account"):
        assert getattr(second, name) == getattr(first, name), name
    assert first.etcd_ca.cert_pem == (pki_dir / "etcd/ca.crt").read_text()
    assert first.etcd_server["etcd-2"].key_pem == (pki_dir / "etcd/etcd-2/server.key").read_text()
    assert first.service_account == CertKey((pki_dir / "sa.pub").read_text(), (pki_dir / "sa.key").read_text())


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_file_layout_and_modes(pki_dir, umask):
    old_umask = os.umask(umask)  # modes must not depend on the caller's umask
    try:
        ensure_pki(pki_dir, "lab", MEMBERS)
    finally:
        os.umask(old_umask)

    files = {str(p.relative_to(pki_dir)) for p in pki_dir.rglob("*") if p.is_file()}
    expected = {f"{stem}.{suffix}" for stem in LEAVES + CAS for suffix in ("crt", "key")} | {"sa.pub", "sa.key"}
    assert files == expected
    for path in [pki_dir, *pki_dir.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path


def test_loosened_modes_are_tightened_with_note(pki_dir):
    ensure_pki(pki_dir, "lab", MEMBERS)
    os.chmod(pki_dir / "etcd", 0o755)
    os.chmod(pki_dir / "etcd/ca.key", 0o644)
    os.chmod(pki_dir / "etcd/etcd-1/server.key", 0o644)

    notes = ensure_pki(pki_dir, "lab", MEMBERS).notes

    assert stat.S_IMODE((pki_dir / "etcd").stat().st_mode) == 0o700
    assert stat.S_IMODE((pki_dir / "etcd/ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((pki_dir / "etcd/etcd-1/server.key").stat().st_mode) == 0o600
    assert "set permissions of etcd/ca.key to 0600 (was 0644)" in notes
    assert len(notes) == 3


def test_ca_profiles(pki_dir):
    now = utcnow()
    ensure_pki(pki_dir, "lab", MEMBERS, now=now)
    for stem, cn, key_type in (("etcd/ca", "etcd-ca", ec.EllipticCurvePublicKey),
                               ("ca", "kubernetes", rsa.RSAPublicKey),
                               ("front-proxy-ca", "front-proxy-ca", rsa.RSAPublicKey)):
        cert = cert_at(pki_dir, stem)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
        assert cert.issuer == cert.subject
        cert.verify_directly_issued_by(cert)
        public = cert.public_key()
        assert isinstance(public, key_type)
        if isinstance(public, rsa.RSAPublicKey):
            assert public.key_size == 2048
        else:
            assert isinstance(public.curve, ec.SECP256R1)
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
        assert cert.not_valid_after_utc - now == timedelta(days=3650)
        bc = ext(cert, x509.BasicConstraints)
        assert bc.critical and bc.value.ca and bc.value.path_length == 0
        ku = ext(cert, x509.KeyUsage)
        assert ku.critical
        assert ku.value.key_cert_sign and ku.value.crl_sign and ku.value.digital_signature
        assert not ku.value.key_encipherment
        assert ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(public)

    sa_pub = serialization.load_pem_public_key((pki_dir / "sa.pub").read_bytes())
    sa_key = serialization.load_pem_private_key((pki_dir / "sa.key").read_bytes(), password=None)
    assert isinstance(sa_key, rsa.RSAPrivateKey) and sa_key.key_size == 2048
    assert sa_pub.public_numbers() == sa_key.public_key().public_numbers()


def test_leaf_profiles_and_chain(pki_dir):
    now = utcnow()
    pki = ensure_pki(pki_dir, "lab", MEMBERS, now=now)
    ca = cert_at(pki_dir, "etcd/ca")
    serials = set()
    leaves = {}
    for m in MEMBERS:
        leaves[f"etcd/{m.name}/server"] = (m.name, SERVER_CLIENT, expected_sans(m))
        leaves[f"etcd/{m.name}/peer"] = (m.name, SERVER_CLIENT, expected_sans(m))
    leaves["etcd/healthcheck-client"] = ("kube-etcd-healthcheck-client", CLIENT, None)
    leaves["apiserver-etcd-client"] = ("kube-apiserver-etcd-client", CLIENT, None)
    assert set(leaves) == set(LEAVES)

    for stem, (cn, usages, sans) in leaves.items():
        cert = cert_at(pki_dir, stem)
        cert.verify_directly_issued_by(ca)
        assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]), stem
        assert set(ext(cert, x509.ExtendedKeyUsage).value) == usages, stem
        if sans is None:
            with pytest.raises(x509.ExtensionNotFound):
                ext(cert, x509.SubjectAlternativeName)
        else:
            assert set(ext(cert, x509.SubjectAlternativeName).value) == sans, stem
        bc = ext(cert, x509.BasicConstraints)
        assert bc.critical and not bc.value.ca
        ku = ext(cert, x509.KeyUsage)
        assert ku.critical and ku.value.digital_signature
        assert not (ku.value.key_encipherment or ku.value.key_cert_sign or ku.value.crl_sign)
        assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == \
            ext(ca, x509.SubjectKeyIdentifier).value.digest
        assert ext(cert, x509.SubjectKeyIdentifier).value == \
            x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
        assert cert.not_valid_after_utc - now == timedelta(days=365)
        serials.add(cert.serial_number)
        key = serialization.load_pem_private_key((pki_dir / f"{stem}.key").read_bytes(), password=None)
        assert key.public_key() == cert.public_key()
    assert len(serials) == len(leaves)
    assert pki.etcd_server["etcd-3"].cert_pem == (pki_dir / "etcd/etcd-3/server.crt").read_text()


# --- real TLS handshakes ---------------------------------------------------------------------------

def server_context(root: Path, stem: str, ca_stem: str = "etcd/ca") -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_cert_chain(root / f"{stem}.crt", root / f"{stem}.key")
    ctx.load_verify_locations(cafile=root / f"{ca_stem}.crt")
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(ca_root: Path, cert_root: Path | None = None, stem: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the server and its hostname
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_verify_locations(cafile=ca_root / "etcd/ca.crt")
    if stem is not None:
        ctx.load_cert_chain(cert_root / f"{stem}.crt", cert_root / f"{stem}.key")
    return ctx


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str) -> dict:
    server_sock, client_sock = socket.socketpair()
    server_sock.settimeout(5)
    client_sock.settimeout(5)
    result = {}

    def serve():
        try:
            with server_ctx.wrap_socket(server_sock, server_side=True) as tls:
                result["client_cn"] = dict(x[0] for x in tls.getpeercert()["subject"])["commonName"]
                tls.sendall(tls.recv(5))
        except (ssl.SSLError, OSError) as exc:
            result["server_error"] = exc
        finally:
            server_sock.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with client_ctx.wrap_socket(client_sock, server_hostname=server_hostname) as tls:
            tls.sendall(b"ping!")
            result["echo"] = tls.recv(5)
    except (ssl.SSLError, OSError) as exc:
        result["client_error"] = exc
    finally:
        client_sock.close()
    thread.join(10)
    assert not thread.is_alive()
    return result


@pytest.mark.parametrize("hostname", ["etcd-1", "localhost", "10.0.0.1", "127.0.0.1", "::1"])
@pytest.mark.parametrize("client", ["etcd/healthcheck-client", "apiserver-etcd-client"])
def test_tls_mutual_auth_succeeds(pki_dir, hostname, client):
    ensure_pki(pki_dir, "lab", MEMBERS)
    result = handshake(server_context(pki_dir, "etcd/etcd-1/server"),
                       client_context(pki_dir, pki_dir, client), hostname)
    assert result == {"client_cn": x509.load_pem_x509_certificate(
        (pki_dir / f"{client}.crt").read_bytes()).subject.rfc4514_string().removeprefix("CN="),
        "echo": b"ping!"}


def test_tls_peer_to_peer_succeeds(pki_dir):
    ensure_pki(pki_dir, "lab", MEMBERS)
    result = handshake(server_context(pki_dir, "etcd/etcd-3/peer"),
                       client_context(pki_dir, pki_dir, "etcd/etcd-1/peer"), "fd00::3")
    assert result == {"client_cn": "etcd-1", "echo": b"ping!"}


def test_tls_client_without_certificate_is_rejected(pki_dir):
    ensure_pki(pki_dir, "lab", MEMBERS)
    result = handshake(server_context(pki_dir, "etcd/etcd-1/server"), client_context(pki_dir), "etcd-1")
    assert isinstance(result.get("server_error"), ssl.SSLError)
    assert "echo" not in result


def test_tls_client_from_other_ca_is_rejected(tmp_path, pki_dir):
    other = tmp_path / "other"
    ensure_pki(pki_dir, "lab", MEMBERS)
    ensure_pki(other, "lab", MEMBERS)
    result = handshake(server_context(pki_dir, "etcd/etcd-1/server"),
                       client_context(pki_dir, other, "etcd/healthcheck-client"), "etcd-1")
    assert isinstance(result.get("server_error"), ssl.SSLError)
    assert "certificate verify failed" in str(result["server_error"])
    assert "echo" not in result


def test_tls_wrong_member_hostname_is_rejected(pki_dir):
    ensure_pki(pki_dir, "lab", MEMBERS)
    result = handshake(server_context(pki_dir, "etcd/etcd-1/server"),
                       client_context(pki_dir, pki_dir, "etcd/healthcheck-client"), "etcd-2")
    assert isinstance(result.get("client_error"), ssl.SSLCertVerificationError)


# --- reissue rules ---------------------------------------------------------------------------------

def test_address_change_reissues_only_that_member(pki_dir):
    ensure_pki(pki_dir, "lab", MEMBERS)
    before = snapshot(pki_dir)
    moved = [MEMBERS[0], Member("etcd-2", "10.0.9.2"), MEMBERS[2]]

    pki = ensure_pki(pki_dir, "lab", moved)

    after = snapshot(pki_dir)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"etcd/etcd-2/server.crt", "etcd/etcd-2/server.key",
                       "etcd/etcd-2/peer.crt", "etcd/etcd-2/peer.key"}
    assert sorted(pki.notes) == ["reissued etcd peer certificate for etcd-2: SANs changed",
                                 "reissued etcd server certificate for etcd-2: SANs changed"]
    ca = cert_at(pki_dir, "etcd/ca")
    for kind in ("server", "peer"):
        cert = cert_at(pki_dir, f"etcd/etcd-2/{kind}")
        cert.verify_directly_issued_by(ca)
        assert set(ext(cert, x509.SubjectAlternativeName).value) == expected_sans(moved[1])
    assert ensure_pki(pki_dir, "lab", moved).notes == []


def test_new_member_issued_removed_member_left_alone(pki_dir):
    ensure_pki(pki_dir, "lab", MEMBERS)
    before = snapshot(pki_dir)
    members = [MEMBERS[0], MEMBERS[1], Member("etcd-4", "10.0.0.4")]

    pki = ensure_pki(pki_dir, "lab", members)

    after = snapshot(pki_dir)
    assert sorted(pki.notes) == ["issued etcd peer certificate for etcd-4",
                                 "issued etcd server certificate for etcd-4"]
    assert {k: v for k, v in after.items() if not k.startswith("etcd/etcd-4/")} == before
    assert set(pki.etcd_server) == {"etcd-1", "etcd-2", "etcd-4"}
    cert_at(pki_dir, "etcd/etcd-4/server").verify_directly_issued_by(cert_at(pki_dir, "etcd/ca"))


@pytest.mark.parametrize(("days", "reissued"), [(334, False), (335, True), (340, True), (400, True)])
def test_near_expiry_reissues_leaves_not_cas(pki_dir, days, reissued):
    start = utcnow()
    ensure_pki(pki_dir, "lab", MEMBERS, now=start)
    before = snapshot(pki_dir)
    later = start + timedelta(days=days)

    pki = ensure_pki(pki_dir, "lab", MEMBERS, now=later)

    after = snapshot(pki_dir)
    changed = {k for k in before if before[k] != after[k]}
    if not reissued:
        assert changed == set() and pki.notes == []
        return
    assert changed == {f"{stem}.{suffix}" for stem in LEAVES for suffix in ("crt", "key")}
    reason = "expired" if days >= 365 else f"expires in {365 - days} days"
    assert f"reissued etcd server certificate for etcd-2: {reason}" in pki.notes
    assert f"reissued apiserver etcd client certificate: {reason}" in pki.notes
    assert len(pki.notes) == len(LEAVES)
    ca = cert_at(pki_dir, "etcd/ca")
    for stem in LEAVES:
        cert = cert_at(pki_dir, stem)
        cert.verify_directly_issued_by(ca)
        assert cert.not_valid_after_utc - later == timedelta(days=365)


def test_leaf_from_other_ca_or_corrupt_is_reissued(tmp_path, pki_dir):
    other = tmp_path / "other"
    ensure_pki(pki_dir, "lab", MEMBERS)
    ensure_pki(other, "lab", MEMBERS)
    for suffix in ("crt", "key"):
        shutil.copy(other / f"etcd/etcd-1/server.{suffix}", pki_dir / f"etcd/etcd-1/server.{suffix}")
    (pki_dir / "etcd/healthcheck-client.key").write_text("garbage")

    pki = ensure_pki(pki_dir, "lab", MEMBERS)

    assert sorted(pki.notes) == [
        "reissued etcd healthcheck client certificate: certificate or key unreadable",
        "reissued etcd server certificate for etcd-1: not signed by the current CA",
    ]
    ca = cert_at(pki_dir, "etcd/ca")
    cert_at(pki_dir, "etcd/etcd-1/server").verify_directly_issued_by(ca)
    cert_at(pki_dir, "etcd/healthcheck-client").verify_directly_issued_by(ca)


# --- CA protection ---------------------------------------------------------------------------------

@pytest.mark.parametrize("stem", CAS)
def test_mismatched_ca_key_raises_and_keeps_files(tmp_path, pki_dir, stem):
    other = tmp_path / "other"
    ensure_pki(pki_dir, "lab", MEMBERS)
    ensure_pki(other, "lab", MEMBERS)
    shutil.copy(other / f"{stem}.key", pki_dir / f"{stem}.key")
    before = snapshot(pki_dir)

    with pytest.raises(PKIError) as info:
        ensure_pki(pki_dir, "lab", MEMBERS)

    assert str(pki_dir / f"{stem}.key") in str(info.value)
    assert "does not match" in str(info.value)
    assert "PRIVATE KEY" not in str(info.value)
    assert snapshot(pki_dir) == before


@pytest.mark.parametrize(("damage", "named"), [
    ("garbage cert", "etcd/ca.crt"),
    ("garbage key", "etcd/ca.key"),
    ("missing cert", "etcd/ca.crt"),
    ("sa mismatch", "sa.key"),
    ("leaf as ca", "etcd/ca.crt"),
])
def test_damaged_generate_once_files_raise(tmp_path, pki_dir, damage, named):
    ensure_pki(pki_dir, "lab", MEMBERS)
    if damage == "garbage cert":
        (pki_dir / "etcd/ca.crt").write_text("not a cert")
    elif damage == "garbage key":
        label = "PRIVATE" + " KEY"  # a PEM frame around nothing: no key material in the repository
        (pki_dir / "etcd/ca.key").write_text(f"-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n")
    elif damage == "missing cert":
        (pki_dir / "etcd/ca.crt").unlink()
    elif damage == "sa mismatch":
        ensure_pki(tmp_path / "other", "lab", MEMBERS)
        shutil.copy(tmp_path / "other/sa.key", pki_dir / "sa.key")
    else:
        for suffix in ("crt", "key"):
            shutil.copy(pki_dir / f"etcd/etcd-1/server.{suffix}", pki_dir / f"etcd/ca.{suffix}")
    before = snapshot(pki_dir)

    with pytest.raises(PKIError) as info:
        ensure_pki(pki_dir, "lab", MEMBERS)

    assert str(pki_dir / named) in str(info.value)
    assert "PRIVATE KEY" not in str(info.value)
    assert snapshot(pki_dir) == before


def test_ca_of_other_cluster_is_refused(pki_dir):
    ensure_pki(pki_dir, "lab", MEMBERS)
    with pytest.raises(PKIError, match="created for cluster 'lab', not 'prod'"):
        ensure_pki(pki_dir, "prod", MEMBERS)


def test_concurrent_runs_share_one_ca(pki_dir):
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: ensure_pki(pki_dir, "lab", MEMBERS), range(4)))
    assert len({r.etcd_ca.cert_pem for r in results}) == 1
    assert len({r.kubernetes_ca.cert_pem for r in results}) == 1
    assert sum("generated etcd CA (etcd/ca.crt)" in r.notes for r in results) == 1


# --- inputs, secrecy, helpers ----------------------------------------------------------------------

@pytest.mark.parametrize(("members", "message"), [
    ([Member("etcd-1", "10.0.0.1"), Member("etcd-1", "10.0.0.2")], "duplicate etcd member name 'etcd-1'"),
    ([Member("etcd-1", "10.0.0.300")], "invalid IP address '10.0.0.300'"),
    ([Member("etcd-1", "etcd-1.example")], "invalid IP address"),
    ([Member("etcd-1", 167772161)], "invalid IP address"),
    ([Member("../evil", "10.0.0.1")], "invalid etcd member name"),
    ([Member("Etcd_1", "10.0.0.1")], "invalid etcd member name"),
    ([Member("ca.key", "10.0.0.1")], "collides"),
    ([], "at least one etcd member"),
])
def test_invalid_members_rejected_before_writing(pki_dir, members, message):
    with pytest.raises(PKIError, match=message):
        ensure_pki(pki_dir, "lab", members)
    assert not pki_dir.exists()


def test_naive_now_rejected(pki_dir):
    with pytest.raises(PKIError, match="timezone-aware"):
        ensure_pki(pki_dir, "lab", MEMBERS, now=datetime.now())


def test_repr_hides_private_keys(pki_dir):
    pki = ensure_pki(pki_dir, "lab", MEMBERS)
    assert "PRIVATE KEY" in pki.etcd_ca.key_pem
    for text in (repr(pki), str(pki), repr(pki.etcd_ca), repr(pki.service_account),
                 repr(pki.etcd_server["etcd-1"]), "\n".join(pki.notes)):
        assert "PRIVATE KEY" not in text
    assert "BEGIN CERTIFICATE" in repr(pki.etcd_ca)


def test_fingerprint(pki_dir):
    pki = ensure_pki(pki_dir, "lab", MEMBERS)
    der = x509.load_pem_x509_certificate(pki.etcd_ca.cert_pem.encode()).public_bytes(serialization.Encoding.DER)
    assert fingerprint(pki.etcd_ca.cert_pem) == hashlib.sha256(der).hexdigest()
    assert fingerprint(pki.etcd_ca.cert_pem) != fingerprint(pki.kubernetes_ca.cert_pem)
    with pytest.raises(PKIError):
        fingerprint("nope")
