"""The kube-bench gate: kube-bench (from the offline bundle) on every Kubernetes node after apply.

The `kube_bench` role installs the bundle's kube-bench and its cfg/ (both sha256-verified on the
controller) and runs it read-only with `--json`; the report comes back to the controller in the
role's `kube_bench_report` fact. Here it is read by CIS ID and judged: an automated check that FAILs
fails the gate unless it is excused, and only two things excuse it:

- a lab exception the spec sets (`lab_exceptions`, see `cis.LAB_EXCEPTIONS`) that names the check;
- a kube-bench false positive listed in FALSE_POSITIVES, and only on a host where `hardened-cluster
  check` decides the same control PASS from the plan (so a real gap behind the same ID still fails).
"""
from __future__ import annotations

import functools
import json
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hardened_cluster.deliver import bundle
from hardened_cluster.deliver.artifacts import KUBE_BENCH, ArtifactError, bundle_entry, cache_path
from hardened_cluster.verify.cis import LAB_EXCEPTIONS
from hardened_cluster.verify.cis_controls import Finding

# kube-bench's targets on each kind of node. A control-plane node also runs a kubelet. The etcd
# checks (2.x) are not run: etcd is external, its members are decided by `check` and drift.
TARGETS = {"control-plane": ("master", "controlplane", "node"), "worker": ("node",)}
# The processes kube-bench's checks read on each kind of node (the static pods', the kubelet's and
# kube-proxy's command lines): the role waits for each before kube-bench runs, so a component that is
# restarting is not judged as a set of failed flags.
PROCESSES = {"control-plane": ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"),
             "worker": ("kubelet", "kube-proxy")}

# Where kube-bench's own test reads our cluster wrongly; each is excused only where `check` decides
# the control PASS (on the same host, or for external etcd's files on the members).
FALSE_POSITIVES = {
    # External etcd: the control plane has no etcd data directory or pod spec; kube-bench's audit finds
    # none and fails. `check` decides them on the etcd members (their config file and data directory).
    "1.1.7": "external etcd: no etcd pod spec on the control plane; decided on the etcd members",
    "1.1.11": "external etcd: no etcd data directory on the control plane; decided on the etcd members",
    "1.1.12": "external etcd: no etcd data directory on the control plane; decided on the etcd members",
    # Not scored in cis-1.11 (kube-bench gives WARN, the gate does not count them), but decided.
    "1.2.1": "kube-bench reads only --anonymous-auth; the structured --authentication-config lets anonymous "
             "requests reach only the health endpoints and cluster-info (a lab test shows 6443 refusing the rest)",
    "4.2.9": "kube-bench wants static --tls-cert-file/--tls-private-key-file; serverTLSBootstrap gets the "
             "serving certificate from the cluster CA through the CSR API",
}


# The benchmark checks a lab exception (spec lab_exceptions, cis.LAB_EXCEPTIONS) makes fail on the
# lab's nodes, which the gate then excuses with that exception's reason. None does on this lab:
# kube-bench's cis-1.11 has no check on cgroups, conntrack or kubeadm's preflight.
LAB_EXCEPTION_CHECKS: dict[str, tuple[str, ...]] = {}


class KubeBenchError(ArtifactError):
    """The bundle's kube-bench or its cfg/ is missing, or cfg/ maps no benchmark to the Kubernetes version."""


def benchmark_for(spec) -> str:
    """The cfg/ benchmark kube-bench maps the cluster's Kubernetes minor to: the mapping of the
    newest minor at or below it (kube-bench 0.14 maps up to 1.32, to cis-1.11, the newest CIS
    Kubernetes benchmark it has), read from the bundle's own cfg/config.yaml."""
    return _benchmark(bundle.load(spec.runtimes.bundle).path("kube-bench-cfg"), spec.cluster.minor)


@functools.lru_cache(maxsize=8)
def _benchmark(archive: Path, minor: int) -> str:
    with tarfile.open(archive) as tar:
        member = tar.extractfile("./cfg/config.yaml")
        mapping = yaml.safe_load(member.read())["version_mapping"]
    known = {int(k.split(".")[1]): v for k, v in mapping.items() if k.count(".") == 1 and k.startswith("1.")
             and k.split(".")[1].isdigit()}
    at_or_below = [m for m in known if m <= minor]
    if not at_or_below:
        raise KubeBenchError(f"kube-bench's cfg/config.yaml in {archive} maps no Kubernetes minor up to 1.{minor}")
    return known[max(at_or_below)]


def targets(roles) -> list[str]:
    return list(TARGETS["control-plane"] if "control-plane" in roles else TARGETS["worker"])


def processes(roles) -> list[str]:
    """The processes kube-bench reads on a node with these roles, each once."""
    return list(dict.fromkeys(p for r in roles for p in PROCESSES.get(r, ())))


def host_vars(spec, node) -> dict:
    """The kube_bench role's variables for a Kubernetes node: the verified cached files and what to run."""
    try:
        binary, cfg = (bundle_entry(name, spec) for name in KUBE_BENCH)
        benchmark = benchmark_for(spec)
    except (ArtifactError, bundle.BundleError, KeyError) as exc:
        raise KubeBenchError(f"kube-bench from the bundle at {spec.runtimes.bundle}: {exc}") from None
    return {"kube_bench_binary": {"src": str(cache_path(binary)), "version": binary.version},
            "kube_bench_cfg_archive": str(cache_path(cfg)), "kube_bench_benchmark": benchmark,
            "kube_bench_targets": targets(node.roles),
            "kube_bench_processes": processes(node.roles)}


@dataclass(frozen=True)
class Check:
    id: str
    text: str
    status: str  # PASS FAIL WARN INFO
    automated: bool  # scored: a failing test is FAIL (else WARN)
    type: str = ""  # manual or skip: no test is run
    actual: str = ""

    @property
    def verdict(self) -> str | None:
        """What kube-bench's test decided, PASS or FAIL, or None where it decided nothing (a manual
        check). A check that is not scored still runs its test, and gives WARN when the test fails."""
        if self.type or self.status not in ("PASS", "FAIL", "WARN"):
            return None
        if self.status == "WARN":
            return None if self.automated else "FAIL"
        return self.status


@dataclass
class HostBench:
    """One node's kube-bench results, counted, with every automated FAIL and its verdict."""

    benchmark: str
    counts: dict[str, int]
    fails: list[dict[str, str]] = field(default_factory=list)  # id, text, verdict (FAIL | EXCUSED), reason
    checks: dict[str, str] = field(default_factory=dict)  # CIS ID -> status, automated checks

    @property
    def gate_failures(self) -> list[dict[str, str]]:
        return [f for f in self.fails if f["verdict"] == "FAIL"]


def parse(report: dict[str, Any]) -> list[Check]:
    """kube-bench's JSON (`Controls[].tests[].results[]`) as checks by CIS ID."""
    out = []
    for control in report.get("Controls") or []:
        for group in control.get("tests") or []:
            for result in group.get("results") or []:
                kind = result.get("type", "")
                out.append(Check(str(result["test_number"]), result.get("test_desc", ""), result["status"],
                                 bool(result.get("scored")) and kind != "manual", kind,
                                 str(result.get("actual_value", ""))[:300]))
    return out


def judge(spec, host: str, report: dict[str, Any], findings: list[Finding]) -> HostBench:
    """The gate on one host: its automated FAILs, each FAIL or EXCUSED with the reason."""
    checks = parse(report)
    versions = {c.get("version") for c in report.get("Controls") or []}
    ours = {f.id: f.status for f in findings if f.host == host}
    excused_by_lab = {cid: f"lab exception {key}: {LAB_EXCEPTIONS[key][1]}" for key, checks in LAB_EXCEPTION_CHECKS.items()
                      if getattr(spec.lab_exceptions, key) for cid in checks}
    result = HostBench(", ".join(sorted(v for v in versions if v)), dict(Counter(c.status for c in checks)))
    for c in checks:
        if not c.automated:
            continue
        result.checks[c.id] = c.status
        if c.status != "FAIL":
            continue
        if c.id in excused_by_lab:
            verdict, reason = "EXCUSED", excused_by_lab[c.id]
        elif c.id in FALSE_POSITIVES and ours.get(c.id) == "PASS":
            verdict, reason = "EXCUSED", f"kube-bench false positive: {FALSE_POSITIVES[c.id]}"
        elif c.id in FALSE_POSITIVES and c.id not in ours:
            # Decided on other hosts (external etcd's files, on the members): none of them may FAIL.
            elsewhere = sorted({f.status for f in findings if f.id == c.id and f.host != host})
            ok = bool(elsewhere) and "FAIL" not in elsewhere
            verdict = "EXCUSED" if ok else "FAIL"
            reason = (f"kube-bench false positive: {FALSE_POSITIVES[c.id]} (check there: "
                      f"{', '.join(elsewhere) or 'nothing'})")
        else:
            verdict = "FAIL"
            reason = f"check gives {ours[c.id]} here" if c.id in ours else "not excused"
        result.fails.append({"id": c.id, "text": c.text, "verdict": verdict, "reason": reason, "actual": c.actual})
    return result


def missing() -> HostBench:
    """A node that gave no report after apply: the gate cannot pass there."""
    return HostBench("", {}, [{"id": "-", "text": "kube-bench report", "verdict": "FAIL",
                               "reason": "kube-bench did not run or gave no report on this node", "actual": ""}])


def save(state: Path, host: str, report: dict[str, Any]) -> None:
    from hardened_cluster.secrets.store import write_private

    write_private(state / "kube-bench" / f"{host}.json", json.dumps(report, indent=1))


def saved(state: Path, host: str) -> dict[str, Any] | None:
    path = state / "kube-bench" / f"{host}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def forget(state: Path, host: str) -> None:
    (state / "kube-bench" / f"{host}.json").unlink(missing_ok=True)


def lines(results: dict[str, HostBench]) -> list[str]:
    """The report's and the demo's lines: counts per host, every automated FAIL by ID with its verdict."""
    out = []
    for host, bench in results.items():
        counts = ", ".join(f"{s} {bench.counts.get(s, 0)}" for s in ("PASS", "FAIL", "WARN", "INFO"))
        gate = "gate FAILED" if bench.gate_failures else "gate passed"
        out.append(f"kube-bench {bench.benchmark} on {host}: {counts}; {gate}")
        for f in bench.fails:
            out.append(f"    {f['verdict']:<7} {f['id']:<7} {f['text']}: {f['reason']}")
    return out
