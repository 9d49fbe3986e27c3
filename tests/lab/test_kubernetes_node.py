"""kubernetes_node on a lab node whose artifact source (distro) has no Kubernetes binaries: one clear stop."""
from __future__ import annotations

import pytest

from hardened_cluster.core import plan_for, select_phases
from hardened_cluster.deliver import run

pytestmark = pytest.mark.lab

NODE = "worker-1"


def test_the_lab_spec_skips_the_kubernetes_phase(lab_spec):
    phases, skipped = select_phases(lab_spec.spec, None)
    assert "kubernetes" not in phases and "kubeadm, kubelet and kubectl" in skipped["kubernetes"]


def test_the_role_stops_first_naming_what_is_missing_and_where_it_looked(lab, lab_spec, lab_state):
    # core.select_phases leaves the phase out for distro; the role must still refuse on its own.
    plan = plan_for(lab_spec, lab_state, [NODE])
    result = run(plan, lab_state, phases=["kubernetes"], hosts=[NODE])

    host = result.hosts[NODE]
    assert not result.succeeded
    assert host.failed == 1 and host.changed == 0
    assert host.errors == [
        "kubernetes_node: Assert the artifact source has the Kubernetes binaries: kubernetes_node: kubeadm, kubelet, "
        f"kubectl not found in artifact source 'distro' (looked in: Debian packages on {NODE}): Debian 12 does not "
        "package them; set runtimes.artifacts: release to install checksum-verified release binaries"
    ]
    # Nothing after the check ran: no kubelet unit was delivered.
    assert lab.lab.exec(NODE, ["test", "-e", "/etc/systemd/system/kubelet.service"], check=False).returncode != 0
