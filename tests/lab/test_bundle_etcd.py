"""etcd 3.6 from the offline bundle (the lab spec's source) replaces Debian's 3.4 on running members.

etcd upgrades one minor at a time: the apply steps every member through the bundle's 3.5, one member
at a time, then rolls them to 3.6, with the cluster serving writes throughout and no key lost. Runs
after the other cluster tests (tests/conftest.py orders it): it recreates etcd from empty first.
"""
from __future__ import annotations

import json
import threading
import time

import pytest

from hardened_cluster.deliver.converge import converge
from hardened_cluster.spec.load import load_spec
from live_cluster import wait_for

pytestmark = pytest.mark.lab

MEMBERS = ("etcd-1", "etcd-2", "etcd-3")
PHASES = ["hosts", "etcd"]
TLS = ["--cacert=/etc/etcd/pki/ca.crt", "--cert=/etc/etcd/pki/healthcheck-client.crt",
       "--key=/etc/etcd/pki/healthcheck-client.key"]
VERSION = """
import json, ssl, urllib.request
ctx = ssl.create_default_context(cafile="/etc/etcd/pki/ca.crt")
ctx.check_hostname = False
ctx.load_cert_chain("/etc/etcd/pki/healthcheck-client.crt", "/etc/etcd/pki/healthcheck-client.key")
print(urllib.request.urlopen("https://127.0.0.1:2379/version", context=ctx, timeout=5).read().decode())
"""


def etcdctl(lab, node, *args, binary="/usr/bin/etcdctl", endpoints="https://127.0.0.1:2379", check=True):
    argv = ["env", "ETCDCTL_API=3", binary, f"--endpoints={endpoints}", "--command-timeout=3s", *TLS, *args]
    return lab.lab.exec(node, argv, check=check, timeout=30)


def version(lab, node) -> dict:
    return json.loads(lab.lab.exec(node, ["python3", "-c", VERSION]).stdout)


@pytest.fixture
def debian_etcd(lab, lab_spec, lab_state, distro_spec_text, tmp_path):
    """A fresh etcd cluster of Debian's 3.4 on the etcd nodes, with one key written."""
    for node in MEMBERS:
        lab.lab.exec(node, ["sh", "-c", "systemctl stop etcd; rm -rf /var/lib/etcd/member "
                            "/usr/local/bin/etcd /usr/local/bin/etcdctl /usr/local/bin/etcdutl"])
    (tmp_path / "distro").mkdir()
    (tmp_path / "distro" / "cluster.yaml").write_text(distro_spec_text)
    (tmp_path / "distro" / "known_hosts").write_text((lab_spec.path.parent / "known_hosts").read_text())
    distro = load_spec(tmp_path / "distro" / "cluster.yaml")
    result, _ = converge(distro, check=False, phases=PHASES, state=lab_state, full=True)
    assert result.succeeded
    assert version(lab, "etcd-1")["etcdserver"].startswith("3.4.")
    etcdctl(lab, "etcd-1", "put", "written-before", "by-etcd-3.4")
    return distro


def test_bundle_etcd_replaces_debian_etcd_without_losing_quorum_or_data(lab, bundle, lab_spec, debian_etcd,
                                                                        lab_state):
    bundled = lab_spec
    endpoints = ",".join(f"https://{n.address}:2379" for n in bundled.spec.nodes_with("etcd"))

    written: list[tuple[float, str]] = []
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            key = f"during-{i}"
            if etcdctl(lab, "etcd-2", "put", key, str(i), endpoints=endpoints, check=False).returncode == 0:
                written.append((time.monotonic(), key))
            i += 1
            time.sleep(0.3)

    thread = threading.Thread(target=writer, daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        lines: list[str] = []
        result, _ = converge(bundled, check=False, phases=PHASES, state=lab_state, progress=lines.append)
    finally:
        stop.set()
        thread.join(timeout=30)
    finished = time.monotonic()
    assert result.succeeded, "\n".join(lines[-30:])
    # Each member went through 3.5 and on to the bundle's 3.6, one at a time.
    assert sum("Run each member on the step version" in line for line in lines) >= 1
    # The leader raises the cluster version once every member runs 3.6: a few seconds after the last one.
    for node in MEMBERS:
        wait_for(f"{node} at cluster version 3.6", lambda: version(lab, node)["etcdcluster"] == "3.6.0", timeout=60)
        assert version(lab, node)["etcdserver"] == "3.6.16", node
    # Writes went on throughout: never a gap long enough for a lost quorum.
    times = [started] + [t for t, _ in written] + [finished]
    assert len(written) > 10
    assert max(b - a for a, b in zip(times, times[1:])) < 20
    new = "/usr/local/bin/etcdctl"
    assert etcdctl(lab, "etcd-3", "get", "written-before", "--print-value-only", binary=new).stdout.strip() == \
        b"by-etcd-3.4"
    for _, key in written[:: max(1, len(written) // 20)]:
        assert etcdctl(lab, "etcd-1", "get", key, "--print-value-only", binary=new).stdout.strip(), key
    for node in MEMBERS:
        assert lab.lab.exec(node, ["test", "-e", "/run/systemd/system/etcd.service.d/50-upgrade-step.conf"],
                            check=False).returncode == 1
    # And a rerun leaves it alone.
    again, _ = converge(bundled, check=False, phases=PHASES, state=lab_state, full=True)
    assert again.succeeded and again.changed == 0
