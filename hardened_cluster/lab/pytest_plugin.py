"""pytest plugin: a session-wide `lab` fixture with the nodes of inventories/lab/cluster.yaml up.

Set HC_LAB_SPEC to use another cluster file.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from hardened_cluster import resources

from .from_spec import spec_nodes
from .lab import Lab
from .model import LabNode

# In a checkout: the repository's lab spec.
DEFAULT_SPEC = resources.ROOT / "inventories/lab/cluster.yaml"
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


@dataclass(frozen=True)
class LabSession:
    lab: Lab
    nodes: list[LabNode]
    host_keys: dict[str, str]
    known_hosts: Path


def spec_path() -> Path:
    return Path(os.environ.get("HC_LAB_SPEC", DEFAULT_SPEC))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory):
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("the lab needs root on Linux")
    nodes, _ = spec_nodes(spec_path())
    the_lab = Lab()
    # CI stops runs with SIGTERM: turn it into KeyboardInterrupt so the teardown below still runs.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        keys = the_lab.up(nodes)
        known_hosts = tmp_path_factory.mktemp("lab") / "known_hosts"
        the_lab.write_known_hosts(known_hosts, keys, nodes)
        yield LabSession(the_lab, nodes, keys, known_hosts)
    finally:
        # A signal arriving now would abort the cleanup half-way; it is delivered once the lab is down.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            the_lab.down()
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
