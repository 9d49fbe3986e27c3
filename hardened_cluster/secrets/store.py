"""Secret material: resolved from the spec's references or generated once into a 0600 store.

The store lives outside the git tree (see `state_dir`). Values are kept in memory only as long as
rendering needs them and never appear in reprs, logs or reports.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets as random
import string
from dataclasses import dataclass, field
from pathlib import Path

from hardened_cluster.errors import SpecError, SpecIssue
from hardened_cluster.secrets.age_key import generate_identity, identity_problem
from hardened_cluster.secrets.pki import ClusterPKI, Member, ensure_pki
from hardened_cluster.secrets.private import private_dir
from hardened_cluster.spec.load import read_secret
from hardened_cluster.spec.model import LoadedSpec, SecretRef


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

    def existing(self, name: str, why: str) -> str:
        """A value that must already be here: making a new one would lose what the old one protects."""
        path = self.directory / name
        if not path.is_file():
            raise SpecError([SpecIssue("encryption.keys", f"{path} is missing: {why}")])
        return path.read_text().strip()


# The record of an encryption key rotation (hardened_cluster/operations/key_rotation.py), beside the keys it names;
# key names are DNS labels, so no key's file is called this.
ROTATION_RECORD = "encryption-rotation.json"
# In order: the new key read-only, the new key writing, every object rewritten, the old keys removed.
ROTATION_STEPS = ("add", "write", "rewrite", "remove", "done")
RETIRED_DIR = "retired"


@dataclass(frozen=True)
class KeyRotation:
    """A key rotation: `step` is the one running (or `done`); the keys the configuration lists follow
    from it, so every plan, `apply` and `drift` included, renders what the rotation has reached."""
    step: str
    new: str
    old: tuple[str, ...]
    base: tuple[str, ...]  # the spec's key names when the first rotation started

    def key_names(self) -> list[str]:
        """The configuration's keys, the writing one first."""
        if self.step == "add":
            return [*self.old, self.new]
        if self.step in ("write", "rewrite"):
            return [self.new, *self.old]
        return [self.new]


def load_rotation(secrets_dir: Path) -> KeyRotation | None:
    path = secrets_dir / ROTATION_RECORD
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("step") not in ROTATION_STEPS:
        raise SpecError([SpecIssue("encryption.keys", f"{path}: unknown rotation step {data.get('step')!r}")])
    return KeyRotation(data["step"], data["new"], tuple(data["old"]), tuple(data["base"]))


def save_rotation(secrets_dir: Path, rotation: KeyRotation) -> None:
    write_private(secrets_dir / ROTATION_RECORD, json.dumps(
        {"step": rotation.step, "new": rotation.new, "old": list(rotation.old), "base": list(rotation.base)},
        indent=2) + "\n")


def retire_keys(secrets_dir: Path, names: list[str]) -> list[str]:
    """Move the generated files of keys no configuration lists any more aside (snapshots taken before
    the rotation still need them); returns the names moved. Referenced keys have no file here."""
    moved = []
    for name in names:
        path = secrets_dir / f"encryption-{name}"
        if path.is_file():
            private_dir(secrets_dir / RETIRED_DIR)
            os.replace(path, secrets_dir / RETIRED_DIR / path.name)
            moved.append(name)
    return moved


def rotation_key_name(trigger: str, taken: set[str]) -> str:
    """The name of a rotated-in key (the CLI's and the Pulumi component's): `rotated-<trigger>`."""
    slug = re.sub(r"[^a-z0-9-]+", "-", trigger.lower()).strip("-")[:40].strip("-")
    name = f"rotated-{slug}" if slug else "rotated"
    return name if name not in taken else f"{name}-{hashlib.sha256(trigger.encode()).hexdigest()[:8]}"


ENCRYPTION_KEY_BYTES = 32  # every provider here takes 32 (aescbc and aesgcm also 16 and 24)


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


def encryption_key_names(loaded: LoadedSpec, secrets_dir: Path) -> list[str]:
    """The keys the encryption configuration lists, the writing one first: the spec's, or the ones a
    recorded rotation has put in their place."""
    names = [k.name for k in loaded.spec.encryption.keys]
    rotation = load_rotation(secrets_dir)
    if rotation is None:
        return names
    if tuple(names) != rotation.base:
        raise SpecError([SpecIssue("encryption.keys", (
            f"names {names}, but the keys were rotated from {list(rotation.base)} ({secrets_dir / ROTATION_RECORD}); "
            f"the cluster's data is under '{rotation.new}'. Put the names back: a rotation replaces the spec's keys "
            "with ones kept in the state directory"))])
    return rotation.key_names()


def create_encryption_key(secrets_dir: Path, name: str) -> None:
    SecretStore(secrets_dir).get_or_create(f"encryption-{name}", _b64_key(ENCRYPTION_KEY_BYTES))


def _encryption_keys(loaded: LoadedSpec, store: SecretStore) -> list[tuple[str, str]]:
    refs = {k.name: k.secret for k in loaded.spec.encryption.keys}
    lost = "the key rotation recorded beside it lists this key; restore it from a backup of the state directory"
    return [(n, _resolve(refs[n], f"encryption-{n}", ENCRYPTION_KEY_BYTES, loaded, store) if n in refs
             else store.existing(f"encryption-{n}", lost)) for n in encryption_key_names(loaded, store.directory)]


def resolve_secrets(loaded: LoadedSpec, directory: Path) -> ClusterSecrets:
    """Every secret the plan needs: referenced ones read, generated ones created once."""
    spec = loaded.spec
    store = SecretStore(directory / "secrets")
    keys = _encryption_keys(loaded, store)
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
