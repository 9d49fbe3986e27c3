"""What apply does with a changed membership (hardened_cluster.deliver.membership): the spec of the last apply is
kept whole, workers that left are named, and etcd or control-plane changes are refused by node."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hardened_cluster.deliver import membership
from hardened_cluster.errors import SpecError
from hardened_cluster.spec.load import load_spec, parse_spec

SAMPLE = Path(__file__).resolve().parents[2] / "inventories" / "sample" / "cluster.yaml"


def variant(change) -> object:
    data = yaml.safe_load(SAMPLE.read_text())
    change(data)
    return parse_spec(data, SAMPLE)


def without(*names):
    def change(data):
        data["nodes"] = [n for n in data["nodes"] if n["name"] not in names]
        for runtime in ("gvisor", "kata"):
            data["runtimes"][runtime]["nodes"] = [n for n in data["runtimes"][runtime]["nodes"] if n not in names]
    return change


def with_etcd(*names):
    return lambda data: data["nodes"].extend(
        {"name": name, "address": f"10.20.0.{14 + i}", "roles": ["etcd"], "ssh": data["nodes"][0]["ssh"]}
        for i, name in enumerate(names))


def test_the_applied_spec_is_kept_whole_and_private(tmp_path):
    loaded = load_spec(SAMPLE)
    membership.remember(loaded, tmp_path)
    assert (tmp_path / membership.APPLIED_SPEC).stat().st_mode & 0o777 == 0o600
    kept = membership.applied(tmp_path)
    assert kept.spec == loaded.spec and kept.host_keys == loaded.host_keys and kept.path == loaded.path
    assert membership.applied(tmp_path / "nothing") is None


def test_a_worker_that_left_is_named_and_new_workers_and_control_planes_are_allowed():
    previous = load_spec(SAMPLE)
    fewer = variant(without("worker-2"))
    assert [n.name for n in membership.departed(previous, fewer)] == ["worker-2"]
    membership.refuse_unsupported(previous, fewer)
    # Coming back is a new worker: allowed.
    membership.refuse_unsupported(fewer, previous)
    assert membership.departed(fewer, previous) == []
    assert membership.departed(None, fewer) == []
    # A control plane joining later (kubeadm join with the certificate upload).
    membership.refuse_unsupported(variant(without("cp-3")), previous)


@pytest.mark.parametrize("before, after, key, words", [
    (with_etcd("etcd-4", "etcd-5"), None, "nodes", "etcd-5 (etcd) is no longer in the spec"),
    (None, without("cp-3"), "nodes", "cp-3 (control-plane) is no longer in the spec"),
    (None, with_etcd("etcd-4", "etcd-5"), "nodes[10]", "etcd-5 is a new etcd member"),
    (None, lambda d: d["nodes"][5].update(roles=["worker"]), "nodes[5].roles",
     "cp-3 loses the control-plane role since the last apply"),
    (None, lambda d: d["nodes"].insert(3, d["nodes"].pop(4)), "nodes",
     "the first control plane is cp-2, but kubeadm initialised the cluster on cp-1"),
])
def test_an_etcd_or_control_plane_change_is_refused_by_node(before, after, key, words):
    previous = variant(before) if before else load_spec(SAMPLE)
    with pytest.raises(SpecError) as raised:
        membership.refuse_unsupported(previous, variant(after) if after else load_spec(SAMPLE))
    issues = {i.path: i.message for i in raised.value.issues}
    assert words in issues[key], issues
