"""Drift reads Ansible's own events: a real playbook (local connection, files in a temporary directory) in
check mode, then applied, then checked again. The changes the parser must find are written out here by hand.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import ansible_runner
import yaml

from hardened_cluster.deliver.ansible import Change, HostResult, _Events

HOST = "node-1"


def _run(tmp_path: Path, check: bool) -> HostResult:
    sshd, planned, kept, key = (tmp_path / n for n in ("sshd.conf", "planned.conf", "kept.conf", "private.key"))
    # As the roles do: planned files and settings in loops whose items name the file (and the setting).
    tasks = [
        {"name": "Deliver the planned files", "ansible.builtin.copy": {
            "dest": "{{ item.dest }}", "content": "{{ item.content }}", "mode": "0600"},
         "loop": [{"dest": str(planned), "content": "wanted\n"}, {"dest": str(kept), "content": "same\n"}],
         "loop_control": {"label": "{{ item.dest }}"}},
        {"name": "Settings", "ansible.builtin.lineinfile": {"path": "{{ item.dest }}", "regexp": "{{ item.regexp }}",
                                                            "line": "{{ item.line }}"},
         "loop": [{"dest": str(sshd), "setting": "permitrootlogin", "regexp": "^PermitRootLogin ",
                   "line": "PermitRootLogin no"},
                  {"dest": str(sshd), "setting": "passwordauthentication", "regexp": "^PasswordAuthentication ",
                   "line": "PasswordAuthentication no"}],
         "loop_control": {"label": "{{ item.setting }}"}},
        {"name": "Restrict the key", "ansible.builtin.file": {"path": str(key), "mode": "0600"}},
        {"name": "Probe", "ansible.builtin.command": {"argv": ["true"]}, "changed_when": False,
         "check_mode": False},
    ]
    rc, result = _play(tmp_path, tasks, check)
    assert rc == 0
    return result


def _play(tmp_path: Path, tasks: list[dict], check: bool) -> tuple[int, HostResult]:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (tmp_path / "runner").mkdir(exist_ok=True)
    (project / "site.yml").write_text(yaml.safe_dump(
        [{"name": "Drift", "hosts": "all", "gather_facts": False, "tasks": tasks}], sort_keys=False))
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {HOST: {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    events = _Events([HOST], check, None, {})
    runner = ansible_runner.run(
        private_data_dir=str(tmp_path / "runner"), project_dir=str(project), playbook="site.yml",
        inventory=str(inventory), cmdline="--check --diff" if check else None, event_handler=events, quiet=True,
        suppress_env_files=True,
        envvars={"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                 "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_REMOTE_TEMP": str(tmp_path / "tmp"),
                 "ANSIBLE_NOCOLOR": "True"})
    return runner.rc, events.results[HOST]


def test_drift_reports_each_changed_file_and_setting_and_nothing_once_fixed(tmp_path):
    sshd, planned, kept, key = (tmp_path / n for n in ("sshd.conf", "planned.conf", "kept.conf", "private.key"))
    sshd.write_text("PermitRootLogin yes\nPasswordAuthentication no\n")
    planned.write_text("weakened\n")
    kept.write_text("same\n")
    kept.chmod(0o600)
    key.write_text("secret\n")
    key.chmod(0o644)
    expected = [Change("Deliver the planned files", "-", str(planned)),
                Change("Settings", "-", f"{sshd}: permitrootlogin", "Debian 12 5.1.20"),
                Change("Restrict the key", "-", str(key))]

    drift = _run(tmp_path, check=True)
    assert (drift.changed, drift.failed, drift.changes) == (3, 0, expected)
    # Check mode touched nothing.
    assert planned.read_text() == "weakened\n" and "PermitRootLogin yes" in sshd.read_text()
    assert key.stat().st_mode & 0o777 == 0o644

    applied = _run(tmp_path, check=False)
    assert (applied.changed, applied.failed, applied.changes) == (3, 0, expected)
    assert planned.read_text() == "wanted\n" and "PermitRootLogin no" in sshd.read_text()
    assert key.stat().st_mode & 0o777 == 0o600

    clean = _run(tmp_path, check=True)
    assert (clean.changed, clean.failed, clean.changes) == (0, 0, [])
    assert clean.ok == 4


def test_a_failed_loop_is_reported_by_the_items_that_failed_and_their_own_messages(tmp_path):
    tasks = [{"name": "Remove state", "ansible.builtin.fail": {"msg": "{{ item }} is busy"},
              "when": "item != '/kept'", "loop": ["/kept", "/var/lib/kubelet"]}]
    rc, result = _play(tmp_path, tasks, check=False)
    assert rc != 0 and result.failed == 1
    assert result.errors == ["-: Remove state: /var/lib/kubelet: /var/lib/kubelet is busy"]


def test_each_host_keeps_its_slowest_tasks_longest_first_with_their_seconds(tmp_path):
    tasks = [{"name": f"Wait {seconds}", "ansible.builtin.command": {"argv": ["sleep", str(seconds)]},
              "changed_when": False} for seconds in (0.1, 1.2, 0.6)]
    rc, result = _play(tmp_path, tasks, check=False)
    assert rc == 0
    assert [name for _, name in result.slowest] == ["-: Wait 1.2", "-: Wait 0.6", "-: Wait 0.1"]
    seconds = dict((name, s) for s, name in result.slowest)
    assert 1.2 <= seconds["-: Wait 1.2"] < 10 and 0.6 <= seconds["-: Wait 0.6"] < seconds["-: Wait 1.2"]
