"""Benchmark of the real cluster on the lab (issue 11's targets), root, Linux, the offline bundle built.

Records, as an operator runs them (`hardened-cluster apply`, timed from start to exit):
- empty 6-node lab (3 etcd, 1 control plane, 2 workers) to every node Ready: the first apply of every phase
  (kubeadm init and joins, kube-router, CoreDNS, the objects, kube-bench), then the wait for Ready;
- the no-op rerun with Kubernetes included (median of RERUNS), and, for reference, `apply --full`.
Targets on a 2-core machine: converge <= 180 s, no-op rerun <= 5 s.

Run: sudo .venv/bin/python bench/cluster_bench.py    (HC_LAB_INSTANCE / HC_LAB_SPEC choose the lab, as the tests)
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hardened_cluster.cli.lab import start
from hardened_cluster.deliver import bundle as bundles
from hardened_cluster.lab import Lab
from hardened_cluster.lab.pytest_plugin import spec_path
from hardened_cluster.spec.load import load_spec

CONVERGE_TARGET = 180.0
RERUN_TARGET = 5.0
RERUNS = 5
CLI = Path(sys.executable).parent / "hardened-cluster"


def apply(spec: Path, state: Path, *extra: str) -> float:
    argv = [str(CLI), "apply", "--spec", str(spec), "--quiet", *extra]
    started = time.monotonic()
    done = subprocess.run(argv, env={**os.environ, "HC_STATE_DIR": str(state)}, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds


def all_ready(kubectl: Path, kubeconfig: Path, count: int) -> bool:
    got = subprocess.run([str(kubectl), "--kubeconfig", str(kubeconfig), "get", "nodes", "-o", "json"],
                         capture_output=True, text=True, timeout=30)
    if got.returncode != 0:
        return False
    nodes = json.loads(got.stdout)["items"]
    return len(nodes) == count and all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"]) for n in nodes)


def main() -> int:
    kubectl = bundles.load(bundles.default_out(bundles.DEFAULT_KUBERNETES)).path("kubectl")
    lab = Lab()
    work = Path(tempfile.mkdtemp(prefix="hc-cluster-bench-"))
    try:
        spec = work / "lab" / "cluster.yaml"
        spec.parent.mkdir()
        shutil.copy(spec_path(), spec)
        lab.down()
        start(spec, lab)
        state = work / "state"
        started = time.monotonic()
        applied = apply(spec, state)
        loaded = load_spec(spec)
        kube_nodes = len(loaded.spec.nodes_with("control-plane")) + len(loaded.spec.nodes_with("worker"))
        kubeconfig = state / loaded.spec.cluster.name / "admin.conf"
        while not all_ready(kubectl, kubeconfig, kube_nodes):
            if time.monotonic() - started > 900:
                raise SystemExit("the nodes were not all Ready 15 min after the apply started")
            time.sleep(1)
        converge = time.monotonic() - started
        print(f"empty lab to every node Ready       {converge:7.1f} s  (the apply itself {applied:.1f} s)", flush=True)
        reruns = [apply(spec, state) for _ in range(RERUNS)]
        noop = statistics.median(reruns)
        print(f"no-op rerun, median of {RERUNS}           {noop:7.2f} s  ({', '.join(f'{r:.2f}' for r in reruns)})")
        full = apply(spec, state, "--full")
        print(f"apply --full (every role, every host) {full:7.1f} s  (reference)")
    finally:
        lab.down()
        shutil.rmtree(work, ignore_errors=True)
    verdicts = [(f"converge <= {CONVERGE_TARGET:.0f} s", converge <= CONVERGE_TARGET),
                (f"no-op rerun <= {RERUN_TARGET:.0f} s", noop <= RERUN_TARGET)]
    for name, passed in verdicts:
        print(f"{'PASS' if passed else 'FAIL'}  {name}")
    return 0 if all(p for _, p in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
