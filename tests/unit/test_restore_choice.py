"""Which snapshot `restore etcd` takes: the named one if the first member has it, else the newest of the kind
the spec writes; anything else is an InputError naming --snapshot (exit 2) before a step runs."""
from __future__ import annotations

from pathlib import Path

import pytest

from hardened_cluster.errors import InputError
from hardened_cluster.operations.etcd_restore import choose_snapshot
from hardened_cluster.spec.load import load_spec

ROOT = Path(__file__).resolve().parents[2]
AVAILABLE = ["etcd-20260101T000000Z.db.age", "etcd-20260102T000000Z.db", "etcd-20260103T000000Z.db.age"]


@pytest.fixture(scope="module")
def sample():
    loaded = load_spec(ROOT / "inventories" / "sample" / "cluster.yaml")
    assert loaded.spec.etcd.snapshot.encryption_key is not None  # the sample encrypts its snapshots
    return loaded


def test_the_newest_encrypted_snapshot_by_default(sample):
    assert choose_snapshot(sample, AVAILABLE, None) == "etcd-20260103T000000Z.db.age"
    assert choose_snapshot(sample, AVAILABLE[:2], None) == "etcd-20260101T000000Z.db.age"


def test_a_named_snapshot_that_is_there(sample):
    assert choose_snapshot(sample, AVAILABLE, "etcd-20260102T000000Z.db") == "etcd-20260102T000000Z.db"


def test_an_unknown_snapshot_names_the_option_and_what_is_there(sample):
    with pytest.raises(InputError) as caught:
        choose_snapshot(sample, AVAILABLE, "etcd-20250101T000000Z.db.age")
    assert caught.value.path == "--snapshot"
    assert "etcd-20250101T000000Z.db.age is not in /var/backups/etcd on etcd-1" in caught.value.message
    assert "etcd-20260103T000000Z.db.age" in caught.value.message


def test_no_encrypted_snapshot_is_refused(sample):
    with pytest.raises(InputError, match="no encrypted"):
        choose_snapshot(sample, ["etcd-20260102T000000Z.db"], None)
