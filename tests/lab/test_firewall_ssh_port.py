"""The firewall's lockout guard on a lab whose sshd listens on 2222 (`ssh.port: 2222`).

The guard (roles/firewall: its probe reads the planned ruleset, the assert stops the role before delivery)
is given the spec's SSH port and the address preflight saw the controller's session come from. This module
runs its own lab, before the session's lab starts (tests/conftest.py orders it first), and takes it down.
"""
import os
import re
import sys

import pytest
import yaml

from hardened_cluster.cli.lab import start
from hardened_cluster.deliver.converge import converge
from hardened_cluster.spec.load import load_spec

pytestmark = pytest.mark.lab

PORT = 2222
TABLE = ["nft", "list", "table", "inet", "hardened_cluster"]


def _spec(directory, text):
    directory.mkdir(exist_ok=True)
    (directory / "cluster.yaml").write_text(text)
    return directory / "cluster.yaml"


@pytest.fixture(scope="module")
def moved(tmp_path_factory, distro_spec_text):
    """A lab spec with `ssh.port: 2222`, its nodes up with sshd on that port, known_hosts beside it.

    Debian's packages as the artifact source: the hosts phase needs no bundle.
    """
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("the lab needs root on Linux")
    text, count = re.subn(r"(?m)^(ssh:\n(?:  .*\n)*?)  port: 22\n", rf"\1  port: {PORT}\n", distro_spec_text)
    assert count == 1, "the lab spec has no ssh.port: 22 to move"
    directory = tmp_path_factory.mktemp("ssh-port")
    spec = _spec(directory, text)
    lab, nodes, _ = start(spec)
    try:
        yield lab, load_spec(spec), directory
    finally:
        lab.down()


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    return tmp_path_factory.mktemp("state") / "lab"  # short: ssh's ControlPath lives below it


def test_hosts_phase_applies_cleanly_with_ssh_on_another_port(moved, state):
    lab, loaded, _ = moved
    assert {loaded.spec.ssh_port(n) for n in loaded.spec.nodes} == {PORT}
    result, _ = converge(loaded, check=False, phases=["hosts"], state=state)
    assert result.succeeded, {h: r.errors for h, r in result.hosts.items()}
    assert set(result.hosts) == {n.name for n in loaded.spec.nodes}
    # The guard was given the real port and the controller's address, as the hosts see it.
    hosts = yaml.safe_load((state / "inventory.yml").read_text())["all"]["hosts"]
    assert {(v["firewall_ssh_port"], v["firewall_controller_address"]) for v in hosts.values()} == {
        (PORT, lab.controller_address)}
    for node in loaded.spec.nodes:
        table = lab.exec(node.name, TABLE).stdout.decode()
        admitted = rf"ip saddr (\{{ )?{re.escape(lab.controller_address)}(/32)?( \}})? tcp dport {PORT} accept"
        assert re.search(admitted, table), table
        assert "dport 22 " not in table


def test_rerun_finds_every_host_unchanged_over_the_moved_port(moved, state):
    _, loaded, _ = moved
    result, _ = converge(loaded, check=False, phases=["hosts"], state=state)
    assert result.succeeded and {h: r.unchanged for h, r in result.hosts.items()} == {
        n.name: True for n in loaded.spec.nodes}


def test_guard_refuses_a_ruleset_that_drops_the_controllers_ssh(moved, state):
    lab, loaded, directory = moved
    node = loaded.spec.nodes[0].name
    before = {path: lab.exec(node, argv).stdout for path, argv in
              (("table", TABLE), ("file", ["cat", "/etc/nftables.conf"]))}
    # SSH admitted from the lab's outsider only: a valid spec, but loading it would cut the controller off.
    text = re.sub(r"(?m)^  admin_cidrs: .*$", f"  admin_cidrs: [{lab.outsider_address}/32]",
                  (directory / "cluster.yaml").read_text())
    narrowed = load_spec(_spec(directory / "narrowed", text.replace("known_hosts: known_hosts",
                                                                   f"known_hosts: {directory / 'known_hosts'}")))
    result, _ = converge(narrowed, check=False, phases=["hosts"], hosts=[node], state=state)
    assert not result.succeeded
    errors = " ".join(result.hosts[node].errors)
    assert (f"does not admit firewall_controller_address={lab.controller_address} to SSH (add it to "
            "network.admin_cidrs in the cluster spec)") in errors, errors
    # Nothing was delivered or loaded, and the controller still gets in on the moved port.
    assert {path: lab.exec(node, argv).stdout for path, argv in
            (("table", TABLE), ("file", ["cat", "/etc/nftables.conf"]))} == before
    again, _ = converge(loaded, check=True, phases=["hosts"], hosts=[node], state=state)
    assert again.succeeded and again.changed == 0, {h: r.errors or r.changes for h, r in again.hosts.items()}
