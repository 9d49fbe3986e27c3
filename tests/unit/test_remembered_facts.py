"""A run limited to some hosts renders the others with what the last preflight found there."""
import stat
from pathlib import Path

from hardened_cluster.deliver.preflight import remember_facts, remembered_facts, unknown_hosts
from hardened_cluster.plan.render import HostFacts
from hardened_cluster.spec.load import load_spec

SAMPLE = Path(__file__).resolve().parents[2] / "inventories" / "sample" / "cluster.yaml"


def test_hosts_not_asked_keep_their_last_facts_and_new_ones_are_asked(tmp_path):
    loaded = load_spec(SAMPLE)
    names = [n.name for n in loaded.spec.nodes]
    assert unknown_hosts(loaded, tmp_path, ["cp-1"]) == [n for n in names if n != "cp-1"]

    first = {n: HostFacts(kata_capable=n == "worker-1") for n in names}
    assert remember_facts(loaded, tmp_path, first) == first
    assert stat.S_IMODE((tmp_path / "facts.json").stat().st_mode) == 0o600
    assert unknown_hosts(loaded, tmp_path, ["cp-1"]) == []

    # Only cp-1 asked now: the workers keep what was found before, cp-1 takes what it answers.
    again = remember_facts(loaded, tmp_path, {"cp-1": HostFacts(kata_capable=True, controller_address="10.0.0.9")})
    assert again["worker-1"].kata_capable and not again["worker-2"].kata_capable
    assert again["cp-1"] == HostFacts(kata_capable=True, controller_address="10.0.0.9")
    assert remembered_facts(tmp_path) == again
