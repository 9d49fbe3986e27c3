"""The kube-bench gate on the live lab cluster: kube-bench from the bundle, run on every control-plane and
worker node after apply, judged by CIS ID, and compared with `hardened-cluster check` (the plan-level CIS
check) on every check both decide.

The module applies every phase once from empty (the benchmark phase included) and then reads what the
nodes' kube-bench reported; a planted real gap must fail the gate, and is put back.
"""
from __future__ import annotations

import json

import pytest

from hardened_cluster.deliver.converge import converge, plan_for
from hardened_cluster.verify import kube_bench
from hardened_cluster.verify.cis import check_plan

pytestmark = pytest.mark.lab

KUBERNETES_NODES = ("cp-1", "worker-1", "worker-2")


@pytest.fixture(scope="module")
def cluster(lab, lab_spec, lab_state, bundle):
    """Every phase applied to the lab; the apply's result (with kube-bench's judged reports)."""
    lines: list[str] = []
    result, report = converge(lab_spec, check=False, state=lab_state, progress=lines.append)
    print("\n".join(kube_bench.lines(result.kube_bench)))
    assert result.rc == 0 and not any(h.failed for h in result.hosts.values()), "\n".join(lines[-40:])
    assert "benchmark" in result.phases
    return {"result": result, "report": json.loads(report.read_text())}


@pytest.fixture(scope="module")
def findings(cluster, lab_spec, lab_state):
    """`hardened-cluster check` on the plan the lab was applied with."""
    return check_plan(plan_for(lab_spec, lab_state))


def test_kube_bench_ran_on_every_kubernetes_node_with_the_benchmark_for_1_35(cluster, lab_spec, lab_state):
    result = cluster["result"]
    assert set(result.kube_bench) == set(KUBERNETES_NODES)
    # kube-bench 0.14 maps nothing above 1.32; its newest CIS Kubernetes benchmark is cis-1.11.
    assert kube_bench.benchmark_for(lab_spec.spec) == "cis-1.11"
    for host in KUBERNETES_NODES:
        bench = result.kube_bench[host]
        assert bench.benchmark == "cis-1.11", host
        report = kube_bench.saved(lab_state, host)
        ran = {c["node_type"] for c in report["Controls"]}
        assert ran == ({"master", "controlplane", "node"} if host == "cp-1" else {"node"}), (host, ran)
        assert bench.counts.get("PASS", 0) > 10, (host, bench.counts)
        assert (lab_state / "kube-bench" / f"{host}.json").stat().st_mode & 0o077 == 0
    # The apply report lists them by CIS ID.
    assert set(cluster["report"]["kube_bench"]) == set(KUBERNETES_NODES)
    assert cluster["report"]["kube_bench"]["cp-1"]["checks"]["1.2.15"] == "PASS"  # --profiling=false


def test_no_automated_check_fails_on_the_lab(cluster):
    result = cluster["result"]
    assert result.gate_failures == {}, "\n".join(kube_bench.lines(result.kube_bench))
    assert result.succeeded
    for host, bench in result.kube_bench.items():
        # Every FAIL left is excused with its reason: a typed false positive or a named lab exception.
        assert all(f["verdict"] == "EXCUSED" and f["reason"] for f in bench.fails), (host, bench.fails)
        assert {f["id"] for f in bench.fails} <= set(kube_bench.FALSE_POSITIVES), (host, bench.fails)


def test_kube_bench_and_check_agree_on_every_check_both_decide(cluster, findings, lab_state):
    compared, disagreements = 0, []
    for host in KUBERNETES_NODES:
        ours = {f.id: f.status for f in findings if f.host == host and f.status in ("PASS", "FAIL")}
        # Scored or not: a check that is not scored still runs its test (WARN when it fails).
        theirs = {c.id: c.verdict for c in kube_bench.parse(kube_bench.saved(lab_state, host)) if c.verdict}
        for cid in sorted(set(ours) & set(theirs)):
            compared += 1
            if ours[cid] == theirs[cid]:
                continue
            # Only a typed false positive may differ, and only in that direction.
            if not (cid in kube_bench.FALSE_POSITIVES and theirs[cid] == "FAIL" and ours[cid] == "PASS"):
                disagreements.append(f"{host} {cid}: kube-bench {theirs[cid]}, check {ours[cid]}")
    assert not disagreements, disagreements
    print(f"kube-bench and check compared on {compared} host checks")
    assert compared >= 70, compared  # cp-1's 1.x and 4.x, the workers' 4.x


def test_a_real_gap_on_a_node_fails_the_gate(cluster, lab, lab_spec, lab_state):
    """kubelet's config made world-readable on worker-1 (CIS 4.1.9): kube-bench fails it, nothing excuses it."""
    config = "/var/lib/kubelet/config.yaml"
    lab.lab.exec("worker-1", ["chmod", "0644", config])
    try:
        gap, _ = converge(lab_spec, check=False, phases=["benchmark"], hosts=["worker-1"], state=lab_state, full=True)
        assert not gap.succeeded
        assert [f["id"] for f in gap.gate_failures["worker-1"]] == ["4.1.9"], gap.gate_failures
    finally:
        lab.lab.exec("worker-1", ["chmod", "0600", config])
    again, _ = converge(lab_spec, check=False, phases=["benchmark"], hosts=["worker-1"], state=lab_state, full=True)
    assert again.succeeded and again.gate_failures == {}
    assert again.changed == 0  # installing and running kube-bench again changes nothing
