"""The exact kubeadm commands and files the Kubernetes roles use, read from the role task files."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml

from hardened_cluster.deliver import artifacts
from hardened_cluster.deliver.ansible import write_inventory
from hardened_cluster.plan.render import HostFacts, render_plan
from hardened_cluster.plan.role_vars import host_vars
from hardened_cluster.resources import ANSIBLE_CFG, PLAYBOOKS, ROLES as ROLES_DIR, ROOT
from hardened_cluster.secrets.store import resolve_secrets
from hardened_cluster.spec.load import load_spec

ROLES = ("container_runtime", "kubernetes_node", "control_plane", "worker", "cluster_objects")
SECRET_WORDS = re.compile(r"token|certificate.?key|kubeadm-join|kubeadm-init|join_config|init_config", re.I)
INIT = "/usr/local/bin/kubeadm init --config /etc/kubernetes/kubeadm/kubeadm-init.yaml --upload-certs"
JOIN = "/usr/local/bin/kubeadm join --config /etc/kubernetes/kubeadm/kubeadm-join.yaml"


def _tasks(role: str) -> list[tuple[str, dict]]:
    """Every task of a role (tasks/ and handlers/), blocks flattened, with the file it is in."""
    out = []
    for path in sorted((ROLES_DIR / role).glob("*/*.yml")):
        if path.parent.name not in ("tasks", "handlers"):
            continue
        stack = list(yaml.safe_load(path.read_text()) or [])
        while stack:
            task = stack.pop(0)
            stack += task.get("block", []) + task.get("rescue", []) + task.get("always", [])
            out.append((path.name, task))
    return out


def _defaults(role: str) -> dict:
    return yaml.safe_load((ROLES_DIR / role / "defaults" / "main.yml").read_text())


def _command(role: str, name: str) -> str:
    """A command task's argv rendered with the role's defaults."""
    [task] = [t for _, t in _tasks(role) if t.get("name") == name]
    argv = task["ansible.builtin.command"]["argv"]
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    return " ".join(env.from_string(str(arg)).render(_defaults(role)) for arg in argv)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    loaded = load_spec(ROOT / "inventories" / "sample" / "cluster.yaml")
    state = tmp_path_factory.mktemp("state")
    return loaded, state, render_plan(loaded, resolve_secrets(loaded, state))


def test_first_control_plane_runs_kubeadm_init_with_upload_certs():
    assert _command("control_plane", "Initialize the first control-plane node") == INIT


def test_other_control_planes_and_workers_join_with_the_join_config():
    assert _command("control_plane", "Join the other control-plane nodes") == JOIN
    assert _command("worker", "Join the worker") == JOIN


def test_the_config_paths_are_the_ones_the_plan_renders(sample):
    loaded, state, plan = sample
    cps = [n.name for n in loaded.spec.nodes_with("control-plane")]
    workers = [n.name for n in loaded.spec.nodes_with("worker") if "control-plane" not in n.roles]
    init = _defaults("control_plane")["control_plane_init_config"]
    join = _defaults("control_plane")["control_plane_join_config"]
    render = _defaults("control_plane")["control_plane_render_config"]
    upgrade = _defaults("control_plane")["control_plane_upgrade_config"]
    assert _defaults("worker")["worker_join_config"] == join
    assert _defaults("worker")["worker_upgrade_config"] == upgrade
    assert {f.path for f in plan.hosts[cps[0]].files.values() if "/kubeadm/" in f.path} == {init, render, upgrade}
    version = f"v{loaded.spec.cluster.kubernetes_version}"
    for name in cps + workers:
        # What `kubeadm upgrade apply|node --config` reads: the plan's release, no secret; patches on control planes.
        planned = plan.hosts[name].files[upgrade]
        config = yaml.safe_load(planned.content)
        assert not planned.secret and config["kind"] == "UpgradeConfiguration"
        assert host_vars(plan, loaded.spec.node(name), state / "plan")[
            "control_plane_upgrade_config" if name in cps else "worker_upgrade_config"] == upgrade
        if name in cps:
            assert config["apply"]["kubernetesVersion"] == version
            assert config["apply"]["patches"] == config["node"]["patches"] == {"directory": "/etc/kubernetes/kubeadm/patches"}
        else:
            assert set(config) == {"apiVersion", "kind", "node"}
    assert plan.hosts[cps[0]].files[init].role == "control_plane" and plan.hosts[cps[0]].files[init].secret
    assert len(cps) > 1 and workers
    for name in cps:
        # What every control plane's manifests are rendered from: no secret in it.
        assert not plan.hosts[name].files[render].secret
        own = next(yaml.safe_load_all(plan.hosts[name].files[render].content))
        assert own["kind"] == "InitConfiguration" and not {"bootstrapTokens", "certificateKey"} & set(own)
        assert host_vars(plan, loaded.spec.node(name), state / "plan")["control_plane_render_config"] == render
    for name in cps[1:]:
        assert {f.path for f in plan.hosts[name].files.values() if "/kubeadm/" in f.path} == {join, render, upgrade}
        assert plan.hosts[name].files[join].role == "control_plane" and plan.hosts[name].files[join].secret
        assert "certificateKey" in yaml.safe_load(plan.hosts[name].files[join].content)["controlPlane"]
    for name in workers:
        assert {f.path for f in plan.hosts[name].files.values() if "/kubeadm/" in f.path} == {join, upgrade}
        assert plan.hosts[name].files[join].role == "worker" and plan.hosts[name].files[join].secret
        assert "controlPlane" not in yaml.safe_load(plan.hosts[name].files[join].content)
    # The inventory tells exactly the first control-plane node to init.
    plan_dir = state / "plan"
    assert host_vars(plan, loaded.spec.node(cps[0]), plan_dir)["control_plane_init"] is True
    assert all(host_vars(plan, loaded.spec.node(n), plan_dir)["control_plane_init"] is False for n in cps[1:])
    assert all(host_vars(plan, loaded.spec.node(n), plan_dir)["worker_token_host"] == cps[0] for n in workers)


def test_no_role_ignores_preflight_errors():
    for role in ROLES:
        for path in (ROLES_DIR / role).rglob("*.yml"):
            assert "ignore-preflight-errors" not in path.read_text(), path


@pytest.mark.parametrize("role", ROLES)
def test_every_task_touching_tokens_keys_or_join_configs_is_no_log(role):
    for filename, task in _tasks(role):
        touched = json.dumps({k: v for k, v in task.items() if k.startswith("ansible.builtin.") or k == "loop"})
        if SECRET_WORDS.search(touched) or "selectattr('secret', 'true')" in touched:
            assert task.get("no_log") is True, f"{role}/{filename}: {task['name']}"


def test_the_admin_kubeconfig_is_fetched_with_no_log():
    [fetch] = [t for _, t in _tasks("control_plane") if "ansible.builtin.fetch" in t]
    assert fetch["ansible.builtin.fetch"]["src"] == "/etc/kubernetes/admin.conf" and fetch["no_log"] is True


def test_reset_runs_only_when_asked_for(sample, tmp_path):
    _, _, plan = sample
    inventory = write_inventory(plan, tmp_path)
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROLES_DIR), "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_NOCOLOR": "1"}

    def listed(tags: str) -> str:
        argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), "--list-tasks",
                "--tags", tags, str(PLAYBOOKS / "site.yml")]
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    phases = listed("hosts,etcd,runtime,kubernetes")
    assert "Reset the node with kubeadm" not in phases
    assert "Initialize the first control-plane node" in phases
    reset = listed("reset")
    assert "Reset the node with kubeadm" in reset and "Initialize the first control-plane node" not in reset


def test_kata_handler_follows_the_preflight_facts(tmp_path):
    loaded = load_spec(ROOT / "inventories" / "sample" / "cluster.yaml")
    secrets = resolve_secrets(loaded, tmp_path)
    [kata_node] = loaded.spec.runtimes.kata.nodes
    with_kvm = render_plan(loaded, secrets, {kata_node: HostFacts(kata_capable=True)})
    without = render_plan(loaded, secrets, {kata_node: HostFacts(kata_capable=False)})
    assert "kata" in artifacts.handlers(with_kvm.hosts[kata_node])
    assert "kata" not in artifacts.handlers(without.hosts[kata_node])
    assert any("kata handler left out" in note for note in without.hosts[kata_node].notes)
    # The role installs what the plan names: Kata only where the handler is planned.
    assert "kata" in [e["name"] for e in artifacts.host_vars(loaded.spec, with_kvm.hosts[kata_node])
                      ["container_runtime_release_files"]]
    assert "kata" not in [e["name"] for e in artifacts.host_vars(loaded.spec, without.hosts[kata_node])
                          ["container_runtime_release_files"]]
