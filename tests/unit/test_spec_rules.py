"""Issue 15's rules beyond the corpus: their valid neighbours are accepted, calendar events agree with
systemd, file problems are named exactly, key material is never shown, and document limits hold."""
from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from hardened_cluster.errors import SpecError
from hardened_cluster.spec.calendar import CalendarError, check_calendar
from hardened_cluster.spec.limits import MAX_BYTES
from hardened_cluster.spec.load import load_spec, parse_spec
from test_spec_validation import FILES, SAMPLE, _ipv6_sample, _sample

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def _issues(data: dict, path: Path = SAMPLE) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data, path)
    return [str(i) for i in info.value.issues]


def test_corpus_grew_by_at_least_40_documents():
    assert len(FILES) >= 87 + 40


# --- valid neighbours --------------------------------------------------------------------------


def test_an_ipv6_cluster_is_accepted():
    assert parse_spec(_ipv6_sample(), SAMPLE).spec.network.pod_cidr.version == 6


@pytest.mark.parametrize(("key", "value"), [
    ("service_cidr", "10.96.0.0/28"), ("service_cidr", "10.96.0.0/12"), ("pod_cidr", "10.244.0.0/21"),
    ("pod_cidr", "44.0.0.0/8"),
])
def test_cidrs_at_the_edges_are_accepted(key, value):
    data = _sample()
    data["network"][key] = value
    parse_spec(data, SAMPLE)


def test_pod_cidr_size_follows_the_node_count():
    data = _sample()
    data["network"]["pod_cidr"] = "10.244.0.0/22"  # four /24 subnets
    assert _issues(data)[0].startswith("network.pod_cidr: 10.244.0.0/22 has room for 4 per-node /24 subnets but there are 6")
    data["nodes"] = [n for n in data["nodes"] if n["name"] not in ("worker-2", "worker-3")]
    data["runtimes"] = {"gvisor": {"enabled": True, "nodes": ["worker-1"]}}
    parse_spec(data, SAMPLE)


@pytest.mark.parametrize("labels", [
    {"topology.kubernetes.io/zone": "eu1-a", "node.kubernetes.io/pool": "batch", "example.com/tier": ""},
    {"kubelet.kubernetes.io/x": "y", "tier": "a.b_c-d"},
])
def test_labels_the_kubelet_accepts_are_accepted(labels):
    data = _sample()
    data["nodes"][6]["labels"] = labels
    assert parse_spec(data, SAMPLE).spec.nodes[6].labels == labels


def test_an_open_extra_port_is_accepted_when_acknowledged():
    data = _sample()
    data["firewall"]["extra_ports"][0]["sources"] = ["0.0.0.0/0"]
    assert _issues(data)[0].startswith("firewall.extra_ports[0].sources[0]: 0.0.0.0/0 opens node-exporter")
    data["firewall"]["i_accept_ports_open_to_the_internet"] = True
    parse_spec(data, SAMPLE)


def test_root_login_user_is_accepted_when_ssh_hardening_is_off():
    data = _sample()
    data["ssh"]["user"] = "root"
    data["ssh_hardening"]["enabled"] = False
    parse_spec(data, SAMPLE)


@pytest.mark.parametrize("resources", [["secrets"], ["*."], ["*.*"], ["secrets", "widgets.example.com"]])
def test_encryption_resources_accepted(resources):
    data = _sample()
    data["encryption"]["resources"] = resources
    parse_spec(data, SAMPLE)


@pytest.mark.parametrize("version", ["latest", "v1.0", "v1.35"])
def test_pod_security_versions_accepted(version):
    data = _sample()
    data["admission"]["pod_security"]["version"] = version
    parse_spec(data, SAMPLE)


def test_an_integral_float_still_counts_as_an_integer():
    # The Pulumi program hands over JSON numbers as floats.
    data = _sample()
    data["ssh"]["port"] = 22.0
    assert parse_spec(data, SAMPLE).spec.ssh.port == 22


# --- calendar events, against systemd itself ---------------------------------------------------


ACCEPTED = ["daily", "Weekly", "hourly", "*-*-* 02:00:00", "Mon..Fri 22:30", "mon,wed *-*-* 01:00", "*:0/15",
            "*-*-1/2", "*-1..3-1 00:00", "Sun *-*-* 03:00 UTC", "02:00", "*-02-29", "0..23/2:00", "Monday 3:0:0"]
REFUSED = ["0 2 * * *", "*/5:00", "*-*-* 25:00", "*-02-30", "2020-01-01", "Sun..Mon", " 02:00", "02:00  UTC",
           "*-*-~1", "02:00 Europe/Berlin", "00:00:00.5", "", "7:"]


@pytest.mark.parametrize("text", ACCEPTED)
def test_calendar_events_accepted(text):
    check_calendar(text)


@pytest.mark.parametrize("text", REFUSED)
def test_calendar_events_refused(text):
    with pytest.raises(CalendarError):
        check_calendar(text)


def _systemd_elapses(text: str) -> bool:
    result = subprocess.run([SYSTEMD_ANALYZE, "calendar", text], capture_output=True, text=True)
    return result.returncode == 0 and "Next elapse: never" not in result.stdout


@pytest.mark.skipif(not SYSTEMD_ANALYZE, reason="needs systemd-analyze")
@pytest.mark.parametrize("text", ACCEPTED)
def test_every_accepted_example_is_a_timer_systemd_runs(text):
    assert _systemd_elapses(text)


_PART = st.sampled_from(["*", "0", "1", "2", "7", "12", "23", "30", "59", "60", "1..3", "3..1", "0/15", "*/2", "1,2"])
_EVENT = st.builds(
    lambda wd, d, t, tz: " ".join(p for p in (wd, d, t, tz) if p),
    st.sampled_from(["", "Mon", "sat,sun", "Mon..Fri", "Fri..Mon", "Xyz"]),
    st.sampled_from(["", "*-*-*"]) | st.builds(lambda m, d: f"*-{m}-{d}", _PART, _PART),
    st.sampled_from(["", "02:00"]) | st.builds(lambda h, m, s: f"{h}:{m}:{s}", _PART, _PART, _PART),
    st.sampled_from(["", "", "UTC"]),
)


@pytest.mark.skipif(not SYSTEMD_ANALYZE, reason="needs systemd-analyze")
@seed(15)
@settings(max_examples=150, deadline=None, database=None)
@given(text=_EVENT)
def test_whatever_the_check_accepts_systemd_runs(text):
    try:
        check_calendar(text)
    except CalendarError:
        return
    assert _systemd_elapses(text), text


# --- files named exactly, and key material never shown ------------------------------------------


def _with_key_file(tmp_path: Path, name: str) -> dict:
    data = _sample()
    data["encryption"]["keys"] = [{"name": "k1", "secret": {"file": name}}]
    return data


def test_key_file_problems_are_named_exactly(tmp_path):
    spec = tmp_path / "cluster.yaml"
    (tmp_path / "dir.key").mkdir()
    (tmp_path / "empty.key").write_text("\n")
    (tmp_path / "loop.key").symlink_to(tmp_path / "loop.key")
    os.mkfifo(tmp_path / "fifo.key")
    expected = {
        "missing.key": f"file {tmp_path / 'missing.key'} does not exist",
        "dir.key": f"file {tmp_path / 'dir.key'} is a directory, not a file",
        "empty.key": "file empty.key is empty",  # as written in the spec: the file exists
        "loop.key": f"file {tmp_path / 'loop.key'} cannot be read: Too many levels of symbolic links",
        "fifo.key": f"file {tmp_path / 'fifo.key'} is not a regular file",
    }
    for name, message in expected.items():
        assert _issues(_with_key_file(tmp_path, name), spec) == [f"encryption.keys[0].secret: {message}"]


def test_known_hosts_problems_are_named_exactly(tmp_path):
    spec = tmp_path / "cluster.yaml"
    (tmp_path / "empty").write_text("")
    (tmp_path / "dir").mkdir()
    for name, message in {
        "empty": f"file {tmp_path / 'empty'} is empty (for the lab, run: hardened-cluster lab up)",
        "dir": f"file {tmp_path / 'dir'} is a directory, not a file",
        "none": f"file {tmp_path / 'none'} does not exist (for the lab, run: hardened-cluster lab up)",
    }.items():
        data = _sample()
        data["ssh"]["known_hosts"] = name
        for node in data["nodes"]:
            del node["ssh"]
        assert _issues(data, spec) == [f"ssh.known_hosts: {message}"]


PEM = "-----BEGIN " + "OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END " + "OPENSSH PRIVATE KEY-----\n"
SECRET = base64.b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize(("where", "value"), [
    (("encryption", "keys", 0, "secret"), SECRET),
    (("encryption", "keys", 0, "secret"), PEM),
    (("encryption", "keys", 0, "secret", "env"), SECRET),
    (("encryption", "keys", 0, "secret", "file"), PEM),
    (("encryption", "keys", 0, "secret", "file"), SECRET * 10),
    (("etcd", "snapshot", "encryption_key"), SECRET),
    (("etcd", "snapshot", "encryption_key", "generated"), SECRET),
    (("ssh", "private_key_file"), PEM),
    (("ssh", "known_hosts"), PEM),
])
def test_key_material_is_refused_without_being_shown(where, value, tmp_path):
    data = _sample()
    target = data
    for part in where[:-1]:
        target = target[part] if not isinstance(target, dict) or part in target else target.setdefault(part, {})
    if isinstance(target, dict) and where[-1] in ("env", "file"):
        target.pop("generated", None)
    target[where[-1]] = value
    spec = tmp_path / "cluster.yaml"
    spec.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    text = info.value.render()
    for fragment in (value[:24], value.strip().splitlines()[-2][:24] if "\n" in value else value[-24:], "PRIVATE KEY"):
        assert fragment not in text, text
    assert info.value.issues[0].path.startswith(".".join(str(p) for p in where[:2]).replace(".0", "[0]"))


# --- document limits -----------------------------------------------------------------------------


def test_a_spec_larger_than_the_limit_is_refused_unread(tmp_path):
    spec = tmp_path / "cluster.yaml"
    with open(spec, "wb") as f:
        f.truncate(MAX_BYTES + 1)  # sparse: nothing to read if the loader looked
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert [str(i) for i in info.value.issues] == [f"the document is {MAX_BYTES + 1:,} bytes; at most {MAX_BYTES:,} are read"]


def test_a_spec_that_is_not_a_regular_file_is_refused_unread(tmp_path):
    fifo = tmp_path / "cluster.yaml"
    os.mkfifo(fifo)  # reading it would block forever
    with pytest.raises(SpecError) as info:
        load_spec(fifo)
    assert [str(i) for i in info.value.issues] == ["cannot read spec: not a regular file"]


def test_the_largest_node_count_is_accepted(tmp_path):
    from bench.plan_bench import spec_document

    spec = tmp_path / "cluster.yaml"
    spec.write_text(yaml.safe_dump(spec_document(10_000), sort_keys=False))
    assert len(load_spec(spec).spec.nodes) == 10_000
