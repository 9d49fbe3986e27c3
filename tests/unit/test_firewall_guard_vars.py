"""The firewall role's lockout guard is given each node's SSH port and the controller's address preflight saw."""
from pathlib import Path

import yaml

from hardened_cluster.plan.render import HostFacts, render_plan
from hardened_cluster.plan.role_vars import host_vars
from hardened_cluster.secrets.store import resolve_secrets
from hardened_cluster.spec.load import load_spec

SAMPLE = Path(__file__).resolve().parents[2] / "inventories" / "sample" / "cluster.yaml"


def test_guard_vars_follow_the_spec_port_and_the_preflight_address(tmp_path):
    doc = yaml.safe_load(SAMPLE.read_text())
    doc["ssh"]["port"] = 2222
    doc["nodes"][0]["ssh"]["port"] = 2200
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    loaded = load_spec(tmp_path / "cluster.yaml")
    first, second = (n.name for n in loaded.spec.nodes[:2])
    plan = render_plan(loaded, resolve_secrets(loaded, tmp_path / "state"),
                       {first: HostFacts(controller_address="172.25.0.9")})
    nodes = {n.name: n for n in loaded.spec.nodes}
    ours = host_vars(plan, nodes[first], tmp_path / "plan")
    other = host_vars(plan, nodes[second], tmp_path / "plan")
    assert (ours["firewall_ssh_port"], ours["firewall_controller_address"]) == (2200, "172.25.0.9")
    # No preflight answer for this host: the guard checks only that an SSH rule for its port exists.
    assert other["firewall_ssh_port"] == 2222 and "firewall_controller_address" not in other
    assert "tcp dport 2200 accept" in plan.hosts[first].files["/etc/nftables.conf"].content
