"""Fixtures for tests/pulumi: mocks set per test (preview=False), the sample spec and one secrets bundle."""
from __future__ import annotations

import copy

import pulumi
import pytest
import yaml
from hc_pulumi_mocks import SAMPLE, SECRETS_TYPE, EchoMocks, RecordingMonitor

from hardened_cluster.pulumi.providers import ClusterSecretsProvider


@pytest.fixture(autouse=True)
def pulumi_mocks() -> RecordingMonitor:
    mocks = EchoMocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="hardened-cluster", stack="test", preview=False, monitor=monitor)
    pulumi.runtime.set_all_config({}, [])
    return monitor


@pytest.fixture
def sample_doc() -> dict:
    return yaml.safe_load(SAMPLE.read_text())


@pytest.fixture(scope="session")
def sample_secrets() -> dict:
    """Outputs of the real ClusterSecrets provider for the sample spec: one bundle for a whole test."""
    doc = yaml.safe_load(SAMPLE.read_text())
    keys = [{"name": k["name"], "secret": k["secret"]} for k in doc["encryption"]["keys"]]
    props = {"spec": doc, "spec_path": str(SAMPLE), "supplied": {}, "rotate": "", "encryption_keys": keys,
             "snapshot_ref": doc["etcd"]["snapshot"]["encryption_key"]}
    return ClusterSecretsProvider().create(props).outs


@pytest.fixture
def fixed_secrets(pulumi_mocks: RecordingMonitor, sample_secrets: dict) -> dict:
    """Make the mocked ClusterSecrets return the sample bundle, so renders are reproducible."""
    pulumi_mocks.mocks.outputs_by_type[SECRETS_TYPE] = {"bundle": copy.deepcopy(sample_secrets["bundle"])}
    return sample_secrets
