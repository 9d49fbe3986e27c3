"""Secrets the spec reads from the environment are named, so delivery keeps them from Ansible's environment
(ansible-runner records that environment in its artifacts; the lab's leak test scans them)."""
from pathlib import Path

import pyrage
import yaml

from hardened_cluster.deliver.ansible import secret_env_names
from hardened_cluster.spec.load import load_spec

SAMPLE = Path(__file__).resolve().parents[2] / "inventories" / "sample" / "cluster.yaml"


def test_every_env_reference_of_the_spec_is_named(tmp_path, monkeypatch):
    doc = yaml.safe_load(SAMPLE.read_text())
    doc["encryption"]["keys"][0]["secret"] = {"env": "HC_TEST_ENCRYPTION_KEY"}
    doc["encryption"]["keys"].append({"name": "key-old", "secret": {"env": "HC_TEST_OLD_KEY"}})
    doc["etcd"]["snapshot"]["encryption_key"] = {"env": "HC_TEST_SNAPSHOT_KEY"}
    monkeypatch.setenv("HC_TEST_ENCRYPTION_KEY", "a2V5LWtleS1rZXkta2V5LWtleS1rZXkta2V5LWtleTI=")
    monkeypatch.setenv("HC_TEST_OLD_KEY", "b2xkLW9sZC1vbGQtb2xkLW9sZC1vbGQtb2xkLW9sZDI=")
    monkeypatch.setenv("HC_TEST_SNAPSHOT_KEY", str(pyrage.x25519.Identity.generate()))
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    loaded = load_spec(tmp_path / "cluster.yaml")
    assert secret_env_names(loaded.spec) == {"HC_TEST_ENCRYPTION_KEY", "HC_TEST_OLD_KEY", "HC_TEST_SNAPSHOT_KEY"}
    assert secret_env_names(load_spec(SAMPLE).spec) == set()
