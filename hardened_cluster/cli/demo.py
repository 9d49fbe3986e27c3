"""The main job on the built-in lab: start the nodes, apply, verify from the outside, check drift."""
from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

from hardened_cluster.cli.lab import start
from hardened_cluster.deliver.ansible import PHASES
from hardened_cluster.deliver.converge import converge
from hardened_cluster.errors import DeliveryError, SpecError
from hardened_cluster.lab import Lab, LabError
from hardened_cluster.spec.load import load_spec
from hardened_cluster.verify import kube_bench
from hardened_cluster.verify.probes import etcd_health, scan


def _say(line: str = "") -> None:
    print(line, flush=True)


def _scan_line(label: str, probes) -> tuple[str, bool]:
    passing = sum(p.passes for p in probes)
    wrong = [p for p in probes if not p.as_expected]
    detail = "; ".join(f"{p.node}:{p.port} {p.state} but the matrix {'allows' if p.allowed else 'blocks'} it" for p in wrong[:5])
    verdict = "as the matrix says" if not wrong else f"MISMATCH: {detail}"
    return f"  scan from {label}: {len(probes)} ports probed, {passing} reachable, {verdict}", not wrong


def run_outside(lab: Lab, argv: list[str]) -> tuple[int, str, str]:
    """Run argv in the lab's outsider netns, as verify.scan's runner."""
    proc = lab.exec_outside(argv, check=False)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def run(spec_path: Path, keep: bool = False) -> int:
    if os.geteuid() != 0:
        print("error: the demo runs the built-in lab, which needs root on Linux", file=sys.stderr)
        return 1
    lab = Lab()
    ok = True
    try:
        _say(f"== lab: starting the nodes of {spec_path} (network namespaces on this machine, real systemd and sshd)")
        lab, nodes, _ = start(spec_path, lab)
        loaded = load_spec(spec_path)
        _say(f"   {len(nodes)} nodes up: " + ", ".join(f"{n.name} ({n.address})" for n in nodes))

        _say("== apply: every phase from empty, kubeadm init and the joins included (a few minutes)")
        result, report = converge(loaded, check=False, progress=None)
        for name, host in result.hosts.items():
            _say(f"   {name:<10} ok={host.ok} changed={host.changed} failed={host.failed}"
                 + (" UNREACHABLE" if host.unreachable else "")
                 + (" (unchanged since the last apply: Ansible not run)" if host.unchanged else ""))
            for error in host.errors:
                _say(f"      error: {error}")
        for line in kube_bench.lines(result.kube_bench):
            _say(f"   {line}")
        ok &= result.succeeded
        _say(f"   apply {'succeeded' if result.succeeded else 'FAILED'} in {result.seconds}s (report {report})")

        _say("== verify")
        health = etcd_health(loaded)
        healthy = [h for h in health if h.get("health") in (True, "true")]
        ok &= len(healthy) == len(loaded.spec.nodes_with("etcd"))
        _say(f"  etcd over mutual TLS: {len(healthy)}/{len(loaded.spec.nodes_with('etcd'))} members healthy")
        worker = next(n for n in loaded.spec.nodes if "worker" in n.roles)
        for label, probes in (
            (f"admin {lab.controller_address}", scan(loaded, lab.controller_address)),
            (f"worker {worker.name} {worker.address}", scan(loaded, str(worker.address), via_node=worker)),
            (f"outsider {lab.outsider_address}", scan(loaded, lab.outsider_address, runner=lambda argv: run_outside(lab, argv))),
        ):
            line, good = _scan_line(label, probes)
            ok &= good
            _say(line)

        if "kubernetes" in result.phases and result.succeeded and loaded.spec.runtimes.artifacts == "bundle":
            from hardened_cluster.deliver import bundle
            from hardened_cluster.verify.live_cluster import proofs
            from hardened_cluster.secrets.store import state_dir

            kubectl = bundle.load(loaded.spec.runtimes.bundle).path("kubectl")
            for line, good in proofs(loaded, kubectl, state_dir(loaded.spec.cluster.name)):
                ok &= good
                _say(f"  {'ok  ' if good else 'FAIL'} {line}")
        else:
            why = ("the apply failed" if not result.succeeded
                   else f"the kubernetes phase did not run ({result.skipped_phases.get('kubernetes', 'not selected')})"
                   if "kubernetes" not in result.phases else "runtimes.artifacts is not bundle (no kubectl of ours)")
            _say(f"  live-cluster proofs NOT RUN: {why}")

        # Check mode of every role on every host: the rerun shortcut would only compare fingerprints.
        drift, _ = converge(loaded, check=True, full=True)
        changes = Counter({name: len(h.changes) or h.changed for name, h in drift.hosts.items() if h.changed})
        ok &= drift.succeeded and not changes
        _say(f"  drift: {'none' if not changes else dict(changes)}")

        _say("== phases")
        for phase, roles in PHASES.items():
            if phase in result.phases:
                _say(f"  {phase:<10} ran: {', '.join(roles)}")
            else:
                _say(f"  {phase:<10} NOT RUN: {result.skipped_phases.get(phase, 'not selected')}")
        _say(f"== result: {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    except (SpecError, DeliveryError, LabError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, SpecError) else 1
    finally:
        if not keep:
            lab.down()
            _say("== lab down")
