"""Property: any mutation of the sample spec is refused with key paths and no traceback, or renders, checks
and yields files that their own parsers accept (YAML, TOML, `nft -c`, `sshd -t`).

Mutations: delete a key, replace a value with an extreme or odd one (None, huge numbers, empty and long
strings, invisible and confusable Unicode, wrong types), duplicate a list entry, add an unknown key.
CI runs a bounded number of examples from a fixed seed; a longer local run:

    HC_FUZZ_EXAMPLES=5000 HC_FUZZ_SEED=random .venv/bin/python -m pytest tests/unit/test_spec_fuzz.py
"""
from __future__ import annotations

import copy
import hashlib
import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from hardened_cluster.errors import SpecError
from hardened_cluster.plan.render import render_plan
from hardened_cluster.secrets.store import resolve_secrets
from hardened_cluster.spec.load import parse_spec
from hardened_cluster.verify.cis import check_plan
from test_spec_validation import KEY_PATH, LEAKS

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "inventories" / "sample" / "cluster.yaml"
EXAMPLES = int(os.environ.get("HC_FUZZ_EXAMPLES", "120"))
SEED = os.environ.get("HC_FUZZ_SEED", "15")
NFT = shutil.which("nft")
SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.access("/usr/sbin/sshd", os.X_OK) else None)

ODD = ["", " ", "\t", "\u200b", "\ufeff", "\u00a0", "x" * 300, "ǅ", "İ", "ß", "../..", "/", "~", "a\nb", "*", "0"]
EXTREME: list[Any] = [None, True, False, 0, -1, 1, 65535, 65536, 2**31, 2**63, -(2**63), 1e308, float("nan"), 0.5,
                      [], {}, ["x"], {"x": 1}, *ODD]
# Values of the right shape, so that some mutations stay valid and reach render, check and the parsers.
PLAUSIBLE: list[Any] = ["worker-9", "10.20.0.99", "10.20.0.0/23", "fd00::/64", "daily", "hourly", "Mon 03:00",
                        "*-*-* 04:30:00", "v1.33", "latest", "1.33.2", "1.37.0", "cilium", "flannel", "none",
                        "privileged", "restricted", "ptrace", "kvm", "aescbc", "udp", "/var/lib/etcd2",
                        "/var/backups/etcd2", "/var/log/kube/audit.log", "RequestResponse", 2, 3, 5, 30, 2222, 9200]
VALUES = st.sampled_from(EXTREME + PLAUSIBLE) | st.text(max_size=12) | st.integers(-5, 70000)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, prefix + (i,))
    return out


def _parent(data: Any, path: tuple) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


@st.composite
def mutated(draw) -> dict:
    data = yaml.safe_load(SAMPLE.read_text())
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, last = _parent(data, path), path[-1]
        action = draw(st.sampled_from(["delete", "replace", "replace", "duplicate", "unknown-key"]))
        if action == "delete":
            del parent[last]
        elif action == "replace":
            parent[last] = copy.deepcopy(draw(VALUES))
        elif action == "duplicate" and isinstance(parent, list):
            parent.insert(last, copy.deepcopy(parent[last]))
        elif action == "unknown-key" and isinstance(parent, dict):
            parent[draw(st.sampled_from(ODD + ["extra", "nmae"]))] = draw(VALUES)
    return data


_checked: dict[str, str | None] = {}


def _tool_verdict(kind: str, content: str, tmp: Path) -> str | None:
    """None when the tool accepts the file, else its complaint; cached by content."""
    key = hashlib.sha256(f"{kind}\0{content}".encode()).hexdigest()
    if key in _checked:
        return _checked[key]
    path = tmp / f"{key[:16]}.conf"
    path.write_text(content)
    if kind == "nft":
        # A throwaway network namespace: -c only checks, and nothing reaches the machine's own ruleset.
        result = subprocess.run(["unshare", "--net", NFT, "-c", "-f", str(path)], capture_output=True, text=True)
    else:
        (tmp / "d").mkdir(exist_ok=True)
        shutil.copy(path, tmp / "d" / "10-hardened-cluster.conf")
        result = subprocess.run([SSHD, "-t", "-f", str(tmp / "sshd_config")], capture_output=True, text=True)
    _checked[key] = None if result.returncode == 0 else (result.stderr or result.stdout)
    return _checked[key]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("fuzz")
    if SSHD:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "host_key")], check=True)
        (tmp / "sshd_config").write_text(f"HostKey {tmp / 'host_key'}\nInclude {tmp / 'd'}/*.conf\n")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd -t wants its privilege separation directory
    return tmp


def _assert_parses(plan, tmp: Path) -> None:
    for host in list(plan.hosts.values()) + [None]:
        files = host.files.values() if host else plan.manifests.values()
        for f in files:
            if f.path.endswith((".yaml", ".yml")):
                list(yaml.safe_load_all(f.content))
            elif f.path.endswith(".toml"):
                tomllib.loads(f.content)
            elif f.path == "/etc/nftables.conf" and NFT:
                assert _tool_verdict("nft", f.content, tmp) is None, _checked
            elif f.path.startswith("/etc/ssh/sshd_config.d/") and SSHD:
                problem = _tool_verdict("sshd", f.content, tmp)
                assert problem is None, problem


def _outcome(data: dict, tmp: Path) -> str:
    try:
        loaded = parse_spec(data, SAMPLE)
    except SpecError as exc:
        assert exc.issues
        for issue in exc.issues:
            assert issue.path == "" or KEY_PATH.match(issue.path), f"not a key path: {issue.path!r}"
            leaked = [text for text in LEAKS if text in str(issue)]
            assert not leaked, f"{issue} contains {leaked}"
        return "refused"
    plan = render_plan(loaded, resolve_secrets(loaded, tmp / "state"))
    check_plan(plan)
    _assert_parses(plan, tmp)
    return "accepted"


outcomes: list[str] = []


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=mutated())
def _fuzz(data, workdir):
    outcomes.append(_outcome(data, workdir))


def test_mutated_specs_are_refused_cleanly_or_render_check_and_parse(workdir):
    test = _fuzz if SEED == "random" else seed(int(SEED))(_fuzz)
    outcomes.clear()
    test(workdir=workdir)
    # Both outcomes are reached: the property is exercised on both sides.
    assert {"refused", "accepted"} <= set(outcomes), outcomes


def test_the_unmutated_sample_passes_every_parser(workdir):
    assert _outcome(yaml.safe_load(SAMPLE.read_text()), workdir) == "accepted"


@pytest.mark.skipif(not (NFT and SSHD), reason="needs nft and sshd")
def test_the_parsers_do_reject_broken_files(workdir):
    """The nft and sshd checks can fail: a broken ruleset and a broken drop-in are refused."""
    assert _tool_verdict("nft", "table inet t {\n chain c { type filter hook input priority 0; policy dropp; }\n}\n",
                         workdir) is not None
    assert _tool_verdict("sshd", "MaxAuthTries many\n", workdir) is not None
