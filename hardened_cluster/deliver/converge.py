"""One code path for `apply`, `drift` and the Pulumi tiers: preflight, render, deliver, report."""
from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hardened_cluster.deliver import membership
from hardened_cluster.deliver.ansible import NEEDS_KUBERNETES_BINARIES, PHASES, Change, HostResult, RunResult, run
from hardened_cluster.deliver.artifacts import fetch_for
from hardened_cluster.deliver.preflight import preflight, preflight_with, remember_facts, unknown_hosts
from hardened_cluster.deliver.rerun import Stamps, fingerprint_command, fingerprints, parse_fingerprint
from hardened_cluster.plan.render import Plan, load_templates, make_environment, render_plan
from hardened_cluster.secrets.store import resolve_secrets, state_dir, write_private
from hardened_cluster.spec.model import LoadedSpec, Spec
from hardened_cluster.verify import kube_bench
from hardened_cluster.verify.cis import check_plan


def kubernetes_binaries_reason(spec: Spec) -> str | None:
    """Why the Kubernetes phases cannot run, or None when they can."""
    if spec.runtimes.artifacts == "distro":
        return ("needs kubeadm, kubelet and kubectl, which Debian does not package; "
                "set runtimes.artifacts: bundle (built here by `hardened-cluster artifacts build`) or release")
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
    if "benchmark" in phases and spec.runtimes.artifacts != "bundle":
        phases.remove("benchmark")
        skipped["benchmark"] = ("kube-bench comes from the offline bundle (runtimes.artifacts: bundle); "
                                "the release manifest does not pin it")
    return phases, skipped


def plan_for(loaded: LoadedSpec, state: Path, hosts: list[str] | None = None) -> Plan:
    """Preflight (pinned host keys, facts), then the plan rendered with those facts."""
    asked = None if hosts is None else hosts + unknown_hosts(loaded, state, hosts)
    facts = remember_facts(loaded, state, preflight(loaded, asked))
    return render_plan(loaded, resolve_secrets(loaded, state), facts)


def converge(
    loaded: LoadedSpec,
    *,
    check: bool,
    phases: list[str] | None = None,
    hosts: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
    state: Path | None = None,
    full: bool = False,
    extra_vars: dict | None = None,
    tags: list[str] | None = None,
) -> tuple[RunResult, Path]:
    """Apply (check=False) or detect drift (check=True); returns the result and its JSON report.

    Hosts unchanged since their last successful apply are left out of the Ansible run, unless `full`
    (a run with `extra_vars`, which the rerun key does not see, is always full). A whole-cluster run with
    the kubernetes phase first removes the workers that left the spec (hardened_cluster.deliver.membership);
    drift names them. A run narrowed to some concerns (`tags`) is full and records no host as
    converged: it delivered only part of the plan.
    """
    state = state or state_dir(loaded.spec.cluster.name)
    previous = membership.applied(state)
    membership.refuse_unsupported(previous, loaded)
    selected, skipped = select_phases(loaded.spec, phases)
    mode = "drift" if check else "apply"
    # Leaving workers are removed by a run over the whole cluster that reaches Kubernetes, and only then
    # is the new membership recorded.
    leaving = membership.departed(previous, loaded) if hosts is None and "kubernetes" in selected else []
    if selected:
        started = time.monotonic()
        if leaving and not check:
            removed = membership.remove_departed(
                loaded, previous, state,
                lambda spec, names: run(plan_for(spec, state, names), state, phases=["reset"], hosts=names),
                progress or (lambda _line: None))
            # Should the node come back, nothing of its last life counts.
            Stamps(state).forget(removed)
            for name in removed:
                kube_bench.forget(state, name)
        targets = hosts or [n.name for n in loaded.spec.nodes]
        full = full or bool(extra_vars) or bool(tags)
        stamps = Stamps(state)
        requests = {} if full else stamps.requests(targets)
        env = make_environment()
        # The hosts answer while the secrets load and the templates compile: both are fixed costs.
        with ThreadPoolExecutor(max_workers=1) as background:
            asking = background.submit(
                preflight_with, loaded, targets + unknown_hosts(loaded, state, targets),
                {h: fingerprint_command(r) for h, r in requests.items()}
            )
            secrets = resolve_secrets(loaded, state)
            load_templates(env)
            probed, answers = asking.result()
        facts = remember_facts(loaded, state, probed)
        plan = render_plan(loaded, secrets, facts, env)
        fetch_for(plan, selected)
        found = {h: parse_fingerprint(answers.get(h)) for h in targets}
        unchanged = set() if full else stamps.unchanged(plan, selected, found)
        benched = [h for h in targets if "benchmark" in selected and {"control-plane", "worker"} & set(plan.hosts[h].node.roles)]
        findings = check_plan(plan) if benched else []
        # An unchanged host keeps the kube-bench report of its last run; without one, or with one that
        # fails the gate (a component may have been restarting), it runs again.
        unchanged -= {h for h in benched if (saved := kube_bench.saved(state, h)) is None
                      or kube_bench.judge(loaded.spec, h, saved, findings).gate_failures}
        todo = [h for h in targets if h not in unchanged]
        reports: dict[str, dict] = {}
        if todo:
            for host in set(todo) & set(benched):
                kube_bench.forget(state, host)
            result = run(plan, state, phases=selected, check=check, hosts=todo, progress=progress, reports=reports,
                         extra_vars=extra_vars, tags=tags)
        else:
            result = RunResult(mode, selected, {}, "successful", 0, 0.0, {})
        for host, report in reports.items():
            kube_bench.save(state, host, report)
        if benched:
            result.kube_bench = {h: kube_bench.judge(loaded.spec, h, report, findings) if report is not None
                                 else kube_bench.missing() for h in benched
                                 if (report := kube_bench.saved(state, h)) is not None or not check}
        for name in unchanged:
            result.hosts[name] = HostResult(unchanged=True)
            if progress:
                progress(f"  {name}: unchanged since the last successful apply; Ansible not run there")
        if not check and todo and not tags:
            good = [h for h in todo if result.rc == 0 and not (result.hosts[h].failed or result.hosts[h].unreachable)]
            stamps.forget([h for h in todo if h not in good])
            if good:
                stamps.record(plan, selected, fingerprints(loaded, plan, good, selected))
        result.hosts = {h: result.hosts[h] for h in targets if h in result.hosts}
        for node in leaving:
            result.hosts[node.name] = HostResult(changed=1, changes=[Change(
                "Remove the node that left the spec", "membership", node.name,
                detail="drained, deleted from the API and reset" if not check else "apply drains, deletes and resets it")])
        if not check and result.succeeded and hosts is None and (not membership.departed(previous, loaded) or leaving):
            membership.remember(loaded, state)
        result.seconds = round(time.monotonic() - started, 2)
    else:
        # Every asked-for phase was left out; an empty tag list would run the whole playbook.
        result = RunResult(mode, [], {}, "skipped", 0, 0.0, {})
    result.skipped_phases = skipped
    report = state / "reports" / f"{result.mode}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    write_private(report, result.to_json())
    return result, report
