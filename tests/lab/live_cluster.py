"""Helpers of the lab tests that talk to the live Kubernetes cluster (a `cluster` dict: kubectl, kubeconfig)."""
from __future__ import annotations

import subprocess
import time


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
