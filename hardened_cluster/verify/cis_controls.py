"""The CIS Kubernetes Benchmark v1.12's controls this project decides: ID, scope and title, and the
finding a check of one host yields (`verify.cis` decides them on the plan; drift and kube-bench name them)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Status = Literal["PASS", "FAIL", "NOT-DECIDABLE", "WARN"]


@dataclass(frozen=True)
class Finding:
    id: str
    title: str
    status: Status
    host: str | None
    detail: str  # evidence for PASS/FAIL, the reason for NOT-DECIDABLE


@dataclass(frozen=True)
class Control:
    id: str
    scope: Literal["control-plane", "etcd", "node"]
    title: str


CONTROLS: tuple[Control, ...] = tuple(Control(*row) for row in (
    ("1.1.1", "control-plane", "Ensure that the API server pod specification file permissions are set to 600 or more restrictive"),
    ("1.1.2", "control-plane", "Ensure that the API server pod specification file ownership is set to root:root"),
    ("1.1.3", "control-plane", "Ensure that the controller manager pod specification file permissions are set to 600 or more restrictive"),
    ("1.1.4", "control-plane", "Ensure that the controller manager pod specification file ownership is set to root:root"),
    ("1.1.5", "control-plane", "Ensure that the scheduler pod specification file permissions are set to 600 or more restrictive"),
    ("1.1.6", "control-plane", "Ensure that the scheduler pod specification file ownership is set to root:root"),
    ("1.1.7", "etcd", "Ensure that the etcd pod specification file permissions are set to 600 or more restrictive"),
    ("1.1.8", "etcd", "Ensure that the etcd pod specification file ownership is set to root:root"),
    ("1.1.9", "control-plane", "Ensure that the Container Network Interface file permissions are set to 600 or more restrictive"),
    ("1.1.10", "control-plane", "Ensure that the Container Network Interface file ownership is set to root:root"),
    ("1.1.11", "etcd", "Ensure that the etcd data directory permissions are set to 700 or more restrictive"),
    ("1.1.12", "etcd", "Ensure that the etcd data directory ownership is set to etcd:etcd"),
    ("1.1.13", "control-plane", "Ensure that the default administrative credential file permissions are set to 600"),
    ("1.1.14", "control-plane", "Ensure that the default administrative credential file ownership is set to root:root"),
    ("1.1.15", "control-plane", "Ensure that the scheduler.conf file permissions are set to 600 or more restrictive"),
    ("1.1.16", "control-plane", "Ensure that the scheduler.conf file ownership is set to root:root"),
    ("1.1.17", "control-plane", "Ensure that the controller-manager.conf file permissions are set to 600 or more restrictive"),
    ("1.1.18", "control-plane", "Ensure that the controller-manager.conf file ownership is set to root:root"),
    ("1.1.19", "control-plane", "Ensure that the Kubernetes PKI directory and file ownership is set to root:root"),
    ("1.1.20", "control-plane", "Ensure that the Kubernetes PKI certificate file permissions are set to 644 or more restrictive"),
    ("1.1.21", "control-plane", "Ensure that the Kubernetes PKI key file permissions are set to 600"),
    ("1.2.1", "control-plane", "Ensure that the --anonymous-auth argument is set to false"),
    ("1.2.2", "control-plane", "Ensure that the --token-auth-file parameter is not set"),
    ("1.2.3", "control-plane", "Ensure that the DenyServiceExternalIPs is set"),
    ("1.2.4", "control-plane", "Ensure that the --kubelet-client-certificate and --kubelet-client-key arguments are set as appropriate"),
    ("1.2.5", "control-plane", "Ensure that the --kubelet-certificate-authority argument is set as appropriate"),
    ("1.2.6", "control-plane", "Ensure that the --authorization-mode argument is not set to AlwaysAllow"),
    ("1.2.7", "control-plane", "Ensure that the --authorization-mode argument includes Node"),
    ("1.2.8", "control-plane", "Ensure that the --authorization-mode argument includes RBAC"),
    ("1.2.9", "control-plane", "Ensure that the admission control plugin EventRateLimit is set"),
    ("1.2.10", "control-plane", "Ensure that the admission control plugin AlwaysAdmit is not set"),
    ("1.2.11", "control-plane", "Ensure that the admission control plugin AlwaysPullImages is set"),
    ("1.2.12", "control-plane", "Ensure that the admission control plugin ServiceAccount is set"),
    ("1.2.13", "control-plane", "Ensure that the admission control plugin NamespaceLifecycle is set"),
    ("1.2.14", "control-plane", "Ensure that the admission control plugin NodeRestriction is set"),
    ("1.2.15", "control-plane", "Ensure that the --profiling argument is set to false"),
    ("1.2.16", "control-plane", "Ensure that the --audit-log-path argument is set"),
    ("1.2.17", "control-plane", "Ensure that the --audit-log-maxage argument is set to 30 or as appropriate"),
    ("1.2.18", "control-plane", "Ensure that the --audit-log-maxbackup argument is set to 10 or as appropriate"),
    ("1.2.19", "control-plane", "Ensure that the --audit-log-maxsize argument is set to 100 or as appropriate"),
    ("1.2.20", "control-plane", "Ensure that the --request-timeout argument is set as appropriate"),
    ("1.2.21", "control-plane", "Ensure that the --service-account-lookup argument is set to true"),
    ("1.2.22", "control-plane", "Ensure that the --service-account-key-file argument is set as appropriate"),
    ("1.2.23", "control-plane", "Ensure that the --etcd-certfile and --etcd-keyfile arguments are set as appropriate"),
    ("1.2.24", "control-plane", "Ensure that the --tls-cert-file and --tls-private-key-file arguments are set as appropriate"),
    ("1.2.25", "control-plane", "Ensure that the --client-ca-file argument is set as appropriate"),
    ("1.2.26", "control-plane", "Ensure that the --etcd-cafile argument is set as appropriate"),
    ("1.2.27", "control-plane", "Ensure that the --encryption-provider-config argument is set as appropriate"),
    ("1.2.28", "control-plane", "Ensure that encryption providers are appropriately configured"),
    ("1.2.29", "control-plane", "Ensure that the API Server only makes use of Strong Cryptographic Ciphers"),
    ("1.2.30", "control-plane", "Ensure that the --service-account-extend-token-expiration parameter is set to false"),
    ("1.3.1", "control-plane", "Ensure that the --terminated-pod-gc-threshold argument is set as appropriate"),
    ("1.3.2", "control-plane", "Ensure that the --profiling argument is set to false"),
    ("1.3.3", "control-plane", "Ensure that the --use-service-account-credentials argument is set to true"),
    ("1.3.4", "control-plane", "Ensure that the --service-account-private-key-file argument is set as appropriate"),
    ("1.3.5", "control-plane", "Ensure that the --root-ca-file argument is set as appropriate"),
    ("1.3.6", "control-plane", "Ensure that the RotateKubeletServerCertificate argument is set to true"),
    ("1.3.7", "control-plane", "Ensure that the --bind-address argument is set to 127.0.0.1"),
    ("1.4.1", "control-plane", "Ensure that the --profiling argument is set to false"),
    ("1.4.2", "control-plane", "Ensure that the --bind-address argument is set to 127.0.0.1"),
    ("2.1", "etcd", "Ensure that the --cert-file and --key-file arguments are set as appropriate"),
    ("2.2", "etcd", "Ensure that the --client-cert-auth argument is set to true"),
    ("2.3", "etcd", "Ensure that the --auto-tls argument is not set to true"),
    ("2.4", "etcd", "Ensure that the --peer-cert-file and --peer-key-file arguments are set as appropriate"),
    ("2.5", "etcd", "Ensure that the --peer-client-cert-auth argument is set to true"),
    ("2.6", "etcd", "Ensure that the --peer-auto-tls argument is not set to true"),
    ("2.7", "etcd", "Ensure that a unique Certificate Authority is used for etcd"),
    ("4.1.1", "node", "Ensure that the kubelet service file permissions are set to 600 or more restrictive"),
    ("4.1.2", "node", "Ensure that the kubelet service file ownership is set to root:root"),
    ("4.1.3", "node", "If proxy kubeconfig file exists ensure permissions are set to 600 or more restrictive"),
    ("4.1.4", "node", "If proxy kubeconfig file exists ensure ownership is set to root:root"),
    ("4.1.5", "node", "Ensure that the --kubeconfig kubelet.conf file permissions are set to 600 or more restrictive"),
    ("4.1.6", "node", "Ensure that the --kubeconfig kubelet.conf file ownership is set to root:root"),
    ("4.1.7", "node", "Ensure that the certificate authorities file permissions are set to 644 or more restrictive"),
    ("4.1.8", "node", "Ensure that the client certificate authorities file ownership is set to root:root"),
    ("4.1.9", "node", "If the kubelet config.yaml configuration file is being used validate permissions set to 600 or more restrictive"),
    ("4.1.10", "node", "If the kubelet config.yaml configuration file is being used validate file ownership is set to root:root"),
    ("4.2.1", "node", "Ensure that the --anonymous-auth argument is set to false"),
    ("4.2.2", "node", "Ensure that the --authorization-mode argument is not set to AlwaysAllow"),
    ("4.2.3", "node", "Ensure that the --client-ca-file argument is set as appropriate"),
    ("4.2.4", "node", "Verify that if defined, the --read-only-port argument is set to 0"),
    ("4.2.5", "node", "Ensure that the --streaming-connection-idle-timeout argument is not set to 0"),
    ("4.2.6", "node", "Ensure that the --make-iptables-util-chains argument is set to true"),
    ("4.2.7", "node", "Ensure that the --hostname-override argument is not set"),
    ("4.2.8", "node", "Ensure that the eventRecordQPS argument is set to a level which ensures appropriate event capture"),
    ("4.2.9", "node", "Ensure that the --tls-cert-file and --tls-private-key-file arguments are set as appropriate"),
    ("4.2.10", "node", "Ensure that the --rotate-certificates argument is not set to false"),
    ("4.2.11", "node", "Verify that the RotateKubeletServerCertificate argument is set to true"),
    ("4.2.12", "node", "Ensure that the Kubelet only makes use of Strong Cryptographic Ciphers"),
    ("4.2.13", "node", "Ensure that a limit is set on pod PIDs"),
    ("4.2.14", "node", "Ensure that the --seccomp-default parameter is set to true"),
    ("4.3.1", "node", "Ensure that the kube-proxy metrics service is bound to localhost"),
))


def summary(findings: Iterable[Finding]) -> dict[str, int]:
    counts = Counter(f.status for f in findings)
    return {status: counts.get(status, 0) for status in ("PASS", "FAIL", "NOT-DECIDABLE", "WARN")}
