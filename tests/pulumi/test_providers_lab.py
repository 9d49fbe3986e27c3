"""The tier providers called directly against the lab, with inputs made the way HardenedCluster makes
them: create converges real nodes, diff stays quiet when nothing changed, read sees a tampered file,
delete of the etcd tier stops etcd."""
from __future__ import annotations

import pytest
import yaml
from hc_pulumi_mocks import REPO

from hardened_cluster.pulumi.component import TIERS, render
from hardened_cluster.pulumi.providers import ClusterSecretsProvider, EtcdTierProvider, HostsTierProvider, effective_spec, load

pytestmark = pytest.mark.lab

LAB_SPEC = REPO / "inventories" / "lab" / "cluster.yaml"
PROVIDERS = {"hosts": HostsTierProvider, "etcd": EtcdTierProvider}
DROP_IN = "/etc/ssh/sshd_config.d/10-hardened-cluster.conf"


@pytest.fixture(scope="module")
def inputs(lab, bundle, tmp_path_factory) -> dict[str, dict]:
    """The lab spec names the offline bundle: without one, these tests skip (the bundle fixture says why)."""
    doc = yaml.safe_load(LAB_SPEC.read_text())
    doc["ssh"]["known_hosts"] = str(lab.known_hosts)
    keys = [{"name": k["name"], "secret": k["secret"]} for k in doc["encryption"]["keys"]]
    secrets = ClusterSecretsProvider().create({
        "spec": doc, "spec_path": str(LAB_SPEC), "supplied": {}, "rotate": "", "encryption_keys": keys,
        "snapshot_ref": doc["etcd"]["snapshot"]["encryption_key"]}).outs
    spec = effective_spec(doc, secrets["encryption_keys"], secrets.get("snapshot_ref"))
    hashes = render(spec, str(LAB_SPEC), secrets["bundle"])["hashes"]
    loaded = load(spec, str(LAB_SPEC))
    reports = tmp_path_factory.mktemp("reports")
    return {t.name: {"tier": t.name, "phase": t.phase, "hosts": t.hosts(loaded.spec), "spec": spec,
                     "spec_path": str(LAB_SPEC), "secrets": secrets["bundle"], "hashes": hashes[t.name],
                     "report_dir": str(reports)}
            for t in TIERS if t.name in PROVIDERS}


@pytest.fixture(scope="module")
def created(inputs) -> dict[str, tuple[str, dict]]:
    # Earlier lab tests may have left etcd running with other certificates: start from no cluster.
    EtcdTierProvider().teardown(inputs["etcd"], inputs["etcd"]["hosts"], destroy=True)
    out = {}
    for name in ("hosts", "etcd"):  # in the component's order
        result = PROVIDERS[name]().create(inputs[name])
        out[name] = (result.id, result.outs)
    return out


def _active(lab, node: str, unit: str) -> str:
    return lab.lab.exec(node, ["systemctl", "is-active", unit], check=False).stdout.decode().strip()


def test_create_converges_the_hosts_and_etcd_tiers(lab, inputs, created):
    for name, (_, outs) in created.items():
        assert outs["hashes"] == inputs[name]["hashes"]
        assert set(outs["changed"]) == set(inputs[name]["hosts"])
    for node in inputs["hosts"]["hosts"]:
        lab.lab.exec(node, ["test", "-f", DROP_IN])
    for node in inputs["etcd"]["hosts"]:
        assert _active(lab, node, "etcd.service") == "active"


def test_diff_is_empty_when_nothing_changed(inputs, created):
    for name, (id_, outs) in created.items():
        provider = PROVIDERS[name]()
        assert provider.diff(id_, outs, inputs[name]).changes is False
        refreshed = provider.read(id_, outs).outs
        assert refreshed["hashes"] == inputs[name]["hashes"], f"{name}: drift right after create"
        assert provider.diff(id_, refreshed, inputs[name]).changes is False


def test_read_reports_a_tampered_file_and_update_corrects_it(lab, inputs, created):
    id_, outs = created["hosts"]
    provider = HostsTierProvider()
    lab.lab.exec("worker-1", ["sh", "-c", f"echo '# x' >> {DROP_IN}"])
    refreshed = provider.read(id_, outs).outs
    assert refreshed["hashes"]["worker-1"].startswith("drifted:")
    assert DROP_IN in refreshed["hashes"]["worker-1"]
    assert {h for h, v in refreshed["hashes"].items() if v != inputs["hosts"]["hashes"][h]} == {"worker-1"}
    assert provider.diff(id_, refreshed, inputs["hosts"]).changes is True
    updated = provider.update(id_, refreshed, inputs["hosts"]).outs
    assert updated["changed"]["worker-1"] > 0
    assert "# x" not in lab.lab.exec("worker-1", ["cat", DROP_IN]).stdout.decode()
    assert provider.read(id_, updated).outs["hashes"] == inputs["hosts"]["hashes"]


def test_deleting_the_etcd_tier_stops_etcd_and_wipes_its_data(lab, inputs, created):
    id_, outs = created["etcd"]
    EtcdTierProvider().delete(id_, outs)
    data_dir = inputs["etcd"]["spec"].get("etcd", {}).get("data_dir", "/var/lib/etcd")
    for node in inputs["etcd"]["hosts"]:
        assert _active(lab, node, "etcd.service") != "active"
        assert lab.lab.exec(node, ["test", "-e", data_dir], check=False).returncode != 0
