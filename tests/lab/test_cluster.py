"""Host hardening, firewall and external etcd on the lab: apply, verify from outside, drift, recovery.

The tests run in file order against one converged lab; each leaves the cluster converged.
"""
import base64
import shlex
import shutil
import subprocess
import sys
import threading
import time

import paramiko
import pyrage
import pytest
import yaml

import live_cluster
from hardened_cluster.cli.demo import run_outside
from hardened_cluster.deliver.converge import converge
from hardened_cluster.errors import DeliveryError
from hardened_cluster.spec.load import load_spec
from hardened_cluster.verify.probes import etcd_health, scan

pytestmark = pytest.mark.lab

PHASES = ["hosts", "etcd"]
PEER_FAILURES = ("rejected connection", "failed to dial", "lost TCP streaming connection", "prober detected unhealthy",
                 "failed to reach the peer URL", "remote error: tls")


class Output:
    """Everything apply and drift printed during the session, for the leak scan."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


@pytest.fixture(scope="module")
def output():
    return Output()


@pytest.fixture(scope="module")
def applied(lab_spec, lab_state, output):
    result, report = converge(lab_spec, check=False, phases=PHASES, state=lab_state, progress=output)
    output.lines.append(report.read_text())
    return result


def _converge(lab_spec, lab_state, output, check, full=False, hosts=None):
    result, report = converge(lab_spec, check=check, phases=PHASES, state=lab_state, progress=output, full=full,
                              hosts=hosts)
    output.lines.append(report.read_text())
    return result


def etcdctl(lab, spec, node, *args, cert=True, check=True):
    return lab.lab.exec(node, live_cluster.etcdctl(spec, client_cert=cert) + list(args), check=check)


def wait_healthy(lab_spec, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        health = etcd_health(lab_spec)
        if len(health) == 3 and all(h.get("health") in (True, "true") for h in health):
            return health
        if time.monotonic() > deadline:
            raise AssertionError(f"etcd not healthy: {health}")
        time.sleep(1)


def test_first_apply_converges_every_host(applied):
    assert applied.succeeded, {h: r.errors for h, r in applied.hosts.items()}
    assert set(applied.hosts) == {"etcd-1", "etcd-2", "etcd-3", "cp-1", "worker-1", "worker-2"}
    assert all(r.changed > 0 for r in applied.hosts.values())


def test_no_login_runs_dynamic_motd_scripts(applied, lab, lab_spec):
    """Debian's pam_motd runs /etc/update-motd.d as root at every login; its stock script shows the kernel."""
    for node in lab_spec.spec.nodes:
        assert lab.lab.exec(node.name, ["test", "-e", "/etc/update-motd.d"], check=False).returncode == 1, node.name


def test_etcd_cluster_healthy_over_mutual_tls(applied, lab_spec):
    health = wait_healthy(lab_spec)
    assert sorted(h["endpoint"] for h in health) == [f"https://10.231.0.1{i}:2379" for i in (1, 2, 3)]


def test_etcd_refuses_client_without_certificate(applied, lab, lab_spec):
    refused = etcdctl(lab, lab_spec.spec, "etcd-1", "endpoint", "health", cert=False, check=False)
    assert refused.returncode != 0
    ok = etcdctl(lab, lab_spec.spec, "etcd-1", "endpoint", "health", check=False)
    assert ok.returncode == 0, ok.stderr


def test_no_peer_connection_failures_in_journal(applied, lab, lab_spec):
    wait_healthy(lab_spec)
    # From the next whole second: the journal's --since has one-second steps, and the test before
    # this one made a refused client connection on purpose.
    since = lab.lab.exec("etcd-1", ["date", "-d", "+1 second", "+%Y-%m-%d %H:%M:%S"]).stdout.decode().strip()
    time.sleep(5)  # heartbeats flow both ways many times over
    for member in ("etcd-1", "etcd-2", "etcd-3"):
        journal = lab.lab.exec(member, ["journalctl", "-u", "etcd", "--since", since, "--no-pager", "-o", "cat"])
        text = journal.stdout.decode()
        assert not [p for p in PEER_FAILURES if p in text], f"{member}: {text[-2000:]}"


def test_port_scans_match_the_matrix(applied, lab, lab_spec):
    worker = lab_spec.spec.node("worker-1")
    from_worker = scan(lab_spec, "10.231.0.31", via_node=worker)
    from_outside = scan(lab_spec, lab.lab.outsider_address, runner=lambda argv: run_outside(lab.lab, argv))
    from_admin = scan(lab_spec, lab.lab.controller_address)
    for probes in (from_worker, from_outside, from_admin):
        wrong = [p for p in probes if not p.as_expected]
        assert not wrong, wrong
    etcd_from_worker = [p for p in from_worker if p.node.startswith("etcd") and p.port in (2379, 2380)]
    assert etcd_from_worker and all(p.state == "filtered" for p in etcd_from_worker)
    assert all(p.state == "filtered" for p in from_outside)
    assert {p.node for p in from_admin if p.port == 22 and p.passes} == {n.name for n in lab_spec.spec.nodes}


def test_ssh_refuses_password_authentication(applied, lab, lab_spec):
    node = lab_spec.spec.node("cp-1")
    transport = paramiko.Transport((str(node.address), 22))
    try:
        transport.start_client(timeout=10)
        assert transport.get_remote_server_key().get_base64() == lab_spec.host_keys["cp-1"].split()[1]
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            transport.auth_password(lab.lab.admin_user, "hcadmin-lab")
        assert refused.value.allowed_types == ["publickey"]
    finally:
        transport.close()


def test_second_apply_changes_nothing(applied, lab_spec, lab_state, output):
    again = _converge(lab_spec, lab_state, output, check=False)
    assert again.succeeded
    assert {h: r.changed for h, r in again.hosts.items()} == {h: 0 for h in again.hosts}
    # Every host still matches its fingerprint; the full run proves nothing was hidden by that.
    assert all(r.unchanged for r in again.hosts.values())
    full, report = converge(lab_spec, check=False, phases=PHASES, state=lab_state, progress=output, full=True)
    output.lines.append(report.read_text())
    assert full.succeeded and not any(r.unchanged for r in full.hosts.values())
    assert {h: r.changed for h, r in full.hosts.items()} == {h: 0 for h in full.hosts}


TAMPERS = {
    "etcd-config": ("etcd-2", "echo '# tampered' >> /etc/etcd/etcd.conf.yml", "/etc/etcd/etcd.conf.yml"),
    "key-mode": ("etcd-1", "chmod 0644 /etc/etcd/pki/server.key", "server.key"),
    "nft-flush": ("worker-1", "nft flush ruleset", "nftables"),
    "etcd-stopped": ("etcd-3", "systemctl stop etcd", "etcd"),
    "net-sysctl": ("cp-1", "sysctl -qw net.ipv4.conf.all.log_martians=0", "net.ipv4.conf.all.log_martians"),
    "sshd-dropin": ("worker-2", "echo '# tampered' >> /etc/ssh/sshd_config.d/10-hardened-cluster.conf",
                    "/etc/ssh/sshd_config.d/10-hardened-cluster.conf"),
    "dynamic-motd": ("worker-1", "mkdir /etc/update-motd.d && printf '#!/bin/sh\\nuname -a\\n' > /etc/update-motd.d/10-uname"
                     " && chmod 0755 /etc/update-motd.d/10-uname", "pam_motd"),
}


@pytest.mark.parametrize("scenario", list(TAMPERS))
def test_drift_reports_tampering_and_apply_fixes_it(scenario, applied, lab, lab_spec, lab_state, output):
    host, command, evidence = TAMPERS[scenario]
    lab.lab.exec(host, ["sh", "-c", command])
    drift = _converge(lab_spec, lab_state, output, check=True)
    assert drift.succeeded
    drifted = {h for h, r in drift.hosts.items() if r.changed}
    assert drifted == {host}, {h: [c.describe() for c in r.changes] for h, r in drift.hosts.items()}
    described = " ".join(c.describe() for c in drift.hosts[host].changes) + " " + " ".join(
        str(c) for c in drift.hosts[host].changes)
    assert evidence in described, described
    if scenario == "etcd-stopped":
        # The snapshot timer may fire meanwhile (hourly in the lab): it must not start the member again.
        snapshot = lab.lab.exec(host, ["systemctl", "start", "etcd-snapshot.service"], check=False)
        active = lab.lab.exec(host, ["systemctl", "is-active", "etcd"], check=False).stdout.decode().strip()
        assert snapshot.returncode != 0 and active == "inactive", (snapshot.returncode, active)
    fixed = _converge(lab_spec, lab_state, output, check=False)
    assert fixed.succeeded and fixed.hosts[host].changed > 0
    # Check mode of every role on the tampered host, not the rerun shortcut's fingerprint (the others were
    # left alone: the drift above found them unchanged).
    clean = _converge(lab_spec, lab_state, output, check=True, full=True, hosts=[host])
    assert clean.succeeded and set(clean.hosts) == {host} and not clean.hosts[host].unchanged
    assert clean.hosts[host].changed == 0, [c.describe() for c in clean.hosts[host].changes]
    if scenario.startswith("etcd"):
        wait_healthy(lab_spec)


def test_killing_a_member_during_apply_keeps_quorum(applied, lab, lab_spec, lab_state, output):
    lab.lab.exec("etcd-2", ["sh", "-c", "echo '# force a rolling restart' >> /etc/etcd/etcd.conf.yml"])
    killed = threading.Event()

    def progress(line):
        output(line)
        if not killed.is_set() and line.startswith("TASK etcd :"):
            killed.set()
            lab.lab.exec("etcd-3", ["systemctl", "kill", "--signal=KILL", "etcd"], check=False)

    result_box = {}
    worker = threading.Thread(target=lambda: result_box.setdefault(
        "r", converge(lab_spec, check=False, phases=PHASES, state=lab_state, progress=progress)))
    worker.start()
    assert killed.wait(120), "apply never reached the etcd role"
    for i in range(5):  # the two remaining members keep serving writes
        put = etcdctl(lab, lab_spec.spec, "etcd-1", "put", f"quorum-{i}", "ok", check=False)
        assert put.returncode == 0, put.stderr
        time.sleep(0.5)
    worker.join(300)
    assert not worker.is_alive()
    rerun = _converge(lab_spec, lab_state, output, check=False)
    assert rerun.succeeded
    wait_healthy(lab_spec)
    assert etcdctl(lab, lab_spec.spec, "etcd-3", "get", "quorum-4", "--print-value-only").stdout.decode().strip() == "ok"


def test_timer_snapshot_restores_into_new_data_dir(applied, lab, lab_spec):
    assert lab.lab.exec("etcd-1", ["systemctl", "is-enabled", "etcd-snapshot.timer"]).stdout.decode().strip() == "enabled"
    etcdctl(lab, lab_spec.spec, "etcd-1", "put", "hc-snapshot-test", "written-before")
    lab.lab.exec("etcd-1", ["systemctl", "start", "etcd-snapshot.service"])
    listing = lab.lab.exec("etcd-1", ["sh", "-c", "ls -1t /var/backups/etcd/etcd-*.db.age | head -1"])
    snapshot = listing.stdout.decode().strip()
    mode = lab.lab.exec("etcd-1", ["stat", "-c", "%a", snapshot]).stdout.decode().strip()
    assert mode == "600"
    restore = f"""set -e
rm -rf /tmp/restore && mkdir -p /tmp/restore && cd /tmp/restore
cd /var/backups/etcd && sha256sum -c {snapshot.rsplit('/', 1)[1]}.sha256 >/dev/null && cd /tmp/restore
age --decrypt --identity /etc/etcd/snapshot.key --output snap.db {snapshot}
# etcdutl restores from etcd 3.5 on (3.6 dropped `etcdctl snapshot restore`); Debian's 3.4 has only etcdctl.
ETCDCTL_API=3 $(command -v etcdutl || command -v etcdctl) snapshot restore snap.db --name restored --data-dir /tmp/restore/data \
  --initial-cluster restored=http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 >/dev/null
etcd --name restored --data-dir /tmp/restore/data --listen-client-urls http://127.0.0.1:23790 \
  --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 \
  --initial-advertise-peer-urls http://127.0.0.1:23800 --initial-cluster restored=http://127.0.0.1:23800 \
  >/tmp/restore/etcd.log 2>&1 &
pid=$!
for i in $(seq 50); do
  value=$(ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:23790 get hc-snapshot-test --print-value-only 2>/dev/null) && break
  sleep 0.2
done
kill $pid; wait $pid 2>/dev/null || true
rm -rf /tmp/restore
echo "$value"
"""
    value = lab.lab.exec("etcd-1", ["sh", "-c", restore]).stdout.decode().strip()
    assert value == "written-before"


def test_changed_host_key_stops_apply_before_any_change(applied, lab, lab_spec, lab_state, tmp_path):
    lab.lab.exec("worker-2", ["sh", "-c", "echo '# left alone' >> /etc/ssh/sshd_config.d/10-hardened-cluster.conf"])
    shutil.copy(lab_spec.path, tmp_path / "cluster.yaml")
    fake = _fresh_key(tmp_path)
    lines = (lab_spec.path.parent / "known_hosts").read_text().splitlines()
    (tmp_path / "known_hosts").write_text("\n".join(
        f"10.231.0.11 {fake}" if "10.231.0.11" in line.split()[0].split(",") else line for line in lines) + "\n")
    changed_spec = load_spec(tmp_path / "cluster.yaml")
    with pytest.raises(DeliveryError, match="etcd-1.*does not match the pinned"):
        converge(changed_spec, check=False, phases=PHASES, state=lab_state)
    still = lab.lab.exec("worker-2", ["tail", "-1", "/etc/ssh/sshd_config.d/10-hardened-cluster.conf"])
    assert still.stdout.decode().strip() == "# left alone"
    assert converge(lab_spec, check=False, phases=PHASES, state=lab_state)[0].succeeded


def _fresh_key(tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    return " ".join((tmp_path / "k.pub").read_text().split()[:2])


PLANTED_ENCRYPTION_KEY = base64.b64encode(b"hc-planted-encryption-key-32byte").decode()
NODE_TREES = "/etc /var /usr/local /root /home /tmp /run"


def _cli(command, spec_path, env, *extra):
    return subprocess.run([sys.executable, "-m", "hardened_cluster.cli.main", command, "--spec", str(spec_path),
                           "--phases", ",".join(PHASES), *extra], capture_output=True, text=True, env=env, timeout=900)


def test_cli_drift_is_clean_and_nothing_secret_was_printed(applied, lab, lab_spec, lab_state, output, tmp_path):
    # Known values, planted through the spec's own references: a snapshot identity from a file and an
    # encryption key from the environment. The test knows them; it does not ask the code what is secret.
    planted_identity = str(pyrage.x25519.Identity.generate())
    key_file = tmp_path / "planted-snapshot.key"
    key_file.touch(mode=0o600)
    key_file.write_text(planted_identity + "\n")
    doc = yaml.safe_load(lab_spec.path.read_text())
    doc["etcd"]["snapshot"]["encryption_key"] = {"file": str(key_file)}
    doc["encryption"]["keys"][0]["secret"] = {"env": "HC_PLANTED_ENCRYPTION_KEY"}
    spec_path = tmp_path / "cluster.yaml"
    spec_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    shutil.copy(lab_spec.path.parent / "known_hosts", tmp_path / "known_hosts")
    planted = [planted_identity, PLANTED_ENCRYPTION_KEY, planted_identity.split("1", 1)[1][:24]]
    env = {"HC_STATE_DIR": str(lab_state.parent), "PATH": f"{sys.prefix}/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HC_PLANTED_ENCRYPTION_KEY": PLANTED_ENCRYPTION_KEY}
    try:
        applied_cli = _cli("apply", spec_path, env, "--full")
        assert applied_cli.returncode == 0, applied_cli.stdout + applied_cli.stderr
        # Every role in check mode on every host, with the planted keys in place: nothing would change.
        cli = _cli("drift", spec_path, env, "--full")
        assert cli.returncode == 0, cli.stdout + cli.stderr
        hosts = [line.split() for line in cli.stdout.splitlines() if line.split()[:1] and line.split()[0] in
                 {n.name for n in lab_spec.spec.nodes}]
        assert hosts and all(h[1] == "ok" and "would_change=0" in h for h in hosts), cli.stdout
        # The planted identity really is the one on the etcd members (so the scan below looks at real use).
        on_node = lab.lab.exec("etcd-1", ["cat", "/etc/etcd/snapshot.key"]).stdout.decode().strip()
        assert on_node == planted_identity

        texts = output.lines + [applied_cli.stdout, applied_cli.stderr, cli.stdout, cli.stderr]
        texts += [p.read_text(errors="replace") for p in (lab_state / "reports").glob("*.json")]
        texts += [p.read_text(errors="replace") for p in (lab_state / "runner").rglob("*") if p.is_file()]
        corpus = "\n".join(texts)
        assert "PRIVATE KEY" not in corpus
        assert [v for v in planted if v in corpus] == []
        # Controller: every file holding a planted value is readable by its owner only.
        for root in (lab_state, tmp_path):
            for path in (p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
                if any(v.encode() in path.read_bytes() for v in planted):
                    assert path.stat().st_mode & 0o077 == 0, f"{path} holds a planted secret and is {path.stat().st_mode:o}"
        # Nodes: not in the journal, and only in files no one but their owner can read.
        pattern = " ".join(f"-e {shlex.quote(v)}" for v in planted)
        for node in lab_spec.spec.nodes:
            journal = lab.lab.exec(node.name, ["sh", "-c", f"journalctl -q --no-pager | grep -cF {pattern}"], check=False)
            assert journal.stdout.decode().strip() == "0", f"{node.name}: a planted secret is in the journal"
            found = lab.lab.exec(node.name, ["sh", "-c", f"grep -rlsF {pattern} {NODE_TREES} | xargs -r stat -c '%a %U %n'"],
                                 check=False).stdout.decode().split("\n")
            loose = [f for f in found if f and int(f.split()[0], 8) & 0o077]
            assert not loose, f"{node.name}: {loose}"
    finally:
        restored, _ = converge(lab_spec, check=False, phases=PHASES, state=lab_state, progress=output, full=True)
        assert restored.succeeded
