"""The encryption key rotation's record and steps (hardened_cluster/operations/key_rotation.py, secrets.KeyRotation):
which keys every plan renders at each step, how a rotation starts, resumes and ends, and what it refuses.
The steps on a live cluster: tests/lab/test_kubernetes_encryption_rotation.py."""
from __future__ import annotations

import shutil

import pytest
import yaml
from test_render import ENCRYPTION, SAMPLE, sample_data

from hardened_cluster.errors import SpecError
from hardened_cluster.operations.key_rotation import begin, refuse_kms, rewrite_targets
from hardened_cluster.plan.render import render_plan
from hardened_cluster.secrets.store import (
    ROTATION_RECORD, KeyRotation, load_rotation, resolve_secrets, retire_keys, rotation_key_name, save_rotation,
)
from hardened_cluster.spec.load import parse_spec

SPEC_KEY = "key-2026-11"  # inventories/sample's only key


@pytest.fixture(scope="module")
def base_state(tmp_path_factory):
    """Secrets and PKI of the sample, made once (the PKI takes a while)."""
    state = tmp_path_factory.mktemp("rotation") / "state"
    resolve_secrets(parse_spec(sample_data(), SAMPLE), state)
    return state


@pytest.fixture
def state(base_state, tmp_path):
    shutil.copytree(base_state, tmp_path / "state")
    return tmp_path / "state"


@pytest.fixture
def loaded():
    return parse_spec(sample_data(), SAMPLE)


def configured_keys(loaded, state) -> list[tuple[str, str]]:
    """The key list of the encryption configuration cp-1 gets, as (name, secret), in order."""
    plan = render_plan(loaded, resolve_secrets(loaded, state))
    config = yaml.safe_load(plan.hosts["cp-1"].files[ENCRYPTION].content)
    [entry] = config["resources"]
    assert entry["providers"][-1] == {"identity": {}}
    return [(k["name"], k["secret"]) for k in entry["providers"][0]["secretbox"]["keys"]]


def test_each_step_renders_its_key_list_with_the_writing_key_first():
    rotation = KeyRotation("add", "new", ("old-1", "old-2"), ("old-1",))
    expected = {"add": ["old-1", "old-2", "new"], "write": ["new", "old-1", "old-2"],
                "rewrite": ["new", "old-1", "old-2"], "remove": ["new"], "done": ["new"]}
    assert {s: KeyRotation(s, rotation.new, rotation.old, rotation.base).key_names() for s in expected} == expected


def test_a_rotation_makes_its_key_before_the_record_names_it_and_every_plan_follows_the_record(loaded, state):
    secrets_dir = state / "secrets"
    [(_, old_value)] = configured_keys(loaded, state)
    rotation, resumed = begin(loaded, secrets_dir, "20261202T060000Z")
    assert not resumed
    assert rotation == KeyRotation("add", "rotated-20261202t060000z", (SPEC_KEY,), (SPEC_KEY,))
    assert load_rotation(secrets_dir) == rotation
    new_file = secrets_dir / f"encryption-{rotation.new}"
    assert new_file.stat().st_mode & 0o777 == 0o600
    new_value = new_file.read_text().strip()
    assert new_value != old_value
    values = {SPEC_KEY: old_value, rotation.new: new_value}
    for step, names in (("add", [SPEC_KEY, rotation.new]), ("write", [rotation.new, SPEC_KEY]),
                        ("rewrite", [rotation.new, SPEC_KEY]), ("remove", [rotation.new])):
        save_rotation(secrets_dir, KeyRotation(step, rotation.new, rotation.old, rotation.base))
        assert configured_keys(loaded, state) == [(n, values[n]) for n in names], step


def test_an_interrupted_rotation_is_resumed_not_started_again(loaded, state):
    secrets_dir = state / "secrets"
    first, _ = begin(loaded, secrets_dir, "20261202T060000Z")
    save_rotation(secrets_dir, KeyRotation("rewrite", first.new, first.old, first.base))
    again, resumed = begin(loaded, secrets_dir, "20261202T070000Z")
    assert resumed and again.step == "rewrite" and again.new == first.new
    assert sorted(p.name for p in secrets_dir.glob("encryption-rotated-*")) == [f"encryption-{first.new}"]


def test_after_a_rotation_the_old_key_is_retired_and_never_generated_again(loaded, state):
    secrets_dir = state / "secrets"
    first, _ = begin(loaded, secrets_dir, "20261202T060000Z")
    save_rotation(secrets_dir, KeyRotation("done", first.new, first.old, first.base))
    assert retire_keys(secrets_dir, list(first.old)) == [SPEC_KEY]
    assert (secrets_dir / "retired" / f"encryption-{SPEC_KEY}").is_file()
    assert [n for n, _ in configured_keys(loaded, state)] == [first.new]
    assert not (secrets_dir / f"encryption-{SPEC_KEY}").exists(), "a retired spec key was generated again"
    # The next rotation starts from the rotated key and keeps the spec's names as its base.
    second, resumed = begin(loaded, secrets_dir, "20261202T060000Z")
    assert not resumed
    assert second.old == (first.new,) and second.base == (SPEC_KEY,)
    assert second.new not in (first.new, SPEC_KEY), "the same trigger twice still names a new key"


def test_spec_keys_renamed_after_a_rotation_are_refused_naming_the_key_path(state):
    secrets_dir = state / "secrets"
    first, _ = begin(parse_spec(sample_data(), SAMPLE), secrets_dir, "20261202T060000Z")
    data = sample_data()
    data["encryption"]["keys"] = [{"name": "key-2027-01", "secret": {"generated": True}}]
    with pytest.raises(SpecError) as raised:
        resolve_secrets(parse_spec(data, SAMPLE), state)
    [issue] = raised.value.issues
    assert issue.path == "encryption.keys" and first.new in issue.message and ROTATION_RECORD in issue.message


def test_a_missing_rotated_key_is_refused_not_made_again(loaded, state):
    secrets_dir = state / "secrets"
    first, _ = begin(loaded, secrets_dir, "20261202T060000Z")
    (secrets_dir / f"encryption-{first.new}").unlink()
    with pytest.raises(SpecError) as raised:
        resolve_secrets(loaded, state)
    assert raised.value.issues[0].path == "encryption.keys" and "missing" in raised.value.issues[0].message
    assert not (secrets_dir / f"encryption-{first.new}").exists()


def test_kms_v2_is_refused_with_the_key_path():
    data = sample_data()
    data["encryption"] = {"provider": "kms-v2", "kms": {"name": "vault", "endpoint": "unix:///var/run/kms/vault.sock"}}
    with pytest.raises(SpecError) as raised:
        refuse_kms(parse_spec(data, SAMPLE))
    assert raised.value.issues[0].path == "encryption.provider"
    refuse_kms(parse_spec(sample_data(), SAMPLE))


def test_rewrite_targets_expand_wildcards_over_the_served_resources():
    served = ["configmaps", "secrets", "pods", "deployments.apps", "leases.coordination.k8s.io"]
    assert rewrite_targets(["secrets", "configmaps"], served) == ["secrets", "configmaps"]
    assert rewrite_targets(["secrets", "*."], served) == ["secrets", "configmaps", "pods"]
    assert rewrite_targets(["*.apps"], served) == ["deployments.apps"]
    assert rewrite_targets(["*.*", "secrets"], served) == served


def test_rotated_key_names_are_dns_labels_the_cli_and_pulumi_share():
    assert rotation_key_name("20261202T060000Z", set()) == "rotated-20261202t060000z"
    assert rotation_key_name("2026-12", {"rotated-2026-12"}).startswith("rotated-2026-12-")
