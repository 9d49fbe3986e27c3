"""Role variables come from one function (role_vars.role_vars): the inventory holds them, and the rerun
key (converged.plan_key) follows them, file digests and connection included, for every kind of change."""
from __future__ import annotations

import copy
import shutil

import pytest
import yaml
from test_render import SAMPLE, sample_data

from hardened_cluster.deliver.ansible import PHASES, write_inventory
from hardened_cluster.deliver.rerun import plan_key
from hardened_cluster.plan import render as plan_module
from hardened_cluster.plan.render import render_plan
from hardened_cluster.plan.role_vars import CONNECTION, host_vars, role_vars
from hardened_cluster.secrets.store import resolve_secrets
from hardened_cluster.spec.load import parse_spec

CODE = "0" * 64  # the role code's digest: the same for every plan compared here
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyCXOCtEgBz60mm5kaXxg5JsyiBJuVLHQt4vLIl0csF"


def _render(state, doc=None):
    loaded = parse_spec(doc or sample_data(), SAMPLE)
    return render_plan(loaded, resolve_secrets(loaded, state))


def _keys(plan, phase: str) -> dict[str, str]:
    return {name: plan_key(plan, host.node, [phase], CODE) for name, host in plan.hosts.items()}


def _node(doc: dict, name: str) -> dict:
    return next(n for n in doc["nodes"] if n["name"] == name)


def _ssh(doc: dict, name: str, **values) -> dict:
    node = _node(doc, name)
    node["ssh"] = {**node["ssh"], **values}
    return doc


def _kubernetes(doc: dict, version: str) -> dict:
    doc["cluster"]["kubernetes_version"] = version
    return doc


def _services(doc: dict) -> dict:
    doc["os_hardening"]["disable_services"] = [*doc["os_hardening"]["disable_services"], "telnet"]
    return doc


# kind of change -> (spec change, phase, hosts whose key must change)
CHANGES = {
    # A role variable and no file: os_hardening stops one more service.
    "role variable": (_services, "hosts", None),
    # A version: crictl is pinned per Kubernetes minor; containerd's files stay the same.
    "tool version": (lambda d: _kubernetes(d, "1.34.4"), "runtime", ["cp-1", "cp-2", "cp-3", "worker-1", "worker-2", "worker-3"]),
    "connection: ssh port": (lambda d: _ssh(d, "worker-1", port=2222), "runtime", ["worker-1"]),
    "connection: ssh user": (lambda d: _ssh(d, "etcd-2", user="ops"), "etcd", ["etcd-2"]),
    "connection: host key": (lambda d: _ssh(d, "etcd-1", host_key=OTHER_KEY), "etcd", ["etcd-1"]),
}


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    return tmp_path_factory.mktemp("state") / "prod-eu1"


@pytest.fixture(scope="module")
def sample(state):
    return _render(state)


def test_each_role_names_its_own_variables_and_the_inventory_holds_them_all(sample, tmp_path):
    inventory = yaml.safe_load(write_inventory(sample, tmp_path).read_text())["all"]["hosts"]
    for name, host in sample.hosts.items():
        grouped = role_vars(sample, host.node, tmp_path / "plan")
        assert set(grouped[CONNECTION]) == {"ansible_host", "ansible_port", "ansible_user"}
        for role, variables in grouped.items():
            if role != CONNECTION:
                assert all(key.startswith(role + "_") for key in variables), role
        assert inventory[name] == host_vars(sample, host.node, tmp_path / "plan")
        assert inventory[name] == {k: v for variables in grouped.values() for k, v in variables.items()}
    # Every role of a phase that runs on a host has its variables there, and no other role's.
    assert set(role_vars(sample, sample.spec.node("worker-1"), tmp_path, PHASES["kubernetes"])) == {
        CONNECTION, "kubernetes_node", "worker"}


def test_nothing_changed_keeps_every_key(sample, state):
    again = _render(state)
    for phase in PHASES:
        assert _keys(again, phase) == _keys(sample, phase), phase


@pytest.mark.parametrize("kind", list(CHANGES))
def test_every_kind_of_change_moves_the_rerun_key_of_the_hosts_it_reaches(sample, state, kind):
    change, phase, hosts = CHANGES[kind]
    changed = _render(state, change(copy.deepcopy(sample_data())))
    before, after = _keys(sample, phase), _keys(changed, phase)
    moved = sorted(h for h in before if before[h] != after[h])
    assert moved == sorted(hosts or before)
    if kind in ("role variable", "tool version"):
        # Only role variables differ: the phase's planned files are the same.
        roles = set(PHASES[phase])
        for name in moved:
            files = {p: f.sha256 for p, f in sample.hosts[name].files.items() if f.role in roles}
            assert files == {p: f.sha256 for p, f in changed.hosts[name].files.items() if f.role in roles}


def test_a_changed_template_moves_the_key_of_its_phase_only(sample, state, monkeypatch, tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(plan_module.resources.TEMPLATES, templates)
    crictl = templates / "etc/crictl.yaml.j2"
    crictl.write_text(crictl.read_text() + "debug: false\n")
    monkeypatch.setattr(plan_module.resources, "TEMPLATES", templates)
    changed = _render(state)
    for phase in PHASES:
        before, after = _keys(sample, phase), _keys(changed, phase)
        moved = {h for h in before if before[h] != after[h]}
        assert moved == ({h for h, host in sample.hosts.items() if host.runtimes} if phase == "runtime" else set())
