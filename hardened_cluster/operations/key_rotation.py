"""Encryption key rotation on the live cluster: the documented safe sequence, resumable.

1. add      a new key, read-only, after the current ones in every control plane's configuration
2. write    the new key first: it encrypts, the old ones still decrypt
3. rewrite  every object of the encrypted resources written again through the API, then etcd read:
            every Secret (and ConfigMap, when encrypted) must be stored under the new key
4. remove   the old keys out of the configuration

Steps 1, 2 and 4 are the kubernetes phase converged on the control planes: the encryption configuration
is one of the API server's start inputs, so the control_plane role restarts the API servers one at a
time, each ready again before the next. The record (`secrets.KeyRotation`, in the secret store) names
the step running and is written before the step acts; every plan renders the keys it names, so after a
crash a rerun, `apply` and `drift` all see the same configuration, and a rerun continues at that step.
No API server writes with a key another cannot read (the new key is everywhere before it writes), and
the old keys go only once etcd holds nothing under them. Their files stay in the store until step 4 has
succeeded, then move to `secrets/retired/`: snapshots taken before the rotation still need them.
"""
from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from hardened_cluster.deliver import artifacts
from hardened_cluster.deliver.converge import converge
from hardened_cluster.deliver.preflight import ssh_run
from hardened_cluster.errors import SpecError, SpecIssue
from hardened_cluster.operations.report import JsonReport
from hardened_cluster.plan.kubeadm import ADMIN_KUBECONFIG
from hardened_cluster.plan.render import render_plan
from hardened_cluster.verify.live_cluster import stored_prefix
from hardened_cluster.secrets.store import (
    KeyRotation, create_encryption_key, encryption_key_names, load_rotation, resolve_secrets, retire_keys,
    rotation_key_name, save_rotation, state_dir, write_private,
)
from hardened_cluster.spec.model import LoadedSpec
from hardened_cluster.verify.probes import etcdctl_argv

STEPS = {
    "add": "the new key added, read-only, on every control plane",
    "write": "the new key made first (writing) on every control plane",
    "rewrite": "every encrypted object rewritten through the API",
    "remove": "the old keys removed on every control plane",
}
# A list-and-replace fails on objects changed in between; the next attempt lists them again.
REWRITE_ATTEMPTS = 3
# Encrypted resources whose stored values step 3 reads back from etcd (both at /registry/<resource>/).
CHECKED = ("secrets", "configmaps")
# Reads etcdctl's JSON on the etcd member and prints only the count and the keys not under the prefix:
# no value leaves the node.
_UNDER_PREFIX = ("import base64, json, sys; p = sys.argv[1].encode(); kvs = json.load(sys.stdin).get('kvs') or []; "
                 "print(json.dumps([len(kvs), [base64.b64decode(kv['key']).decode() for kv in kvs "
                 "if not base64.b64decode(kv['value']).startswith(p)]]))")
# Rewrites one resource on a control plane: nothing to do when there are no objects (replace refuses
# an empty list); the objects' data stays on the node.
_REWRITE = ('set -eo pipefail; r=$1; shift; names=$("$@" get "$r" --all-namespaces -o name); [ -n "$names" ] || exit 0; '
            '"$@" get "$r" --all-namespaces -o json | "$@" replace -f - -o name')


class RotationError(Exception):
    """A step failed; the record stays at it, so a rerun continues there."""


@dataclass
class StepReport:
    step: str
    seconds: float = 0.0
    keys: list[str] = field(default_factory=list)  # the control planes' key list, the writing one first
    # add, write, remove: per control plane, what the converge changed (the API server's manifest
    # among them when it restarted) and the converge's own report.
    hosts: dict[str, list[str]] = field(default_factory=dict)
    report: str | None = None
    # rewrite: objects written again per resource, and the etcd keys found under the new key.
    rewritten: dict[str, int] = field(default_factory=dict)
    stored_under_new_key: dict[str, int] = field(default_factory=dict)


@dataclass
class RotationReport(JsonReport):
    new_key: str
    old_keys: list[str]
    resumed_at: str | None  # the step a previous, interrupted run had reached
    steps: list[StepReport] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)  # key files moved to secrets/retired/
    succeeded: bool = False
    error: str | None = None
    seconds: float = 0.0


def refuse_kms(loaded: LoadedSpec) -> None:
    if loaded.spec.encryption.provider == "kms-v2":
        raise SpecError([SpecIssue("encryption.provider", (
            "kms-v2: the KMS plugin keeps and rotates the keys itself; there is no key here to rotate"))], str(loaded.path or ""))


def begin(loaded: LoadedSpec, secrets_dir: Path, trigger: str) -> tuple[KeyRotation, bool]:
    """The rotation to run: the interrupted one, or a new one with its key made (first, so the record
    never names a key that does not exist). True when resumed."""
    current = load_rotation(secrets_dir)
    if current is not None and current.step != "done":
        return current, True
    old = tuple(encryption_key_names(loaded, secrets_dir))
    base = current.base if current else tuple(k.name for k in loaded.spec.encryption.keys)
    used = {p.name.removeprefix("encryption-") for p in secrets_dir.rglob("encryption-*")}
    new = rotation_key_name(trigger, used | set(old) | set(base))
    create_encryption_key(secrets_dir, new)
    rotation = KeyRotation("add", new, old, base)
    save_rotation(secrets_dir, rotation)
    return rotation, False


def rewrite_targets(resources: list[str], served: list[str]) -> list[str]:
    """The resources to rewrite: the configuration's, wildcards ('*.', '*.<group>', '*.*') expanded
    over the listable, updatable resources the API serves (`kubectl api-resources -o name`)."""
    out: list[str] = []
    for resource in resources:
        if resource == "*.*":
            matched = served
        elif resource == "*.":
            matched = [r for r in served if "." not in r]
        elif resource.startswith("*."):
            matched = [r for r in served if r.endswith(resource[1:])]
        else:
            matched = [resource]
        out += [r for r in matched if r not in out]
    return out


def rotate_encryption_key(
    loaded: LoadedSpec,
    *,
    state: Path | None = None,
    progress: Callable[[str], None] | None = None,
    tasks: Callable[[str], None] | None = None,
) -> tuple[RotationReport, Path]:
    """Run (or continue) a rotation; returns its report and where the report was written.

    `progress` gets a line per step and host, `tasks` the converges' per-task lines.
    """
    refuse_kms(loaded)
    state = state or state_dir(loaded.spec.cluster.name)
    say = progress or (lambda _line: None)
    secrets_dir = state / "secrets"
    started = time.monotonic()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    rotation, resumed = begin(loaded, secrets_dir, stamp)
    report = RotationReport(rotation.new, list(rotation.old), rotation.step if resumed else None)
    say(f"rotation of the encryption key: {'resumed at step ' + rotation.step if resumed else 'started'}; "
        f"new key {rotation.new}, old {', '.join(rotation.old)}")
    names = list(STEPS)
    try:
        for step in names[names.index(rotation.step):]:
            rotation = replace(rotation, step=step)
            save_rotation(secrets_dir, rotation)
            number = f"step {names.index(step) + 1}/{len(names)} {step}"
            say(f"{number}: {STEPS[step]} (keys: {', '.join(rotation.key_names())})")
            begun = time.monotonic()
            entry = (_rewrite(loaded, state, rotation, say) if step == "rewrite"
                     else _converge(loaded, state, step, say, tasks))
            entry.seconds = round(time.monotonic() - begun, 2)
            entry.keys = rotation.key_names()
            report.steps.append(entry)
            say(f"{number}: done in {entry.seconds}s")
        save_rotation(secrets_dir, replace(rotation, step="done"))
        report.retired = retire_keys(secrets_dir, list(rotation.old))
        report.succeeded = True
    except RotationError as exc:
        report.error = str(exc)
    report.seconds = round(time.monotonic() - started, 2)
    path = state / "reports" / f"rotate-encryption-key-{stamp}.json"
    write_private(path, report.to_json())
    return report, path


def _converge(loaded: LoadedSpec, state: Path, step: str, say: Callable[[str], None],
              tasks: Callable[[str], None] | None) -> StepReport:
    control_planes = [n.name for n in loaded.spec.nodes_with("control-plane")]
    result, path = converge(loaded, check=False, phases=["kubernetes"], hosts=control_planes, state=state,
                            progress=tasks)
    entry = StepReport(step, report=str(path))
    for name in control_planes:
        host = result.hosts.get(name)
        if host is None:
            continue
        entry.hosts[name] = [c.item or c.task for c in host.changes]
        state_word = ("unreachable" if host.unreachable else "FAILED" if host.failed
                      else "unchanged" if host.unchanged or not host.changed else f"changed={host.changed}")
        say(f"  {name}: {state_word}" + "".join(f"\n    {c.describe()}" for c in host.changes)
            + "".join(f"\n    error: {e}" for e in host.errors))
    if not result.succeeded:
        raise RotationError(f"step {step}: the kubernetes phase failed on the control planes; report {path}")
    return entry


def _rewrite(loaded: LoadedSpec, state: Path, rotation: KeyRotation, say: Callable[[str], None]) -> StepReport:
    spec = loaded.spec
    plan = render_plan(loaded, resolve_secrets(loaded, state))
    node = spec.nodes_with("control-plane")[0]
    kubectl = [artifacts.host_vars(spec, plan.hosts[node.name])["kubernetes_node_bin_dir"] + "/kubectl",
               "--kubeconfig", ADMIN_KUBECONFIG]
    served: list[str] = []
    if any(r.startswith("*.") for r in spec.encryption.resources):
        rc, out, err = ssh_run(loaded, node, "sudo -n " + shlex.join(
            [*kubectl, "api-resources", "--verbs=list,update", "-o", "name"]), timeout=120)
        if rc != 0:
            raise RotationError(f"step rewrite: {node.name}: kubectl api-resources exited {rc}: {err.strip()[-300:]}")
        served = out.split()
    entry = StepReport("rewrite")
    command = "sudo -n bash -c " + shlex.quote(_REWRITE) + " rewrite "
    for resource in rewrite_targets(spec.encryption.resources, served):
        for attempt in range(1, REWRITE_ATTEMPTS + 1):
            rc, out, err = ssh_run(loaded, node, command + shlex.join([resource, *kubectl]), timeout=900)
            if rc == 0:
                break
            say(f"  {node.name}: {resource}: attempt {attempt} failed: {err.strip()[-200:]}")
        else:
            raise RotationError(f"step rewrite: {node.name}: {resource} not rewritten after {REWRITE_ATTEMPTS} "
                                f"attempts: {err.strip()[-300:]}")
        entry.rewritten[resource] = len(out.split())
        say(f"  {node.name}: {resource}: {entry.rewritten[resource]} rewritten")
    prefix = stored_prefix(spec.encryption.provider, rotation.new)
    member = spec.nodes_with("etcd")[0]
    for resource in [r for r in CHECKED if r in entry.rewritten]:
        where = f"/registry/{resource}/"
        get = shlex.join([*etcdctl_argv(spec), "--dial-timeout=20s", "--command-timeout=120s", "get", "--prefix",
                          where, "-w", "json"])
        rc, out, err = ssh_run(loaded, member, "sudo -n sh -c " + shlex.quote(
            f"{get} | {shlex.join(['python3', '-c', _UNDER_PREFIX, prefix])}"), timeout=300)
        if rc != 0:
            raise RotationError(f"step rewrite: {member.name}: reading {where} from etcd exited {rc}: {err.strip()[-300:]}")
        total, other = json.loads(out)
        if other:
            raise RotationError(f"step rewrite: {len(other)} of {total} values under {where} are not under the new "
                                f"key {rotation.new} (e.g. {', '.join(other[:5])}); the old keys stay")
        entry.stored_under_new_key[resource] = total
        say(f"  {member.name}: etcd: all {total} values under {where} start with {prefix}")
    return entry
