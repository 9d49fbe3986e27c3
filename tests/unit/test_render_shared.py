"""Rendering a file once for every node that reads the same inputs (plan.node_inputs) changes no byte.

The plan is compared with one rendered the plain way, every template for every node, on specs whose
nodes differ in each value a template reads: name, address, roles, labels (and their order), SSH user
and port (the firewall's shape), sandbox runtimes and preflight facts.
"""
from __future__ import annotations

import copy
from pathlib import Path

import jinja2
import pytest
import yaml

from hardened_cluster.plan import render as plans
from hardened_cluster.plan.render import HostFacts, node_inputs, render_plan
from hardened_cluster.secrets.store import resolve_secrets
from hardened_cluster.spec.load import parse_spec

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "inventories" / "sample" / "cluster.yaml"
KUBELET = "/var/lib/kubelet/config.yaml"
NFTABLES = "/etc/nftables.conf"


def varied(data: dict) -> dict:
    worker = data["nodes"][6]
    extra = [
        {**worker, "name": "worker-4", "address": "10.20.0.34", "labels": {"example.com/a": "1", "example.com/b": "2"}},
        {**worker, "name": "worker-5", "address": "10.20.0.35", "ssh": {**worker["ssh"], "port": 2222, "user": "ops"}},
        {**worker, "name": "worker-6", "address": "10.20.0.36", "labels": {"example.com/b": "2", "example.com/a": "1"}},
        {**worker, "name": "worker-7", "address": "10.20.0.37", "labels": {"example.com/a": "1", "example.com/b": "2"}},
    ]
    data["nodes"] += extra
    data["runtimes"]["gvisor"]["nodes"] = ["worker-1", "worker-2", "worker-5", "worker-7"]
    data["runtimes"]["kata"]["nodes"] = ["worker-3", "worker-4", "worker-6"]
    return data


SPECS = {"sample": lambda d: d, "varied": varied}
FACTS = {"none": {}, "worker-4 without KVM": {"worker-4": HostFacts(kata_capable=False)}}


def loaded(name: str):
    return parse_spec(SPECS[name](copy.deepcopy(yaml.safe_load(SAMPLE.read_text()))), SAMPLE)


def as_data(plan) -> dict:
    hosts = {name: ({path: vars(f) | {"sha256": None} for path, f in host.files.items()}, host.notes)
             for name, host in plan.hosts.items()}
    return {"hosts": hosts, "manifests": {path: f.content for path, f in plan.manifests.items()}}


@pytest.mark.parametrize("facts", list(FACTS))
@pytest.mark.parametrize("spec", list(SPECS))
def test_shared_renders_are_the_per_node_renders(spec, facts, tmp_path, monkeypatch):
    spec_loaded = loaded(spec)
    secrets = resolve_secrets(spec_loaded, tmp_path / "state")
    shared = render_plan(spec_loaded, secrets, FACTS[facts])
    monkeypatch.setattr(plans, "node_inputs", lambda *args, **kwargs: None)  # every template for every node
    plain = render_plan(spec_loaded, secrets, FACTS[facts])
    assert as_data(shared) == as_data(plain)


def test_workers_share_a_file_that_reads_nothing_of_the_node(tmp_path):
    spec_loaded = loaded("varied")
    plan = render_plan(spec_loaded, resolve_secrets(spec_loaded, tmp_path / "state"))
    workers = [h for h in plan.hosts.values() if h.node.roles == ["worker"]]
    assert len({id(h.files[KUBELET]) for h in workers}) == 1
    # The ruleset names its node, so each has its own.
    assert len({h.files[NFTABLES].content for h in workers}) == len(workers)


def inputs(templates: dict[str, str], name: str = "t.j2"):
    env = plans.make_environment()
    env.loader = jinja2.DictLoader(templates)
    env.filters["with_context"] = jinja2.pass_context(lambda context, value: value)
    return node_inputs(env, name, frozenset({"rules", "runtimes"}))


@pytest.mark.parametrize(("templates", "want"), [
    ({"t.j2": "{{ node.name }} {{ node.address.version }} {{ spec.cluster.name }}"},
     frozenset({"node.name", "node.address"})),
    ({"t.j2": "{% if 'worker' in node.roles %}{{ rules }}{% endif %}"}, frozenset({"node.roles", "rules"})),
    ({"t.j2": '{% include "part.j2" %}{{ runtimes }}', "part.j2": "{{ node.labels }}{% include 't.j2' %}"},
     frozenset({"node.labels", "runtimes"})),
    ({"t.j2": "{{ ctx.cluster }}"}, frozenset()),
    # The node on whole, by a computed name or to the context: anything about it may be read.
    ({"t.j2": "{{ spec.ssh_user(node) }}"}, None),
    ({"t.j2": "{{ node['name'] }}"}, None),
    ({"t.j2": "{% set n = node %}{{ n.name }}"}, None),
    ({"t.j2": "{% include node.name ~ '.j2' %}"}, None),
    ({"t.j2": '{% include "part.j2" %}', "part.j2": "{{ f(node) }}"}, None),
    ({"t.j2": "{{ 1 | with_context }}"}, None),
])
def test_node_inputs(templates, want):
    assert inputs(templates) == want
