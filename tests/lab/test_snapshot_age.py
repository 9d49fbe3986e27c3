"""etcd snapshots are age files; the restore playbook refuses one that fails authentication."""
import subprocess
import sys
from pathlib import Path

import pytest

from hardened_cluster import resources
from hardened_cluster.deliver.ansible import _environment
from hardened_cluster.deliver.converge import converge
from live_cluster import etcdctl

pytestmark = pytest.mark.lab

PHASES = ["hosts", "etcd"]
ETCD = ("etcd-1", "etcd-2", "etcd-3")


@pytest.fixture(scope="module")
def applied(lab_spec, lab_state):
    result, _ = converge(lab_spec, check=False, phases=PHASES, state=lab_state)
    assert result.succeeded
    return result


def _sh(lab, node, script, check=True):
    return lab.lab.exec(node, ["sh", "-c", script], check=check)


def _member_state(lab, spec, node):
    """What a restore would change: etcd's start time, the data dirs beside it, the test key."""
    started = _sh(lab, node, "systemctl show -p ActiveState,ExecMainStartTimestamp etcd").stdout.decode()
    dirs = _sh(lab, node, "ls -d /var/lib/etcd* /var/lib/etcd-restore 2>/dev/null; true").stdout.decode()
    value = lab.lab.exec(node, etcdctl(spec) + ["get", "hc-age-test", "--print-value-only"]).stdout.decode().strip()
    return started, dirs, value


def test_snapshot_is_age_and_tampered_one_is_refused_by_restore(applied, lab, lab_spec, lab_state):
    lab.lab.exec("etcd-1", etcdctl(lab_spec.spec) + ["put", "hc-age-test", "before-snapshot"])
    lab.lab.exec("etcd-1", ["systemctl", "start", "etcd-snapshot.service"])
    snapshot = _sh(lab, "etcd-1", "ls -1t /var/backups/etcd/etcd-*.db.age | head -1").stdout.decode().strip()
    assert snapshot, "the timer's service wrote no .db.age snapshot"
    assert _sh(lab, "etcd-1", f"head -c 21 {snapshot}").stdout == b"age-encryption.org/v1"
    # The untouched snapshot decrypts with the node's key into a database etcdutl can read.
    _sh(lab, "etcd-1", f"age -d -i /etc/etcd/snapshot.key -o /tmp/hc-age.db {snapshot} && "
                       "ETCDCTL_API=3 etcdctl snapshot status /tmp/hc-age.db >/dev/null; rm -f /tmp/hc-age.db")

    # One byte flipped inside the encrypted payload, the checksum sidecar rewritten to match.
    name = snapshot.rsplit("/", 1)[1]
    _sh(lab, "etcd-1", f"""python3 - {snapshot} <<'PY'
import sys
path = sys.argv[1]
data = bytearray(open(path, 'rb').read())
data[len(data) // 2] ^= 0x01
open(path, 'wb').write(data)
PY
cd /var/backups/etcd && sha256sum {name} > {name}.sha256""")
    before = {n: _member_state(lab, lab_spec.spec, n) for n in ETCD}

    run = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(lab_state / "inventory.yml"),
         str(resources.PLAYBOOKS / "etcd-restore.yml"), "-e", f"etcd_restore_snapshot={name}"],
        env=_environment(lab_state, 5), capture_output=True, text=True, timeout=300, check=False)
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert f"{snapshot} failed authentication with /etc/etcd/snapshot.key" in out, out
    assert "Nothing was stopped or restored" in out, out
    assert "Stop etcd on every member" not in out, out
    # Nothing restored: every member still runs the same etcd process on the same data, the key intact,
    # and the restore left no decrypted copy behind.
    after = {n: _member_state(lab, lab_spec.spec, n) for n in ETCD}
    assert after == before
    assert all(state[2] == "before-snapshot" for state in after.values()), after
    assert all("restore" not in state[1] for state in after.values()), after
    _sh(lab, "etcd-1", f"rm -f {snapshot} {snapshot}.sha256")
