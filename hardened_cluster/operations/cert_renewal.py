"""kubeadm's certificates renewed on the live cluster: `hardened-cluster rotate kubeadm-certs`.

Every `apply` already renews, on each control plane, kubeadm's certificates and kubeconfigs (the API
server's serving and client certificates, the front proxy's client, admin.conf, the controller-manager's
and scheduler's kubeconfigs) that expire within the state store's renewal window (pki.RENEW_BEFORE), and
restarts the static pods to read them, one control plane at a time (roles/control_plane/tasks/certs.yml).
This command runs that concern with a wider window: by default every such certificate, or those that
expire within `within_days`. The CAs are the state store's and stay; the kubelets rotate their own client
and serving certificates; the etcd certificates are the state store's too (`hardened-cluster certs`).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hardened_cluster.deliver.converge import converge
from hardened_cluster.operations.report import JsonReport
from hardened_cluster.spec.model import LoadedSpec

# The role's window when every certificate is to be renewed: longer than any certificate kubeadm issues.
EVERY_CERTIFICATE_DAYS = 100 * 366
RENEW_TASK = "Renew the certificates with kubeadm"


@dataclass
class RenewalReport(JsonReport):
    within_days: int | None  # None: every certificate
    renewed: dict[str, list[str]] = field(default_factory=dict)  # per control plane, kubeadm's names
    report: str | None = None  # the converge's own report
    succeeded: bool = False
    errors: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0


def renew_kubeadm_certs(loaded: LoadedSpec, state: Path, *, within_days: int | None = None,
                        progress: Callable[[str], None], tasks: Callable[[str], None] | None = None) -> RenewalReport:
    """Renew kubeadm's certificates on every control plane (those expiring within `within_days`, or all)."""
    started = time.monotonic()
    control_planes = [n.name for n in loaded.spec.nodes_with("control-plane")]
    window = EVERY_CERTIFICATE_DAYS if within_days is None else within_days
    result, path = converge(loaded, check=False, phases=["kubernetes"], hosts=control_planes, state=state,
                            progress=tasks, extra_vars={"control_plane_certs_renew_within_days": window})
    report = RenewalReport(within_days, report=str(path))
    for name in control_planes:
        host = result.hosts.get(name)
        if host is None:
            continue
        report.renewed[name] = [c.item for c in host.changes if c.task == RENEW_TASK and c.item]
        if host.errors or host.failed or host.unreachable:
            report.errors[name] = host.errors or ["unreachable" if host.unreachable else "failed"]
        renewed = report.renewed[name]
        progress(f"  {name}: " + (f"renewed {', '.join(renewed)}; the static pods restarted" if renewed
                                  else "nothing to renew") + "".join(f"\n    error: {e}" for e in report.errors.get(name, [])))
    report.succeeded = result.succeeded
    report.seconds = round(time.monotonic() - started, 2)
    return report
