"""The etcd snapshot key: an age X25519 identity (age encrypts snapshots with ChaCha20-Poly1305)."""
from __future__ import annotations

import pyrage


def generate_identity() -> str:
    return str(pyrage.x25519.Identity.generate())


def identity_problem(text: str) -> str | None:
    """Why `text` is not one age identity (as age-keygen writes it, comments allowed); never shows the key."""
    keys = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(keys) != 1:
        return f"holds {len(keys)} key lines; it must hold one age identity (AGE-SECRET-KEY-1..., made by age-keygen)"
    try:
        pyrage.x25519.Identity.from_str(keys[0])
    except pyrage.IdentityError:
        return "is not an age X25519 identity (AGE-SECRET-KEY-1..., made by age-keygen)"
    return None
