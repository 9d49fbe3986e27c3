"""Preflight sessions against the lab's real sshd."""
import socket

import pytest

from hardened_cluster.deliver.preflight import connect, ssh_run
from hardened_cluster.deliver.rerun import END, fingerprint_command, parse_fingerprint

pytestmark = pytest.mark.lab


def test_sessions_send_small_packets_at_once(lab_spec):
    """Nagle's algorithm would hold each small request until the previous one is acknowledged."""
    client = connect(lab_spec, lab_spec.spec.nodes[0])
    try:
        sock = client.get_transport().sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        _, out, _ = client.exec_command("echo ok", timeout=10)
        assert out.read() == b"ok\n"
    finally:
        client.close()


def test_the_fingerprint_script_goes_on_stdin_not_into_sudos_log(lab, lab_spec):
    node = lab_spec.spec.nodes[0]
    request = {"walk": ["/etc/ssh"], "stat": ["/root"], "files": [], "sysctl": ["net.ipv4.ip_forward"],
               "units": ["ssh.service"], "disabled": []}
    assert parse_fingerprint(ssh_run(lab_spec, node, fingerprint_command(request))) is not None
    journal = lab.lab.exec(node.name, ["journalctl", "--no-pager", "-o", "cat", "SYSLOG_IDENTIFIER=sudo"]).stdout.decode()
    assert "COMMAND=/usr/bin/sh -s" in journal
    assert END not in journal and "sha256sum" not in journal
