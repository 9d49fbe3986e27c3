"""The rerun shortcut: a host is left out only when its plan key and fingerprint both still hold."""
import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from hardened_cluster import resources
from hardened_cluster.deliver.rerun import Stamps, fingerprint_request, parse_fingerprint, script
from hardened_cluster.plan.render import render_plan
from hardened_cluster.secrets.pki import RENEW_BEFORE
from hardened_cluster.secrets.store import resolve_secrets
from hardened_cluster.spec.load import load_spec

SAMPLE = Path(__file__).resolve().parents[2] / "inventories" / "sample" / "cluster.yaml"
PHASES = ["hosts", "etcd"]


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    loaded = load_spec(SAMPLE)
    return render_plan(loaded, resolve_secrets(loaded, tmp_path_factory.mktemp("state")))


def test_request_covers_files_units_and_runtime_sysctls(plan):
    request = fingerprint_request(plan, plan.spec.node("etcd-1"), PHASES)
    assert set(plan.hosts["etcd-1"].files) <= set(request["files"])
    assert {"etcd.service", "etcd-snapshot.timer", "ssh.service", "nftables.service"} <= set(request["units"])
    assert "avahi-daemon.service" in request["disabled"]
    assert "net.ipv4.conf.all.log_martians" in request["sysctl"]
    assert "kernel.yama.ptrace_scope" in request["sysctl"]  # '-' prefix stripped
    assert "/var/lib/etcd" in request["stat"] and "/etc" in request["walk"]
    # What os_hardening enforces outside the walked directories, and the packages the roles install.
    assert {"/boot/grub/grub.cfg", "/usr/lib/openssh/ssh-keysign", "/usr/bin/chfn", "/var/lib/dpkg/status"} <= set(
        request["files"])


def test_only_hosts_with_matching_key_and_fingerprint_are_unchanged(plan, tmp_path):
    stamps = Stamps(tmp_path)
    assert stamps.unchanged(plan, PHASES, {"etcd-1": "a" * 64}) == set()
    requests = {h: fingerprint_request(plan, plan.spec.node(h), PHASES) for h in ("etcd-1", "etcd-2", "etcd-3")}
    stamps.record(plan, PHASES, {"etcd-1": (requests["etcd-1"], "a" * 64),
                                           "etcd-2": (requests["etcd-2"], "b" * 64), "etcd-3": (requests["etcd-3"], None)})
    assert stat.S_IMODE((tmp_path / "converged.json").stat().st_mode) == 0o600
    again = Stamps(tmp_path)
    # A rerun asks each host the request recorded for it; a host without a stamp is asked nothing.
    assert again.requests(["etcd-1", "etcd-2", "etcd-3"]) == {h: requests[h] for h in ("etcd-1", "etcd-2")}
    found = {"etcd-1": "a" * 64, "etcd-2": "c" * 64, "etcd-3": "d" * 64}
    assert again.unchanged(plan, PHASES, found) == {"etcd-1"}
    # Other phases, or an unreadable host, mean the roles run.
    assert again.unchanged(plan, PHASES + ["runtime"], found) == set()
    assert again.unchanged(plan, PHASES, {"etcd-1": None}) == set()
    again.forget(["etcd-1"])
    assert Stamps(tmp_path).unchanged(plan, PHASES, found) == set()


def test_a_host_converged_to_more_phases_is_unchanged_for_fewer_but_not_for_others(plan, tmp_path):
    every = PHASES + ["runtime"]
    stamps = Stamps(tmp_path)
    stamps.record(plan, every, {"etcd-1": (fingerprint_request(plan, plan.spec.node("etcd-1"), every), "a" * 64)})
    again = Stamps(tmp_path)
    assert again.unchanged(plan, ["etcd"], {"etcd-1": "a" * 64}) == {"etcd-1"}
    assert again.unchanged(plan, every, {"etcd-1": "a" * 64}) == {"etcd-1"}
    # Touched since (another fingerprint), or asked for a phase the stamp does not cover: the roles run.
    assert again.unchanged(plan, ["etcd"], {"etcd-1": "b" * 64}) == set()
    assert again.unchanged(plan, ["etcd", "kubernetes"], {"etcd-1": "a" * 64}) == set()
    # A narrower apply records its own phases: a wider run afterwards is not covered by it.
    again.record(plan, ["etcd"], {"etcd-1": (fingerprint_request(plan, plan.spec.node("etcd-1"), ["etcd"]), "c" * 64)})
    assert Stamps(tmp_path).unchanged(plan, every, {"etcd-1": "c" * 64}) == set()
    assert Stamps(tmp_path).unchanged(plan, ["etcd"], {"etcd-1": "c" * 64}) == {"etcd-1"}


def _fingerprint(request):
    run = subprocess.run(["sh", "-s"], input=script(request), capture_output=True, text=True, timeout=60)
    found = parse_fingerprint((run.returncode, run.stdout, run.stderr))
    assert found is not None, run.stdout[-500:] + run.stderr[-500:]
    return found


def test_fingerprint_changes_with_mode_content_and_new_files(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    planned = etc / "planned.conf"
    planned.write_text("a = 1\n")
    request = {"walk": [str(etc)], "stat": [str(tmp_path)], "files": [str(planned)],
               "sysctl": ["net.ipv4.ip_forward"], "units": [], "disabled": ["hc-absent.service"]}
    first = _fingerprint(request)
    assert len(first) == 64 and _fingerprint(request) == first
    planned.chmod(0o600)
    after_chmod = _fingerprint(request)
    assert after_chmod != first
    times = planned.stat()
    planned.write_text("a = 2\n")  # same size, same times: only the change time sees it
    os.utime(planned, ns=(times.st_atime_ns, times.st_mtime_ns))
    after_edit = _fingerprint(request)
    assert after_edit != after_chmod
    (etc / "new").write_text("")
    assert _fingerprint(request) != after_edit


def test_a_command_that_did_not_finish_gives_no_fingerprint():
    assert parse_fingerprint((0, "a" * 64 + "  -\nhc-fingerprint-end\n", "")) == "a" * 64
    assert parse_fingerprint((0, "a" * 64 + "  -\n", "")) is None
    assert parse_fingerprint((0, "partial output\n", "")) is None
    assert parse_fingerprint((1, "hc-fingerprint-end\n", "sudo: a password is required")) is None
    assert parse_fingerprint(None) is None


def test_stat_only_directories_count_mode_not_entries_and_files_outside_the_walk_count(tmp_path):
    etc, data, outside = tmp_path / "etc", tmp_path / "data", tmp_path / "opt"
    for d in (etc, data, outside):
        d.mkdir()
    unit = outside / "tool.conf"
    unit.write_text("x\n")
    (etc / "link").symlink_to("/nowhere")
    request = {"walk": [str(etc)], "stat": [str(data)], "files": [str(unit)],
               "sysctl": ["net.ipv4.ip_forward"], "units": [], "disabled": ["hc-absent.service"]}
    first = _fingerprint(request)
    (data / "member").mkdir()  # the data dir's own entries change in normal operation
    assert _fingerprint(request) == first
    data.chmod(0o700)
    after_chmod = _fingerprint(request)
    assert after_chmod != first
    unit.write_text("y\n")  # a planned file outside the walked directories
    after_edit = _fingerprint(request)
    assert after_edit != after_chmod
    (etc / "link").unlink()
    (etc / "link").symlink_to("/elsewh")  # same length, another target
    assert _fingerprint(request) != after_edit



def test_a_control_plane_fingerprint_runs_the_roles_own_renewal_check(plan):
    """A kubeadm certificate entering the renewal window changes no file: the fingerprint runs the role's
    check of what is due (its script, its window), so a no-op apply does not skip the renewal."""
    cp = plan.spec.nodes_with("control-plane")[0]
    [argv] = fingerprint_request(plan, cp, ["kubernetes"])["due"]
    assert argv[:3] == ["/usr/bin/python3", "-c", (resources.ROLES / "control_plane" / "files" / "certs_due.py").read_text()]
    assert argv[-1] == str(RENEW_BEFORE.days)
    assert shlex.join(argv) in script(fingerprint_request(plan, cp, ["kubernetes"]))
    assert fingerprint_request(plan, cp, PHASES)["due"] == []
    assert fingerprint_request(plan, plan.spec.nodes_with("worker")[0], ["kubernetes"])["due"] == []
