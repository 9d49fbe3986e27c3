"""The restore playbook's success path on the lab's etcd 3.6 (from the bundle, so `etcdutl snapshot restore`):
a timer snapshot is restored onto all three members, which then hold what the snapshot held and nothing
written after it. (tests/lab/test_snapshot_age.py proves a tampered snapshot is refused.)

Sorted before the modules that start Kubernetes: restoring under a running kube-apiserver needs it stopped.
"""
import subprocess
import sys
from pathlib import Path

import pytest

from hardened_cluster import resources
from hardened_cluster.deliver.ansible import _environment
from hardened_cluster.deliver.converge import converge

pytestmark = pytest.mark.lab

PHASES = ["hosts", "etcd"]
ETCD = ("etcd-1", "etcd-2", "etcd-3")


@pytest.fixture(scope="module")
def applied(lab_spec, lab_state):
    result, _ = converge(lab_spec, check=False, phases=PHASES, state=lab_state)
    assert result.succeeded, {h: r.errors for h, r in result.hosts.items()}
    return result


def _sh(lab, node, script, check=True) -> str:
    return lab.lab.exec(node, ["sh", "-c", script], check=check).stdout.decode().strip()


def _etcdctl(lab_spec, *args) -> str:
    """etcdctl against the member's own client port, with the health-check client certificate."""
    return " ".join([f"ETCDCTL_API=3 {lab_spec.spec.etcd_bin_dir}/etcdctl", "--endpoints=https://127.0.0.1:2379",
                     "--cacert=/etc/etcd/pki/ca.crt", "--cert=/etc/etcd/pki/healthcheck-client.crt",
                     "--key=/etc/etcd/pki/healthcheck-client.key", *args])


def test_restore_brings_every_member_back_to_the_snapshot(applied, lab, lab_spec, lab_state):
    bin_dir, data_dir = lab_spec.spec.etcd_bin_dir, str(lab_spec.spec.etcd.data_dir)
    assert "etcd Version: 3.6." in _sh(lab, "etcd-1", f"{bin_dir}/etcd --version")
    # 3.6's etcdctl only saves snapshots (its `snapshot` lists no other command): etcdutl restores.
    assert "etcdutl version: 3.6." in _sh(lab, "etcd-1", f"{bin_dir}/etcdutl version")
    _sh(lab, "etcd-1", _etcdctl(lab_spec, "put", "hc-restore-test", "before-snapshot"))
    _sh(lab, "etcd-1", "systemctl start etcd-snapshot.service")
    snapshot = _sh(lab, "etcd-1", "ls -1t /var/backups/etcd/etcd-*.db.age | head -1")
    assert snapshot, "the timer's service wrote no .db.age snapshot"
    # Written after the snapshot: the restore must take both back.
    _sh(lab, "etcd-1", _etcdctl(lab_spec, "put", "hc-restore-test", "after-snapshot"))
    _sh(lab, "etcd-1", _etcdctl(lab_spec, "put", "hc-restore-later", "written-after"))
    assert _sh(lab, "etcd-3", _etcdctl(lab_spec, "get", "hc-restore-test", "--print-value-only")) == "after-snapshot"
    pids = {n: _sh(lab, n, "systemctl show -p MainPID --value etcd") for n in ETCD}

    run = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(lab_state / "inventory.yml"),
         str(resources.PLAYBOOKS / "etcd-restore.yml"), "-e", f"etcd_restore_snapshot={snapshot.rsplit('/', 1)[1]}"],
        env=_environment(lab_state, 5), capture_output=True, text=True, timeout=600, check=False)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert f"Restored {snapshot} on etcd-1, etcd-2, etcd-3" in out, out[-4000:]

    for node in ETCD:
        # Each member answers from its own restored data, not only the first one.
        assert _sh(lab, node, _etcdctl(lab_spec, "get", "hc-restore-test", "--print-value-only")) == "before-snapshot"
        assert _sh(lab, node, _etcdctl(lab_spec, "get", "hc-restore-later", "--print-value-only")) == ""
        assert _sh(lab, node, "systemctl show -p MainPID --value etcd") not in ("0", pids[node])
        assert _sh(lab, node, f"stat -c '%a %U %G' {data_dir}") == "700 etcd etcd"
        # The old data kept aside, the decrypted copy gone, the timer running again.
        assert _sh(lab, node, f"ls -d {data_dir}.pre-restore-*/member")
        assert _sh(lab, node, "test -e /var/lib/etcd-restore || echo gone", check=False) == "gone"
        assert _sh(lab, node, "systemctl is-active etcd-snapshot.timer") == "active"
    members = _sh(lab, "etcd-1", _etcdctl(lab_spec, "member", "list"))
    assert sorted(line.split(", ")[2] for line in members.splitlines()) == list(ETCD)
    assert all(line.split(", ")[1] == "started" for line in members.splitlines()), members
    _sh(lab, "etcd-1", _etcdctl(lab_spec, "endpoint", "health", "--cluster"))

    # The restored members are what the etcd role wants: drift of every role there, in check mode, finds nothing.
    clean, _ = converge(lab_spec, check=True, phases=PHASES, state=lab_state, full=True, hosts=list(ETCD))
    assert clean.succeeded and not clean.changed, {
        h: [c.describe() for c in r.changes] for h, r in clean.hosts.items() if r.changed}
    for node in ETCD:
        _sh(lab, node, f"rm -rf {data_dir}.pre-restore-*")
    _sh(lab, "etcd-1", f"rm -f {snapshot} {snapshot}.sha256")
