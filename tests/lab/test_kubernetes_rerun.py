"""After every other cluster test (tests/conftest.py orders this module after them): a full rerun of every
phase, every role on every host without the rerun shortcut, changes nothing anywhere. So each module
before it restored what it changed, and a converged cluster is a fixed point of apply.
"""
from __future__ import annotations

import pytest

from live_cluster import apply

pytestmark = pytest.mark.lab


def test_a_full_rerun_of_every_phase_changes_nothing_on_any_host(lab, lab_spec, lab_state, bundle):
    # Brought up first only when this module runs alone: after the other modules, an apply before the
    # full one would put right what they left changed, and hide it.
    if not (lab_state / "admin.conf").exists():
        apply(lab_spec, lab_state)
    result = apply(lab_spec, lab_state, full=True)
    assert set(result.hosts) == {n.name for n in lab_spec.spec.nodes}
    assert "kubernetes" in result.phases and "objects" in result.phases
    assert not any(r.unchanged for r in result.hosts.values())
    assert {h: [c.describe() for c in r.changes] for h, r in result.hosts.items() if r.changed} == {}
