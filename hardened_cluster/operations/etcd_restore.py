"""etcd disaster recovery with Kubernetes on top: `hardened-cluster restore etcd`.

playbooks/etcd-restore.yml holds the steps (the etcd role's restore task files, the control_plane role's
stop and start); this runs them one tagged play at a time, in order, and reports each per host:

1. prepare  every etcd member gets the snapshot from the first member: checksum, age authentication,
            decryption, `etcdutl snapshot status`. Nothing on the cluster changes.
2. stop     every control plane's static pods stop (their manifests held aside): nothing writes to etcd.
3. etcd     every member stopped, its data moved aside, the snapshot restored as a new cluster, all
            members started together and healthy.
4. start    the static pods back, one control plane at a time, each API server's /readyz waited for.
5. nodes    every node Ready.

The snapshot is checked before any step: an unknown one is refused (exit 2) after reading the snapshot
directory of the first member, before anything changes. A failed step stops the restore: after
`prepare` nothing was touched; after `stop` the static pods are brought back and the copies removed
(etcd untouched); after `etcd` the API servers stay stopped (their manifests in the held directory)
until etcd is fixed, and a rerun starts over from `prepare`.
"""
from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hardened_cluster import resources
from hardened_cluster.deliver.ansible import RunResult, run
from hardened_cluster.deliver.converge import plan_for
from hardened_cluster.deliver.preflight import ssh_run
from hardened_cluster.deliver.rerun import Stamps
from hardened_cluster.errors import InputError
from hardened_cluster.operations.report import JsonReport
from hardened_cluster.secrets.store import state_dir, write_private
from hardened_cluster.spec.model import LoadedSpec

PLAYBOOK = resources.PLAYBOOKS / "etcd-restore.yml"
# Step -> (the playbook's tag, the role group it runs on, what it does).
STEPS: dict[str, tuple[str, str, str]] = {
    "prepare": ("restore_prepare", "etcd",
                "the snapshot copied to every etcd member, checked, decrypted and authenticated with age"),
    "stop": ("restore_stop", "control-plane",
             "the static pods (kube-apiserver first among them) stopped on every control plane"),
    "etcd": ("restore_etcd", "etcd",
             "etcd stopped, the data moved aside, the snapshot restored on every member, the cluster healthy"),
    "start": ("restore_start", "control-plane",
              "the static pods back, one control plane at a time, each API server's /readyz waited for"),
    "nodes": ("restore_nodes", "control-plane", "every node Ready"),
}
CLEANUP_TAG = "restore_cleanup"
# The snapshot script's names (templates/usr/local/sbin/etcd-snapshot.j2): a UTC stamp, sorting by time.
SNAPSHOT_NAME = re.compile(r"^etcd-\d{8}T\d{6}Z\.db(\.age)?$")


@dataclass
class StepReport:
    step: str
    seconds: float = 0.0
    # Per host, what the step changed (task and item), and its errors.
    changed: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class RestoreReport(JsonReport):
    snapshot: str
    source: str  # the member the snapshot came from
    steps: list[StepReport] = field(default_factory=list)
    succeeded: bool = False
    error: str | None = None
    seconds: float = 0.0


def check_snapshot_name(name: str | None) -> None:
    """A snapshot is named as the snapshot script names it, without a directory (checked before any host)."""
    if name is not None and not SNAPSHOT_NAME.match(name):
        raise InputError("--snapshot", f"{name!r} is not a snapshot file name (etcd-<YYYYMMDDTHHMMSSZ>.db.age, "
                                       "or .db unencrypted, as in the snapshot directory; no path)")


def list_snapshots(loaded: LoadedSpec) -> list[str]:
    """The snapshots in the first etcd member's snapshot directory, oldest first (read-only)."""
    spec = loaded.spec
    member = spec.nodes_with("etcd")[0]
    directory = str(spec.etcd.snapshot.directory)
    rc, out, err = ssh_run(loaded, member, "sudo -n find " + shlex.join(
        [directory, "-maxdepth", "1", "-type", "f", "-name", "etcd-*.db*", "-printf", r"%f\n"]), timeout=60)
    if rc != 0:
        raise InputError("etcd.snapshot.directory", f"{directory} on {member.name} cannot be read: {err.strip()[-300:]}")
    return sorted(n for n in out.split() if SNAPSHOT_NAME.match(n))


def choose_snapshot(loaded: LoadedSpec, available: list[str], wanted: str | None) -> str:
    """The wanted snapshot if it is there; else the newest of the kind the spec writes (encrypted or not)."""
    spec = loaded.spec
    where = f"{spec.etcd.snapshot.directory} on {spec.nodes_with('etcd')[0].name}"
    there = ", ".join(available[-5:]) or "none"
    if wanted is not None:
        if wanted not in available:
            raise InputError("--snapshot", f"{wanted} is not in {where} (newest there: {there})")
        return wanted
    encrypted = spec.etcd.snapshot.encryption_key is not None
    kind = [n for n in available if n.endswith(".age") == encrypted]
    if not kind:
        raise InputError("--snapshot", f"no {'encrypted (.db.age)' if encrypted else 'unencrypted (.db)'} snapshot in "
                                       f"{where} (there: {there}); take one with `systemctl start etcd-snapshot.service`")
    return kind[-1]


def _step(plan, state: Path, name: str, snapshot: str, say: Callable[[str], None],
          tasks: Callable[[str], None] | None, tag: str | None = None) -> tuple[StepReport, RunResult]:
    step_tag, group, _ = STEPS.get(name, (tag, "etcd", ""))
    hosts = [n.name for n in plan.spec.nodes_with(group)]
    begun = time.monotonic()
    result = run(plan, state, phases=[tag or step_tag], hosts=hosts, progress=tasks, playbook=PLAYBOOK,
                 extra_vars={"etcd_restore_snapshot": snapshot})
    entry = StepReport(name, round(time.monotonic() - begun, 2))
    for host in hosts:
        outcome = result.hosts.get(host)
        if outcome is None:
            continue
        entry.changed[host] = [c.task + (f": {c.item}" if c.item else "") for c in outcome.changes]
        if outcome.errors or outcome.failed or outcome.unreachable:
            entry.errors[host] = outcome.errors or ["unreachable" if outcome.unreachable else "failed"]
        word = ("UNREACHABLE" if outcome.unreachable else "FAILED" if outcome.failed
                else f"changed={outcome.changed}" if outcome.changed else "unchanged")
        say(f"  {host}: {word}" + "".join(f"\n    {c}" for c in entry.changed[host])
            + "".join(f"\n    error: {e}" for e in entry.errors.get(host, [])))
    return entry, result


def restore_etcd(
    loaded: LoadedSpec,
    *,
    snapshot: str | None = None,
    state: Path | None = None,
    progress: Callable[[str], None] | None = None,
    tasks: Callable[[str], None] | None = None,
) -> tuple[RestoreReport, Path]:
    """Restore etcd from `snapshot` (default: the newest) under a stopped control plane; returns the report
    and where it was written. `progress` gets a line per step and host, `tasks` Ansible's per-task lines.
    Raises InputError (nothing changed) for a snapshot that is not there."""
    check_snapshot_name(snapshot)
    state = state or state_dir(loaded.spec.cluster.name)
    say = progress or (lambda _line: None)
    started = time.monotonic()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    plan = plan_for(loaded, state)  # pinned host keys of every host, before anything else
    chosen = choose_snapshot(loaded, list_snapshots(loaded), snapshot)
    report = RestoreReport(chosen, loaded.spec.nodes_with("etcd")[0].name)
    say(f"restore of etcd from {chosen} ({loaded.spec.etcd.snapshot.directory} on {report.source})")
    names = list(STEPS)
    touched: set[str] = set()
    for number, name in enumerate(names, 1):
        say(f"step {number}/{len(names)} {name}: {STEPS[name][2]}")
        entry, result = _step(plan, state, name, chosen, say, tasks)
        report.steps.append(entry)
        touched |= {h for h, changes in entry.changed.items() if changes}
        if result.succeeded:
            say(f"step {number}/{len(names)} {name}: done in {entry.seconds}s")
            continue
        report.error = f"step {name} failed: " + "; ".join(f"{h}: {e[0]}" for h, e in entry.errors.items())
        say(f"step {number}/{len(names)} {name}: FAILED in {entry.seconds}s")
        if name == "stop":
            # etcd is untouched: the static pods stopped so far come back, the snapshot copies go.
            say("bringing the static pods back (etcd was not touched) and removing the snapshot copies")
            for undo, tag in (("start", None), ("cleanup", CLEANUP_TAG)):
                extra, _ = _step(plan, state, undo, chosen, say, tasks, tag=tag)
                report.steps.append(extra)
            report.error += "; the static pods were started again and etcd left as it was"
        elif name == "etcd":
            report.error += ("; the API servers stay stopped (their manifests are in the control_plane role's "
                             "held directory) until etcd is healthy: fix it and run the restore again")
        break
    else:
        report.succeeded = True
    # The restore changed state a rerun's fingerprint shortcut would otherwise compare against.
    Stamps(state).forget(sorted(touched))
    report.seconds = round(time.monotonic() - started, 2)
    path = state / "reports" / f"restore-etcd-{stamp}.json"
    write_private(path, report.to_json())
    return report, path
