"""Benchmark of apply on the lab (root, Linux).

Records: first converge of the 6-node lab, its no-op rerun, and the no-op rerun on 3 vs 12 nodes
(and, for reference, the same reruns with --full: the roles on every host).
Targets on a 2-core machine: converge < 60 s, no-op rerun < 15 s, 12-node rerun <= 1.5x the 3-node one.

Each run is the command an operator runs, `hardened-cluster apply`, timed from start to exit.
A no-op rerun is the median of RERUNS runs. For reference, the time spent inside `converge()`
(no interpreter start-up, no spec loading) is printed as well.
Run: sudo .venv/bin/python bench/apply_bench.py
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from hardened_cluster.core import converge
from hardened_cluster.lab import Lab
from hardened_cluster.lab_cli import start
from hardened_cluster.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
LAB_SPEC = REPO / "inventories" / "lab" / "cluster.yaml"
PHASES = ["hosts", "etcd", "runtime"]
RERUNS = 5
CLI = Path(sys.executable).parent / "hardened-cluster"


def _spec_with(directory: Path, etcd: int, control_planes: int, workers: int) -> Path:
    data = yaml.safe_load(LAB_SPEC.read_text())
    nodes = [{"name": f"etcd-{i + 1}", "address": f"10.231.0.{11 + i}", "roles": ["etcd"]} for i in range(etcd)]
    nodes += [{"name": f"cp-{i + 1}", "address": f"10.231.0.{21 + i}", "roles": ["control-plane"]}
              for i in range(control_planes)]
    nodes += [{"name": f"worker-{i + 1}", "address": f"10.231.0.{31 + i}", "roles": ["worker"]} for i in range(workers)]
    data["nodes"] = nodes
    data["runtimes"]["gvisor"]["nodes"] = ["worker-1"]
    data["runtimes"]["kata"]["nodes"] = ["worker-1"]
    path = directory / f"cluster-{len(nodes)}" / "cluster.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _apply(spec_path: Path, state: Path, full: bool = False) -> float:
    argv = [str(CLI), "apply", "--spec", str(spec_path), "--phases", ",".join(PHASES), "--quiet"]
    started = time.monotonic()
    done = subprocess.run(argv + (["--full"] if full else []), env={**os.environ, "HC_STATE_DIR": str(state)},
                          capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds


def _timed(label: str, spec_path: Path, state: Path, full: bool = False) -> float:
    seconds = _apply(spec_path, state, full)
    print(f"{label:<36} {seconds:6.2f} s", flush=True)
    return seconds


def _reruns(label: str, spec_path: Path, state: Path) -> float:
    """Median of RERUNS no-op reruns of the command, and the in-process converge() for reference."""
    seconds = statistics.median(_apply(spec_path, state) for _ in range(RERUNS))
    loaded = load_spec(spec_path)
    inside = []
    for _ in range(RERUNS):
        started = time.monotonic()
        result, _ = converge(loaded, check=False, phases=PHASES, state=state / loaded.spec.cluster.name)
        inside.append(time.monotonic() - started)
        if result.changed or not result.succeeded:
            raise SystemExit(f"{label}: a no-op rerun changed {result.changed} or failed")
    print(f"{label:<36} {seconds:6.2f} s   (inside converge(): {statistics.median(inside):.2f} s)", flush=True)
    return seconds


def main() -> int:
    lab = Lab()
    work = Path(tempfile.mkdtemp(prefix="hc-bench-"))
    verdicts = []
    try:
        spec6 = work / "lab" / "cluster.yaml"
        spec6.parent.mkdir()
        shutil.copy(LAB_SPEC, spec6)
        start(spec6, lab)
        first = _timed("6 nodes: first converge", spec6, work / "state6")
        noop = _reruns("6 nodes: no-op rerun", spec6, work / "state6")
        verdicts += [("first converge < 60 s", first < 60), ("no-op rerun < 15 s", noop < 15)]
        # For reference: the roles on every host, as when the plan or the role code changed.
        _timed("6 nodes: no-op rerun, --full", spec6, work / "state6", full=True)
        reruns = {}
        for etcd, cps, workers in ((1, 1, 1), (3, 1, 8)):
            path = _spec_with(work, etcd, cps, workers)
            count = etcd + cps + workers
            start(path, lab)
            _timed(f"{count} nodes: first converge", path, work / f"state{count}")
            reruns[count] = _reruns(f"{count} nodes: no-op rerun", path, work / f"state{count}")
            _timed(f"{count} nodes: no-op rerun, --full", path, work / f"state{count}", full=True)
        ratio = reruns[12] / reruns[3]
        print(f"12-node / 3-node no-op rerun ratio: {ratio:.2f}")
        verdicts.append(("12-node rerun <= 1.5x 3-node", ratio <= 1.5))
    finally:
        lab.down()
        shutil.rmtree(work, ignore_errors=True)
    for name, passed in verdicts:
        print(f"{'PASS' if passed else 'FAIL'}  {name}")
    return 0 if all(p for _, p in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
