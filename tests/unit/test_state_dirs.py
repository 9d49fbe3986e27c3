"""The state folder keeps the README's promise: directories 0700, files 0600, however they came to exist."""
import re
import stat
from pathlib import Path

import yaml

from hardened_cluster.plan.render import render_plan
from hardened_cluster.secrets.store import resolve_secrets, state_dir, write_private
from hardened_cluster.spec.load import parse_spec

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "inventories" / "sample" / "cluster.yaml"


def test_state_folder_modes_are_the_documented_ones(tmp_path, monkeypatch):
    promise = re.search(r"directories (0[0-7]{3}), files (0[0-7]{3})", (ROOT / "README.md").read_text())
    assert promise, "README no longer states the state folder's modes"
    directories, files = (int(m, 8) for m in promise.groups())
    monkeypatch.setenv("HC_STATE_DIR", str(tmp_path / "not" / "yet"))
    loaded = parse_spec(yaml.safe_load(SAMPLE.read_text()), SAMPLE)
    state = state_dir(loaded.spec.cluster.name)
    plan = render_plan(loaded, resolve_secrets(loaded, state))
    plan.write_tree(state / "plan")
    write_private(state / "reports" / "drift-1.json", "{}")
    (state / "reports").chmod(0o755)  # left open by an older version
    write_private(state / "reports" / "drift-2.json", "{}")
    created = tmp_path / "not"
    paths = [created, *created.rglob("*")]
    assert any(p.is_dir() and p.parent.name == "etcd-1" for p in paths) and any(p.name == "drift-2.json" for p in paths)
    wrong = [f"{p.relative_to(tmp_path)} {stat.S_IMODE(p.stat().st_mode):04o}" for p in paths
             if stat.S_IMODE(p.stat().st_mode) != (directories if p.is_dir() else files)]
    assert not wrong, wrong
