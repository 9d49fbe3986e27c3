"""Proofs against the live cluster, for the demo's report: nodes Ready, the API server ready, and a
Secret stored encrypted in etcd. Each is one line and a verdict; the lab tests hold many more.

kubectl is the bundle's (or the first control-plane node's kubeconfig host's); the admin kubeconfig is
the one the control_plane role fetched into the state directory.
"""
from __future__ import annotations

import json
import secrets
import shlex
import subprocess
from pathlib import Path

from hardened_cluster.deliver.preflight import ssh_run
from hardened_cluster.secrets.store import encryption_key_names
from hardened_cluster.spec.model import LoadedSpec
from hardened_cluster.verify.probes import etcdctl_argv

Proof = tuple[str, bool]


def _kubectl(kubectl: Path, kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(kubectl), "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                          timeout=60, check=check)


def nodes_ready(kubectl: Path, kubeconfig: Path, expected: int) -> Proof:
    nodes = json.loads(_kubectl(kubectl, kubeconfig, "get", "nodes", "-o", "json").stdout)["items"]
    ready = [n for n in nodes if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])]
    versions = sorted({n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes})
    return f"nodes Ready: {len(ready)}/{expected} ({', '.join(versions)})", len(ready) == expected == len(nodes)


def api_ready(kubectl: Path, kubeconfig: Path) -> Proof:
    answer = _kubectl(kubectl, kubeconfig, "get", "--raw", "/readyz?verbose", check=False)
    failing = [line for line in answer.stdout.splitlines() if line.startswith("[-]")]
    good = answer.returncode == 0 and not failing
    return f"API server /readyz: {'every check ok' if good else 'failing: ' + ', '.join(failing)}", good


def stored_prefix(provider: str, key: str) -> str:
    """How the API server's envelope starts in etcd for a value encrypted with `key`."""
    return f"k8s:enc:{provider}:v1:{key}:"


def secret_encrypted(loaded: LoadedSpec, kubectl: Path, kubeconfig: Path, writing_key: str) -> Proof:
    """A Secret written through the API is in etcd with the writing key's prefix and not in plain text."""
    spec = loaded.spec
    name, value = "hardened-cluster-proof", secrets.token_hex(16)
    _kubectl(kubectl, kubeconfig, "-n", "default", "delete", "secret", name, "--ignore-not-found")
    _kubectl(kubectl, kubeconfig, "-n", "default", "create", "secret", "generic", name, f"--from-literal=v={value}")
    try:
        member = spec.nodes_with("etcd")[0]
        get = [*etcdctl_argv(spec), "get", f"/registry/secrets/default/{name}", "--print-value-only"]
        rc, out, _ = ssh_run(loaded, member, "sudo -n " + shlex.join(get))
        prefix = stored_prefix(spec.encryption.provider, writing_key)
        good = rc == 0 and out.startswith(prefix) and value not in out
        seen = out[: len(prefix)] if rc == 0 else f"etcdctl exited {rc}"
        return f"Secret in etcd: starts with {seen!r}, plain text {'absent' if value not in out else 'PRESENT'}", good
    finally:
        _kubectl(kubectl, kubeconfig, "-n", "default", "delete", "secret", name, "--ignore-not-found", check=False)


def proofs(loaded: LoadedSpec, kubectl: Path, state: Path) -> list[Proof]:
    """The proofs, with the admin kubeconfig and the keys (a rotation's, if any) of the state directory."""
    spec = loaded.spec
    kube_nodes = [n for n in spec.nodes if {"control-plane", "worker"} & set(n.roles)]
    kubeconfig = state / "admin.conf"
    writing_key = encryption_key_names(loaded, state / "secrets")[0]
    return [nodes_ready(kubectl, kubeconfig, len(kube_nodes)), api_ready(kubectl, kubeconfig),
            secret_encrypted(loaded, kubectl, kubeconfig, writing_key)]
