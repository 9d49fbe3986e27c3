"""Preflight sessions against the lab's real sshd."""
import socket

import pytest

from hardened_cluster.preflight import connect

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
