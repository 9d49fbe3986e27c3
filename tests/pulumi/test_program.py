"""__main__.py under mocks: stack config in, validation errors that name the config key, stack outputs."""
from __future__ import annotations

import json
import runpy

import pulumi
import pytest
from hc_pulumi_mocks import REPO, SAMPLE, resolve, settled

PROGRAM = str(REPO / "__main__.py")
INVALID = REPO / "tests" / "specs" / "invalid" / "61-node-role-master.yaml"


def configure(values: dict[str, object], secret: tuple[str, ...] = ()) -> None:
    config = {f"hardened-cluster:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
    pulumi.runtime.set_all_config(config, [f"hardened-cluster:{k}" for k in secret])


def test_an_invalid_inline_spec_names_the_config_key(sample_doc):
    sample_doc["nodes"][3]["roles"] = ["master"]
    configure({"spec": sample_doc})
    with pytest.raises(pulumi.RunError, match=r"hardened-cluster:spec: nodes\[3\]\.roles\[0\]: 'master' is not allowed"):
        runpy.run_path(PROGRAM)


def test_an_invalid_spec_file_names_the_config_key_and_the_file():
    configure({"specPath": str(INVALID)})
    with pytest.raises(pulumi.RunError, match=r"hardened-cluster:specPath \(.*61-node-role-master.yaml\): nodes\["):
        runpy.run_path(PROGRAM)


def test_a_secret_setting_in_plain_text_is_refused():
    configure({"specPath": str(SAMPLE), "bootstrapToken": "abcdef.0123456789abcdef"})
    with pytest.raises(pulumi.RunError, match="pulumi config set --secret hardened-cluster:bootstrapToken"):
        runpy.run_path(PROGRAM)


@pulumi.runtime.test
def test_the_program_declares_one_cluster_and_exports_its_outputs(pulumi_mocks):
    configure({"specPath": str(SAMPLE), "bootstrapToken": "abcdef.0123456789abcdef", "rotateEncryptionKey": ""},
              secret=("bootstrapToken",))
    cluster = runpy.run_path(PROGRAM)["cluster"]

    def check(values):
        assert [r.type for r in pulumi_mocks.of_type("hardened-cluster:").values()] == ["hardened-cluster:index:HardenedCluster"]
        assert values["api"] == ("https://api.prod-eu1.example.com:6443", False)
        assert values["etcd"][0] == [f"https://10.20.0.1{i}:2379" for i in (1, 2, 3)]
        assert values["cis"][0]["FAIL"] == 0
        assert values["kubeconfig"][1]
        secrets = pulumi_mocks.registrations["prod-eu1-pki"].inputs
        assert secrets["spec_path"] == str(SAMPLE)
        assert pulumi.runtime.rpc.unwrap_rpc_secret(secrets["supplied"]) == {"bootstrap-token": "abcdef.0123456789abcdef"}

    outputs = resolve(api=cluster.api_endpoint, etcd=cluster.etcd_endpoints, cis=cluster.cis_summary,
                      kubeconfig=cluster.admin_kubeconfig)
    return settled(cluster, *cluster.tiers.values()).apply(lambda _: outputs).apply(check)


@pulumi.runtime.test
def test_the_encryption_key_setting_feeds_the_first_spec_key(pulumi_mocks):
    key = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="
    configure({"specPath": str(SAMPLE), "encryptionKey": key}, secret=("encryptionKey",))
    cluster = runpy.run_path(PROGRAM)["cluster"]

    def check(_):
        secrets = pulumi_mocks.registrations["prod-eu1-pki"].inputs
        assert pulumi.runtime.rpc.unwrap_rpc_secret(secrets["supplied"]) == {"encryption-key-2026-11": key}
        assert secrets["encryption_keys"] == [{"name": "key-2026-11", "secret": {"generated": True}}]

    return settled(cluster, cluster.cluster_secrets).apply(check)
