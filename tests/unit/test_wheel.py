"""A wheel built from the repository installs in a fresh venv, and `render` and `check` of the sample work
from a directory outside the checkout: templates, roles, playbooks, ansible.cfg and the artifact manifest
ship as package data (hardened_cluster/resources.py, setup.py)."""
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "inventories" / "sample" / "cluster.yaml"


def _run(argv, cwd, env=None):
    result = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
                            check=False)
    assert result.returncode == 0, f"{argv[:3]} exited {result.returncode}:\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
    return result.stdout


def _source_copy(destination: Path) -> Path:
    """The checkout's files (tracked, or new and not ignored): pip builds in the tree it is given."""
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO)
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)
    return destination


def test_wheel_installs_and_renders_and_checks_the_sample_outside_the_checkout(tmp_path):
    wheels = tmp_path / "wheels"
    source = _source_copy(tmp_path / "source")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", wheels, source], cwd=tmp_path)
    (wheel,) = wheels.glob("hardened_cluster-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    # Not editable, dependencies from pip's cache; .pyc compiling left out, as it only costs time here.
    _run([venv / "bin/python", "-m", "pip", "install", "--quiet", "--no-compile", wheel], cwd=tmp_path)

    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(SAMPLE, work / "cluster.yaml")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "HC_STATE_DIR": str(tmp_path / "state")}
    where = _run([venv / "bin/python", "-c", "from hardened_cluster import resources; print(resources.ROOT)"],
                 cwd=work, env=env).strip()
    assert Path(where).is_relative_to(venv), f"the installed package reads its data from {where}"

    cli = venv / "bin/hardened-cluster"
    out = _run([cli, "render", "--spec", "cluster.yaml", "--out", "render"], cwd=work, env=env)
    nodes = [n["name"] for n in yaml.safe_load(SAMPLE.read_text())["nodes"]]
    assert f"for {len(nodes)} hosts" in out, out
    for node in nodes:
        assert (work / "render" / node / "etc/nftables.conf").is_file(), node
    assert len([p for p in (work / "render").rglob("*") if p.is_file()]) > 10 * len(nodes)
    summary = _run([cli, "check", "--spec", "cluster.yaml"], cwd=work, env=env).strip().splitlines()[-1]
    assert summary.startswith("summary: PASS ") and ", FAIL 0," in summary, summary
