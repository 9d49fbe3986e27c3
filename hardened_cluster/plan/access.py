"""Who may log in to a host and with which keys: derived from the spec, made exact by the access role."""
from __future__ import annotations

from functools import lru_cache

import paramiko

from hardened_cluster.spec.model import Node, Spec


@lru_cache(maxsize=8)
def _public_half(path: str, _mtime_ns: int) -> str | None:
    try:
        key = paramiko.PKey.from_path(path)
    except (OSError, ValueError, paramiko.SSHException):
        return None
    return f"{key.get_name()} {key.get_base64()} hardened-cluster-admin"


def admin_public_key(spec: Spec) -> str | None:
    """The public half of ssh.private_key_file, or None when it cannot be read without a passphrase."""
    path = spec.ssh.private_key_file.expanduser()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return None
    return _public_half(str(path), mtime)


def authorized_keys(spec: Spec, node: Node) -> list[dict]:
    """Per managed user of `node`, every key its authorized_keys may hold."""
    admin = admin_public_key(spec)
    keys = {"root": list(spec.ssh.root_authorized_keys)}
    user = spec.ssh_user(node)
    keys[user] = keys.get(user, []) + ([admin] if admin else []) + list(spec.ssh.authorized_keys)
    return [{"user": name, "keys": allowed} for name, allowed in keys.items()]
