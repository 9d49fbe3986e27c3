"""Which kubernetes provider plugin the component's Provider asks the engine for."""
from __future__ import annotations

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hc_pulumi_mocks import SAMPLE

from hardened_cluster.pulumi.component import kubernetes_plugin_version
from hardened_cluster.spec.load import parse_spec


def test_a_bundle_spec_asks_for_the_bundles_plugin(bundle, bundle_spec_text, tmp_path):
    (tmp_path / "cluster.yaml").write_text(bundle_spec_text(bundle.root))
    doc = yaml.safe_load(bundle_spec_text(bundle.root))
    key = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    (tmp_path / "known_hosts").write_text("".join(f"{n['address']} {key}\n" for n in doc["nodes"]))
    spec = parse_spec(doc, tmp_path / "cluster.yaml").spec
    plugin = bundle.artifacts["pulumi-resource-kubernetes"]
    assert kubernetes_plugin_version(spec) == plugin.version.removeprefix("v") != ""


def test_a_release_spec_leaves_the_version_to_the_sdk():
    spec = parse_spec(yaml.safe_load(SAMPLE.read_text())).spec
    assert spec.runtimes.artifacts != "bundle"
    assert kubernetes_plugin_version(spec) is None
