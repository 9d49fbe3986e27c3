"""Secret material: resolved from the spec's references or generated once into a 0600 store.

The store lives outside the git tree (see `state_dir`). Values are kept in memory only as long as
rendering needs them and never appear in reprs, logs or reports.
"""
from __future__ import annotations

import base64
import os
import secrets as random
import string
from dataclasses import dataclass, field
from pathlib import Path

from hardened_cluster.age_key import generate_identity, identity_problem
from hardened_cluster.errors import SpecError, SpecIssue
from hardened_cluster.pki import ClusterPKI, Member, ensure_pki
from hardened_cluster.private import private_dir
from hardened_cluster.spec import LoadedSpec, SecretRef, read_secret


def state_dir(cluster_name: str) -> Path:
    """Per-cluster state (PKI, generated secrets, plans, reports), outside the git tree."""
    root = os.environ.get("HC_STATE_DIR")
    base = Path(root) if root else Path(os.environ.get("XDG_STATE_HOME", "~/.local/state")).expanduser() / "hardened-cluster"
    return base / cluster_name


def write_private(path: Path, data: str | bytes) -> None:
    """Write a file that is 0600 before it holds anything, atomically."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, raw)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class SecretStore:
    """Generated secrets, one 0600 file each, created once and reused."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def get_or_create(self, name: str, make) -> str:
        path = self.directory / name
        if path.exists():
            return path.read_text().strip()
        value = make()
        write_private(path, value + "\n")
        return value


def _b64_key(nbytes: int):
    return lambda: base64.b64encode(random.token_bytes(nbytes)).decode()


def _bootstrap_token() -> str:
    alphabet = string.ascii_lowercase + string.digits
    pick = lambda n: "".join(random.choice(alphabet) for _ in range(n))  # noqa: E731
    return f"{pick(6)}.{pick(16)}"


@dataclass(frozen=True)
class ClusterSecrets:
    encryption_keys: list[tuple[str, str]] = field(repr=False)  # (name, base64 key), first encrypts
    snapshot_key: str | None = field(repr=False)
    bootstrap_token: str = field(repr=False)
    certificate_key: str = field(repr=False)
    pki: ClusterPKI = field(repr=False)

    def values(self) -> list[str]:
        """Every secret value, for leak scans and redaction."""
        out = [k for _, k in self.encryption_keys] + [self.bootstrap_token, self.certificate_key]
        out += [self.snapshot_key] if self.snapshot_key else []
        pki = self.pki
        pairs = [pki.etcd_ca, pki.etcd_healthcheck_client, pki.apiserver_etcd_client, pki.kubernetes_ca,
                 pki.front_proxy_ca, pki.service_account, *pki.etcd_server.values(), *pki.etcd_peer.values()]
        return out + [p.key_pem for p in pairs]


def _resolve(ref: SecretRef, name: str, nbytes: int, loaded: LoadedSpec, store: SecretStore) -> str:
    if ref.generated:
        return store.get_or_create(name, _b64_key(nbytes))
    value = read_secret(ref, loaded.base_dir)
    assert value is not None, "validated at load"
    return value


def _snapshot_identity(ref: SecretRef, loaded: LoadedSpec, store: SecretStore) -> str:
    """The age identity that encrypts etcd snapshots; referenced ones were checked at load."""
    if not ref.generated:
        value = read_secret(ref, loaded.base_dir)
        assert value is not None, "validated at load"
        return value
    value = store.get_or_create("etcd-snapshot-key", generate_identity)
    if identity_problem(value):
        raise SpecError([SpecIssue("etcd.snapshot.encryption_key", (
            f"the generated key {store.directory / 'etcd-snapshot-key'} is not an age identity (it was made for "
            "openssl enc snapshots); move it aside, keeping it for those snapshots, and a new age identity is made"))])
    return value


def resolve_secrets(loaded: LoadedSpec, directory: Path) -> ClusterSecrets:
    """Every secret the plan needs: referenced ones read, generated ones created once."""
    spec = loaded.spec
    store = SecretStore(directory / "secrets")
    key_bytes = 32
    keys = [(k.name, _resolve(k.secret, f"encryption-{k.name}", key_bytes, loaded, store)) for k in spec.encryption.keys]
    snap = spec.etcd.snapshot.encryption_key
    snapshot_key = _snapshot_identity(snap, loaded, store) if snap else None
    members = [Member(n.name, str(n.address)) for n in spec.nodes_with("etcd")]
    return ClusterSecrets(
        encryption_keys=keys,
        snapshot_key=snapshot_key,
        bootstrap_token=store.get_or_create("bootstrap-token", _bootstrap_token),
        certificate_key=store.get_or_create("certificate-key", lambda: random.token_hex(32)),
        pki=ensure_pki(directory / "pki", spec.cluster.name, members),
    )
