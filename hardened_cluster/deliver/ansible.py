"""Deliver the plan with Ansible (ansible-runner) over SSH with pinned host keys.

`apply` and `drift` are the same run; drift is `--check --diff` and reads the changed tasks as
differences. The CLI and the Pulumi tiers both call `run`.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel

from hardened_cluster import resources
from hardened_cluster.plan.render import Plan
from hardened_cluster.plan.role_vars import CONNECTION, host_vars, role_vars
from hardened_cluster.secrets.private import private_dir, private_tree
from hardened_cluster.secrets.store import write_private
from hardened_cluster.spec.model import LoadedSpec, Node, SecretRef
from hardened_cluster.verify.kube_bench import HostBench

PLAYBOOK = resources.PLAYBOOKS / "site.yml"

# Phases in order; each names the roles it runs. Kubernetes needs kubeadm/kubelet binaries.
PHASES: dict[str, list[str]] = {
    "hosts": ["validate", "os_hardening", "access", "ssh_hardening", "firewall"],
    "etcd": ["etcd"],
    "runtime": ["container_runtime"],
    "kubernetes": ["load_balancer", "kubernetes_node", "control_plane", "worker"],
    # Its own phase: the Pulumi program manages these objects as typed resources instead.
    "objects": ["cluster_objects"],
    # kube-bench on every Kubernetes node, read-only; the gate is judged on the controller.
    "benchmark": ["kube_bench"],
}
NEEDS_KUBERNETES_BINARIES = {"kubernetes", "objects", "benchmark"}

# What a drifted file or setting means in CIS Kubernetes Benchmark terms ("Debian 12 ..." for the
# CIS Debian Linux 12 Benchmark). A directory's ID also holds for everything below it.
CIS_BY_PATH = {
    "/etc/etcd/etcd.conf.yml": "2.1-2.6",
    "/etc/etcd/pki/server.crt": "2.1",
    "/etc/etcd/pki/server.key": "2.1",
    "/etc/etcd/pki/peer.crt": "2.4",
    "/etc/etcd/pki/peer.key": "2.4",
    "/etc/etcd/pki/ca.crt": "2.7",
    "/var/lib/etcd": "1.1.11, 1.1.12",
    "/etc/ssh/sshd_config.d/10-hardened-cluster.conf": "Debian 12 5.1.1",
    "/etc/sudoers": "Debian 12 5.2.2",
    "/var/lib/kubelet/config.yaml": "4.1.9, 4.1.10",
    "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf": "4.1.1, 4.1.2",
    "/etc/kubernetes/encryption/encryption-config.yaml": "1.2.27",
    "/etc/kubernetes/audit/audit-policy.yaml": "3.2.1",
    "/etc/kubernetes/pki": "1.1.19, 1.1.20, 1.1.21",
    # A static pod manifest: its mode and owner, and the flags the benchmark checks in it.
    "/etc/kubernetes/manifests/kube-apiserver.yaml": "1.1.1, 1.1.2, 1.2.1-1.2.30",
    "/etc/kubernetes/manifests/kube-controller-manager.yaml": "1.1.3, 1.1.4, 1.3.1-1.3.7",
    "/etc/kubernetes/manifests/kube-scheduler.yaml": "1.1.5, 1.1.6, 1.4.1-1.4.2",
    # Cluster objects, by the manifest that plans them.
    "manifests/networkpolicies.yaml": "5.3.2",
}
TREES = ["/var/lib/etcd", "/etc/kubernetes/pki"]
# Settings: sshd keywords (lower case, as `sshd -T` prints them) and sysctl keys.
CIS_BY_SETTING = {
    "permitrootlogin": "Debian 12 5.1.20", "permitemptypasswords": "Debian 12 5.1.19",
    "permituserenvironment": "Debian 12 5.1.21", "hostbasedauthentication": "Debian 12 5.1.10",
    "ignorerhosts": "Debian 12 5.1.11", "maxauthtries": "Debian 12 5.1.16", "maxsessions": "Debian 12 5.1.17",
    "logingracetime": "Debian 12 5.1.13", "loglevel": "Debian 12 5.1.14", "ciphers": "Debian 12 5.1.6",
    "macs": "Debian 12 5.1.15", "kexalgorithms": "Debian 12 5.1.12", "clientaliveinterval": "Debian 12 5.1.7",
    "clientalivecountmax": "Debian 12 5.1.7", "x11forwarding": "Debian 12 5.1.8",
    "allowtcpforwarding": "Debian 12 5.1.8", "allowagentforwarding": "Debian 12 5.1.8",
    "net.ipv4.ip_forward": "Debian 12 3.3.1", "net.ipv6.conf.all.forwarding": "Debian 12 3.3.1",
    "net.ipv4.conf.all.send_redirects": "Debian 12 3.3.2", "net.ipv4.conf.default.send_redirects": "Debian 12 3.3.2",
    "net.ipv4.icmp_ignore_bogus_error_responses": "Debian 12 3.3.3",
    "net.ipv4.icmp_echo_ignore_broadcasts": "Debian 12 3.3.4",
    "net.ipv4.conf.all.accept_redirects": "Debian 12 3.3.5", "net.ipv4.conf.default.accept_redirects": "Debian 12 3.3.5",
    "net.ipv6.conf.all.accept_redirects": "Debian 12 3.3.5", "net.ipv6.conf.default.accept_redirects": "Debian 12 3.3.5",
    "net.ipv4.conf.all.secure_redirects": "Debian 12 3.3.6", "net.ipv4.conf.default.secure_redirects": "Debian 12 3.3.6",
    "net.ipv4.conf.all.rp_filter": "Debian 12 3.3.7", "net.ipv4.conf.default.rp_filter": "Debian 12 3.3.7",
    "net.ipv4.conf.all.accept_source_route": "Debian 12 3.3.8",
    "net.ipv4.conf.default.accept_source_route": "Debian 12 3.3.8",
    "net.ipv6.conf.all.accept_source_route": "Debian 12 3.3.8",
    "net.ipv6.conf.default.accept_source_route": "Debian 12 3.3.8",
    "net.ipv4.conf.all.log_martians": "Debian 12 3.3.9", "net.ipv4.conf.default.log_martians": "Debian 12 3.3.9",
    "net.ipv4.tcp_syncookies": "Debian 12 3.3.10",
    "net.ipv6.conf.all.accept_ra": "Debian 12 3.3.11", "net.ipv6.conf.default.accept_ra": "Debian 12 3.3.11",
    "kernel.randomize_va_space": "Debian 12 1.5.1", "kernel.yama.ptrace_scope": "Debian 12 1.5.2",
    "fs.suid_dumpable": "Debian 12 1.5.3",
}


def cis_for(path: str | None = None, setting: str | None = None) -> str | None:
    """The CIS ID of a drifted setting, or else of a path (or anything below a directory that has one)."""
    if setting:
        return CIS_BY_SETTING.get(setting)
    if not path:
        return None
    if path in CIS_BY_PATH:
        return CIS_BY_PATH[path]
    return next((CIS_BY_PATH[t] for t in TREES if path.startswith(t.rstrip("/") + "/")), None)


@dataclass
class Change:
    task: str
    role: str
    item: str | None = None
    cis: str | None = None
    # What was found, where the role says (e.g. the line that overrides a setting, a key's fingerprint).
    detail: str | None = None

    def describe(self) -> str:
        what = f"{self.role}: {self.task}" + (f": {self.item}" if self.item else "")
        return what + (f" (CIS {self.cis})" if self.cis else "") + (f": {self.detail}" if self.detail else "")


# The events that end a task on a host (ansible-runner gives each its duration), and how many of a host's
# slowest tasks its result keeps.
TASK_ENDS = frozenset({"runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable"})
SLOWEST = 8


@dataclass
class HostResult:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: bool = False
    # Ansible did not run: the host still matches its fingerprint from the last successful apply.
    unchanged: bool = False
    changes: list[Change] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Where the run's time went on this host: its slowest tasks as [seconds, "role: task"], longest first.
    slowest: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class RunResult:
    mode: str  # "apply" or "drift"
    phases: list[str]
    skipped_phases: dict[str, str]
    status: str
    rc: int
    seconds: float
    hosts: dict[str, HostResult]
    # kube-bench's results by host, judged (hardened_cluster.verify.kube_bench): the benchmark gate.
    kube_bench: dict[str, HostBench] = field(default_factory=dict)

    @property
    def gate_failures(self) -> dict[str, list[dict[str, str]]]:
        return {h: b.gate_failures for h, b in self.kube_bench.items() if b.gate_failures}

    @property
    def succeeded(self) -> bool:
        return (self.rc == 0 and not any(h.failed or h.unreachable for h in self.hosts.values())
                and not self.gate_failures)

    @property
    def changed(self) -> int:
        return sum(h.changed for h in self.hosts.values())

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def known_hosts_lines(loaded: LoadedSpec) -> list[str]:
    lines = []
    for node in loaded.spec.nodes:
        port = loaded.spec.ssh_port(node)
        host = str(node.address) if port == 22 else f"[{node.address}]:{port}"
        lines.append(f"{host} {loaded.host_keys[node.name]}")
    return lines


def delivered(plan: Plan, node: Node, phases: list[str]) -> dict[str, dict]:
    """What a run of `phases` gives `node`: how it is reached (host key included) and the variables of
    the phases' roles, planned files by digest. The rerun key and the Pulumi tier inputs are its digest.
    The plan tree's place on the controller is left out: it does not change what the host gets."""
    roles = {r for p in phases for r in PHASES.get(p, [])}
    out = role_vars(plan, node, Path("<state>") / "plan", roles)
    out[CONNECTION] = {**out[CONNECTION], "host_key": plan.loaded.host_keys[node.name]}
    return out


def delivered_digest(plan: Plan, node: Node, phases: list[str]) -> str:
    blob = json.dumps(delivered(plan, node, phases), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def secret_env_names(model: BaseModel) -> set[str]:
    """The environment variables the spec's secret references read, anywhere in it."""
    if isinstance(model, SecretRef):
        return {model.env} if model.env else set()
    names: set[str] = set()
    for _, value in model:
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, BaseModel):
                names |= secret_env_names(item)
    return names


def write_inventory(plan: Plan, state: Path) -> Path:
    """The Ansible inventory, generated from the spec (never hand-written)."""
    plan_dir = state / "plan"
    spec = plan.spec
    groups = {"etcd": "etcd", "control_plane": "control-plane", "worker": "worker", "load_balancer": "load-balancer"}
    inventory = {
        "all": {
            "vars": {
                "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_ssh_private_key_file": str(spec.ssh.private_key_file.expanduser()),
            },
            "hosts": {n.name: host_vars(plan, n, plan_dir) for n in spec.nodes},
            "children": {g: {"hosts": {n.name: None for n in spec.nodes_with(r)}} for g, r in groups.items()},
        }
    }
    path = state / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    os.chmod(path, 0o600)
    return path


def _ssh_args(state: Path) -> str:
    # Pinned host keys only: an unknown or changed key fails the connection.
    return " ".join([
        "-o StrictHostKeyChecking=yes",
        f"-o UserKnownHostsFile={state / 'known_hosts'}",
        "-o GlobalKnownHostsFile=/dev/null",
        "-o IdentitiesOnly=yes",
        "-o ControlMaster=auto",
        "-o ControlPersist=120s",
        f"-o ControlPath={state / 'cp'}/%C",
        "-o ServerAliveInterval=5",
    ])


def _environment(state: Path, forks: int) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    return {
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ANSIBLE_ROLES_PATH": str(resources.ROLES),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_SSH_ARGS": _ssh_args(state),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_FORKS": str(forks),
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_LOCAL_TEMP": str(state / "tmp"),
        "ANSIBLE_DISPLAY_SKIPPED_HOSTS": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_TIMEOUT": "20",
        "ANSIBLE_CONFIG": str(resources.ANSIBLE_CFG),
    }


class _Events:
    """Turns ansible-runner events into per-host results and progress lines."""

    def __init__(self, hosts: list[str], check: bool, progress: Callable[[str], None] | None,
                 reports: dict[str, dict]) -> None:
        self.results = {h: HostResult() for h in hosts}
        self.task_seconds: dict[str, dict[str, float]] = {h: {} for h in hosts}
        self.reports = reports
        self.check = check
        self.progress = progress

    def _say(self, line: str) -> None:
        if self.progress:
            self.progress(line)

    def __call__(self, event: dict) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data", {})
        host = data.get("host")
        if kind == "playbook_on_task_start":
            role = data.get("role")
            self._say(f"TASK {role + ' : ' if role else ''}{data.get('task', '')}")
        if not host or host not in self.results:
            return False
        result = self.results[host]
        res = data.get("res") or {}
        task = data.get("task", "")
        role = data.get("role", "") or "-"
        if kind in TASK_ENDS and isinstance(data.get("duration"), (int, float)):
            seconds, key = self.task_seconds[host], f"{role}: {task}"
            seconds[key] = seconds.get(key, 0.0) + data["duration"]
            result.slowest = sorted(((round(s, 2), name) for name, s in seconds.items()), reverse=True)[:SLOWEST]
        if kind == "runner_item_on_ok" and res.get("changed"):
            item = res.get("item")
            if isinstance(item, dict):
                dest = item.get("dest") or item.get("path")
                setting = item.get("setting")
                name = item.get("name") or (f"{dest}: {setting}" if dest and setting else dest or setting) or "item"
                change = Change(task, role, name, cis_for(dest or item.get("name"), setting), item.get("reason"))
            else:
                name = item if isinstance(item, str) else "item"
                change = Change(task, role, name, cis_for(name) or cis_for(setting=name))
            result.changes.append(change)
        elif kind == "runner_on_ok":
            result.ok += 1
            facts = res.get("ansible_facts") or {}
            if "kube_bench_report" in facts:
                self.reports[host] = facts["kube_bench_report"]
            if res.get("changed"):
                result.changed += 1
                if not res.get("results"):
                    path = res.get("dest") or res.get("path")
                    result.changes.append(Change(task, role, path, cis_for(path)))
                self._say(f"  {host}: {'would change' if self.check else 'changed'}")
        elif kind == "runner_on_skipped":
            result.skipped += 1
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            result.failed += 1
            result.errors.append(f"{role}: {task}: {_message(res)}")
            self._say(f"  {host}: FAILED: {_message(res)}")
        elif kind == "runner_on_unreachable":
            result.unreachable = True
            result.errors.append(f"unreachable: {_message(res)}")
            self._say(f"  {host}: UNREACHABLE: {_message(res)}")
        # Returning False keeps events out of ansible-runner's artifacts: the report is ours.
        return False


def _message(res: dict) -> str:
    if res.get("censored"):
        return "details hidden (no_log: the task handles secrets)"
    failed_items = [item for item in res.get("results") or [] if isinstance(item, dict) and item.get("failed")]
    if failed_items:
        # A loop's own summary ("One or more items failed") hides which item failed and why.
        return "; ".join(f"{item.get('item')}: {_message(item)}" for item in failed_items)[:600]
    msg = res.get("msg") or res.get("stderr") or ""
    if res.get("stderr") and msg == "non-zero return code":
        # A command's own last word says more than Ansible's summary; kubeadm's is a hint about --v=5,
        # its [ERROR ...] lines say what failed.
        lines = str(res["stderr"]).strip().splitlines()
        errors = [line.strip() for line in lines if line.strip().startswith("[ERROR")]
        return ("; ".join(errors) if errors else lines[-1])[:600]
    return str(msg).strip().splitlines()[0][:600] if msg else "failed"


def run(
    plan: Plan,
    state: Path,
    *,
    phases: list[str],
    check: bool = False,
    hosts: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
    forks: int = 20,
    reports: dict[str, dict] | None = None,
    extra_vars: dict | None = None,
    playbook: Path = PLAYBOOK,
    tags: list[str] | None = None,
) -> RunResult:
    """Run the roles of `phases` on `hosts` (default all). Preflight must have passed.

    `phases` are the playbook's tags: site.yml's phases, or another playbook's (etcd-restore.yml's steps).

    `reports` receives each host's kube-bench report (the benchmark phase's `kube_bench_report` fact).
    `extra_vars` override role variables for this run only (a day-2 command's one-off setting).
    `tags` narrows the run to those concerns (`<role>_<feature>`) of the phases' roles.
    """
    from ansible_runner.interface import init_runner

    for sub in ("cp", "tmp", "runner"):
        private_dir(state / sub)
    private_dir(state)
    plan.write_tree(state / "plan")
    write_private(state / "known_hosts", "\n".join(known_hosts_lines(plan.loaded)) + "\n")
    inventory = write_inventory(plan, state)
    targets = hosts or list(plan.hosts)
    events = _Events(targets, check, progress, {} if reports is None else reports)
    started = time.monotonic()
    runner = init_runner(
        private_data_dir=str(state / "runner"),
        playbook=str(playbook),
        inventory=str(inventory),
        tags=",".join(tags or phases),
        limit=",".join(targets),
        cmdline="--check --diff" if check else None,
        envvars=_environment(state, forks),
        extravars=extra_vars or None,
        suppress_env_files=True,
        quiet=True,
        event_handler=events,
        rotate_artifacts=3,
    )
    # ansible-runner hands Ansible a copy of this process's environment and records it in the run's
    # artifacts: secrets the spec takes from the environment must be in neither.
    for name in secret_env_names(plan.spec):
        runner.config.env.pop(name, None)
    runner.run()
    private_tree(state / "runner")  # ansible-runner writes its artifacts with the umask's modes
    return RunResult(
        mode="drift" if check else "apply",
        phases=phases,
        skipped_phases={},
        status=runner.status,
        rc=runner.rc,
        seconds=round(time.monotonic() - started, 2),
        hosts=events.results,
    )
