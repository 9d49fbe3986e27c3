"""Pulumi dynamic providers: the secrets bundle, and the host tiers that run the same core as the CLI.

Pulumi pickles each provider into the stack state (dill) and calls it in a separate process, so the
providers keep nothing between calls: everything an operation needs is in its inputs or outputs. Every
operation works in a fresh 0700 temporary state directory laid out as `resolve_secrets` reads it
(`secrets/...`, `pki/...`), so `converge` renders with exactly the secrets Pulumi holds.
"""
from __future__ import annotations

import base64
import binascii
import copy
import re
import shlex
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pulumi
import pulumi.dynamic as dyn
from pulumi.runtime.rpc import UNKNOWN

from hardened_cluster.deliver import membership
from hardened_cluster.deliver.ansible import RunResult, run
from hardened_cluster.deliver.converge import converge, plan_for, select_phases
from hardened_cluster.deliver.preflight import ssh_run
from hardened_cluster.secrets.age_key import identity_problem
from hardened_cluster.secrets.pki import fingerprint
from hardened_cluster.secrets.store import resolve_secrets, rotation_key_name, state_dir, write_private
from hardened_cluster.spec.load import parse_spec
from hardened_cluster.spec.model import KEY_LENGTHS, LoadedSpec

# What the bundle carries: generated secrets and the PKI, as `resolve_secrets` lays them out.
BUNDLE_DIRS = ("secrets", "pki")
# Units of roles/etcd (etcd_service_name, etcd_snapshot_timer); the timer goes first so no snapshot
# starts while etcd stops.
ETCD_UNITS = ("etcd-snapshot.timer", "etcd.service")


class TierError(Exception):
    """A tier operation failed on one or more hosts; the message lists them."""


def load(doc: dict, spec_path: str | None) -> LoadedSpec:
    """The validated spec; relative paths in it (known_hosts, secret files) are relative to spec_path."""
    return parse_spec(doc, Path(spec_path) if spec_path else None, source="spec")


@contextmanager
def private_state() -> Iterator[Path]:
    """A 0700 state directory that is removed with everything in it, keys included."""
    directory = Path(tempfile.mkdtemp(prefix="hc-pulumi-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def materialize(bundle: dict[str, str] | None, state: Path) -> None:
    for rel, content in (bundle or {}).items():
        parts = Path(rel).parts
        if not parts or parts[0] not in BUNDLE_DIRS or ".." in parts or Path(rel).is_absolute():
            raise TierError(f"secrets bundle: unexpected path {rel!r}")
        write_private(state / rel, content)


def collect(state: Path) -> dict[str, str]:
    out = {}
    for sub in BUNDLE_DIRS:
        for path in sorted((state / sub).rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                out[str(path.relative_to(state))] = path.read_text()
    return out


def effective_spec(doc: dict, encryption_keys: list[dict] | None, snapshot_ref: dict | None) -> dict:
    """The spec as the tiers render it: the key list Pulumi holds (rotated keys first), supplied secrets
    read from the bundle (`generated: true` means "from the state store")."""
    out = copy.deepcopy(doc)
    if encryption_keys:
        out.setdefault("encryption", {})["keys"] = encryption_keys
    if snapshot_ref:
        out.setdefault("etcd", {}).setdefault("snapshot", {})["encryption_key"] = snapshot_ref
    return out


def _known(value: Any) -> bool:
    return value is not None and value != UNKNOWN


class ClusterSecretsProvider(dyn.ResourceProvider):
    """Encryption keys, snapshot key, bootstrap token, certificate key and the PKI (CA keys included).

    Generated once by the core (`resolve_secrets`, `ensure_pki`) and then carried in the state: an
    update starts from the previous bundle, so nothing is regenerated unless a rotation is asked for.
    """

    def check(self, _olds: dict, news: dict) -> dyn.CheckResult:
        failures = []
        spec = news.get("spec") if isinstance(news.get("spec"), dict) else {}
        provider = (spec.get("encryption") or {}).get("provider", "secretbox")
        names = {k.get("name") for k in (spec.get("encryption") or {}).get("keys") or [] if isinstance(k, dict)}
        supplied = news.get("supplied") if isinstance(news.get("supplied"), dict) else {}
        for name, value in supplied.items():
            if not _known(value):
                continue
            problem = _supplied_problem(name, value, provider, names)
            if problem:
                failures.append(dyn.CheckFailure("supplied", f"{name}: {problem}"))
        return dyn.CheckResult(news, failures)

    def diff(self, _id: str, olds: dict, news: dict) -> dyn.DiffResult:
        old_id, new_id = _secrets_identity(olds), _secrets_identity(news)
        rotate = (news.get("rotate") or "") != (olds.get("rotate") or "")
        replaces = ["spec"] if old_id["cluster"] != new_id["cluster"] else []
        return dyn.DiffResult(changes=rotate or old_id != new_id, replaces=replaces, delete_before_replace=False)

    def create(self, props: dict) -> dyn.CreateResult:
        with private_state() as state:
            outs = self._resolve(props, state, rotated=[])
        return dyn.CreateResult(f"secrets-{uuid.uuid4().hex[:12]}", outs)

    def update(self, _id: str, olds: dict, news: dict) -> dyn.UpdateResult:
        rotated = list(olds.get("rotated") or [])
        trigger = news.get("rotate") or ""
        if trigger and trigger != (olds.get("rotate") or ""):
            spec = news["spec"]
            if (spec.get("encryption") or {}).get("provider") == "kms-v2":
                raise TierError("rotateEncryptionKey: with provider kms-v2 the KMS plugin rotates its keys")
            taken = set(rotated) | {k["name"] for k in news.get("encryption_keys") or []}
            rotated.insert(0, rotation_key_name(trigger, taken))
        with private_state() as state:
            materialize(olds.get("bundle"), state)
            return dyn.UpdateResult(self._resolve(news, state, rotated))

    def _resolve(self, props: dict, state: Path, rotated: list[str]) -> dict:
        for name, value in (props.get("supplied") or {}).items():
            write_private(state / "secrets" / name, value.strip() + "\n")
        desired = list(props.get("encryption_keys") or [])
        keys = [{"name": n, "secret": {"generated": True}} for n in rotated] + desired
        loaded = load(effective_spec(props["spec"], keys, props.get("snapshot_ref")), props.get("spec_path"))
        pki = resolve_secrets(loaded, state).pki
        return {
            **props,
            "bundle": collect(state),
            "encryption_keys": keys,
            "rotated": rotated,
            "ca_fingerprints": {
                "etcd": fingerprint(pki.etcd_ca.cert_pem),
                "kubernetes": fingerprint(pki.kubernetes_ca.cert_pem),
                "front-proxy": fingerprint(pki.front_proxy_ca.cert_pem),
            },
        }


def _supplied_problem(name: str, value: str, provider: str, key_names: set[str]) -> str | None:
    value = value.strip()
    if name.startswith("encryption-"):
        key = name.removeprefix("encryption-")
        if provider == "kms-v2":
            return "provider kms-v2 keeps its keys in the KMS plugin; supply none"
        if key not in key_names:
            return f"no key named '{key}' in the spec's encryption.keys"
        try:
            length = len(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            return "not base64"
        allowed = KEY_LENGTHS[provider]
        return None if length in allowed else f"decodes to {length} bytes; {provider} needs {' or '.join(map(str, allowed))}"
    if name == "bootstrap-token":
        return None if re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", value) else "not a kubeadm token ([a-z0-9]{6}.[a-z0-9]{16})"
    if name == "certificate-key":
        return None if re.fullmatch(r"[0-9a-f]{64}", value) else "not 32 bytes hex-encoded (64 characters 0-9a-f)"
    if name == "etcd-snapshot-key":
        return identity_problem(value)
    return "unknown secret"


def _secrets_identity(props: dict) -> dict:
    """What the bundle was made for; anything else in the spec does not touch it."""
    spec = props.get("spec") or {}
    members = [(n.get("name"), n.get("address")) for n in spec.get("nodes") or [] if "etcd" in (n.get("roles") or [])]
    # Outputs carry the rotated keys in front of the ones asked for.
    asked = list(props.get("encryption_keys") or [])[len(props.get("rotated") or []):]
    return {
        "cluster": (spec.get("cluster") or {}).get("name"),
        "members": members,
        "provider": (spec.get("encryption") or {}).get("provider"),
        "keys": asked,
        "snapshot": props.get("snapshot_ref"),
        "supplied": props.get("supplied") or {},
    }


class ClusterSecrets(dyn.Resource, module="hardened-cluster", name="ClusterSecrets"):
    bundle: pulumi.Output[dict]
    encryption_keys: pulumi.Output[list]
    snapshot_ref: pulumi.Output[dict]
    rotated: pulumi.Output[list]
    ca_fingerprints: pulumi.Output[dict]

    def __init__(self, name: str, props: dict, opts: pulumi.ResourceOptions | None = None) -> None:
        outputs = {"bundle": None, "rotated": None, "ca_fingerprints": None}
        super().__init__(ClusterSecretsProvider(), name, {**outputs, **props}, opts)


class TierProvider(dyn.ResourceProvider):
    """One tier: its phase's roles on its hosts, through `core.converge` like `hardened-cluster apply`.

    Inputs: tier, phase, hosts, spec (the document), spec_path, secrets (the bundle), hashes (per
    host, from the plan) and report_dir. `diff` looks only at hashes, hosts and phase.
    """

    def diff(self, _id: str, olds: dict, news: dict) -> dyn.DiffResult:
        changed = (
            olds.get("hashes") != news.get("hashes")
            or sorted(olds.get("hosts") or []) != sorted(news.get("hosts") or [])
            or olds.get("phase") != news.get("phase")
        )
        # Host list changes are updates: a replacement would tear the whole tier down after creating it.
        return dyn.DiffResult(changes=changed, replaces=[], delete_before_replace=False)

    def create(self, props: dict) -> dyn.CreateResult:
        return dyn.CreateResult(f"{props['tier']}-{uuid.uuid4().hex[:12]}", self._apply(props))

    def update(self, _id: str, olds: dict, news: dict) -> dyn.UpdateResult:
        gone = sorted(set(olds.get("hosts") or []) - set(news.get("hosts") or []))
        if gone:
            self.teardown(olds, gone, destroy=False)
        return dyn.UpdateResult(self._apply(news))

    def read(self, id_: str, props: dict) -> dyn.ReadResult:
        hashes = dict(props.get("hashes") or {})
        if props.get("hosts"):
            result, report, _ = self._converge(props, check=True)
            for name, host in result.hosts.items():
                if host.changed:
                    what = "; ".join(c.describe() for c in host.changes) or f"{host.changed} settings differ"
                    hashes[name] = f"drifted: {what}"[:1000]
            props = {**props, "drift_report": report}
        return dyn.ReadResult(id_, {**props, "hashes": hashes})

    def delete(self, _id: str, props: dict) -> None:
        if props.get("hosts"):
            self.teardown(props, list(props["hosts"]), destroy=True)

    def teardown(self, props: dict, hosts: list[str], destroy: bool) -> None:
        pulumi.log.info(f"{props['tier']}: left in place on {', '.join(hosts)}; nothing on the hosts is undone")

    def collect_outputs(self, state: Path) -> dict:
        return {}

    def _apply(self, props: dict) -> dict:
        if not props.get("hosts"):
            return {**props, "changed": {}, "report": None}
        result, report, extra = self._converge(props, check=False)
        return {**props, **extra, "changed": {h: r.changed for h, r in result.hosts.items()}, "report": report}

    def _converge(self, props: dict, *, check: bool) -> tuple[RunResult, str, dict]:
        loaded = load(props["spec"], props.get("spec_path"))
        phase, hosts = props["phase"], list(props["hosts"])
        _, skipped = select_phases(loaded.spec, [phase])
        if phase in skipped:
            raise TierError(f"{props['tier']}: the {phase} phase cannot run: {skipped[phase]}")
        with private_state() as state:
            materialize(props.get("secrets"), state)
            result, report = converge(loaded, check=check, phases=[phase], hosts=hosts, state=state)
            kept = _keep_report(report, props, loaded)
            if not result.succeeded:
                raise TierError(_failure(props["tier"], result, kept))
            extra = {} if check else self.collect_outputs(state)
        return result, kept, extra


def _keep_report(report: Path, props: dict, loaded: LoadedSpec) -> str:
    directory = Path(props.get("report_dir") or state_dir(loaded.spec.cluster.name) / "pulumi")
    kept = directory / f"{props['tier']}-{report.name}"
    write_private(kept, report.read_text())
    return str(kept)


def _failure(tier: str, result: RunResult, report: str) -> str:
    lines = [f"{tier}: {result.mode} failed (ansible status {result.status}, rc {result.rc}); report: {report}"]
    for name, host in result.hosts.items():
        for error in host.errors:
            lines.append(f"  {name}: {error}")
        if (host.failed or host.unreachable) and not host.errors:
            lines.append(f"  {name}: {'unreachable' if host.unreachable else 'failed'}")
    return "\n".join(lines)


class HostsTierProvider(TierProvider):
    """OS hardening, SSH and firewall. Removing it undoes nothing: the hosts stay hardened."""


class RuntimeTierProvider(TierProvider):
    """containerd with its runtime handlers; left configured when the tier goes."""


class EtcdTierProvider(TierProvider):
    """The external etcd members. Teardown stops etcd; only a destroy wipes its data directory."""

    def teardown(self, props: dict, hosts: list[str], destroy: bool) -> None:
        loaded = load(props["spec"], props.get("spec_path"))
        data_dir = loaded.spec.etcd.data_dir
        if destroy and (not data_dir.is_absolute() or len(data_dir.parts) < 3):
            raise TierError(f"etcd.data_dir {data_dir} is too close to / to wipe; remove it by hand")
        lines = ["set -e"]
        lines += [f"if systemctl cat {u} >/dev/null 2>&1; then systemctl disable --now {u}; fi" for u in ETCD_UNITS]
        if destroy:
            lines.append(f"rm -rf --one-file-system -- {shlex.quote(str(data_dir))}")
        command = f"sudo -n sh -c {shlex.quote('; '.join(lines))}"
        errors = []
        for name in hosts:
            status, _, err = ssh_run(loaded, loaded.spec.node(name), command, timeout=120)
            if status != 0:
                errors.append(f"  {name}: exit {status}: {err.strip()[:300]}")
        if errors:
            raise TierError("\n".join(["etcd: teardown failed"] + errors))


class KubernetesTierProvider(TierProvider):
    """kubelet and the control plane or the workers. Teardown runs the roles' `reset` tag; a worker leaving
    a cluster that stays is drained and deleted from the API first."""

    def teardown(self, props: dict, hosts: list[str], destroy: bool) -> None:
        loaded = load(props["spec"], props.get("spec_path"))
        if not destroy:
            for name in hosts:
                if loaded.spec.node(name).roles == ["worker"]:
                    pulumi.log.info(f"{props['tier']}: {name}: {membership.drain_and_delete(loaded, name)}")
        with private_state() as state:
            materialize(props.get("secrets"), state)
            result = run(plan_for(loaded, state, hosts), state, phases=["reset"], hosts=hosts)
            if not result.succeeded:
                raise TierError(_failure(f"{props['tier']} reset", result, "(not kept)"))


class ControlPlaneTierProvider(KubernetesTierProvider):
    """Also hands out the admin kubeconfig the control_plane role fetches to `<state>/admin.conf`."""

    def collect_outputs(self, state: Path) -> dict:
        path = state / "admin.conf"
        if not path.is_file():
            raise TierError(f"control-plane: the control_plane role fetched no admin kubeconfig ({path})")
        return {"admin_kubeconfig": path.read_text()}


class ClusterTier(dyn.Resource, module="hardened-cluster", name="ClusterTier"):
    hashes: pulumi.Output[dict]
    changed: pulumi.Output[dict]
    report: pulumi.Output[str]
    admin_kubeconfig: pulumi.Output[str]

    def __init__(self, provider: TierProvider, name: str, props: dict, opts: pulumi.ResourceOptions | None = None) -> None:
        outputs = {"changed": None, "report": None, "admin_kubeconfig": None}
        super().__init__(provider, name, {**outputs, **props}, opts)
