"""Every invalid spec is rejected at load with one precise, readable issue naming the key path.

The corpus lives in tests/specs/invalid/: each file is inventories/sample/cluster.yaml with ONE thing
changed and a header saying what `load_spec` must report:

    # expect: <substring of one `str(issue)`, i.e. "key.path: message">
    # env: NAME=<value>      (optional, repeatable: set before loading)
    # issues: N              (optional: how many issues the file yields; default 1)
"""
from __future__ import annotations

import base64
import re
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_cluster.errors import SpecError
from hardened_cluster.spec.load import load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "specs" / "invalid"
SAMPLE = ROOT / "inventories" / "sample" / "cluster.yaml"
LAB = ROOT / "inventories" / "lab" / "cluster.yaml"
FILES = sorted(CORPUS.glob("*.yaml"))

# Text that only shows up when an exception or pydantic's internals leak into a message.
LEAKS = ("Traceback", 'File "', "Error:", "function-after", "function-plain", "lax-or-strict", "json-or-python",
         "Value error,", "errors.pydantic.dev", "<class", "IPv4Network", "IPv6Network", "IPv4Address",
         "IPv6Address", "Input should be", "Input is not")
# A key that is not an identifier is written quoted in brackets, escaped: labels['topology.kubernetes.io/zone'].
KEY_PATH = re.compile(r"^([A-Za-z_]\w*|\[\d+\]|\['[ -&(-~]*'\])(\.[A-Za-z_]\w*|\[\d+\]|\['[ -&(-~]*'\])*$")


@dataclass
class Case:
    path: Path
    expect: str = ""
    env: dict[str, str] = field(default_factory=dict)
    issues: int = 1

    @classmethod
    def read(cls, path: Path) -> Case:
        case = cls(path)
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            key, sep, value = line[1:].strip().partition(": ")
            if key == "expect" and sep:
                case.expect = value
            elif key == "env" and sep:
                name, _, env_value = value.partition("=")
                case.env[name] = env_value
            elif key == "issues" and sep:
                case.issues = int(value)
        return case


@pytest.fixture
def clean_env(monkeypatch):
    """No HC_TEST_* variable leaks in from the environment; each case sets its own."""
    import os

    for name in [n for n in os.environ if n.startswith("HC_TEST_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def _issues(path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return [str(issue) for issue in info.value.issues]


def _assert_readable(error: SpecError) -> None:
    for issue in error.issues:
        assert issue.path == "" or KEY_PATH.match(issue.path), f"not a key path: {issue.path!r}"
        leaked = [text for text in LEAKS if text in str(issue)]
        assert not leaked, f"{issue} contains {leaked}"
    assert "Traceback" not in error.render()


# --- the corpus ----------------------------------------------------------------------------------


def test_corpus_is_large_enough():
    assert len(FILES) >= 45, f"only {len(FILES)} invalid specs in {CORPUS}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_corpus_file_is_well_formed(path):
    case = Case.read(path)
    assert re.fullmatch(r"\d{2,3}-[a-z0-9-]+\.yaml", path.name), path.name
    assert case.expect, f"{path.name} has no '# expect:' header"
    assert case.issues >= 1


def test_corpus_names_and_documents_are_unique():
    numbers = [p.name.split("-")[0] for p in FILES]
    assert len(set(numbers)) == len(numbers), "two corpus files share a number"
    bodies = [p.read_text().split("\n", 1)[1] for p in FILES]
    assert len(set(bodies)) == len(bodies), "two corpus files hold the same document"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_invalid_spec_is_rejected_with_a_precise_message(path, clean_env):
    case = Case.read(path)
    for name, value in case.env.items():
        clean_env.setenv(name, value)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    rendered = [str(issue) for issue in info.value.issues]
    assert any(case.expect in line for line in rendered), f"expected {case.expect!r} in {rendered}"
    assert len(rendered) == case.issues, f"{path.name} should yield {case.issues} issue(s), got {rendered}"
    _assert_readable(info.value)
    assert info.value.source == str(path)


# --- the shipped inventories and the valid neighbours of corpus cases ----------------------------


def test_sample_inventory_is_valid():
    loaded = load_spec(SAMPLE)
    assert loaded.spec.cluster.name == "prod-eu1"
    assert set(loaded.host_keys) == {n.name for n in loaded.spec.nodes}


def _public_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _lab_copy(tmp_path: Path, known_hosts: dict[str, str] | None) -> Path:
    spec = tmp_path / "cluster.yaml"
    shutil.copy(LAB, spec)
    if known_hosts is not None:
        lines = [f"{host} {key}" for host, key in known_hosts.items()]
        (tmp_path / "known_hosts").write_text("\n".join(lines) + "\n")
    return spec


def _lab_addresses() -> dict[str, str]:
    return {n["name"]: n["address"] for n in yaml.safe_load(LAB.read_text())["nodes"]}


def test_lab_inventory_is_valid_with_known_hosts(tmp_path):
    keys = {address: _public_key() for address in _lab_addresses().values()}
    loaded = load_spec(_lab_copy(tmp_path, keys))
    assert loaded.spec.cluster.name == "lab"
    by_name = {n.name: keys[str(n.address)] for n in loaded.spec.nodes}
    assert loaded.host_keys == by_name


def test_lab_inventory_without_known_hosts_says_how_to_get_it(tmp_path):
    spec = _lab_copy(tmp_path, None)
    issues = _issues(spec)
    known_hosts = tmp_path / "known_hosts"
    assert issues == [f"ssh.known_hosts: file {known_hosts} does not exist (for the lab, run: hardened-cluster lab up)"]


def test_lab_inventory_with_a_node_missing_from_known_hosts(tmp_path):
    addresses = _lab_addresses()
    keys = {address: _public_key() for name, address in addresses.items() if name != "worker-2"}
    issues = _issues(_lab_copy(tmp_path, keys))
    assert len(issues) == 1
    assert issues[0].startswith(
        "nodes[5].ssh.host_key: no SSH host key pinned for 'worker-2'; "
        f"set host_key or an entry for {addresses['worker-2']} in ssh.known_hosts"
    )


def _sample() -> dict:
    return yaml.safe_load(SAMPLE.read_text())


def _ipv6_sample() -> dict:
    """The sample on IPv6 throughout: a cluster uses one address family."""
    data = _sample()
    data["network"].update(node_cidrs=["fd00:20::/64"], pod_cidr="fd00:244::/56", service_cidr="fd00:96::/112",
                           admin_cidrs=["fd00:25::/64"])
    for node in data["nodes"]:
        node["address"] = "fd00:20::" + node["address"].rpartition(".")[2]
    for port in data["firewall"]["extra_ports"]:
        port["sources"] = ["fd00:25::/64"]
    return data


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0"])
def test_open_admin_cidr_is_accepted_when_acknowledged(cidr):
    data = _ipv6_sample() if ":" in cidr else _sample()
    data["network"]["admin_cidrs"] = [cidr]
    data["network"]["i_accept_api_and_ssh_open_to_the_internet"] = True
    loaded = parse_spec(data, SAMPLE)
    assert [str(c) for c in loaded.spec.network.admin_cidrs] == [cidr]


def test_open_admin_cidr_acknowledgement_is_what_makes_the_difference():
    data = _sample()
    data["network"]["admin_cidrs"] = ["0.0.0.0/0"]
    with pytest.raises(SpecError) as info:
        parse_spec(data, SAMPLE)
    assert [i.path for i in info.value.issues] == ["network.admin_cidrs[0]"]


@pytest.mark.parametrize(("provider", "length"),
                         [("aescbc", 16), ("aescbc", 24), ("aescbc", 32), ("aesgcm", 32), ("secretbox", 32)])
def test_key_from_env_with_a_right_length_is_accepted(provider, length, clean_env):
    clean_env.setenv("HC_TEST_GOOD_KEY", base64.b64encode(bytes(range(length))).decode())
    data = _sample()
    data["encryption"] = {"provider": provider, "keys": [{"name": "k1", "secret": {"env": "HC_TEST_GOOD_KEY"}}]}
    assert parse_spec(data, SAMPLE).spec.encryption.provider == provider


def test_key_file_is_read_relative_to_the_spec(tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "k1.key").write_text(base64.b64encode(bytes(32)).decode() + "\n")
    data = _sample()
    data["encryption"]["keys"] = [{"name": "k1", "secret": {"file": "keys/k1.key"}}]
    parse_spec(data, tmp_path / "cluster.yaml")
    data["encryption"]["keys"] = [{"name": "k1", "secret": {"file": "keys/k2.key"}}]
    with pytest.raises(SpecError) as info:
        parse_spec(data, tmp_path / "cluster.yaml")
    missing = tmp_path / "keys" / "k2.key"
    assert [str(i) for i in info.value.issues] == [f"encryption.keys[0].secret: file {missing} does not exist"]


def test_kms_v2_with_kms_and_no_keys_is_accepted():
    data = _sample()
    data["encryption"] = {"provider": "kms-v2", "kms": {"name": "vault-kms", "endpoint": "unix:///run/kms/vault.sock"}}
    assert parse_spec(data, SAMPLE).spec.encryption.kms.name == "vault-kms"


@pytest.mark.parametrize("endpoint", ["api.prod-eu1.example.com:6443", "10.20.0.21:6443", "[2001:db8::1]:6443"])
def test_control_plane_endpoint_forms_that_are_accepted(endpoint):
    data = _ipv6_sample() if "[" in endpoint else _sample()
    data["cluster"]["control_plane_endpoint"] = endpoint
    assert parse_spec(data, SAMPLE).spec.cluster.control_plane_endpoint == endpoint


def test_yaml_anchors_and_merge_keys_still_load(tmp_path):
    text = SAMPLE.read_text().replace(
        "  - {name: cp-1, address: 10.20.0.21, roles: [control-plane],",
        "  - &cp {name: cp-1, address: 10.20.0.21, roles: [control-plane],",
    ).replace(
        "  - {name: cp-2, address: 10.20.0.22, roles: [control-plane],",
        "  - {<<: *cp, name: cp-2, address: 10.20.0.22,",
    )
    assert "<<: *cp" in text
    spec = tmp_path / "cluster.yaml"
    spec.write_text(text)
    assert load_spec(spec).spec.node("cp-2").roles == ["control-plane"]


# --- messages at the edges -----------------------------------------------------------------------


def test_unreadable_and_non_text_specs_are_spec_errors(tmp_path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"apiVersion: \xff\xfe\n")
    for path, expected in ((tmp_path / "missing.yaml", "cannot read spec: No such file or directory"),
                           (tmp_path, "cannot read spec: Is a directory"),
                           (binary, "cannot read spec: not UTF-8 text")):
        with pytest.raises(SpecError) as info:
            load_spec(path)
        assert expected in str(info.value.issues[0])
        _assert_readable(info.value)


@pytest.mark.parametrize("text", [
    "apiVersion: !!python/object/apply:os.system [true]\n",
    "a: *undefined\n",
    "? [a, b]\n: 1\n",
    '"unterminated',
    "\t- tab\n",
])
def test_hostile_or_broken_yaml_is_a_spec_error(tmp_path, text):
    spec = tmp_path / "cluster.yaml"
    spec.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert str(info.value.issues[0]).startswith("not valid YAML: line ")
    _assert_readable(info.value)


def test_truncated_host_key_is_not_accepted():
    # paramiko pads a truncated ed25519 blob with zeros; that is not the key that was written down.
    data = _sample()
    data["nodes"][0]["ssh"]["host_key"] = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDb6Jj7qSMKo"
    with pytest.raises(SpecError) as info:
        parse_spec(data, SAMPLE)
    assert [i.path for i in info.value.issues] == ["nodes[0].ssh.host_key"]


def test_loading_contacts_nothing(monkeypatch, clean_env):
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise OSError("network use while loading a spec")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    load_spec(SAMPLE)
    for path in FILES:
        for name, value in Case.read(path).env.items():
            clean_env.setenv(name, value)
        with pytest.raises(SpecError):
            load_spec(path)
    assert calls == []
