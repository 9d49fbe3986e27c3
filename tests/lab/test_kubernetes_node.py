"""kubernetes_node on a lab node whose artifact source (distro) has no Kubernetes binaries: one clear stop."""
from __future__ import annotations

import pytest

from hardened_cluster.deliver.ansible import run
from hardened_cluster.deliver.converge import plan_for, select_phases
from hardened_cluster.spec.load import load_spec

pytestmark = pytest.mark.lab

NODE = "worker-1"


@pytest.fixture
def distro_spec(lab_spec, distro_spec_text, tmp_path):
    (tmp_path / "cluster.yaml").write_text(distro_spec_text)
    (tmp_path / "known_hosts").write_text((lab_spec.path.parent / "known_hosts").read_text())
    return load_spec(tmp_path / "cluster.yaml")


def test_the_kubernetes_phase_runs_from_the_bundle_and_not_from_debian(lab_spec, distro_spec):
    assert "kubernetes" in select_phases(lab_spec.spec, None)[0]
    phases, skipped = select_phases(distro_spec.spec, None)
    assert "kubernetes" not in phases and "kubeadm, kubelet and kubectl" in skipped["kubernetes"]


def test_the_role_stops_first_naming_what_is_missing_and_where_it_looked(lab, distro_spec, lab_state):
    # core.select_phases leaves the phase out for distro; the role must still refuse on its own.
    plan = plan_for(distro_spec, lab_state, [NODE])
    result = run(plan, lab_state, phases=["kubernetes"], hosts=[NODE])

    host = result.hosts[NODE]
    assert not result.succeeded
    assert host.failed == 1 and host.changed == 0
    assert host.errors == [
        "kubernetes_node: Assert the artifact source has the Kubernetes binaries: kubernetes_node: kubeadm, kubelet, "
        f"kubectl not found in artifact source 'distro' (looked in: Debian packages on {NODE}): Debian 12 does not "
        "package them; set runtimes.artifacts: release to install checksum-verified release binaries"
    ]
