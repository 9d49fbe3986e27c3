"""One code path for `apply`, `drift` and the Pulumi tiers: preflight, render, deliver, report."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from hardened_cluster.artifacts import fetch_for
from hardened_cluster.deliver import NEEDS_KUBERNETES_BINARIES, PHASES, RunResult, run
from hardened_cluster.plan import Plan, render_plan
from hardened_cluster.preflight import preflight
from hardened_cluster.secrets import resolve_secrets, state_dir, write_private
from hardened_cluster.spec import LoadedSpec, Spec


def kubernetes_binaries_reason(spec: Spec) -> str | None:
    """Why the Kubernetes phases cannot run, or None when they can."""
    if spec.runtimes.artifacts == "distro":
        return ("needs kubeadm, kubelet and kubectl, which Debian does not package; "
                "set runtimes.artifacts: release (or a mirror) on machines that can fetch them")
    return None


def select_phases(spec: Spec, wanted: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """The phases to run, in order, and the ones left out with the reason."""
    phases = [p for p in PHASES if wanted is None or p in wanted]
    skipped: dict[str, str] = {}
    reason = kubernetes_binaries_reason(spec)
    if reason:
        for phase in [p for p in phases if p in NEEDS_KUBERNETES_BINARIES]:
            phases.remove(phase)
            skipped[phase] = reason
    return phases, skipped


def plan_for(loaded: LoadedSpec, state: Path, hosts: list[str] | None = None) -> Plan:
    """Preflight (pinned host keys, facts), then the plan rendered with those facts."""
    facts = preflight(loaded, hosts)
    return render_plan(loaded, resolve_secrets(loaded, state), facts)


def converge(
    loaded: LoadedSpec,
    *,
    check: bool,
    phases: list[str] | None = None,
    hosts: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
    state: Path | None = None,
) -> tuple[RunResult, Path]:
    """Apply (check=False) or detect drift (check=True); returns the result and its JSON report."""
    state = state or state_dir(loaded.spec.cluster.name)
    selected, skipped = select_phases(loaded.spec, phases)
    if selected:
        plan = plan_for(loaded, state, hosts)
        fetch_for(plan, selected)
        result = run(plan, state, phases=selected, check=check, hosts=hosts, progress=progress)
    else:
        # Every asked-for phase was left out; an empty tag list would run the whole playbook.
        result = RunResult("drift" if check else "apply", [], {}, "skipped", 0, 0.0, {})
    result.skipped_phases = skipped
    report = state / "reports" / f"{result.mode}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    write_private(report, result.to_json())
    return result, report
