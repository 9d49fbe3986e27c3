"""HardenedCluster under Pulumi mocks: tiers and their order, cluster objects, secrets, firewall exposure."""
from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

import pulumi
import pytest

from hardened_cluster.deliver.rerun import plan_key
from hardened_cluster.plan import render as plan_module
from hardened_cluster.plan.firewall import node_rules
from hardened_cluster.plan.render import render_plan
from hardened_cluster.pulumi.component import TIERS, TYPE, HardenedCluster, HardenedClusterArgs, manifest_objects
from hardened_cluster.pulumi.providers import load, materialize
from hardened_cluster.secrets.store import resolve_secrets
from hc_pulumi_mocks import SAMPLE, SECRETS_TYPE, TIER_TYPE, is_wrapped_secret, resolve, settled

TIER_NAMES = [f"sample-{t.name}" for t in TIERS]
CONTROL_PORTS = {6443, 2379, 2380}
# 32 random bytes, base64: a well-formed secretbox key.
SUPPLIED_KEY = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="


def build(doc: dict, **kwargs) -> HardenedCluster:
    return HardenedCluster("sample", HardenedClusterArgs(spec=doc, spec_path=str(SAMPLE), **kwargs))


def everything(cluster: HardenedCluster) -> pulumi.Output:
    return settled(cluster, cluster.cluster_secrets, *cluster.tiers.values(), *cluster.objects.values())


@pulumi.runtime.test
def test_one_child_per_tier_each_depending_on_the_one_before(pulumi_mocks, sample_doc):
    cluster = build(sample_doc)

    def check(_):
        regs = pulumi_mocks.registrations
        component = regs["sample"]
        assert component.type == TYPE
        order = ["sample-pki", *TIER_NAMES]
        assert regs["sample-pki"].type == SECRETS_TYPE
        assert all(regs[name].type == TIER_TYPE for name in TIER_NAMES)
        names = list(regs)
        for before, after in zip(order, order[1:]):
            assert regs[before].urn in regs[after].dependencies, f"{after} must depend on {before}"
            assert names.index(before) < names.index(after)
        assert all(regs[name].parent == component.urn for name in order)
        tiers = {r.inputs["tier"]: r.inputs for r in pulumi_mocks.of_type(TIER_TYPE).values()}
        assert {t: tiers[t]["phase"] for t in tiers} == {
            "hosts": "hosts", "etcd": "etcd", "runtime": "runtime", "control-plane": "kubernetes", "workers": "kubernetes"}
        assert tiers["etcd"]["hosts"] == ["etcd-1", "etcd-2", "etcd-3"]
        assert tiers["control-plane"]["hosts"] == ["cp-1", "cp-2", "cp-3"]
        assert tiers["workers"]["hosts"] == ["worker-1", "worker-2", "worker-3"]
        assert len(tiers["hosts"]["hosts"]) == 9

    return everything(cluster).apply(check)


@pulumi.runtime.test
def test_cluster_objects_come_after_the_workers_through_the_admin_kubeconfig(pulumi_mocks, sample_doc):
    cluster = build(sample_doc)

    def check(_):
        regs = pulumi_mocks.registrations
        provider = regs["sample-k8s"]
        assert provider.type == "pulumi:providers:kubernetes"
        assert is_wrapped_secret(provider.inputs["kubeconfig"])
        workers = regs["sample-workers"].urn
        objects = pulumi_mocks.of_type("kubernetes:")
        assert objects
        for name, obj in objects.items():
            assert obj.parent == regs["sample"].urn
            assert obj.provider.startswith(provider.urn)
            namespace = obj.inputs["metadata"].get("namespace")
            first = regs[f"sample-namespace-{namespace}"].urn if namespace else workers
            assert first in obj.dependencies, name
        assert workers in regs["sample-namespace-apps"].dependencies

    return everything(cluster).apply(check)


@pulumi.runtime.test
def test_runtime_classes_gvisor_and_kata(pulumi_mocks, sample_doc):
    cluster = build(sample_doc)

    def check(_):
        classes = {r.inputs["metadata"]["name"]: r.inputs for r in pulumi_mocks.of_type("kubernetes:node.k8s.io/v1:RuntimeClass").values()}
        assert set(classes) == {"gvisor", "kata"}
        assert classes["gvisor"]["handler"] == "runsc"
        assert classes["kata"]["handler"] == "kata"
        for rc in classes.values():
            assert set(rc["overhead"]["podFixed"]) == {"cpu", "memory"}
            assert list(rc["scheduling"]["nodeSelector"].values()) == ["true"]

    return everything(cluster).apply(check)


@pulumi.runtime.test
def test_cluster_objects_are_the_manifests_the_cli_applies(pulumi_mocks, sample_doc, fixed_secrets):
    cluster = build(sample_doc)

    def check(_):
        loaded = load(sample_doc, str(SAMPLE))
        with tempfile.TemporaryDirectory() as state:
            materialize(fixed_secrets["bundle"], Path(state))
            manifests = manifest_objects(render_plan(loaded, resolve_secrets(loaded, Path(state))))
        placed = {}
        for reg in pulumi_mocks.of_type("kubernetes:").values():
            if reg.type != "pulumi:providers:kubernetes":
                meta = reg.inputs["metadata"]
                placed[f"{reg.inputs['kind']}/{meta.get('namespace', '')}/{meta['name']}"] = reg.inputs
        assert placed == manifests
        labels = placed["Namespace//apps"]["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        assert {k.split("/")[2] for k in placed if k.startswith("NetworkPolicy/apps/")} == {
            "default-deny", "allow-dns", "allow-same-namespace"}

    return everything(cluster).apply(check)


@pulumi.runtime.test
def test_every_key_token_and_kubeconfig_is_secret(pulumi_mocks, sample_doc):
    cluster = build(sample_doc, encryption_keys={"key-2026-11": SUPPLIED_KEY},
                    bootstrap_token="abcdef.0123456789abcdef", certificate_key="0" * 64)

    def check(resolved):
        assert resolved["kubeconfig"][1], "admin kubeconfig must be secret"
        cis, cis_secret = resolved["cis"]
        assert cis["FAIL"] == 0 and not cis_secret
        regs = pulumi_mocks.registrations
        secrets = regs["sample-pki"]
        assert is_wrapped_secret(secrets.inputs["supplied"])
        assert {"bundle", "supplied"} <= set(secrets.secret_outputs)
        for name in TIER_NAMES:
            assert is_wrapped_secret(regs[name].inputs["secrets"]), f"{name}: secret bundle input must be secret"
            assert {"secrets", "admin_kubeconfig"} <= set(regs[name].secret_outputs)
            assert not is_wrapped_secret(regs[name].inputs["hashes"]), "hashes are plain so diffs stay readable"
        assert is_wrapped_secret(regs["sample-k8s"].inputs["kubeconfig"])

    return everything(cluster).apply(lambda _: resolve(kubeconfig=cluster.admin_kubeconfig, cis=cluster.cis_summary)).apply(check)


@pulumi.runtime.test
def test_no_rule_opens_api_or_etcd_to_everyone(pulumi_mocks, sample_doc):
    cluster = build(sample_doc)

    def check(_):
        regs = pulumi_mocks.registrations
        for name in TIER_NAMES:
            loaded = load(regs[name].inputs["spec"], str(SAMPLE))
            spec = loaded.spec
            ports = CONTROL_PORTS | {spec.etcd.client_port, spec.etcd.peer_port,
                                     spec.cluster.api_port}
            for node in spec.nodes:
                for rule in node_rules(spec, node):
                    if _ports(rule.port) & ports:
                        wide = [s for s in rule.sources if s.prefixlen == 0]
                        assert not wide, f"{node.name}: {rule.name} open to {wide}"
        # And the rulesets the hosts tier delivers, rendered from the same inputs.
        loaded = load(regs["sample-hosts"].inputs["spec"], str(SAMPLE))
        with tempfile.TemporaryDirectory() as state:
            plan = render_plan(loaded, resolve_secrets(loaded, Path(state)))
        for host in plan.hosts.values():
            ruleset = host.files["/etc/nftables.conf"].content
            assert "policy drop;" in ruleset.split("chain input", 1)[1].split("}", 1)[0]
            for line in ruleset.splitlines():
                if any(f"dport {p} " in line or line.rstrip().endswith(f"dport {p}") for p in ports):
                    assert "0.0.0.0/0" not in line and "::/0" not in line, f"{host.node.name}: {line.strip()}"

    return everything(cluster).apply(check)


class Vm(pulumi.CustomResource):
    """A stand-in for a cloud VM whose address and host key are known only after it exists."""

    ip: pulumi.Output[str]
    host_key: pulumi.Output[str]

    def __init__(self, name: str, props: dict) -> None:
        super().__init__("test:index:Vm", name, props)


def _ports(port: str) -> set[int]:
    low, _, high = port.partition("-")
    return set(range(int(low), int(high or low) + 1))


def _inputs_and_rerun_keys(pulumi_mocks, secrets: dict, name: str, doc: dict) -> tuple[dict, dict]:
    """Per tier and host: the tier's `hashes` input under the mocks, and the CLI's rerun key for the
    tier's phase on a plan rendered from the spec the tier got."""
    @pulumi.runtime.test
    def program():
        return everything(HardenedCluster(name, HardenedClusterArgs(spec=doc, spec_path=str(SAMPLE))))

    program()
    regs = pulumi_mocks.registrations
    inputs = {t.name: regs[f"{name}-{t.name}"].inputs["hashes"] for t in TIERS}
    loaded = load(regs[f"{name}-hosts"].inputs["spec"], str(SAMPLE))
    with tempfile.TemporaryDirectory() as state:
        materialize(secrets["bundle"], Path(state))
        plan = render_plan(loaded, resolve_secrets(loaded, Path(state)))
    keys = {t.name: {h: plan_key(plan, plan.spec.node(h), [t.phase], "code") for h in t.hosts(plan.spec)}
            for t in TIERS}
    return inputs, keys


def _moved(before: dict, after: dict) -> set[tuple[str, str]]:
    return {(tier, host) for tier in before for host in before[tier] if before[tier][host] != after[tier].get(host)}


def _ssh(doc: dict, node: int, **values) -> dict:
    doc["nodes"][node]["ssh"] = {**doc["nodes"][node]["ssh"], **values}
    return doc


def _services(doc: dict) -> dict:
    doc["os_hardening"]["disable_services"].append("telnet")
    return doc


def _kubernetes(doc: dict) -> dict:
    doc["cluster"]["kubernetes_version"] = "1.34.4"
    return doc


KUBE_NODES = ["cp-1", "cp-2", "cp-3", "worker-1", "worker-2", "worker-3"]
ALL_NODES = ["etcd-1", "etcd-2", "etcd-3", *KUBE_NODES]
# kind of planned change -> (spec change, (tier, host) pairs whose inputs must change)
CHANGES = {
    "nothing": (lambda d: d, set()),
    # A role variable and no file: os_hardening stops one more service.
    "role variable": (_services, {("hosts", h) for h in ALL_NODES}),
    # crictl and etcd are pinned per Kubernetes minor and neither's files change: their tiers used to miss it.
    "version": (_kubernetes, {("runtime", h) for h in KUBE_NODES} | {("etcd", h) for h in ALL_NODES[:3]}
                | {("control-plane" if h.startswith("cp-") else "workers", h) for h in KUBE_NODES}),
    # How a host is reached: every tier on that host.
    "ssh port": (lambda d: _ssh(d, 6, port=2222), {("hosts", "worker-1"), ("runtime", "worker-1"), ("workers", "worker-1")}),
    "ssh user": (lambda d: _ssh(d, 1, user="ops"), {("hosts", "etcd-2"), ("etcd", "etcd-2")}),
}


@pytest.mark.parametrize("kind", list(CHANGES))
def test_every_kind_of_change_moves_the_tier_inputs_and_the_rerun_key_alike(pulumi_mocks, sample_doc, fixed_secrets, kind):
    change, expected = CHANGES[kind]
    before = _inputs_and_rerun_keys(pulumi_mocks, fixed_secrets, "before", copy.deepcopy(sample_doc))
    after = _inputs_and_rerun_keys(pulumi_mocks, fixed_secrets, "after", change(copy.deepcopy(sample_doc)))
    assert _moved(before[0], after[0]) == _moved(before[1], after[1]) == expected


def test_a_changed_template_changes_only_its_tiers_inputs(pulumi_mocks, sample_doc, fixed_secrets, monkeypatch, tmp_path):
    before = _inputs_and_rerun_keys(pulumi_mocks, fixed_secrets, "before", sample_doc)
    templates = tmp_path / "templates"
    shutil.copytree(plan_module.resources.TEMPLATES, templates)
    sshd = templates / "etc/ssh/sshd_config.d/10-hardened-cluster.conf.j2"
    sshd.write_text(sshd.read_text() + "Banner none\n")
    monkeypatch.setattr(plan_module.resources, "TEMPLATES", templates)
    after = _inputs_and_rerun_keys(pulumi_mocks, fixed_secrets, "after", sample_doc)

    assert _moved(before[0], after[0]) == _moved(before[1], after[1]) == {("hosts", h) for h in ALL_NODES}


@pulumi.runtime.test
def test_addresses_and_host_keys_may_come_from_other_resources(pulumi_mocks, sample_doc):
    key = sample_doc["nodes"][0]["ssh"]["host_key"]
    vm = Vm("etcd-1-vm", {"ip": "10.20.0.111", "host_key": key})
    sample_doc["nodes"][0]["address"] = vm.ip
    sample_doc["nodes"][0]["ssh"] = {"host_key": vm.host_key}
    cluster = build(sample_doc)

    def check(values):
        spec = pulumi_mocks.registrations["sample-etcd"].inputs["spec"]
        assert spec["nodes"][0] == {**sample_doc["nodes"][0], "address": "10.20.0.111", "ssh": {"host_key": key}}
        assert pulumi_mocks.registrations["etcd-1-vm"].urn in pulumi_mocks.registrations["sample-etcd"].dependencies
        assert "https://10.20.0.111:2379" in values["etcd"][0]

    return everything(cluster).apply(lambda _: resolve(etcd=cluster.etcd_endpoints)).apply(check)


def test_outputs_elsewhere_in_the_spec_are_refused(sample_doc):
    sample_doc["namespaces"][0]["name"] = pulumi.Output.from_input("apps")
    with pytest.raises(ValueError, match=r"spec.namespaces\[0\].name is an Output"):
        build(sample_doc)


def test_an_invalid_spec_stops_construction(sample_doc):
    sample_doc["nodes"][3]["roles"] = ["master"]
    with pytest.raises(Exception, match=r"nodes\[3\].roles"):
        build(sample_doc)

