"""The CLI turns an invalid spec into exit code 2 and the precise message on stderr, contacting nothing.

Every run happens in a subprocess whose `sitecustomize` (found first through PYTHONPATH) replaces socket
connects, name resolution, `subprocess.Popen` and the exec/spawn family with a guard that records the
attempt and raises. The record must stay empty. Corpus and headers: see test_spec_validation.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "specs" / "invalid"
FILES = sorted(CORPUS.glob("*.yaml"))

# A spread of failure kinds: semantic, pydantic union, nested typo, env key, document shape, YAML, policy, type.
SAMPLE = [
    "etcd-node-is-control-plane",
    "cidr-prefix-too-long",
    "typo-snapshot-shedule",
    "aescbc-key-20-bytes",
    "document-is-a-list",
    "yaml-syntax-error",
    "admin-cidr-any-ipv4",
    "ssh-port-not-a-number",
]
# Subcommands that take --spec; each must refuse an invalid spec before doing anything else.
COMMANDS = {
    "validate": [],
    "plan": [],
    "render": ["--out", "{tmp}/rendered"],
    "check": [],
    "apply": ["--quiet"],
    "drift": ["--quiet"],
    "certs": ["--json"],
    "rotate encryption-key": ["--quiet"],
    "restore etcd": ["--quiet"],
}

GUARD = textwrap.dedent('''
    """Test guard: no network, no child processes. Records every attempt, then refuses it."""
    import os
    import socket
    import subprocess

    _RECORD = os.environ.get("HC_GUARD_RECORD")
    _ACTIVE = os.environ.get("HC_GUARD_ACTIVE")


    def _guard(what):
        def refuse(*args, **kwargs):
            if args and isinstance(args[0], (socket.socket, subprocess.Popen)):
                args = args[1:]  # the bound instance; half-built Popen objects cannot be repr()'d
            with open(_RECORD, "a") as record:
                record.write(f"{what} {args!r:.200}\\n")
            raise OSError(f"blocked by the test guard: {what}")
        return refuse


    if _RECORD:
        with open(_ACTIVE, "a") as active:
            active.write(f"{os.getpid()}\\n")
        socket.socket.connect = _guard("socket.connect")
        socket.socket.connect_ex = _guard("socket.connect_ex")
        socket.socket.sendto = _guard("socket.sendto")
        socket.create_connection = _guard("socket.create_connection")
        socket.getaddrinfo = _guard("socket.getaddrinfo")
        socket.gethostbyname = _guard("socket.gethostbyname")
        subprocess.Popen._execute_child = _guard("subprocess.Popen")
        for name in ("system", "posix_spawn", "posix_spawnp", "fork", "forkpty", "execv", "execve",
                     "execvp", "execvpe", "execl", "execle", "execlp", "execlpe", "popen"):
            if hasattr(os, name):
                setattr(os, name, _guard(f"os.{name}"))
''')


def _headers(path: Path) -> tuple[str, dict[str, str], int]:
    expect, env, issues = "", {}, 1
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        key, sep, value = line[1:].strip().partition(": ")
        if key == "expect" and sep:
            expect = value
        elif key == "env" and sep:
            name, _, env_value = value.partition("=")
            env[name] = env_value
        elif key == "issues" and sep:
            issues = int(value)
    return expect, env, issues


class Guarded:
    """Runs Python in a subprocess under the guard, with its own state dir."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.site = tmp / "guard"
        self.site.mkdir()
        (self.site / "sitecustomize.py").write_text(GUARD)
        self.record = tmp / "contacted.log"
        self.active = tmp / "guard-active.log"
        self.state = tmp / "state"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HC_TEST_")}
        env["PYTHONPATH"] = os.pathsep.join([str(self.site), *filter(None, [env.get("PYTHONPATH")])])
        env["HC_GUARD_RECORD"] = str(self.record)
        env["HC_GUARD_ACTIVE"] = str(self.active)
        env["HC_STATE_DIR"] = str(self.state)
        env["XDG_STATE_HOME"] = str(self.tmp / "xdg-state")
        env.update(extra or {})
        return env

    def run(self, args: list[str], extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        before = self._active_count()
        result = subprocess.run([sys.executable, *args], cwd=self.tmp, env=self.env(extra_env),
                                capture_output=True, text=True, timeout=120)
        assert self._active_count() == before + 1, "the guard did not load in the subprocess"
        return result

    def _active_count(self) -> int:
        return len(self.active.read_text().splitlines()) if self.active.exists() else 0

    def contacted(self) -> str:
        return self.record.read_text() if self.record.exists() else ""


@pytest.fixture
def guarded(tmp_path):
    return Guarded(tmp_path)


def _corpus(stem: str) -> Path:
    matches = [p for p in FILES if p.stem.split("-", 1)[1] == stem]
    assert len(matches) == 1, f"no corpus file named NN-{stem}.yaml"
    return matches[0]


def _assert_refused(result: subprocess.CompletedProcess, path: Path, guarded: Guarded) -> None:
    expect, _, issues = _headers(path)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 2, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert expect in result.stderr, f"expected {expect!r} on stderr, got:\n{result.stderr}"
    assert f"invalid cluster spec ({issues} problem" in result.stderr, result.stderr
    assert result.stdout == "", f"nothing belongs on stdout for an invalid spec: {result.stdout!r}"
    assert guarded.contacted() == "", f"contacted while handling an invalid spec:\n{guarded.contacted()}"
    assert not guarded.state.exists(), "state was written for an invalid spec"


def test_guard_records_and_blocks(guarded):
    """The guard is real: a connect, a lookup and a child process are each recorded and refused."""
    code = textwrap.dedent("""
        import socket, subprocess
        for attempt in (lambda: socket.create_connection(("127.0.0.1", 9), timeout=1),
                        lambda: socket.socket().connect(("127.0.0.1", 9)),
                        lambda: socket.getaddrinfo("example.com", 443),
                        lambda: subprocess.run(["true"])):
            try:
                attempt()
            except OSError:
                pass
            else:
                raise SystemExit("not blocked")
    """)
    result = guarded.run(["-c", code])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = guarded.contacted().splitlines()
    assert [line.split()[0] for line in lines] == [
        "socket.create_connection", "socket.connect", "socket.getaddrinfo", "subprocess.Popen"]


def test_sample_corpus_files_exist():
    for stem in SAMPLE:
        _corpus(stem)


@pytest.mark.parametrize("stem", SAMPLE)
def test_validate_refuses_invalid_spec(stem, guarded):
    path = _corpus(stem)
    _, env, _ = _headers(path)
    result = guarded.run(["-m", "hardened_cluster.cli.main", "validate", "--spec", str(path)], env)
    _assert_refused(result, path, guarded)
    assert result.stderr.startswith(f"{path}: invalid cluster spec")


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "validate"])
@pytest.mark.parametrize("stem", ["etcd-node-is-control-plane", "typo-top-level-etdc", "aescbc-key-20-bytes"])
def test_other_commands_refuse_invalid_spec_the_same_way(command, stem, guarded):
    path = _corpus(stem)
    _, env, _ = _headers(path)
    extra = [a.format(tmp=guarded.tmp) for a in COMMANDS[command]]
    result = guarded.run(["-m", "hardened_cluster.cli.main", *command.split(), "--spec", str(path), *extra], env)
    _assert_refused(result, path, guarded)
    assert not (guarded.tmp / "rendered").exists(), "render wrote files for an invalid spec"


DRIVER = textwrap.dedent("""
    import contextlib, io, json, os, sys, traceback
    from hardened_cluster.cli.main import main

    results = []
    for case in json.loads(open(sys.argv[1]).read()):
        for name in [n for n in os.environ if n.startswith("HC_TEST_")]:
            del os.environ[name]
        os.environ.update(case["env"])
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(["validate", "--spec", case["path"]])
            except SystemExit as exc:
                code = exc.code
            except BaseException:
                code = "crashed"
                err.write(traceback.format_exc())
        results.append({"path": case["path"], "code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
    print(json.dumps(results))
""")


def test_validate_refuses_every_corpus_file(guarded):
    """All of the corpus through `main()`, in one guarded process (one interpreter start, not one per file)."""
    cases = [{"path": str(p), "env": _headers(p)[1]} for p in FILES]
    (guarded.tmp / "cases.json").write_text(json.dumps(cases))
    (guarded.tmp / "driver.py").write_text(DRIVER)
    result = guarded.run([str(guarded.tmp / "driver.py"), str(guarded.tmp / "cases.json")])
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    assert len(results) == len(FILES) >= 45
    failures = []
    for res in results:
        path = Path(res["path"])
        expect, _, issues = _headers(path)
        if ("Traceback" in res["stdout"] + res["stderr"] or res["code"] != 2 or res["stdout"]
                or expect not in res["stderr"] or f"invalid cluster spec ({issues} problem" not in res["stderr"]):
            failures.append(f"{path.name}: exit {res['code']}\n{res['stdout']}{res['stderr']}")
    assert not failures, "\n".join(failures)
    assert guarded.contacted() == ""
    assert not guarded.state.exists()


def test_valid_sample_passes_under_the_guard(guarded):
    """The guard itself does not break a normal `validate` (so the refusals above are the spec's doing)."""
    sample = ROOT / "inventories" / "sample" / "cluster.yaml"
    result = guarded.run(["-m", "hardened_cluster.cli.main", "validate", "--spec", str(sample)])
    assert result.returncode == 0, result.stderr
    assert "valid: cluster prod-eu1" in result.stdout
    assert guarded.contacted() == ""


def test_rotating_a_kms_v2_key_is_refused_contacting_nothing(guarded):
    """With kms-v2 the KMS plugin holds the keys: exit 2 naming encryption.provider, no host, no state."""
    data = yaml.safe_load((ROOT / "inventories" / "sample" / "cluster.yaml").read_text())
    data["encryption"] = {"provider": "kms-v2", "kms": {"name": "vault", "endpoint": "unix:///var/run/kms/vault.sock"}}
    spec = guarded.tmp / "cluster.yaml"
    spec.write_text(yaml.safe_dump(data))
    result = guarded.run(["-m", "hardened_cluster.cli.main", "rotate", "encryption-key", "--spec", str(spec)])
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert "encryption.provider: kms-v2: the KMS plugin keeps and rotates the keys itself" in result.stderr
    assert guarded.contacted() == ""
    assert not guarded.state.exists()


@pytest.mark.parametrize("days", ["0", "-3", "30.5", "soon"])
def test_a_renewal_window_that_is_no_whole_number_of_days_is_refused_contacting_nothing(days, guarded):
    result = guarded.run(["-m", "hardened_cluster.cli.main", "rotate", "kubeadm-certs", "--spec",
                          str(ROOT / "inventories" / "sample" / "cluster.yaml"), "--within", days])
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert f"argument --within: {days!r} is not a whole number of days, 1 or more" in result.stderr
    assert guarded.contacted() == ""
    assert not guarded.state.exists()


@pytest.mark.parametrize("command", ["apply", "drift"])
def test_a_control_plane_leaving_since_the_last_apply_is_refused_by_name_contacting_nothing(command, guarded):
    """The spec of the last apply is kept in the state; apply does not remove control planes yet."""
    from hardened_cluster.deliver import membership
    from hardened_cluster.spec.load import load_spec

    sample = load_spec(ROOT / "inventories" / "sample" / "cluster.yaml")
    membership.remember(sample, guarded.state / sample.spec.cluster.name)
    data = yaml.safe_load(sample.path.read_text())
    data["nodes"] = [n for n in data["nodes"] if n["name"] != "cp-3"]
    smaller = guarded.tmp / "cluster.yaml"
    smaller.write_text(yaml.safe_dump(data))
    result = guarded.run(["-m", "hardened_cluster.cli.main", command, "--spec", str(smaller), "--quiet"])
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert ("nodes: cp-3 (control-plane) is no longer in the spec; apply removes workers only, not control-plane "
            "nodes yet: put it back") in result.stderr, result.stderr
    assert guarded.contacted() == ""


@pytest.mark.parametrize("name", ["../etc/shadow", "/var/backups/etcd/etcd-20260101T000000Z.db.age", "latest",
                                  "etcd-2026.db.age", "etcd-20260101T000000Z.db.enc"])
def test_a_snapshot_that_is_no_snapshot_file_name_is_refused_contacting_nothing(name, guarded):
    """restore etcd --snapshot takes a file name as the snapshot script writes them: anything else is exit 2
    naming --snapshot, before the spec's secrets are read or any host is contacted."""
    result = guarded.run(["-m", "hardened_cluster.cli.main", "restore", "etcd", "--spec",
                          str(ROOT / "inventories" / "sample" / "cluster.yaml"), "--snapshot", name])
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert f"error: --snapshot: {name!r} is not a snapshot file name" in result.stderr
    assert guarded.contacted() == ""
    assert not guarded.state.exists()


@pytest.mark.parametrize("to, why", [
    ("1.37.0", "more than one minor up; kubeadm upgrades one minor at a time: upgrade to 1.36.x first"),
    ("1.34.4", "a downgrade; kubeadm cannot move a cluster to an older minor"),
    ("1.35.1", "already that release"),
    ("1.35.5", "the same minor"),
    ("2.0.0", "more than one minor up"),
    ("latest", "not a Kubernetes release (x.y.z)"),
])
def test_an_upgrade_other_than_one_minor_up_is_refused_contacting_nothing(to, why, guarded):
    """`upgrade --to`: exit 2 naming cluster.kubernetes_version, before any host or the state is touched."""
    result = guarded.run(["-m", "hardened_cluster.cli.main", "upgrade", "--spec",
                          str(ROOT / "inventories" / "sample" / "cluster.yaml"), "--to", to])
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert f"cluster.kubernetes_version: {to} from 1.35.1: {why}" in result.stderr
    assert guarded.contacted() == ""
    assert not guarded.state.exists()


def test_an_upgrade_to_an_unsupported_minor_names_the_key(guarded):
    """One minor up, but past what the spec supports: the spec's own validation names the key."""
    data = yaml.safe_load((ROOT / "inventories" / "sample" / "cluster.yaml").read_text())
    data["cluster"]["kubernetes_version"] = "1.37.2"
    spec = guarded.tmp / "cluster.yaml"
    spec.write_text(yaml.safe_dump(data))
    result = guarded.run(["-m", "hardened_cluster.cli.main", "upgrade", "--spec", str(spec), "--to", "1.38.0"])
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert "cluster.kubernetes_version: '1.38.0' is not supported" in result.stderr
    assert guarded.contacted() == ""
