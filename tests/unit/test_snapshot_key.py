"""The etcd snapshot key must be one age identity; a bad one is refused naming the key path, never shown."""
import base64
from pathlib import Path

import pyrage
import pytest
import yaml

from hardened_cluster.errors import SpecError
from hardened_cluster.secrets.store import resolve_secrets
from hardened_cluster.spec.load import load_spec

SAMPLE = Path(__file__).resolve().parents[2] / "inventories" / "sample" / "cluster.yaml"


def _spec(tmp_path, key_text):
    doc = yaml.safe_load(SAMPLE.read_text())
    (tmp_path / "snap.key").write_text(key_text)
    doc["etcd"]["snapshot"]["encryption_key"] = {"file": "snap.key"}
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return tmp_path / "cluster.yaml"


def test_age_keygen_output_is_accepted_and_delivered_as_is(tmp_path):
    identity = str(pyrage.x25519.Identity.generate())
    text = f"# created: 2026-12-01T00:00:00Z\n# public key: age1...\n{identity}\n"
    loaded = load_spec(_spec(tmp_path, text))
    assert resolve_secrets(loaded, tmp_path / "state").snapshot_key == text.strip()


@pytest.mark.parametrize("text", [base64.b64encode(b"k" * 32).decode(), "AGE-SECRET-KEY-1NOTAKEY",
                                  "AGE-SECRET-KEY-1A\nAGE-SECRET-KEY-1B"])
def test_anything_but_one_age_identity_is_refused_without_showing_it(tmp_path, text):
    with pytest.raises(SpecError) as caught:
        load_spec(_spec(tmp_path, text))
    message = str(caught.value)
    assert "etcd.snapshot.encryption_key" in message and "age" in message
    assert all(line not in message for line in text.splitlines())


def test_generated_identity_is_made_once_and_an_old_openssl_key_is_refused(tmp_path):
    loaded = load_spec(SAMPLE)
    first = resolve_secrets(loaded, tmp_path / "state").snapshot_key
    assert first.startswith("AGE-SECRET-KEY-1")
    pyrage.x25519.Identity.from_str(first)
    assert resolve_secrets(loaded, tmp_path / "state").snapshot_key == first
    old = tmp_path / "old"
    (old / "secrets").mkdir(parents=True)
    (old / "secrets" / "etcd-snapshot-key").write_text(base64.b64encode(b"o" * 32).decode() + "\n")
    with pytest.raises(SpecError, match=r"etcd\.snapshot\.encryption_key: the generated key .* is not an age identity"):
        resolve_secrets(loaded, old)
