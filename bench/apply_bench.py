"""Benchmark of apply on the lab (root, Linux).

Records: first converge of the 6-node lab, its no-op rerun, and the no-op rerun on 3 vs 12 nodes
(and, for reference, the same reruns with --full: the roles on every host).
Targets on a 2-core machine: converge < 60 s, no-op rerun < 15 s, 12-node rerun <= 1.5x the 3-node one.
Run: sudo .venv/bin/python bench/apply_bench.py
"""
from __future__ import annotations

import shutil
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


def _spec_with(directory: Path, etcd: int, control_planes: int, workers: int) -> Path:
    data = yaml.safe_load(LAB_SPEC.read_text())
    nodes = [{"name": f"etcd-{i + 1}", "address": f"10.231.0.{11 + i}", "roles": ["etcd"]} for i in range(etcd)]
    nodes += [{"name": f"cp-{i + 1}", "address": f"10.231.0.{21 + i}", "roles": ["control-plane"]}
              for i in range(control_planes)]
    nodes += [{"name": f"worker-{i + 1}", "address": f"10.231.0.{31 + i}", "roles": ["worker"]} for i in range(workers)]
    data["nodes"] = nodes
    data["runtimes"]["gvisor"]["nodes"] = ["worker-1"]
    data["runtimes"]["kata"]["nodes"] = ["worker-1"]
    path = directory / f"cluster-{len(nodes)}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _timed(label: str, spec_path: Path, state: Path, full: bool = False) -> float:
    loaded = load_spec(spec_path)
    started = time.monotonic()
    result, _ = converge(loaded, check=False, phases=PHASES, state=state, full=full)
    seconds = time.monotonic() - started
    if not result.succeeded:
        raise SystemExit(f"{label}: apply failed: { {h: r.errors for h, r in result.hosts.items() if r.errors} }")
    print(f"{label:<32} {seconds:6.1f} s  changed={result.changed}", flush=True)
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
        noop = _timed("6 nodes: no-op rerun", spec6, work / "state6")
        verdicts += [("first converge < 60 s", first < 60), ("no-op rerun < 15 s", noop < 15)]
        # For reference: the roles on every host, as when the plan or the role code changed.
        _timed("6 nodes: no-op rerun, --full", spec6, work / "state6", full=True)
        reruns = {}
        for etcd, cps, workers in ((1, 1, 1), (3, 1, 8)):
            path = _spec_with(work, etcd, cps, workers)
            count = etcd + cps + workers
            start(path, lab)
            _timed(f"{count} nodes: first converge", path, work / f"state{count}")
            reruns[count] = _timed(f"{count} nodes: no-op rerun", path, work / f"state{count}")
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
