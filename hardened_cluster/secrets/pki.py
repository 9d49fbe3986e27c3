"""Cluster PKI for hardened kubeadm clusters with an external etcd (mutual TLS).

Layout under the PKI directory (directories 0700, every file 0600). It mirrors
kubeadm's /etc/kubernetes/pki, so files can be copied to nodes as they are:

    etcd/ca.crt, etcd/ca.key                    etcd CA (ECDSA P-256)
    etcd/<member>/server.crt, server.key        etcd client-facing serving cert
    etcd/<member>/peer.crt, peer.key            etcd peer cert
    etcd/healthcheck-client.crt, .key           etcdctl health checks, snapshots
    apiserver-etcd-client.crt, .key             kube-apiserver -> etcd client
    ca.crt, ca.key                              kubernetes CA (RSA 2048)
    front-proxy-ca.crt, front-proxy-ca.key      front-proxy CA (RSA 2048)
    sa.pub, sa.key                              service-account signing key pair (RSA 2048)

CAs and the service-account key pair are generated once and never replaced:
damaged or mismatched files raise PKIError. Leaf certificates are reissued
from the same CA when they near expiry or no longer match their member.
Files of members no longer listed are left alone.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hardened_cluster.secrets.private import private_dir

CA_VALIDITY = timedelta(days=3650)
LEAF_VALIDITY = timedelta(days=365)
RENEW_BEFORE = timedelta(days=30)
# Tolerates clock skew between this host and the nodes.
BACKDATE = timedelta(minutes=5)

# RFC 1123 subdomain, as Kubernetes requires for node names.
_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*")
# Member directories live next to these files in etcd/.
_RESERVED_MEMBER_NAMES = frozenset({"ca.crt", "ca.key", "healthcheck-client.crt", "healthcheck-client.key"})

_SERVER_AND_CLIENT = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
_CLIENT_ONLY = (ExtendedKeyUsageOID.CLIENT_AUTH,)

_SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Member:
    name: str  # hostname, e.g. "etcd-1"
    address: str  # IP address (v4 or v6)


@dataclass(frozen=True)
class CertKey:
    cert_pem: str
    key_pem: str = field(repr=False)


@dataclass(frozen=True)
class ClusterPKI:
    etcd_ca: CertKey
    etcd_server: dict[str, CertKey]
    etcd_peer: dict[str, CertKey]
    etcd_healthcheck_client: CertKey
    apiserver_etcd_client: CertKey
    kubernetes_ca: CertKey
    front_proxy_ca: CertKey
    service_account: CertKey  # cert_pem is the public key (sa.pub), key_pem the private key (sa.key)
    notes: list[str]

    def certificates(self) -> dict[str, str]:
        """Every certificate (not sa.pub, a bare key) by its path in the PKI directory."""
        out = {"etcd/ca.crt": self.etcd_ca.cert_pem, "ca.crt": self.kubernetes_ca.cert_pem,
               "front-proxy-ca.crt": self.front_proxy_ca.cert_pem}
        for kind, certs in (("server", self.etcd_server), ("peer", self.etcd_peer)):
            out |= {f"etcd/{name}/{kind}.crt": pair.cert_pem for name, pair in certs.items()}
        out["etcd/healthcheck-client.crt"] = self.etcd_healthcheck_client.cert_pem
        out["apiserver-etcd-client.crt"] = self.apiserver_etcd_client.cert_pem
        return out


class PKIError(Exception):
    """Invalid input or PKI files that must not be replaced automatically."""


@dataclass(frozen=True)
class _Profile:
    label: str
    stem: str  # path of the .crt/.key pair without suffix
    subject: x509.Name
    usages: tuple[x509.ObjectIdentifier, ...]
    sans: tuple[x509.GeneralName, ...] = ()


def fingerprint(cert_pem: str) -> str:
    """SHA-256 of the certificate's DER encoding, lowercase hex."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode("ascii"))
    except ValueError:
        raise PKIError("not a PEM certificate") from None
    return cert.fingerprint(hashes.SHA256()).hex()


def ensure_pki(
    directory: Path, cluster_name: str, etcd_members: list[Member], *, now: datetime | None = None
) -> ClusterPKI:
    """Create or reuse the cluster PKI in `directory` (layout in the module docstring)."""
    now = _utc(now)
    _validate(cluster_name, etcd_members)
    directory = Path(directory)
    try:
        private_dir(directory.parent)
        store = _Store(directory, now)
        store.ensure_dir("")
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            # Concurrent runs must not both generate a CA.
            fcntl.flock(fd, fcntl.LOCK_EX)
            return _ensure_all(store, cluster_name, etcd_members)
        finally:
            os.close(fd)
    except OSError as exc:
        raise PKIError(f"cannot maintain PKI in {directory}: {exc}") from exc


def _ensure_all(store: _Store, cluster_name: str, members: list[Member]) -> ClusterPKI:
    store.ensure_dir("etcd")
    etcd_ca, etcd_ca_cert, etcd_ca_key = store.ca("etcd CA", "etcd/ca", cluster_name, "etcd-ca", _new_ec_key)
    kubernetes_ca, _, _ = store.ca("kubernetes CA", "ca", cluster_name, "kubernetes", _new_rsa_key)
    front_proxy_ca, _, _ = store.ca("front-proxy CA", "front-proxy-ca", cluster_name, "front-proxy-ca", _new_rsa_key)
    service_account = store.service_account()

    def leaf(label: str, stem: str, subject: x509.Name, usages: tuple, sans: tuple = ()) -> CertKey:
        return store.leaf(_Profile(label, stem, subject, usages, sans), etcd_ca_cert, etcd_ca_key)

    server: dict[str, CertKey] = {}
    peer: dict[str, CertKey] = {}
    for m in members:
        store.ensure_dir(f"etcd/{m.name}")
        subject, sans = _name(m.name), _member_sans(m)
        for kind, certs in (("server", server), ("peer", peer)):
            certs[m.name] = leaf(f"etcd {kind} certificate for {m.name}", f"etcd/{m.name}/{kind}",
                                 subject, _SERVER_AND_CLIENT, sans)
    healthcheck = leaf("etcd healthcheck client certificate", "etcd/healthcheck-client",
                       _name("kube-etcd-healthcheck-client"), _CLIENT_ONLY)
    apiserver_client = leaf("apiserver etcd client certificate", "apiserver-etcd-client",
                            _name("kube-apiserver-etcd-client"), _CLIENT_ONLY)
    return ClusterPKI(
        etcd_ca=etcd_ca,
        etcd_server=server,
        etcd_peer=peer,
        etcd_healthcheck_client=healthcheck,
        apiserver_etcd_client=apiserver_client,
        kubernetes_ca=kubernetes_ca,
        front_proxy_ca=front_proxy_ca,
        service_account=service_account,
        notes=store.notes,
    )


class _Store:
    """File handling for one ensure_pki run; collects the notes."""

    def __init__(self, root: Path, now: datetime) -> None:
        self.root = root
        self.now = now
        self.notes: list[str] = []

    def ensure_dir(self, rel: str) -> None:
        path = self.root / rel
        try:
            path.mkdir(mode=0o700)
            os.chmod(path, 0o700)  # the umask may have stripped bits
        except FileExistsError:
            if not path.is_dir():
                raise PKIError(f"{path} exists and is not a directory") from None
            self._set_mode(path, 0o700)

    def ca(
        self, label: str, stem: str, cluster_name: str, common_name: str, new_key: Callable[[], _SigningKey]
    ) -> tuple[CertKey, x509.Certificate, _SigningKey]:
        cert_path, key_path = self.root / f"{stem}.crt", self.root / f"{stem}.key"
        existing = self._read_existing(label, cert_path, key_path)
        if existing is None:
            key = new_key()
            cert = _build_ca(x509.Name([
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_name),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]), key, self.now)
            pair = CertKey(_cert_pem(cert), _key_pem(key))
            self._write(key_path, pair.key_pem)
            self._write(cert_path, pair.cert_pem)
            self.notes.append(f"generated {label} ({stem}.crt)")
            return pair, cert, key
        pair = CertKey(*existing)
        cert = _load_cert(label, cert_path, pair.cert_pem)
        key = _load_key(label, key_path, pair.key_pem)
        if _spki(key.public_key()) != _spki(cert.public_key()):
            raise PKIError(f"{label}: {key_path} does not match {cert_path}; refusing to replace an existing CA")
        if not _is_ca(cert):
            raise PKIError(f"{label}: {cert_path} is not a CA certificate")
        owners = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        # A CA from another cluster's directory would make the clusters trust each other.
        if owners and owners != [cluster_name]:
            raise PKIError(f"{label}: {cert_path} was created for cluster {owners[0]!r}, not {cluster_name!r}")
        remaining = cert.not_valid_after_utc - self.now
        if remaining < LEAF_VALIDITY:
            self.notes.append(f"{label} ({stem}.crt) expires in {remaining.days} days; plan a CA rotation")
        self._set_mode(cert_path, 0o600)
        self._set_mode(key_path, 0o600)
        return pair, cert, key

    def service_account(self) -> CertKey:
        label = "service account key pair"
        pub_path, key_path = self.root / "sa.pub", self.root / "sa.key"
        existing = self._read_existing(label, pub_path, key_path)
        if existing is None:
            key = _new_rsa_key()
            pair = CertKey(_public_pem(key.public_key()), _key_pem(key))
            self._write(key_path, pair.key_pem)
            self._write(pub_path, pair.cert_pem)
            self.notes.append(f"generated {label} (sa.key, sa.pub)")
            return pair
        pair = CertKey(*existing)
        try:
            public = serialization.load_pem_public_key(pair.cert_pem.encode("ascii"))
        except (ValueError, UnsupportedAlgorithm):
            raise PKIError(f"{label}: {pub_path} is not a PEM public key") from None
        key = _load_key(label, key_path, pair.key_pem)
        if _spki(key.public_key()) != _spki(public):
            raise PKIError(f"{label}: {key_path} does not match {pub_path}; refusing to replace it")
        self._set_mode(pub_path, 0o600)
        self._set_mode(key_path, 0o600)
        return pair

    def leaf(self, profile: _Profile, ca_cert: x509.Certificate, ca_key: _SigningKey) -> CertKey:
        cert_path, key_path = self.root / f"{profile.stem}.crt", self.root / f"{profile.stem}.key"
        if not cert_path.exists() and not key_path.exists():
            note = f"issued {profile.label}"
        else:
            try:
                pair = CertKey(_read_ascii(cert_path), _read_ascii(key_path))
            except (OSError, ValueError):
                reason = "certificate or key missing or unreadable"
            else:
                reason = self._leaf_problem(profile, pair, ca_cert)
                if reason is None:
                    self._set_mode(cert_path, 0o600)
                    self._set_mode(key_path, 0o600)
                    return pair
            note = f"reissued {profile.label}: {reason}"
        key = _new_ec_key()
        pair = CertKey(_cert_pem(_build_leaf(profile, key, ca_cert, ca_key, self.now)), _key_pem(key))
        self._write(key_path, pair.key_pem)
        self._write(cert_path, pair.cert_pem)
        self.notes.append(note)
        return pair

    def _leaf_problem(self, profile: _Profile, pair: CertKey, ca_cert: x509.Certificate) -> str | None:
        try:
            cert = _load_cert(profile.label, profile.stem, pair.cert_pem)
            key = _load_key(profile.label, profile.stem, pair.key_pem)
        except PKIError:
            return "certificate or key unreadable"
        if _spki(key.public_key()) != _spki(cert.public_key()):
            return "key does not match certificate"
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            return "not signed by the current CA"
        if cert.subject != profile.subject or _extension_values(cert, x509.ExtendedKeyUsage) != set(profile.usages):
            return "subject or extended key usage changed"
        if _extension_values(cert, x509.SubjectAlternativeName) != set(profile.sans):
            return "SANs changed"
        if cert.not_valid_before_utc > self.now:
            return "not yet valid"
        remaining = cert.not_valid_after_utc - self.now
        if remaining <= timedelta(0):
            return "expired"
        if remaining <= RENEW_BEFORE:
            return f"expires in {remaining.days} days"
        return None

    def _read_existing(self, label: str, *paths: Path) -> list[str] | None:
        """Contents of a generate-once file set; None when none of them exists yet."""
        present = [p for p in paths if p.exists()]
        if not present:
            return None
        for path in paths:
            if path not in present:
                raise PKIError(
                    f"{label}: {path} is missing but {present[0]} exists; restore it, "
                    "or delete both to generate new ones (invalidates everything that depends on them)"
                )
        contents = []
        for path in paths:
            try:
                contents.append(_read_ascii(path))
            except (OSError, ValueError):
                raise PKIError(f"{label}: cannot read {path} as ASCII PEM") from None
        return contents

    def _write(self, path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)  # the umask may have stripped bits
                f.write(text.encode("ascii"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)  # makes the rename durable
        finally:
            os.close(dir_fd)

    def _set_mode(self, path: Path, mode: int) -> None:
        old = stat.S_IMODE(path.stat().st_mode)
        if old != mode:
            os.chmod(path, mode)
            self.notes.append(f"set permissions of {path.relative_to(self.root)} to {mode:04o} (was {old:04o})")


def _utc(now: datetime | None) -> datetime:
    if now is None:
        now = datetime.now(timezone.utc)
    elif now.utcoffset() is None:
        raise PKIError("now must be timezone-aware")
    # Certificates store whole seconds; this keeps expiry arithmetic exact.
    return now.astimezone(timezone.utc).replace(microsecond=0)


def _validate(cluster_name: str, members: list[Member]) -> None:
    if not isinstance(cluster_name, str) or not _NAME_RE.fullmatch(cluster_name) or len(cluster_name) > 253:
        raise PKIError(f"invalid cluster name {cluster_name!r}: expected a lowercase RFC 1123 name")
    if not members:
        raise PKIError("at least one etcd member is required")
    seen: set[str] = set()
    for member in members:
        name = member.name
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or len(name) > 253:
            raise PKIError(f"invalid etcd member name {name!r}: expected a lowercase RFC 1123 hostname")
        if name in _RESERVED_MEMBER_NAMES:
            raise PKIError(f"etcd member name {name!r} collides with a PKI file name")
        if name in seen:
            raise PKIError(f"duplicate etcd member name {name!r}")
        seen.add(name)
        # ip_address() would also accept integers.
        if not isinstance(member.address, str):
            raise PKIError(f"etcd member {name!r}: invalid IP address {member.address!r}")
        try:
            ipaddress.ip_address(member.address)
        except ValueError:
            raise PKIError(f"etcd member {name!r}: invalid IP address {member.address!r}") from None


def _member_sans(member: Member) -> tuple[x509.GeneralName, ...]:
    # dict.fromkeys drops duplicates (e.g. a member at 127.0.0.1) while keeping order.
    return tuple(dict.fromkeys([
        x509.DNSName(member.name),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address(member.address)),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _new_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _build_ca(subject: x509.Name, key: _SigningKey, now: datetime) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _build_leaf(
    profile: _Profile, key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, ca_key: _SigningKey, now: datetime
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(profile.subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # Leaf keys are ECDSA, so no keyEncipherment.
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(profile.usages)), critical=False)
        .add_extension(_authority_key_id(ca_cert), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if profile.sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(profile.sans)), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    # Reuse the CA's own SKI: a CA generated elsewhere may compute it differently.
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _extension_values(cert: x509.Certificate, ext_type: type[x509.ExtensionType]) -> set:
    try:
        return set(cert.extensions.get_extension_for_class(ext_type).value)
    except x509.ExtensionNotFound:
        return set()


def _load_cert(label: str, path: Path | str, pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode("ascii"))
    except ValueError:
        raise PKIError(f"{label}: {path} is not a PEM certificate") from None


def _load_key(label: str, path: Path | str, pem: str) -> _SigningKey:
    try:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # "from None": the parser's error must not carry key bytes into tracebacks.
        raise PKIError(f"{label}: {path} is not an unencrypted PEM private key") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise PKIError(f"{label}: {path} holds an unsupported key type (need RSA or ECDSA)")
    return key


def _read_ascii(path: Path) -> str:
    # Bytes, not read_text(): newline translation would break byte-identical reuse.
    return path.read_bytes().decode("ascii")


def _spki(public_key: object) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _key_pem(key: _SigningKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def _public_pem(public_key: rsa.RSAPublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
