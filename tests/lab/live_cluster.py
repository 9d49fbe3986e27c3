"""Helpers of the lab tests that talk to the live Kubernetes cluster (a `cluster` dict: kubectl, kubeconfig)."""
from __future__ import annotations

import subprocess
import time

from hardened_cluster.core import converge


def kubectl(cluster, *args, input=None, check=True, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([cluster["kubectl"], "--kubeconfig", str(cluster["kubeconfig"]), *args], input=input,
                          capture_output=True, text=True, check=check, timeout=timeout)


def wait_for(what, predicate, timeout=180, every=2.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def apply(loaded, state, **options):
    """converge() applying `options` (phases, hosts...); asserts it succeeded, showing the last progress lines."""
    lines: list[str] = []
    result, _ = converge(loaded, check=False, state=state, progress=lines.append, **options)
    assert result.succeeded, ({h: r.errors for h, r in result.hosts.items() if r.errors}, lines[-40:])
    return result
