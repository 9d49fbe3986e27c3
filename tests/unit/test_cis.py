"""`check`: the CIS Kubernetes Benchmark v1.12 on the plan."""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest
import yaml

from hardened_cluster.plan import kubeadm
from hardened_cluster.plan.render import Plan, render_plan
from hardened_cluster.secrets.store import resolve_secrets
from hardened_cluster.spec.load import load_spec, parse_spec
from hardened_cluster.verify import cis, cis_controls

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "inventories" / "sample" / "cluster.yaml"
WEAKENED = ROOT / "tests" / "specs" / "weakened.yaml"
WEAKENED_FAILS = {"1.2.9", "1.2.11", "1.2.17", "1.2.18", "1.2.19", "1.2.28"}


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("state") / "prod-eu1"


def plan_for(path: Path, state: Path) -> Plan:
    loaded = load_spec(path)
    return render_plan(loaded, resolve_secrets(loaded, state))


@pytest.fixture(scope="module")
def sample(state) -> Plan:
    return plan_for(SAMPLE, state)


def with_file(plan: Plan, host: str, path: str, **changes) -> Plan:
    """The plan with one host's file replaced (content, mode, owner...)."""
    hosts = dict(plan.hosts)
    files = dict(hosts[host].files)
    files[path] = dataclasses.replace(files[path], **changes)
    hosts[host] = dataclasses.replace(hosts[host], files=files)
    return dataclasses.replace(plan, hosts=hosts)


def by_key(findings: list[cis_controls.Finding]) -> dict[tuple[str, str | None], cis_controls.Finding]:
    return {(f.id, f.host): f for f in findings}


def test_sample_has_no_fail(sample):
    findings = cis.check_plan(sample)
    failed = [f"{f.host} {f.id}: {f.detail}" for f in findings if f.status == "FAIL"]
    assert failed == []
    assert cis_controls.summary(findings)["PASS"] > cis_controls.summary(findings)["NOT-DECIDABLE"]


def test_weakened_spec_fails_exactly_the_weakened_controls(state):
    findings = cis.check_plan(plan_for(WEAKENED, state))
    failed = [f for f in findings if f.status == "FAIL"]
    assert {f.id for f in failed} == WEAKENED_FAILS
    # Cluster-wide flags apply to every control-plane node.
    assert Counter(f.host for f in failed) == {"cp-1": 6, "cp-2": 6, "cp-3": 6}


def test_each_control_once_per_host_where_it_applies(sample):
    findings = cis.check_plan(sample)
    keys = [(f.id, f.host) for f in findings]
    assert len(keys) == len(set(keys))
    ids_by_host: dict[str, list[str]] = {}
    for f in findings:
        ids_by_host.setdefault(f.host, []).append(f.id)
    scopes = {c.id: c.scope for c in cis_controls.CONTROLS}
    order = [c.id for c in cis_controls.CONTROLS]
    for node in sample.spec.nodes:
        roles = set(node.roles)
        want = {cid for cid, scope in scopes.items()
                if (scope == "etcd" and "etcd" in roles) or (scope == "control-plane" and "control-plane" in roles)
                or (scope == "node" and roles & {"control-plane", "worker"})}
        got = ids_by_host[node.name]
        assert set(got) == want, node.name
        assert got == sorted(got, key=order.index)
    assert {f.id for f in findings} == set(order)


def test_benchmark_table_covers_the_required_ranges():
    ids = {c.id for c in cis_controls.CONTROLS}
    required = ({f"1.1.{i}" for i in range(1, 22)} | {f"1.2.{i}" for i in range(1, 31)}
                | {f"1.3.{i}" for i in range(1, 8)} | {"1.4.1", "1.4.2"} | {f"2.{i}" for i in range(1, 8)}
                | {f"4.1.{i}" for i in range(1, 11)} | {f"4.2.{i}" for i in range(1, 14)})
    assert required <= ids
    assert all(c.title.startswith(("Ensure", "Verify", "If ")) for c in cis_controls.CONTROLS)


def test_results_are_deterministic(sample, state):
    first = cis.check_plan(sample)
    assert cis.check_plan(sample) == first
    assert cis.check_plan(plan_for(SAMPLE, state)) == first


def test_not_decidable_always_says_why(sample):
    for f in cis.check_plan(sample):
        assert f.detail, f
        if f.status == "NOT-DECIDABLE":
            assert "drift" in f.detail or "outside hardened-cluster" in f.detail or "not evaluated" in f.detail


def test_kubeadm_created_files_are_not_decidable(sample):
    found = by_key(cis.check_plan(sample))
    assert found["1.1.1", "cp-1"].status == "NOT-DECIDABLE"
    assert "created by kubeadm at init" in found["1.1.1", "cp-1"].detail
    assert found["4.1.5", "worker-1"].status == "NOT-DECIDABLE"
    # The first control-plane node gets the CA from the plan; joining nodes from kubeadm.
    assert found["4.1.7", "cp-1"].status == "PASS"
    assert found["4.1.7", "worker-1"].status == "NOT-DECIDABLE"
    assert found["1.1.21", "cp-1"].status == "NOT-DECIDABLE"
    assert "apiserver.key" in found["1.1.21", "cp-1"].detail


def test_findings_never_carry_secret_values(sample, state):
    loaded = load_spec(SAMPLE)
    secrets = resolve_secrets(loaded, state)
    text = "\n".join(f.detail for f in cis.check_plan(sample))
    assert not any(value in text for value in secrets.values())


def test_file_modes_are_checked_per_host(sample):
    weaker = with_file(sample, "worker-2", "/var/lib/kubelet/config.yaml", mode="0644", owner="kube")
    found = by_key(cis.check_plan(weaker))
    assert found["4.1.9", "worker-2"].status == "FAIL"
    assert found["4.1.10", "worker-2"].status == "FAIL"
    assert found["4.1.9", "worker-1"].status == "PASS"
    weaker = with_file(sample, "cp-2", "/etc/kubernetes/pki/apiserver-etcd-client.key", mode="0640")
    assert by_key(cis.check_plan(weaker))["1.1.21", "cp-2"].status == "FAIL"
    weaker = with_file(sample, "etcd-2", "/etc/etcd/etcd.conf.yml", mode="0644")
    assert by_key(cis.check_plan(weaker))["1.1.7", "etcd-2"].status == "FAIL"


def test_one_weak_kubelet_config_fails_only_its_host(sample):
    path = "/var/lib/kubelet/config.yaml"
    content = sample.hosts["worker-3"].files[path].content
    assert "readOnlyPort: 0\n" in content and "seccompDefault: true\n" in content
    weak = content.replace("readOnlyPort: 0\n", "readOnlyPort: 10255\n").replace("seccompDefault: true\n", "")
    found = cis.check_plan(with_file(sample, "worker-3", path, content=weak))
    failed = {(f.id, f.host) for f in found if f.status == "FAIL"}
    assert failed == {("4.2.4", "worker-3"), ("4.2.14", "worker-3")}


def test_etcd_controls_read_the_etcd_config(sample):
    path = "/etc/etcd/etcd.conf.yml"
    config = yaml.safe_load(sample.hosts["etcd-1"].files[path].content)
    config["client-transport-security"]["client-cert-auth"] = False
    config["peer-transport-security"]["auto-tls"] = True
    config["peer-transport-security"].pop("key-file")
    found = cis.check_plan(with_file(sample, "etcd-1", path, content=yaml.safe_dump(config)))
    assert {f.id for f in found if f.status == "FAIL"} == {"2.2", "2.4", "2.6"}


def test_etcd_must_not_trust_the_kubernetes_ca(sample):
    kube_ca = sample.hosts["cp-1"].files["/etc/kubernetes/pki/ca.crt"].content
    found = by_key(cis.check_plan(with_file(sample, "etcd-3", "/etc/etcd/pki/ca.crt", content=kube_ca)))
    assert found["2.7", "etcd-3"].status == "FAIL"
    assert found["2.7", "etcd-1"].status == "PASS"


def test_anonymous_auth_limited_to_health_and_discovery(sample):
    path = "/etc/kubernetes/auth/authentication-config.yaml"
    config = yaml.safe_load(sample.hosts["cp-1"].files[path].content)
    config["anonymous"]["conditions"].append({"path": "/api/v1/secrets"})
    found = by_key(cis.check_plan(with_file(sample, "cp-1", path, content=yaml.safe_dump(config))))
    assert found["1.2.1", "cp-1"].status == "FAIL"
    del config["anonymous"]
    found = by_key(cis.check_plan(with_file(sample, "cp-1", path, content=yaml.safe_dump(config))))
    assert found["1.2.1", "cp-1"].status == "FAIL"


def test_flag_files_must_be_planned_on_every_control_plane_node(sample):
    hosts = dict(sample.hosts)
    files = dict(hosts["cp-3"].files)
    del files["/etc/kubernetes/encryption/encryption-config.yaml"]
    hosts["cp-3"] = dataclasses.replace(hosts["cp-3"], files=files)
    found = by_key(cis.check_plan(dataclasses.replace(sample, hosts=hosts)))
    assert found["1.2.27", "cp-3"].status == "FAIL"
    assert found["1.2.27", "cp-2"].status == "PASS"


def test_kms_v2_is_a_strong_provider(state):
    data = yaml.safe_load(SAMPLE.read_text())
    data["encryption"] = {"provider": "kms-v2", "kms": {"name": "vault", "endpoint": "unix:///run/kms/vault.sock"}}
    loaded = parse_spec(data, SAMPLE)
    found = by_key(cis.check_plan(render_plan(loaded, resolve_secrets(loaded, state))))
    assert found["1.2.28", "cp-1"].status == "PASS"
    assert found["1.2.28", "cp-1"].detail == "secrets,configmaps: kms"


def test_summary_counts_every_status():
    findings = [cis_controls.Finding("1.2.1", "t", "PASS", "a", "d"), cis_controls.Finding("1.2.2", "t", "FAIL", "a", "d")]
    assert cis_controls.summary(findings) == {"PASS": 1, "FAIL": 1, "NOT-DECIDABLE": 0, "WARN": 0}
    assert cis_controls.summary([]) == {"PASS": 0, "FAIL": 0, "NOT-DECIDABLE": 0, "WARN": 0}


def test_kubeadm_flags_extra_args_override_defaults():
    cluster = {
        "networking": {"podSubnet": "10.244.0.0/16", "serviceSubnet": "10.96.0.0/12", "dnsDomain": "example"},
        "etcd": {"external": {"endpoints": ["https://a:2379", "https://b:2379"], "caFile": "/ca.crt"}},
        "apiServer": {"extraArgs": [{"name": "enable-admission-plugins", "value": "NodeRestriction,AlwaysPullImages"},
                                    {"name": "authorization-config", "value": "/authz.yaml"}]},
        "controllerManager": {"extraArgs": [{"name": "bind-address", "value": "0.0.0.0"}]},
    }
    api = kubeadm.component_flags("kube-apiserver", cluster, {"advertiseAddress": "10.0.0.1", "bindPort": 6443})
    assert api["enable-admission-plugins"] == "NodeRestriction,AlwaysPullImages"
    assert "authorization-mode" not in api  # kubeadm drops its default when authorization-config is given
    assert api["etcd-servers"] == "https://a:2379,https://b:2379"
    assert api["etcd-cafile"] == "/ca.crt"
    assert "etcd-certfile" not in api and "etcd-keyfile" not in api  # only with both files named
    assert api["service-account-issuer"] == "https://kubernetes.default.svc.example"
    assert api["secure-port"] == "6443" and api["advertise-address"] == "10.0.0.1"
    cm = kubeadm.component_flags("kube-controller-manager", cluster)
    assert cm["bind-address"] == "0.0.0.0"
    assert cm["cluster-cidr"] == "10.244.0.0/16" and cm["allocate-node-cidrs"] == "true"
    assert "cluster-cidr" not in kubeadm.component_flags("kube-controller-manager", {})
    assert kubeadm.component_flags("kube-scheduler", {})["bind-address"] == "127.0.0.1"


def test_lab_exceptions_are_reported_as_warnings_and_the_sample_has_none():
    sample = load_spec(Path("inventories/sample/cluster.yaml")).spec
    assert cis.lab_exception_findings(sample) == []
    relaxed = sample.model_copy(update={"lab_exceptions": sample.lab_exceptions.model_copy(
        update={"kubelet_allow_cgroup_v1": True, "kubeadm_skip_system_verification": True})})
    found = cis.lab_exception_findings(relaxed)
    assert [f.status for f in found] == ["WARN", "WARN"]
    assert {f.id for f in found} == {"LAB.kubelet_allow_cgroup_v1", "LAB.kubeadm_skip_system_verification"}
