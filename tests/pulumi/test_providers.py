"""The dynamic providers called directly, without hosts: secrets stability and rotation, tier diffs,
drift marking, failures, and that Pulumi can pickle them."""
from __future__ import annotations

import copy
from pathlib import Path

import dill
import pytest
from hc_pulumi_mocks import SAMPLE
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime.rpc import UNKNOWN

from hardened_cluster.deliver.ansible import Change, HostResult, RunResult
from hardened_cluster.pulumi import providers
from hardened_cluster.pulumi.providers import (
    ClusterSecretsProvider,
    ControlPlaneTierProvider,
    EtcdTierProvider,
    HostsTierProvider,
    KubernetesTierProvider,
    TierError,
)

KEY = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="


def secrets_props(doc: dict, **extra) -> dict:
    keys = [{"name": k["name"], "secret": k["secret"]} for k in doc["encryption"]["keys"]]
    props = {"spec": doc, "spec_path": str(SAMPLE), "supplied": {}, "rotate": "", "encryption_keys": keys,
             "snapshot_ref": doc["etcd"]["snapshot"]["encryption_key"]}
    return {**props, **extra}


def test_secrets_are_generated_once_and_kept_by_updates(sample_doc, sample_secrets):
    bundle = sample_secrets["bundle"]
    for name in ("secrets/encryption-key-2026-11", "secrets/etcd-snapshot-key", "secrets/bootstrap-token",
                 "secrets/certificate-key", "pki/ca.key", "pki/etcd/ca.key", "pki/front-proxy-ca.key", "pki/sa.key"):
        assert bundle[name].strip(), name
    provider = ClusterSecretsProvider()
    news = secrets_props(sample_doc)
    assert provider.diff("id", sample_secrets, news).changes is False
    # Unrelated spec changes do not touch the secrets.
    news["spec"] = {**sample_doc, "ssh_hardening": {"max_auth_tries": 2}}
    assert provider.diff("id", sample_secrets, news).changes is False
    assert provider.update("id", sample_secrets, news).outs["bundle"] == bundle


def test_rotation_prepends_a_key_and_keeps_the_old_ones(sample_doc, sample_secrets):
    provider = ClusterSecretsProvider()
    news = secrets_props(sample_doc, rotate="2026-12")
    diff = provider.diff("id", sample_secrets, news)
    assert diff.changes is True and not diff.replaces
    outs = provider.update("id", sample_secrets, news).outs
    assert [k["name"] for k in outs["encryption_keys"]] == ["rotated-2026-12", "key-2026-11"]
    old, new = sample_secrets["bundle"], outs["bundle"]
    assert new["secrets/encryption-rotated-2026-12"].strip()
    assert {k: v for k, v in new.items() if k in old} == old, "nothing that existed changes"
    # The same trigger again is no new rotation.
    assert provider.diff("id", outs, news).changes is False
    assert provider.update("id", outs, news).outs["bundle"] == new


def test_new_etcd_members_get_certificates_from_the_same_cas(sample_doc, sample_secrets):
    provider = ClusterSecretsProvider()
    doc = copy.deepcopy(sample_doc)
    doc["nodes"][2]["address"] = "10.20.0.14"
    news = secrets_props(doc)
    assert provider.diff("id", sample_secrets, news).changes is True
    new = provider.update("id", sample_secrets, news).outs["bundle"]
    old = sample_secrets["bundle"]
    assert all(new[k] == old[k] for k in ("pki/ca.key", "pki/etcd/ca.key", "pki/etcd/ca.crt", "pki/sa.key"))
    assert new["pki/etcd/etcd-3/server.crt"] != old["pki/etcd/etcd-3/server.crt"]
    assert new["pki/etcd/etcd-1/server.crt"] == old["pki/etcd/etcd-1/server.crt"]


def test_a_renamed_cluster_replaces_its_secrets(sample_doc, sample_secrets):
    doc = {**sample_doc, "cluster": {**sample_doc["cluster"], "name": "prod-eu2"}}
    assert ClusterSecretsProvider().diff("id", sample_secrets, secrets_props(doc)).replaces == ["spec"]


def test_supplied_secrets_are_used_as_given(sample_doc):
    supplied = {"encryption-key-2026-11": KEY, "bootstrap-token": "abcdef.0123456789abcdef"}
    outs = ClusterSecretsProvider().create(secrets_props(sample_doc, supplied=supplied)).outs
    assert outs["bundle"]["secrets/encryption-key-2026-11"].strip() == KEY
    assert outs["bundle"]["secrets/bootstrap-token"].strip() == "abcdef.0123456789abcdef"


def test_malformed_supplied_secrets_fail_check_without_showing_them(sample_doc):
    supplied = {"encryption-key-2026-11": "c2hvcnQ=", "encryption-nope": KEY, "bootstrap-token": "Secret-Token",
                "certificate-key": "xyz", "etcd-snapshot-key": UNKNOWN}
    failures = ClusterSecretsProvider().check({}, secrets_props(sample_doc, supplied=supplied)).failures
    reasons = sorted(f.reason for f in failures)
    assert len(reasons) == 4
    assert any("decodes to 5 bytes; secretbox needs 32" in r for r in reasons)
    assert any("no key named 'nope'" in r for r in reasons)
    assert not any("Secret-Token" in r or "c2hvcnQ=" in r for r in reasons)


def tier_props(tmp_path: Path, doc: dict, **extra) -> dict:
    hosts = ["etcd-1", "cp-1", "worker-1"]
    props = {"tier": "hosts", "phase": "hosts", "hosts": hosts, "spec": doc, "spec_path": str(SAMPLE),
             "secrets": {}, "hashes": {h: f"hash-{h}" for h in hosts}, "report_dir": str(tmp_path / "reports")}
    return {**props, **extra}


def test_tier_diff_follows_the_hashes_and_never_replaces(tmp_path, sample_doc):
    olds = tier_props(tmp_path, sample_doc)
    provider = HostsTierProvider()
    same = provider.diff("id", olds, copy.deepcopy(olds))
    assert same.changes is False
    # Anything else in the spec that changes no file of this tier is no change for it.
    assert provider.diff("id", olds, {**olds, "spec": {**sample_doc, "namespaces": []}}).changes is False
    one = provider.diff("id", olds, {**olds, "hashes": {**olds["hashes"], "cp-1": "other"}})
    assert one.changes is True and one.replaces == []
    fewer = provider.diff("id", olds, {**olds, "hosts": ["etcd-1", "cp-1"]})
    assert fewer.changes is True and fewer.replaces == []


def fake_converge(results: dict[str, HostResult], calls: list):
    def converge(loaded, *, check, phases, hosts, state, progress=None):
        calls.append({"check": check, "phases": phases, "hosts": hosts, "state": state,
                      "secrets": sorted(p.name for p in (state / "secrets").glob("*"))})
        report = state / "reports" / "run.json"
        report.parent.mkdir(parents=True)
        report.write_text("{}")
        if not check:
            (state / "admin.conf").write_text("apiVersion: v1\nkind: Config\n")
        return RunResult("drift" if check else "apply", phases, {}, "successful", 0, 0.1,
                         {h: results.get(h, HostResult(ok=3)) for h in hosts}), report
    return converge


def test_create_runs_the_core_with_exactly_the_bundled_secrets(tmp_path, sample_doc, sample_secrets, monkeypatch):
    calls: list = []
    monkeypatch.setattr(providers, "converge", fake_converge({"cp-1": HostResult(ok=3, changed=2)}, calls))
    props = tier_props(tmp_path, sample_doc, secrets=sample_secrets["bundle"])
    outs = HostsTierProvider().create(props).outs
    assert calls[0]["check"] is False and calls[0]["phases"] == ["hosts"] and calls[0]["hosts"] == props["hosts"]
    assert calls[0]["secrets"] == sorted(Path(k).name for k in sample_secrets["bundle"] if k.startswith("secrets/"))
    assert not calls[0]["state"].exists(), "the private state directory is removed"
    assert outs["changed"] == {"etcd-1": 0, "cp-1": 2, "worker-1": 0}
    assert outs["hashes"] == props["hashes"]
    assert Path(outs["report"]).read_text() == "{}"


def test_read_marks_drifted_hosts_so_refresh_shows_them(tmp_path, sample_doc, monkeypatch):
    drift = HostResult(ok=3, changed=1, changes=[Change("Deliver the sshd drop-in", "ssh_hardening",
                                                        "/etc/ssh/sshd_config.d/10-hardened-cluster.conf")])
    calls: list = []
    monkeypatch.setattr(providers, "converge", fake_converge({"worker-1": drift}, calls))
    props = tier_props(tmp_path, sample_doc)
    outs = HostsTierProvider().read("id", props).outs
    assert calls[0]["check"] is True
    assert outs["hashes"]["worker-1"].startswith("drifted: ssh_hardening: Deliver the sshd drop-in: /etc/ssh/")
    assert outs["hashes"]["cp-1"] == props["hashes"]["cp-1"]
    # The next `pulumi up` sees the difference and converges the tier again.
    assert HostsTierProvider().diff("id", outs, props).changes is True


def test_a_failed_host_fails_the_operation_with_its_errors(tmp_path, sample_doc, monkeypatch):
    failed = HostResult(failed=1, errors=["firewall: Load the ruleset: nft: syntax error"])
    monkeypatch.setattr(providers, "converge", fake_converge({"cp-1": failed}, []))
    with pytest.raises(TierError, match=r"(?s)hosts: apply failed.*cp-1: firewall: Load the ruleset: nft: syntax error"):
        HostsTierProvider().create(tier_props(tmp_path, sample_doc))


def test_the_control_plane_tier_hands_out_the_admin_kubeconfig(tmp_path, sample_doc, monkeypatch):
    monkeypatch.setattr(providers, "converge", fake_converge({}, []))
    props = tier_props(tmp_path, sample_doc, tier="control-plane", phase="kubernetes", hosts=["cp-1"])
    assert ControlPlaneTierProvider().create(props).outs["admin_kubeconfig"].startswith("apiVersion: v1")


def test_kubernetes_tiers_refuse_a_spec_that_cannot_run_them(tmp_path, sample_doc, monkeypatch):
    monkeypatch.setattr(providers, "converge", fake_converge({}, []))
    runtimes = sample_doc["runtimes"]
    doc = {**sample_doc, "runtimes": {**runtimes, "artifacts": "distro", "gvisor": {**runtimes["gvisor"], "platform": "ptrace"}}}
    props = tier_props(tmp_path, doc, tier="control-plane", phase="kubernetes", hosts=["cp-1"])
    with pytest.raises(TierError, match="the kubernetes phase cannot run: needs kubeadm"):
        ControlPlaneTierProvider().create(props)


def test_an_update_tears_down_only_the_hosts_that_left(tmp_path, sample_doc, monkeypatch):
    monkeypatch.setattr(providers, "converge", fake_converge({}, []))
    torn: list = []
    monkeypatch.setattr(KubernetesTierProvider, "teardown", lambda self, props, hosts, destroy: torn.append((hosts, destroy)))
    olds = tier_props(tmp_path, sample_doc, tier="workers", phase="kubernetes", hosts=["worker-1", "worker-2"])
    KubernetesTierProvider().update("id", olds, {**olds, "hosts": ["worker-1"]})
    assert torn == [(["worker-2"], False)]


def test_etcd_teardown_refuses_to_wipe_a_shallow_data_dir(tmp_path, sample_doc):
    doc = {**sample_doc, "etcd": {**sample_doc["etcd"], "data_dir": "/etcd"}}
    with pytest.raises(TierError, match="too close to /"):
        EtcdTierProvider().delete("id", tier_props(tmp_path, doc, tier="etcd", phase="etcd", hosts=["etcd-1"]))


@pytest.mark.parametrize("provider", [ClusterSecretsProvider, HostsTierProvider, EtcdTierProvider,
                                      KubernetesTierProvider, ControlPlaneTierProvider])
def test_providers_survive_pulumis_pickling(provider):
    import base64

    restored = dill.loads(base64.b64decode(serialize_provider(provider())))
    assert type(restored) is provider
