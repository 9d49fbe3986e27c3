"""The node image as the roles find it: services installed but not enabled, nothing that reaches out."""

import pytest

from hardened_cluster.lab import image

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def rootfs(lab):
    return lab.lab.build_image()


def test_role_managed_services_are_installed_but_not_enabled(rootfs):
    for binary in (
        "usr/bin/etcd",
        "usr/bin/etcdctl",
        "usr/bin/containerd",
        "usr/bin/ctr",
        "usr/sbin/runc",
        "usr/bin/runsc",
        "usr/sbin/nft",
    ):
        assert (rootfs / binary).exists(), binary
    wants = [p.name for p in rootfs.glob("etc/systemd/system/*.wants/*")]
    for unit in image.DISABLED_UNITS:
        assert unit not in wants


def test_getty_and_apt_timers_are_masked(rootfs):
    for unit in image.MASKED_UNITS:
        assert str((rootfs / "etc/systemd/system" / unit).readlink()) == "/dev/null", unit


def test_image_has_no_host_keys_and_a_default_sshd_config(rootfs):
    assert not list(rootfs.glob("etc/ssh/ssh_host_*"))
    assert list(rootfs.glob("etc/ssh/sshd_config.d/*")) == []
    config = (rootfs / "etc/ssh/sshd_config").read_text().splitlines()
    assert not [line for line in config if line.strip().lower().startswith("passwordauthentication")]


def test_admin_user_has_bash_and_passwordless_sudo(rootfs):
    passwd = {line.split(":")[0]: line.split(":") for line in (rootfs / "etc/passwd").read_text().splitlines()}
    assert passwd[image.ADMIN_USER][6] == "/bin/bash"
    assert "NOPASSWD: ALL" in (rootfs / f"etc/sudoers.d/{image.ADMIN_USER}").read_text()
