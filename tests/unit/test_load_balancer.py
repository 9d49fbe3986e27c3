"""The API endpoint's load balancer (load_balancer.provider: haproxy): the rendered haproxy.cfg against its
golden, its backends and health checks, the firewall matrix for the load-balancer node and the API servers
behind it, its role variables and inventory group. Invalid combinations are in tests/specs/invalid (159-162).

Goldens: tests/golden/load-balancer/<host>/<path>; `HC_UPDATE_GOLDEN=1` rewrites them.
"""
from __future__ import annotations

import copy
import ipaddress
import os
import shutil
from pathlib import Path

import pytest
import yaml
from test_render import SAMPLE, sample_data

from hardened_cluster.deliver.ansible import PHASES, write_inventory
from hardened_cluster.plan import firewall
from hardened_cluster.plan.render import render_plan
from hardened_cluster.plan.role_vars import role_vars
from hardened_cluster.secrets.store import resolve_secrets
from hardened_cluster.spec.load import parse_spec

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "load-balancer"
LB_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFAZKpngbGIOEsrqDaruGRUqrSkuwFdR2NQLrdxPJVim"
CONFIG = "/etc/haproxy/haproxy.cfg"
CA = "/etc/haproxy/kubernetes-ca.crt"


def balanced(data: dict) -> dict:
    """The sample with lb-1 serving the endpoint in front of its three control planes."""
    data = copy.deepcopy(data)
    data["nodes"].insert(3, {"name": "lb-1", "address": "10.20.0.20", "roles": ["load-balancer"],
                             "ssh": {"host_key": LB_KEY}})
    data["cluster"]["control_plane_endpoint"] = "10.20.0.20:6443"
    data["load_balancer"] = {"provider": "haproxy"}
    return data


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    loaded = parse_spec(balanced(sample_data()), SAMPLE)
    return render_plan(loaded, resolve_secrets(loaded, tmp_path_factory.mktemp("state") / "prod-eu1"))


def test_golden(plan):
    renders = {Path("lb-1") / CONFIG.lstrip("/"): plan.hosts["lb-1"].files[CONFIG].content}
    for host in ("lb-1", "cp-1"):
        renders[Path(host) / "etc/nftables.conf"] = plan.hosts[host].files["/etc/nftables.conf"].content
    if os.environ.get("HC_UPDATE_GOLDEN"):
        shutil.rmtree(GOLDEN, ignore_errors=True)
        for rel, content in renders.items():
            (GOLDEN / rel).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / rel).write_text(content)
    assert {p.relative_to(GOLDEN) for p in GOLDEN.rglob("*") if p.is_file()} == set(renders)
    for rel, content in renders.items():
        assert (GOLDEN / rel).read_text() == content, f"{rel} differs from its golden; HC_UPDATE_GOLDEN=1 to accept"


def test_haproxy_forwards_to_every_api_server_with_verified_readyz_checks(plan):
    text = plan.hosts["lb-1"].files[CONFIG].content
    lines = [line.strip() for line in text.splitlines()]
    assert "bind 10.20.0.20:6443" in lines
    servers = [line.split()[1:3] for line in lines if line.startswith("server ")]
    assert servers == [["cp-1", "10.20.0.21:6443"], ["cp-2", "10.20.0.22:6443"], ["cp-3", "10.20.0.23:6443"]]
    assert "mode tcp" in lines and "option httpchk GET /readyz" in lines and "http-check expect status 200" in lines
    default_server = next(line for line in lines if line.startswith("default-server"))
    assert f"verify required ca-file {CA}" in default_server and "check-ssl" in default_server
    # The CA the checks verify with is the cluster's, and nothing secret reaches the node.
    files = plan.hosts["lb-1"].files
    assert files[CA].content == plan.pki.kubernetes_ca.cert_pem
    assert set(files) >= {CONFIG, CA} and not any(f.secret for f in files.values())
    assert "PRIVATE KEY" not in "".join(f.content for f in files.values())


def test_only_load_balancer_nodes_get_haproxy(plan):
    assert [name for name, host in plan.hosts.items() if CONFIG in host.files] == ["lb-1"]
    assert plan.hosts["lb-1"].runtimes == []  # no containerd, kubelet or kubeadm there


def _sources(rules, name):
    return next(set(r.sources) for r in rules if r.name == name)


def test_firewall_opens_the_endpoint_to_admins_and_kubernetes_nodes_only(plan):
    spec = plan.spec
    net = ipaddress.ip_network
    kube = {net(f"{n.address}/32") for n in spec.nodes if {"control-plane", "worker"} & set(n.roles)}
    admins = set(spec.network.admin_cidrs)
    lb_rules = firewall.node_rules(spec, spec.node("lb-1"))
    assert [(r.name, r.port) for r in lb_rules] == [("ssh", "22"), ("api-endpoint", "6443")]
    assert set(firewall._collapse(tuple(admins | kube))) == _sources(lb_rules, "api-endpoint")
    assert firewall.node_forwarding(spec, spec.node("lb-1")) is None
    # Every API server admits the load balancer, which connects from its own address.
    cp = _sources(firewall.node_rules(spec, spec.node("cp-2")), "kube-apiserver")
    wanted = admins | kube | {net("10.20.0.20/32"), spec.network.pod_cidr}
    assert cp == set(firewall._collapse(tuple(wanted)))
    # Without a load balancer the API servers' sources stay as they were.
    loaded = parse_spec(sample_data(), SAMPLE)
    plain = _sources(firewall.node_rules(loaded.spec, loaded.spec.node("cp-2")), "kube-apiserver")
    assert plain == set(firewall._collapse(tuple(admins | kube | {spec.network.pod_cidr})))


def test_role_variables_and_inventory_group(plan, tmp_path):
    variables = role_vars(plan, plan.spec.node("lb-1"), tmp_path / "plan")
    assert variables["load_balancer"]["load_balancer_address"] == "10.20.0.20"
    assert variables["load_balancer"]["load_balancer_port"] == 6443
    assert {f["dest"] for f in variables["load_balancer"]["load_balancer_files"]} == {CONFIG, CA}
    assert "load_balancer" in PHASES["kubernetes"]
    assert PHASES["kubernetes"].index("load_balancer") < PHASES["kubernetes"].index("control_plane")
    inventory = yaml.safe_load(write_inventory(plan, tmp_path).read_text())
    assert inventory["all"]["children"]["load_balancer"]["hosts"] == {"lb-1": None}
    assert "lb-1" not in inventory["all"]["children"]["control_plane"]["hosts"]


def test_endpoint_may_be_a_dns_name_for_the_load_balancers():
    data = balanced(sample_data())
    data["cluster"]["control_plane_endpoint"] = "api.prod-eu1.example.com:6443"
    assert parse_spec(data, SAMPLE).spec.load_balancer.provider == "haproxy"


def test_lab_ha_spec_is_two_control_planes_behind_a_load_balancer():
    doc = yaml.safe_load((ROOT / "inventories" / "lab-ha" / "cluster.yaml").read_text())
    roles = [tuple(n["roles"]) for n in doc["nodes"]]
    assert roles.count(("control-plane",)) == 2 and roles.count(("load-balancer",)) == 1
    assert roles.count(("etcd",)) == 1 and roles.count(("worker",)) == 0
    lb = next(n for n in doc["nodes"] if n["roles"] == ["load-balancer"])
    assert doc["cluster"]["control_plane_endpoint"] == f"{lb['address']}:6443"
    assert doc["load_balancer"] == {"provider": "haproxy"}


def test_cis_check_of_the_balanced_sample_finds_no_fail(plan):
    from hardened_cluster.verify.cis import check_plan

    findings = check_plan(plan)
    assert findings and [f for f in findings if f.status == "FAIL"] == []
