"""Drift beyond the planned files, on the lab: keys and sudo rules planted beside the managed ones,
settings that win over the drop-ins, ownership deep in the etcd data directory, a crash-looping member.

Each test tampers with one converged host in a way tests/lab/test_cluster.py does not, proves the
tamper works (a login, a sudo rule, a setting, a crash loop), then: `drift` reports it by host, item
and CIS ID, one `apply` fixes it, the outcome is gone, and `drift` is clean.
"""
import base64
import hashlib
import re
import stat
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

from hardened_cluster.deliver.converge import converge
from hardened_cluster.verify.probes import etcd_health

pytestmark = pytest.mark.lab

PHASES = ["hosts", "etcd"]
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def converged(lab_spec, lab_state):
    result, _ = converge(lab_spec, check=False, phases=PHASES, state=lab_state)
    assert result.succeeded, {h: r.errors for h, r in result.hosts.items()}
    return result


def _converge(lab_spec, lab_state, check, full=False, hosts=None):
    result, _ = converge(lab_spec, check=check, phases=PHASES, state=lab_state, full=full, hosts=hosts)
    assert result.succeeded, {h: r.errors for h, r in result.hosts.items()}
    return result


def drift_apply_clean(lab_spec, lab_state, host):
    """Drift finds `host` alone, one apply fixes it, drift is clean; the drift and apply reports' changes."""
    drift = _converge(lab_spec, lab_state, check=True)
    drifted = {h for h, r in drift.hosts.items() if r.changed}
    assert drifted == {host}, {h: [c.describe() for c in r.changes] for h, r in drift.hosts.items() if r.changed}
    fixed = _converge(lab_spec, lab_state, check=False)
    assert fixed.hosts[host].changed > 0
    # Check mode of every role on that host, not the rerun shortcut's fingerprint (the drift above found the
    # others unchanged).
    clean = _converge(lab_spec, lab_state, check=True, full=True, hosts=[host])
    assert set(clean.hosts) == {host} and not clean.hosts[host].unchanged
    assert not clean.hosts[host].changed, [c.describe() for c in clean.hosts[host].changes]
    return drift.hosts[host].changes, fixed.hosts[host].changes


def sh(lab, node, script, check=True):
    return lab.lab.exec(node, ["sh", "-c", script], check=check)


def out(lab, node, script):
    return sh(lab, node, script).stdout.decode().strip()


def fingerprint(public_line: str) -> str:
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def can_log_in(lab_spec, name: str, key_file: Path) -> bool:
    """A key login as the admin user, with the node's pinned host key (no other key is accepted)."""
    node = lab_spec.spec.node(name)
    kind, data = lab_spec.host_keys[name].split()
    client = paramiko.SSHClient()
    client.get_host_keys().add(str(node.address), kind, paramiko.PKey.from_type_string(kind, base64.b64decode(data)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(str(node.address), username=lab_spec.spec.ssh_user(node), key_filename=str(key_file),
                       allow_agent=False, look_for_keys=False, timeout=10, banner_timeout=10, auth_timeout=10)
        _, stdout, _ = client.exec_command("id -un", timeout=10)
        return stdout.read().decode().strip() == lab_spec.spec.ssh_user(node)
    except paramiko.AuthenticationException:
        return False
    finally:
        client.close()


def offered_methods(lab_spec, name: str) -> list[str]:
    """The authentication methods sshd offers the admin user (it re-executes itself on reload)."""
    node = lab_spec.spec.node(name)
    deadline = time.monotonic() + 20
    while True:
        try:
            transport = paramiko.Transport((str(node.address), 22))
            break
        except paramiko.SSHException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    try:
        transport.start_client(timeout=10)
        assert transport.get_remote_server_key().get_base64() == lab_spec.host_keys[name].split()[1]
        try:
            transport.auth_none(lab_spec.spec.ssh_user(node))
        except paramiko.BadAuthenticationType as refused:
            return sorted(refused.allowed_types)
        return ["none"]
    finally:
        transport.close()


def test_planted_keys_are_reported_by_user_and_fingerprint_and_no_longer_log_in(converged, lab, lab_spec, lab_state, tmp_path):
    planted = tmp_path / "planted"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "intruder", "-f", str(planted)], check=True)
    public = (tmp_path / "planted.pub").read_text().strip()
    home = out(lab, "worker-1", f"getent passwd {lab_spec.spec.ssh.user} | cut -d: -f6")
    sh(lab, "worker-1", f"echo '{public}' >> {home}/.ssh/authorized_keys")
    sh(lab, "worker-1", f"install -d -m 0700 /root/.ssh && echo 'no-pty {public}' >> /root/.ssh/authorized_keys")
    assert can_log_in(lab_spec, "worker-1", planted), "the tamper did not take: the planted key cannot log in"

    found, removed = drift_apply_clean(lab_spec, lab_state, "worker-1")
    items = {c.item for c in found}
    assert f"{lab_spec.spec.ssh.user}: ssh-ed25519 {fingerprint(public)}" in items, [c.describe() for c in found]
    assert f"root: ssh-ed25519 {fingerprint(public)}" in items, [c.describe() for c in found]
    assert f"{lab_spec.spec.ssh.user}: ssh-ed25519 {fingerprint(public)}" in {c.item for c in removed}

    assert not can_log_in(lab_spec, "worker-1", planted)
    assert can_log_in(lab_spec, "worker-1", Path(lab.lab.admin_key)), "apply locked the admin out"
    assert sh(lab, "worker-1", "test -e /root/.ssh/authorized_keys", check=False).returncode == 1


def test_planted_sudo_rules_are_reported_and_removed(converged, lab, lab_spec, lab_state):
    rule = "nobody ALL=(ALL:ALL) NOPASSWD: ALL"
    sh(lab, "cp-1", f"printf '%s\\n' '{rule}' > /etc/sudoers.d/zz-local && chmod 0440 /etc/sudoers.d/zz-local"
                    f" && printf '%s\\n' 'daemon ALL=(ALL:ALL) NOPASSWD: ALL' >> /etc/sudoers")
    for user in ("nobody", "daemon"):
        assert "NOPASSWD: ALL" in out(lab, "cp-1", f"sudo -l -U {user}"), "the tamper did not take"

    found, _ = drift_apply_clean(lab_spec, lab_state, "cp-1")
    described = {c.item: c for c in found}
    assert "/etc/sudoers.d/zz-local" in described, [c.describe() for c in found]
    assert described["/etc/sudoers"].cis == "Debian 12 5.2.2"

    for user in ("nobody", "daemon"):
        assert "not allowed to run sudo" in out(lab, "cp-1", f"sudo -l -U {user}")
    assert out(lab, "cp-1", f"sudo -l -U {lab_spec.spec.ssh.user}").count("NOPASSWD: ALL") == 1


def test_sshd_settings_before_the_include_are_reported_with_the_line_and_removed(converged, lab, lab_spec, lab_state):
    top = "AuthenticationMethods any\\nPasswordAuthentication yes\\nPermitRootLogin yes\\n"
    sh(lab, "worker-2", f"{{ printf '{top}'; cat /etc/ssh/sshd_config; }} > /tmp/sshd_config"
                        " && cat /tmp/sshd_config > /etc/ssh/sshd_config && systemctl reload ssh")
    assert "password" in offered_methods(lab_spec, "worker-2"), "the tamper did not take"

    found, _ = drift_apply_clean(lab_spec, lab_state, "worker-2")
    settings = {c.item: c for c in found}
    assert {"/etc/ssh/sshd_config: authenticationmethods", "/etc/ssh/sshd_config: passwordauthentication",
            "/etc/ssh/sshd_config: permitrootlogin"} <= set(settings), [c.describe() for c in found]
    assert settings["/etc/ssh/sshd_config: permitrootlogin"].cis == "Debian 12 5.1.20"
    assert "/etc/ssh/sshd_config:3 sets permitrootlogin yes" in settings["/etc/ssh/sshd_config: permitrootlogin"].detail

    assert offered_methods(lab_spec, "worker-2") == ["publickey"]
    effective = out(lab, "worker-2", "/usr/sbin/sshd -T -C user=root,host=worker-2,addr=10.231.0.32 | grep '^permitrootlogin'")
    assert effective == "permitrootlogin no"
    assert can_log_in(lab_spec, "worker-2", Path(lab.lab.admin_key))


def test_sysctl_set_back_at_boot_by_a_later_file_is_reported_and_removed(converged, lab, lab_spec, lab_state):
    key = "net.ipv4.conf.all.accept_redirects"
    path = "/proc/sys/" + key.replace(".", "/")
    # systemd-sysctl with --prefix applies one key the way a boot would, from every file in order.
    boot = f"/lib/systemd/systemd-sysctl --prefix={key}"
    sh(lab, "etcd-3", f"echo '{key} = 1' > /etc/sysctl.d/99-zz-local.conf && {boot}")
    assert out(lab, "etcd-3", f"cat {path}") == "1", "the tamper did not take"

    found, _ = drift_apply_clean(lab_spec, lab_state, "etcd-3")
    items = {c.item: c for c in found}
    assert f"/etc/sysctl.d/99-zz-local.conf: {key}" in items, [c.describe() for c in found]
    assert items[f"/etc/sysctl.d/99-zz-local.conf: {key}"].cis == "Debian 12 3.3.5"

    sh(lab, "etcd-3", boot)
    assert out(lab, "etcd-3", f"cat {path}") == "0"


def _crash_looping(lab, node, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = out(lab, node, "systemctl show -p NRestarts --value etcd")
        if int(shown or 0) > 0:
            return
        time.sleep(1)
    raise AssertionError(out(lab, node, "systemctl status etcd --no-pager || true"))


def wait_healthy(lab_spec, timeout=90):
    deadline = time.monotonic() + timeout
    while True:
        health = etcd_health(lab_spec)
        if len(health) == 3 and all(h.get("health") in (True, "true") for h in health):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"etcd not healthy: {health}")
        time.sleep(1)


def test_chown_deep_in_the_data_dir_crash_loop_is_reported_with_the_log_and_fixed(converged, lab, lab_spec, lab_state):
    sh(lab, "etcd-2", "chown -R root:root /var/lib/etcd/member && chmod -R o+rX /var/lib/etcd/member"
                      " && systemctl restart --no-block etcd")
    _crash_looping(lab, "etcd-2")

    found, fixed = drift_apply_clean(lab_spec, lab_state, "etcd-2")
    deep = [c for c in found if c.item and c.item.startswith("/var/lib/etcd/member")]
    assert deep and all(c.cis == "1.1.11, 1.1.12" for c in deep), [c.describe() for c in found]
    assert any("owner root, want etcd" in c.detail for c in deep)
    assert any(re.search(r"mode 07\d5, at most 0700", c.detail) for c in deep)
    health = [c for c in fixed if c.item == "etcd.service"]
    assert health and "permission denied" in health[0].detail.lower(), [c.describe() for c in fixed]
    assert "automatic restarts" in health[0].detail

    wait_healthy(lab_spec)
    assert out(lab, "etcd-2", "systemctl is-active etcd") == "active"
    assert out(lab, "etcd-2", "find /var/lib/etcd ! -user etcd -o -perm /077 | wc -l") == "0"


def test_state_folders_are_private_as_the_readme_says(converged, lab_state):
    promise = re.search(r"directories (0[0-7]{3}), files (0[0-7]{3})", README.read_text())
    assert promise, "README no longer states the state folder's modes"
    directories, files = (int(m, 8) for m in promise.groups())
    looser = []
    for path in [lab_state, *lab_state.rglob("*")]:
        if path.is_symlink() or path.is_socket():
            continue
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & ~(directories if path.is_dir() else files):
            looser.append(f"{path.relative_to(lab_state)} {mode:04o}")
    assert not looser, looser
