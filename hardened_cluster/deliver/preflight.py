"""Preflight over SSH with paramiko: every host key matches its pin, and the facts the plan needs.

Runs before Ansible touches anything, so a changed host key stops the run with nothing changed.
"""
from __future__ import annotations

import base64
import json
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import paramiko

from hardened_cluster.errors import DeliveryError
from hardened_cluster.plan.render import HostFacts
from hardened_cluster.secrets.store import write_private
from hardened_cluster.spec.model import LoadedSpec, Node

# /dev/kvm alone is not enough for Kata: its VMs talk to the agent over vhost-vsock.
KATA_PROBE = "test -c /dev/kvm && test -c /dev/vhost-vsock && echo kata-capable || echo no-kvm"
# The address the host sees this session come from (after any NAT): what its firewall must keep admitting.
CONTROLLER_PROBE = 'echo "${SSH_CONNECTION%% *}"'
FACTS_PROBE = f"{KATA_PROBE}; {CONTROLLER_PROBE}"


class Command(NamedTuple):
    """A command line, and the text it reads on stdin (a script there keeps it out of sudo's log)."""

    line: str
    stdin: str = ""


class _PromptAckSocket(socket.socket):
    """A TCP socket that acknowledges every segment at once.

    sshd leaves Nagle's algorithm on for non-interactive sessions, so each reply that follows another
    unacknowledged one waits for our delayed ACK: about 40 ms per exchange, several per session.
    """

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        self.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return data


def _open_socket(address: str, port: int, timeout: float) -> socket.socket:
    plain = socket.create_connection((address, port), timeout=timeout)
    plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    prompt = _PromptAckSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
    prompt.settimeout(timeout)
    return prompt


def _fingerprint(key: paramiko.PKey) -> str:
    return key.fingerprint  # "SHA256:..." like ssh-keygen -l


def _pinned(loaded: LoadedSpec, node: Node) -> paramiko.PKey:
    kind, data = loaded.host_keys[node.name].split()
    return paramiko.PKey.from_type_string(kind, base64.b64decode(data))


def connect(loaded: LoadedSpec, node: Node, timeout: float = 10.0) -> paramiko.SSHClient:
    """An SSH session to `node` that accepts only the host key pinned in the spec."""
    spec = loaded.spec
    pinned = _pinned(loaded, node)
    client = paramiko.SSHClient()
    port = spec.ssh_port(node)
    host_id = str(node.address) if port == 22 else f"[{node.address}]:{port}"
    client.get_host_keys().add(host_id, pinned.get_name(), pinned)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    where = f"{node.name} ({node.address}:{port})"
    key_file = spec.ssh.private_key_file.expanduser()
    try:
        client.connect(
            str(node.address), port=port, username=spec.ssh_user(node), key_filename=str(key_file),
            sock=_open_socket(str(node.address), port, timeout), timeout=timeout, banner_timeout=timeout,
            auth_timeout=timeout, allow_agent=False, look_for_keys=False,
        )
    except paramiko.BadHostKeyException as exc:
        raise DeliveryError(
            f"{where}: host key {_fingerprint(exc.key)} does not match the pinned {_fingerprint(exc.expected_key)}; "
            "nothing was changed (update the pin only if you know why the key changed)"
        ) from None
    except paramiko.SSHException as exc:
        raise DeliveryError(f"{where}: SSH failed before any change: {exc}") from None
    except OSError as exc:
        raise DeliveryError(f"{where}: unreachable before any change: {exc.strerror or exc}") from None
    return client


def _run(client: paramiko.SSHClient, command: Command, timeout: float) -> tuple[int, str, str]:
    into, out, err = client.exec_command(command.line, timeout=timeout)
    into.write(command.stdin)
    into.channel.shutdown_write()
    # Undecodable bytes (an encrypted etcd value) must not end the read: they are replaced, the text stays.
    stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    return out.channel.recv_exit_status(), stdout, stderr


def ssh_run(loaded: LoadedSpec, node: Node, command: str | Command, timeout: float = 30.0) -> tuple[int, str, str]:
    """Run one command on `node`; returns exit status, stdout and stderr."""
    client = connect(loaded, node)
    try:
        return _run(client, Command(command) if isinstance(command, str) else command, timeout)
    finally:
        client.close()


def _probe(loaded: LoadedSpec, node: Node, command: Command | None) -> tuple[HostFacts, tuple[int, str, str] | None]:
    client = connect(loaded, node)
    try:
        # One round trip: the probe's two lines first, then whatever the extra command prints.
        probe = Command(f"{FACTS_PROBE}; {command.line}", command.stdin) if command else Command(FACTS_PROBE)
        rc, out, err = _run(client, probe, 60.0)
    finally:
        client.close()
    kata, _, rest = out.partition("\n")
    controller, _, rest = rest.partition("\n")
    facts = HostFacts(kata_capable=kata.strip() == "kata-capable", controller_address=controller.strip() or None)
    return facts, (rc, rest, err) if command else None


def require_key_file(loaded: LoadedSpec) -> None:
    """Raises DeliveryError, before any host is contacted, when the SSH key is not there."""
    key_file = loaded.spec.ssh.private_key_file.expanduser()
    if not key_file.is_file():
        raise DeliveryError(f"ssh.private_key_file: {key_file} does not exist")


def preflight_with(
    loaded: LoadedSpec, hosts: list[str] | None, commands: dict[str, Command]
) -> tuple[dict[str, HostFacts], dict[str, tuple[int, str, str]]]:
    """Facts per host, plus what each host's extra command answered over the same connection.

    Raises DeliveryError naming the first host that fails.
    """
    require_key_file(loaded)
    nodes = [n for n in loaded.spec.nodes if hosts is None or n.name in hosts]
    with ThreadPoolExecutor(max_workers=min(32, max(1, len(nodes)))) as pool:
        results = list(pool.map(lambda n: _probe(loaded, n, commands.get(n.name)), nodes))
    facts = {n.name: f for n, (f, _) in zip(nodes, results)}
    answers = {n.name: a for n, (_, a) in zip(nodes, results) if a is not None}
    return facts, answers


def preflight(loaded: LoadedSpec, hosts: list[str] | None = None) -> dict[str, HostFacts]:
    """Facts per host; raises DeliveryError naming the first host that fails."""
    return preflight_with(loaded, hosts, {})[0]


FACTS_FILE = "facts.json"


def remembered_facts(state: Path) -> dict[str, HostFacts]:
    """What the last preflights found per host (the state directory's facts.json)."""
    path = state / FACTS_FILE
    return {h: HostFacts(**f) for h, f in json.loads(path.read_text()).items()} if path.is_file() else {}


def remember_facts(loaded: LoadedSpec, state: Path, found: dict[str, HostFacts]) -> dict[str, HostFacts]:
    """Every spec node's facts: those just found, else those remembered. A run limited to some hosts
    still renders the others as they are (their runtimes decide the sandbox labels cluster_objects puts
    on them, and which artifacts are fetched)."""
    known = remembered_facts(state)
    facts = {n.name: found.get(n.name) or known[n.name] for n in loaded.spec.nodes
             if n.name in found or n.name in known}
    write_private(state / FACTS_FILE, json.dumps({h: asdict(f) for h, f in sorted(facts.items())}, indent=1))
    return facts


def unknown_hosts(loaded: LoadedSpec, state: Path, hosts: list[str]) -> list[str]:
    """The spec nodes outside `hosts` that no preflight has seen yet: they are asked too."""
    known = remembered_facts(state)
    return [n.name for n in loaded.spec.nodes if n.name not in hosts and n.name not in known]
