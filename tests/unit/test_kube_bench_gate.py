"""The kube-bench gate's judgement (hardened_cluster.verify.kube_bench) on reports in kube-bench's JSON shape:
an automated FAIL fails the gate unless a named lab exception or a typed false positive that `check`
confirms excuses it; the benchmark comes from the cfg/ archive's own version mapping."""
from __future__ import annotations

import io
import tarfile
from types import SimpleNamespace

import pytest
import yaml

from hardened_cluster.deliver.converge import select_phases
from hardened_cluster.spec.load import load_spec
from hardened_cluster.verify import kube_bench
from hardened_cluster.verify.cis_controls import Finding

LAB = SimpleNamespace(lab_exceptions=SimpleNamespace(kubelet_allow_cgroup_v1=True, kube_proxy_keeps_conntrack_max=False,
                                                     kubeadm_skip_system_verification=False))


def report(*results: tuple[str, str, bool]) -> dict:
    """A kube-bench --json report with one result per (id, status, automated)."""
    return {"Controls": [{"id": "1", "version": "cis-1.11", "node_type": "master", "tests": [{"section": "1.1", "results": [
        {"test_number": cid, "test_desc": f"check {cid}", "status": status, "scored": automated,
         "type": "" if automated else "manual", "actual_value": ""} for cid, status, automated in results]}]}]}


def finding(cid: str, status: str, host: str) -> Finding:
    return Finding(cid, cid, status, host, "")


def verdicts(bench) -> dict[str, str]:
    return {f["id"]: f["verdict"] for f in bench.fails}


def test_an_automated_fail_fails_the_gate_and_a_manual_one_does_not():
    bench = kube_bench.judge(LAB, "cp-1", report(("1.2.15", "FAIL", True), ("1.2.20", "FAIL", False),
                                                 ("1.2.16", "PASS", True)),
                             [finding("1.2.15", "PASS", "cp-1")])
    assert verdicts(bench) == {"1.2.15": "FAIL"}
    assert bench.checks == {"1.2.15": "FAIL", "1.2.16": "PASS"}
    assert bench.counts == {"FAIL": 2, "PASS": 1}


def test_a_false_positive_is_excused_only_where_check_passes_the_control():
    fails = report(("1.2.1", "FAIL", True), ("4.2.9", "FAIL", True))
    passing = kube_bench.judge(LAB, "cp-1", fails, [finding("1.2.1", "PASS", "cp-1"), finding("4.2.9", "PASS", "cp-1")])
    assert verdicts(passing) == {"1.2.1": "EXCUSED", "4.2.9": "EXCUSED"} and not passing.gate_failures
    # The same ID behind a real gap (check fails it too) is not excused; nor where check does not decide.
    gap = kube_bench.judge(LAB, "cp-1", fails, [finding("1.2.1", "FAIL", "cp-1"), finding("4.2.9", "NOT-DECIDABLE", "cp-1")])
    assert verdicts(gap) == {"1.2.1": "FAIL", "4.2.9": "FAIL"}


def test_external_etcd_files_are_judged_on_the_members():
    fails = report(("1.1.7", "FAIL", True))
    members_pass = [finding("1.1.7", "PASS", "etcd-1"), finding("1.1.7", "PASS", "etcd-2")]
    assert verdicts(kube_bench.judge(LAB, "cp-1", fails, members_pass)) == {"1.1.7": "EXCUSED"}
    member_fails = members_pass + [finding("1.1.7", "FAIL", "etcd-3")]
    assert verdicts(kube_bench.judge(LAB, "cp-1", fails, member_fails)) == {"1.1.7": "FAIL"}
    assert verdicts(kube_bench.judge(LAB, "cp-1", fails, [])) == {"1.1.7": "FAIL"}


def test_a_lab_exception_excuses_only_the_checks_it_names_and_only_when_set(monkeypatch):
    monkeypatch.setitem(kube_bench.LAB_EXCEPTION_CHECKS, "kubelet_allow_cgroup_v1", ("4.2.13",))
    fails = report(("4.2.13", "FAIL", True), ("4.2.14", "FAIL", True))
    assert verdicts(kube_bench.judge(LAB, "worker-1", fails, [])) == {"4.2.13": "EXCUSED", "4.2.14": "FAIL"}
    hardened = SimpleNamespace(lab_exceptions=SimpleNamespace(kubelet_allow_cgroup_v1=False,
                                                              kube_proxy_keeps_conntrack_max=False,
                                                              kubeadm_skip_system_verification=False))
    assert verdicts(kube_bench.judge(hardened, "worker-1", fails, [])) == {"4.2.13": "FAIL", "4.2.14": "FAIL"}


def test_what_kube_bench_decided_scored_or_not():
    checks = {c.id: c.verdict for c in kube_bench.parse({"Controls": [{"tests": [{"results": [
        {"test_number": "a", "status": "PASS", "scored": True, "type": ""},
        {"test_number": "b", "status": "FAIL", "scored": True, "type": ""},
        {"test_number": "c", "status": "WARN", "scored": False, "type": ""},  # not scored: its test failed
        {"test_number": "d", "status": "PASS", "scored": False, "type": ""},
        {"test_number": "e", "status": "WARN", "scored": False, "type": "manual"},  # no test run
        {"test_number": "f", "status": "WARN", "scored": True, "type": ""},  # scored without tests
    ]}]}]})}
    assert checks == {"a": "PASS", "b": "FAIL", "c": "FAIL", "d": "PASS", "e": None, "f": None}


def test_no_report_after_apply_fails_the_gate():
    assert kube_bench.missing().gate_failures


def _cfg_archive(tmp_path, mapping: dict) -> object:
    data = yaml.safe_dump({"version_mapping": mapping}).encode()
    path = tmp_path / "cfg.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("./cfg/config.yaml")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_the_benchmark_is_the_mapping_of_the_newest_minor_at_or_below_the_cluster(tmp_path):
    archive = _cfg_archive(tmp_path, {"1.28": "cis-1.10", "1.31": "cis-1.11", "1.32": "cis-1.11",
                                      "eks-1.0.1": "eks-1.0.1", "ocp-4.13": "rh-1.8"})
    assert kube_bench._benchmark(archive, 35) == "cis-1.11"
    assert kube_bench._benchmark(archive, 29) == "cis-1.10"
    with pytest.raises(kube_bench.KubeBenchError, match="maps no Kubernetes minor up to 1.27"):
        kube_bench._benchmark(archive, 27)


def test_the_benchmark_phase_needs_the_bundle():
    sample = load_spec(kube_bench.bundle.resources.ROOT / "inventories" / "sample" / "cluster.yaml").spec
    assert sample.runtimes.artifacts == "release"
    phases, skipped = select_phases(sample, None)
    assert "kubernetes" in phases and "benchmark" not in phases
    assert "offline bundle" in skipped["benchmark"]


def test_kube_bench_waits_for_the_processes_its_checks_read_on_each_kind_of_node():
    # The control-plane checks read the static pods' command lines, the node checks the kubelet's and kube-proxy's.
    assert kube_bench.processes(["control-plane"]) == ["kube-apiserver", "kube-controller-manager", "kube-scheduler",
                                                       "kubelet", "kube-proxy"]
    assert kube_bench.processes(["worker"]) == ["kubelet", "kube-proxy"]
    assert kube_bench.processes(["control-plane", "worker"]) == kube_bench.processes(["control-plane"])
    assert kube_bench.processes(["etcd"]) == []
