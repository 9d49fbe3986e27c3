"""ansible-lint with the production profile, with no rule switched off."""
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_lint_config_switches_no_rule_off():
    config = yaml.safe_load((REPO / ".ansible-lint").read_text())
    assert config["profile"] == "production"
    assert not {"skip_list", "warn_list", "enable_list"} & set(config)


def test_ansible_lint_production_profile_passes():
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "ANSIBLE_ROLES_PATH": str(REPO / "roles")}
    lint = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-lint"), "--profile", "production", "--offline", "-q", "roles", "playbooks"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert lint.returncode == 0, lint.stdout[-4000:] + lint.stderr[-4000:]
