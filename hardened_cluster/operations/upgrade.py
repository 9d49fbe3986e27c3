"""A live cluster upgraded one Kubernetes minor: `hardened-cluster upgrade --to X.Y.Z`, or `apply` of a spec
whose cluster.kubernetes_version is one minor above what the cluster runs.

1. preflight  the step is one minor up from what the API server runs (kubeadm's supported skew), else the
              command stops with exit 2 naming cluster.kubernetes_version; nothing on a host changes
2. images     the new release's images imported on every Kubernetes node (kubeadm's upgrade moves
              kube-proxy and CoreDNS everywhere at once, and no registry serves them)
3. control planes, one at a time, the first first: drained, the kubernetes phase converged with the new
              release's plan and control_plane_upgrade_to (the 1.36 kubeadm, kubelet and kubectl installed,
              `kubeadm upgrade apply` on the first, `kubeadm upgrade node` on the others, the kubelet
              restarted, the plan's manifests rendered by the new kubeadm written back), uncordoned
4. workers, one at a time: drained, the same with worker_upgrade_to (`kubeadm upgrade node`), uncordoned
5. converge   every host and phase with the new plan (the cluster objects, the benchmark)

A node whose kubelet already reports the release is not drained again, so a rerun continues where a
failed one stopped. The JSON report (state reports/upgrade-*.json) names every step, host, the tasks that
changed and the versions before and after.
"""
from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hardened_cluster.deliver import artifacts, bundle
from hardened_cluster.deliver.converge import converge
from hardened_cluster.deliver.preflight import ssh_run
from hardened_cluster.errors import DeliveryError, SpecError, SpecIssue
from hardened_cluster.operations.report import JsonReport
from hardened_cluster.plan.kubeadm import ADMIN_KUBECONFIG
from hardened_cluster.secrets.store import write_private
from hardened_cluster.spec.load import parse_spec
from hardened_cluster.spec.model import LoadedSpec, Node

VERSION_KEY = "cluster.kubernetes_version"
DRAIN_TIMEOUT = 300  # seconds kubectl drain may take to evict a node's pods
IMAGES_TAG = "kubernetes_node_images"


class UpgradeError(Exception):
    """A step failed on a host; a rerun continues with the nodes not upgraded yet."""


_RELEASE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.lstrip("v").split(".")[:2]
    return int(major), int(minor)


def step_issue(running: str, target: str, key: str = VERSION_KEY) -> SpecIssue | None:
    """Why going from `running` to `target` is not an upgrade this command makes, or None when it is."""
    if not _RELEASE.fullmatch(target):
        return SpecIssue(key, f"{target} from {running.lstrip('v')}: not a Kubernetes release (x.y.z)")
    (major, minor), (to_major, to_minor) = _minor(running), _minor(target)
    if (to_major, to_minor) == (major, minor + 1):
        return None
    if (to_major, to_minor) == (major, minor):
        why = "the same minor: a patch release needs no kubeadm upgrade here, apply it as usual" if target != running.lstrip("v") \
            else "already that release"
    elif (to_major, to_minor) < (major, minor):
        why = "a downgrade; kubeadm cannot move a cluster to an older minor"
    else:
        why = (f"more than one minor up; kubeadm upgrades one minor at a time: upgrade to "
               f"{major}.{minor + 1}.x first")
    return SpecIssue(key, f"{target} from {running.lstrip('v')}: {why}")


def target_spec(loaded: LoadedSpec, to: str, bundle_dir: Path | None = None) -> LoadedSpec:
    """The spec with cluster.kubernetes_version `to` (and, for bundle artifacts, the bundle of that
    release: `bundle_dir`, else the default bundle directory of `to`)."""
    if loaded.path is None:
        raise SpecError([SpecIssue("", "upgrade needs a spec file")])
    data = yaml.safe_load(loaded.path.read_text())
    data["cluster"]["kubernetes_version"] = to
    if loaded.spec.runtimes.artifacts == "bundle":
        data["runtimes"]["bundle"] = str(bundle_dir or bundle.default_out(to.lstrip("v")))
    return parse_spec(data, loaded.path, source=f"{loaded.path} with {VERSION_KEY} {to}")


def _kubectl(loaded: LoadedSpec, args: list[str], timeout: float = 60.0) -> str:
    """kubectl with the admin kubeconfig on the first control plane; its stdout."""
    cp = loaded.spec.nodes_with("control-plane")[0]
    kubectl = f"{artifacts.kubernetes_bin_dir(loaded.spec)}/kubectl"
    command = "sudo -n " + shlex.join([kubectl, "--kubeconfig", ADMIN_KUBECONFIG, *args])
    rc, out, err = ssh_run(loaded, cp, command, timeout=timeout)
    if rc != 0:
        raise UpgradeError(f"{cp.name}: kubectl {' '.join(args[:2])} failed: {err.strip()[-600:]}")
    return out


def server_version(loaded: LoadedSpec) -> str | None:
    """The release the API server runs (v-prefixed), or None where no cluster runs yet (read-only)."""
    cp = loaded.spec.nodes_with("control-plane")[0]
    rc, out, _ = ssh_run(loaded, cp, f"sudo -n test -s {ADMIN_KUBECONFIG} && echo initialized")
    if "initialized" not in out:
        return None
    return json.loads(_kubectl(loaded, ["version", "--output", "json"]))["serverVersion"]["gitVersion"]


def running_versions(loaded: LoadedSpec) -> tuple[str, dict[str, str]] | None:
    """The API server's release and each node's kubelet release, or None where no cluster runs yet."""
    server = server_version(loaded)
    if server is None:
        return None
    nodes = json.loads(_kubectl(loaded, ["get", "nodes", "--output", "json"]))["items"]
    return server, {n["metadata"]["name"]: n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes}


def pending(loaded: LoadedSpec) -> str | None:
    """For `apply`: the release the cluster runs when the spec asks for another minor (an upgrade is due,
    or refused with exit 2), None when the spec's minor is the running one or no cluster runs yet."""
    server = server_version(loaded)
    if server is None:
        return None
    if _minor(server) == _minor(loaded.spec.cluster.kubernetes_version):
        return None
    issue = step_issue(server, loaded.spec.cluster.kubernetes_version)
    if issue:
        raise SpecError([issue], str(loaded.path or ""))
    return server


@dataclass
class Step:
    step: str
    host: str | None
    seconds: float = 0.0
    changed: list[str] = field(default_factory=list)  # "role: task: item" of what the converge changed
    before: str | None = None
    after: str | None = None
    report: str | None = None  # the converge's own report


@dataclass
class UpgradeReport(JsonReport):
    from_version: str
    to_version: str
    steps: list[Step] = field(default_factory=list)
    succeeded: bool = False
    error: str | None = None
    seconds: float = 0.0


def _changes(result, host: str) -> list[str]:
    h = result.hosts.get(host)
    return [c.describe() for c in h.changes] if h else []


def _converged(result, step: str) -> None:
    if not result.succeeded:
        bad = {name: h.errors or ["unreachable" if h.unreachable else "failed"]
               for name, h in result.hosts.items() if h.failed or h.unreachable}
        raise UpgradeError(f"{step}: " + "; ".join(f"{n}: {' / '.join(e)}" for n, e in bad.items()) if bad
                           else f"{step}: the Ansible run failed (status {result.status})")


def upgrade(target: LoadedSpec, state: Path, *, progress: Callable[[str], None],
            tasks: Callable[[str], None] | None = None, running: str | None = None) -> tuple[UpgradeReport, Path]:
    """Upgrade the live cluster to the target spec's release (see the module's docstring)."""
    started = time.monotonic()
    to = target.spec.cluster.kubernetes_version
    found = running_versions(target)
    if found is None:
        raise DeliveryError(f"no cluster runs yet ({ADMIN_KUBECONFIG} is missing on the first control plane): "
                            "apply the spec instead")
    server, kubelets = found
    if running and running != server:
        server = running
    issue = step_issue(server, to)
    if issue:
        raise SpecError([issue], str(target.path or ""))
    report = UpgradeReport(server.lstrip("v"), to)
    spec = target.spec
    control_planes = spec.nodes_with("control-plane")
    workers = [n for n in spec.nodes_with("worker") if "control-plane" not in n.roles]
    kube_nodes = [n.name for n in control_planes + workers]
    want = f"v{to}"
    try:
        progress(f"upgrade {server} -> {want}: images of {want} on {', '.join(kube_nodes)}")
        t = time.monotonic()
        result, path = converge(target, check=False, phases=["kubernetes"], hosts=kube_nodes, state=state,
                                progress=tasks, tags=[IMAGES_TAG])
        _converged(result, "images")
        report.steps.append(Step("images", None, round(time.monotonic() - t, 2),
                                 [f"{h}: {c}" for h in kube_nodes for c in _changes(result, h)], report=str(path)))
        for node, var in [(n, "control_plane_upgrade_to") for n in control_planes] + [(n, "worker_upgrade_to") for n in workers]:
            report.steps.append(_upgrade_node(target, state, node, var, kubelets.get(node.name), want, progress, tasks))
        progress(f"converge: every host with the {want} plan")
        t = time.monotonic()
        result, path = converge(target, check=False, state=state, progress=tasks)
        _converged(result, "converge")
        report.steps.append(Step("converge", None, round(time.monotonic() - t, 2),
                                 [f"{h}: {c}" for h in result.hosts for c in _changes(result, h)], report=str(path)))
        after = running_versions(target)
        report.succeeded = after is not None and after[0] == want and set(after[1].values()) == {want}
        if not report.succeeded:
            report.error = f"after the upgrade the cluster reports {after}"
    except (UpgradeError, DeliveryError) as exc:
        report.error = str(exc)
        progress(f"  error: {exc}")
    report.seconds = round(time.monotonic() - started, 2)
    out = state / "reports" / f"upgrade-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    write_private(out, report.to_json())
    return report, out


def _upgrade_node(target: LoadedSpec, state: Path, node: Node, var: str, before: str | None, want: str,
                  progress: Callable[[str], None], tasks: Callable[[str], None] | None) -> Step:
    step = "control-plane" if var.startswith("control_plane") else "worker"
    started = time.monotonic()
    if before == want:
        progress(f"  {node.name}: already {want}")
        return Step(step, node.name, 0.0, before=before, after=before)
    progress(f"  {node.name}: drain")
    _kubectl(target, ["drain", node.name, "--ignore-daemonsets", "--delete-emptydir-data",
                      f"--timeout={DRAIN_TIMEOUT}s"], timeout=DRAIN_TIMEOUT + 60)
    progress(f"  {node.name}: {step} upgrade to {want} (binaries, kubeadm upgrade {'apply' if var.startswith('control') and node == target.spec.nodes_with('control-plane')[0] else 'node'}, kubelet)")
    result, path = converge(target, check=False, phases=["kubernetes"], hosts=[node.name], state=state,
                            progress=tasks, extra_vars={var: target.spec.cluster.kubernetes_version})
    _converged(result, f"{node.name} upgrade")
    progress(f"  {node.name}: uncordon")
    _kubectl(target, ["uncordon", node.name])
    after = running_versions(target)
    now = after[1].get(node.name) if after else None
    progress(f"  {node.name}: {before} -> {now} in {time.monotonic() - started:.0f}s")
    return Step(step, node.name, round(time.monotonic() - started, 2), _changes(result, node.name), before, now,
                str(path))
