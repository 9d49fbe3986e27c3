"""The rerun shortcut on real nodes: a unit stopped, a sysctl or the firewall changed, a package's state
changed each move the host's fingerprint, and the next apply runs Ansible there and puts it back."""
import pytest

from hardened_cluster.deliver.converge import converge
from hardened_cluster.deliver.rerun import fingerprints
from hardened_cluster.plan.render import render_plan
from hardened_cluster.secrets.store import resolve_secrets

pytestmark = pytest.mark.lab

PHASES = ["hosts", "etcd"]
CHANGES = {
    "unit": ("etcd-1", "systemctl stop etcd-snapshot.timer"),
    "sysctl": ("etcd-2", "sysctl -qw net.ipv4.conf.all.log_martians=0"),
    "nftables": ("cp-1", "nft add rule inet hardened_cluster input tcp dport 10250 accept"),
    "package": ("worker-1", "echo 'age hold' | dpkg --set-selections"),
    "mode": ("worker-2", "chmod 0644 /etc/ssh/sshd_config.d/10-hardened-cluster.conf"),
}


@pytest.fixture(scope="module")
def plan(lab_spec, lab_state):
    result, _ = converge(lab_spec, check=False, phases=PHASES, state=lab_state)
    assert result.succeeded
    return render_plan(lab_spec, resolve_secrets(lab_spec, lab_state))


@pytest.mark.parametrize("kind", list(CHANGES))
def test_each_kind_of_change_moves_the_fingerprint(kind, plan, lab, lab_spec, lab_state):
    host, command = CHANGES[kind]
    before = fingerprints(lab_spec, plan, [host], PHASES)[host][1]
    assert before and fingerprints(lab_spec, plan, [host], PHASES)[host][1] == before
    lab.lab.exec(host, ["sh", "-c", command])
    after = fingerprints(lab_spec, plan, [host], PHASES)[host][1]
    assert after and after != before, f"{kind} changed on {host} but the fingerprint did not"
    rerun, _ = converge(lab_spec, check=False, phases=PHASES, state=lab_state)
    assert rerun.succeeded and not rerun.hosts[host].unchanged
    if kind == "package":  # no role manages holds; take it back by hand
        lab.lab.exec(host, ["sh", "-c", "echo 'age install' | dpkg --set-selections"])
