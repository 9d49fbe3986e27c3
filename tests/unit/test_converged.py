"""The rerun shortcut: a host is left out only when its plan key and fingerprint both still hold."""
import os
import stat
import subprocess
from pathlib import Path

import pytest

from hardened_cluster.converged import Stamps, _request, parse_fingerprint, script
from hardened_cluster.plan import render_plan
from hardened_cluster.secrets import resolve_secrets
from hardened_cluster.spec import load_spec

SAMPLE = Path(__file__).resolve().parents[2] / "inventories" / "sample" / "cluster.yaml"
PHASES = ["hosts", "etcd"]


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    loaded = load_spec(SAMPLE)
    return render_plan(loaded, resolve_secrets(loaded, tmp_path_factory.mktemp("state")))


def test_request_covers_files_units_and_runtime_sysctls(plan):
    request = _request(plan, plan.spec.node("etcd-1"), PHASES)
    assert set(request["files"]) == set(plan.hosts["etcd-1"].files)
    assert {"etcd.service", "etcd-snapshot.timer", "ssh.service", "nftables.service"} <= set(request["units"])
    assert "net.ipv4.conf.all.log_martians" in request["sysctl"]
    assert "kernel.yama.ptrace_scope" in request["sysctl"]  # '-' prefix stripped
    assert "/var/lib/etcd" in request["stat"] and "/etc" in request["walk"]


def test_only_hosts_with_matching_key_and_fingerprint_are_unchanged(plan, tmp_path):
    stamps = Stamps(tmp_path)
    assert stamps.unchanged(plan, tmp_path, PHASES, {"etcd-1": "a" * 64}) == set()
    stamps.record(plan, tmp_path, PHASES, {"etcd-1": "a" * 64, "etcd-2": "b" * 64, "etcd-3": None})
    assert stat.S_IMODE((tmp_path / "converged.json").stat().st_mode) == 0o600
    again = Stamps(tmp_path)
    found = {"etcd-1": "a" * 64, "etcd-2": "c" * 64, "etcd-3": "d" * 64}
    assert again.unchanged(plan, tmp_path, PHASES, found) == {"etcd-1"}
    # Other phases, or an unreadable host, mean the roles run.
    assert again.unchanged(plan, tmp_path, PHASES + ["runtime"], found) == set()
    assert again.unchanged(plan, tmp_path, PHASES, {"etcd-1": None}) == set()
    again.forget(["etcd-1"])
    assert Stamps(tmp_path).unchanged(plan, tmp_path, PHASES, found) == set()


def _fingerprint(request):
    run = subprocess.run(["sh", "-c", script(request)], capture_output=True, text=True, timeout=60)
    found = parse_fingerprint((run.returncode, run.stdout, run.stderr))
    assert found is not None, run.stdout[-500:] + run.stderr[-500:]
    return found


def test_fingerprint_changes_with_mode_content_and_new_files(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    planned = etc / "planned.conf"
    planned.write_text("a = 1\n")
    request = {"walk": [str(etc)], "stat": [str(tmp_path)], "files": [str(planned)], "sysctl": ["net.ipv4.ip_forward"],
               "units": []}
    first = _fingerprint(request)
    assert len(first) == 64 and _fingerprint(request) == first
    planned.chmod(0o600)
    after_chmod = _fingerprint(request)
    assert after_chmod != first
    times = planned.stat()
    planned.write_text("a = 2\n")  # same size, same times: only the content hash sees it
    os.utime(planned, ns=(times.st_atime_ns, times.st_mtime_ns))
    after_edit = _fingerprint(request)
    assert after_edit != after_chmod
    (etc / "new").write_text("")
    assert _fingerprint(request) != after_edit


def test_a_command_that_did_not_finish_gives_no_fingerprint():
    assert parse_fingerprint((0, "partial output\n", "")) is None
    assert parse_fingerprint((1, "hc-fingerprint-end\n", "sudo: a password is required")) is None
    assert parse_fingerprint(None) is None
