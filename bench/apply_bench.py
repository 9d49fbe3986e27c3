"""Benchmark of apply on the lab (root, Linux).

Records: first converge of the 6-node lab, its no-op rerun, and the no-op rerun on 3 vs 12 nodes
(and, for reference, the same reruns with --full: the roles on every host).
Targets on a 2-core machine: converge < 60 s, no-op rerun < 15 s, 12-node rerun <= 1.5x the 3-node one.

Each run is the command an operator runs, `hardened-cluster apply`, timed from start to exit.
A no-op rerun is the median of RERUNS runs. The 3- and 12-node clusters run side by side in one
lab and are rerun in turns, so that both see the same machine. For reference, the time spent
inside `converge()` (no interpreter start-up, no spec loading) is printed as well.
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

from hardened_cluster.cli.lab import start
from hardened_cluster.deliver.converge import converge
from hardened_cluster.lab import Lab
from hardened_cluster.lab.from_spec import spec_nodes
from hardened_cluster.spec.load import load_spec

REPO = Path(__file__).resolve().parents[1]
LAB_SPEC = REPO / "inventories" / "lab" / "cluster.yaml"
PHASES = ["hosts", "etcd", "runtime"]
RERUNS = 5
CLI = Path(sys.executable).parent / "hardened-cluster"


def _spec_with(directory: Path, nodes: list[tuple[str, str, str]]) -> Path:
    """A copy of the lab spec with these (name, address, role) nodes; gVisor and Kata on the first worker."""
    data = yaml.safe_load(LAB_SPEC.read_text())
    data["nodes"] = [{"name": name, "address": address, "roles": [role]} for name, address, role in nodes]
    first_worker = next(name for name, _, role in nodes if role == "worker")
    data["runtimes"]["gvisor"]["nodes"] = [first_worker]
    data["runtimes"]["kata"]["nodes"] = [first_worker]
    path = directory / f"cluster-{len(nodes)}" / "cluster.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _start_together(lab: Lab, specs: list[Path]) -> None:
    """One lab with the nodes of every spec, each spec with its own known_hosts."""
    per_spec = [spec_nodes(spec) for spec in specs]
    keys = lab.up([node for nodes, _ in per_spec for node in nodes])
    for nodes, known_hosts in per_spec:
        lab.write_known_hosts(known_hosts, keys, nodes)


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


def _alternated_reruns(specs: dict[int, Path], states: dict[int, Path]) -> dict[int, float]:
    """No-op reruns of each cluster in turn, RERUNS each, so that both see the same machine; medians.

    For reference, the time inside converge() (no interpreter start-up, no spec loading) too.
    """
    runs: dict[int, list[float]] = {n: [] for n in specs}
    inside: dict[int, list[float]] = {n: [] for n in specs}
    loaded = {n: load_spec(path) for n, path in specs.items()}
    for _ in range(RERUNS):
        for n, path in specs.items():
            runs[n].append(_apply(path, states[n]))
            started = time.monotonic()
            result, _ = converge(loaded[n], check=False, phases=PHASES, state=states[n] / loaded[n].spec.cluster.name)
            inside[n].append(time.monotonic() - started)
            if result.changed or not result.succeeded:
                raise SystemExit(f"{n} nodes: a no-op rerun changed {result.changed} or failed")
    for n in specs:
        print(f"{f'{n} nodes: no-op rerun':<36} {statistics.median(runs[n]):6.2f} s"
              f"   (inside converge(): {statistics.median(inside[n]):.2f} s)", flush=True)
    return {n: statistics.median(r) for n, r in runs.items()}


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
        noop = _alternated_reruns({6: spec6}, {6: work / "state6"})[6]
        verdicts += [("first converge < 60 s", first < 60), ("no-op rerun < 15 s", noop < 15)]
        # For reference: the roles on every host, as when the plan or the role code changed.
        _timed("6 nodes: no-op rerun, --full", spec6, work / "state6", full=True)
        # 3 and 12 nodes side by side in one lab, on separate addresses, measured in turns.
        small = [("s-etcd-1", "10.231.0.41", "etcd"), ("s-cp-1", "10.231.0.42", "control-plane"),
                 ("s-worker-1", "10.231.0.43", "worker")]
        large = [(f"etcd-{i}", f"10.231.0.{10 + i}", "etcd") for i in (1, 2, 3)]
        large += [("cp-1", "10.231.0.21", "control-plane")]
        large += [(f"worker-{i}", f"10.231.0.{30 + i}", "worker") for i in range(1, 9)]
        specs = {3: _spec_with(work, small), 12: _spec_with(work, large)}
        states = {n: work / f"state{n}" for n in specs}
        _start_together(lab, list(specs.values()))
        for n, path in specs.items():
            _timed(f"{n} nodes: first converge", path, states[n])
        reruns = _alternated_reruns(specs, states)
        for n, path in specs.items():
            _timed(f"{n} nodes: no-op rerun, --full", path, states[n], full=True)
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
