import paramiko
import pytest

pytestmark = pytest.mark.lab


def client(known_hosts=None):
    ssh = paramiko.SSHClient()
    if known_hosts is not None:
        ssh.load_host_keys(str(known_hosts))
    ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
    return ssh


def connect(ssh, lab, node, **auth):
    if not auth:
        auth = {"key_filename": str(lab.lab.admin_key)}
    ssh.connect(node.address, username=lab.lab.admin_user, look_for_keys=False, allow_agent=False, timeout=10, **auth)


def run(ssh, command):
    _, stdout, stderr = ssh.exec_command(command, timeout=30)
    status = stdout.channel.recv_exit_status()
    return status, stdout.read().decode().strip(), stderr.read().decode().strip()


def test_admin_logs_in_with_pinned_host_key_and_has_sudo(lab):
    for node in lab.nodes:
        with client(lab.known_hosts) as ssh:
            connect(ssh, lab, node)
            assert run(ssh, "hostname") == (0, node.name, "")
            assert run(ssh, "sudo -n id -u") == (0, "0", "")
            assert run(ssh, "echo $SHELL")[1] == "/bin/bash"


def test_every_node_has_its_own_host_key(lab):
    keys = [lab.host_keys[n.name] for n in lab.nodes]
    assert len(set(keys)) == len(keys)
    for node in lab.nodes:
        pub = lab.lab.exec(node.name, ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).stdout.decode().split()
        assert " ".join(pub[:2]) == lab.host_keys[node.name]


def test_changed_host_key_is_refused(lab, tmp_path):
    first, second = lab.nodes[0], lab.nodes[1]
    swapped = {first.name: lab.host_keys[second.name]}
    known_hosts = tmp_path / "known_hosts"
    lab.lab.write_known_hosts(known_hosts, swapped, [first])
    with client(known_hosts) as ssh, pytest.raises(paramiko.BadHostKeyException):
        connect(ssh, lab, first)


def test_unknown_host_key_is_refused(lab, tmp_path):
    with client() as ssh, pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        connect(ssh, lab, lab.nodes[0])
