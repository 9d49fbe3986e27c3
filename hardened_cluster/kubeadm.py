"""What kubeadm does on its own that the plan relies on, kept in one place.

kubeadm starts the control-plane components with flags of its own and lets the
ClusterConfiguration's `extraArgs` override them by name. The CIS check evaluates
the flags a component really gets: `component_flags` rebuilds them the way kubeadm does.
"""
from __future__ import annotations

import functools
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization

CRI_SOCKET = "unix:///run/containerd/containerd.sock"
# The kubeconfig kubeadm writes on every control plane (cluster-admin; root only).
ADMIN_KUBECONFIG = "/etc/kubernetes/admin.conf"
# ECDHE with AEAD only; every name is in CIS 1.2.29's and 4.2.12's lists.
TLS_CIPHER_SUITES = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
)

# Label each node's kubelet sets on itself (`--node-labels`) for every sandbox runtime
# handler it has; RuntimeClass nodeSelectors use the same key. NodeRestriction lets a kubelet
# set labels outside the kubernetes.io/k8s.io namespaces, so no label controller is needed.
RUNTIME_LABEL_PREFIX = "hardened-cluster.io/runtime-"

KUBEADM_DEFAULT_FLAGS: dict[str, dict[str, str]] = {
    "kube-apiserver": {
        "advertise-address": "{advertise_address}",
        "enable-admission-plugins": "NodeRestriction",
        "service-cluster-ip-range": "{service_subnet}",
        "service-account-key-file": "{pki}/sa.pub",
        "service-account-signing-key-file": "{pki}/sa.key",
        "service-account-issuer": "https://kubernetes.default.svc.{dns_domain}",
        "client-ca-file": "{pki}/ca.crt",
        "tls-cert-file": "{pki}/apiserver.crt",
        "tls-private-key-file": "{pki}/apiserver.key",
        "kubelet-client-certificate": "{pki}/apiserver-kubelet-client.crt",
        "kubelet-client-key": "{pki}/apiserver-kubelet-client.key",
        "enable-bootstrap-token-auth": "true",
        "secure-port": "{bind_port}",
        "allow-privileged": "true",
        "kubelet-preferred-address-types": "InternalIP,ExternalIP,Hostname",
        "requestheader-username-headers": "X-Remote-User",
        "requestheader-group-headers": "X-Remote-Group",
        "requestheader-extra-headers-prefix": "X-Remote-Extra-",
        "requestheader-client-ca-file": "{pki}/front-proxy-ca.crt",
        "requestheader-allowed-names": "front-proxy-client",
        "proxy-client-cert-file": "{pki}/front-proxy-client.crt",
        "proxy-client-key-file": "{pki}/front-proxy-client.key",
        "etcd-servers": "{etcd_servers}",
        "etcd-cafile": "{etcd_ca}",
        "etcd-certfile": "{etcd_cert}",
        "etcd-keyfile": "{etcd_key}",
        "authorization-mode": "Node,RBAC",
    },
    "kube-controller-manager": {
        "bind-address": "127.0.0.1",
        "leader-elect": "true",
        "kubeconfig": "/etc/kubernetes/controller-manager.conf",
        "authentication-kubeconfig": "/etc/kubernetes/controller-manager.conf",
        "authorization-kubeconfig": "/etc/kubernetes/controller-manager.conf",
        "client-ca-file": "{pki}/ca.crt",
        "requestheader-client-ca-file": "{pki}/front-proxy-ca.crt",
        "root-ca-file": "{pki}/ca.crt",
        "service-account-private-key-file": "{pki}/sa.key",
        "cluster-signing-cert-file": "{pki}/ca.crt",
        "cluster-signing-key-file": "{pki}/ca.key",
        "use-service-account-credentials": "true",
        "controllers": "*,bootstrapsigner,tokencleaner",
        "allocate-node-cidrs": "{allocate_node_cidrs}",
        "cluster-cidr": "{pod_subnet}",
        "service-cluster-ip-range": "{node_cidrs_service_subnet}",
        "cluster-name": "{cluster_name}",
    },
    "kube-scheduler": {
        "bind-address": "127.0.0.1",
        "leader-elect": "true",
        "kubeconfig": "/etc/kubernetes/scheduler.conf",
        "authentication-kubeconfig": "/etc/kubernetes/scheduler.conf",
        "authorization-kubeconfig": "/etc/kubernetes/scheduler.conf",
    },
}
"""kubeadm's always-set flags per component, as cmd/kubeadm/app/phases/controlplane/manifests.go
builds them (v1beta4, Kubernetes 1.33-1.37): the API server gets authorization-mode Node,RBAC, the
cluster CA as client CA, its serving and kubelet-client certificates, the service-account key pair
and issuer, bootstrap-token auth, allow-privileged and the etcd.external endpoints and TLS files;
the controller manager and the scheduler bind to 127.0.0.1 with their own kubeconfigs, the
controller manager also with the root CA, the SA signing key and per-controller SA credentials.
A `{placeholder}` flag is only set when kubeadm sets it (see `component_flags`)."""

_SECTIONS = {"kube-apiserver": "apiServer", "kube-controller-manager": "controllerManager", "kube-scheduler": "scheduler"}


def component_flags(component: str, cluster: dict, endpoint: dict | None = None) -> dict[str, str]:
    """The flags kubeadm (v1beta4, Kubernetes 1.33-1.37) starts a control-plane component with.

    Mirrors kubeadm's `getAPIServerCommand`, `getControllerManagerCommand` and
    `getSchedulerCommand` (cmd/kubeadm/app/phases/controlplane/manifests.go):
    KUBEADM_DEFAULT_FLAGS, where a `{placeholder}` comes from the ClusterConfiguration
    (`cluster`) or the node's localAPIEndpoint (`endpoint`) and the flag is left out when
    kubeadm leaves it out (etcd TLS flags only when etcd.external names the files,
    node-CIDR allocation only with a podSubnet); `authorization-mode` is dropped when
    `authorization-config` is given. Then every `extraArgs` entry replaces the default of
    the same name.
    """
    values = _placeholders(cluster, endpoint or {})
    flags = {}
    for name, template in KUBEADM_DEFAULT_FLAGS[component].items():
        try:
            value = template.format_map(values)
        except KeyError:
            continue
        flags[name] = value
    extra = {arg["name"]: str(arg["value"]) for arg in (cluster.get(_SECTIONS[component]) or {}).get("extraArgs") or []}
    if "authorization-config" in extra:
        flags.pop("authorization-mode", None)
    flags.update(extra)
    return flags


def _placeholders(cluster: dict, endpoint: dict) -> dict[str, str]:
    networking = cluster.get("networking") or {}
    values = {
        "pki": cluster.get("certificatesDir", "/etc/kubernetes/pki"),
        "dns_domain": networking.get("dnsDomain", "cluster.local"),
        "service_subnet": networking.get("serviceSubnet", "10.96.0.0/12"),
        "cluster_name": cluster.get("clusterName", "kubernetes"),
    }
    if networking.get("podSubnet"):
        values.update(pod_subnet=networking["podSubnet"], allocate_node_cidrs="true",
                      node_cidrs_service_subnet=values["service_subnet"])
    if "advertiseAddress" in endpoint:
        values["advertise_address"] = endpoint["advertiseAddress"]
    if "bindPort" in endpoint:
        values["bind_port"] = str(endpoint["bindPort"])
    external = (cluster.get("etcd") or {}).get("external")
    if external:
        values["etcd_servers"] = ",".join(external.get("endpoints") or [])
        if external.get("caFile"):
            values["etcd_ca"] = external["caFile"]
        if external.get("certFile") and external.get("keyFile"):
            values.update(etcd_cert=external["certFile"], etcd_key=external["keyFile"])
    return values


def start_inputs_digest(cluster: dict, files: dict[str, str]) -> str:
    """SHA-256 over the planned files (path -> sha256) the API server reads when it starts.

    Those are the files under the host paths of `apiServer.extraVolumes`. The digest goes into the
    static pod manifest (a kubeadm patch), so a changed audit policy, admission or encryption
    configuration changes the manifest and the kubelet restarts the pod, one control plane at a time
    (roles/control_plane). The encryption configuration is in it although the API server reloads it
    itself: a key rotation's next step waits until every API server has restarted with the keys.
    """
    server = cluster.get("apiServer") or {}
    roots = [v["hostPath"].rstrip("/") for v in server.get("extraVolumes") or [] if v.get("readOnly")]
    digest = hashlib.sha256()
    for path in sorted(files):
        if any(path == r or path.startswith(r + "/") for r in roots):
            digest.update(f"{path} {files[path]}\n".encode())
    return digest.hexdigest()


@functools.lru_cache(maxsize=8)  # every join configuration of a plan pins the same CA
def ca_cert_hash(cert_pem: str) -> str:
    """kubeadm's discovery pin: sha256 over the CA certificate's DER SubjectPublicKeyInfo."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode("ascii"))
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def runtime_label(handler: str) -> str:
    return RUNTIME_LABEL_PREFIX + handler


def node_labels(labels: dict[str, str], runtimes: list[str]) -> str:
    """The kubelet's `--node-labels` value: the spec's labels plus one per sandbox runtime."""
    merged = dict(labels)
    merged.update({runtime_label(r): "true" for r in runtimes if r != "runc"})
    return ",".join(f"{k}={v}" for k, v in merged.items())


TEMPLATE_FILTERS = {"ca_cert_hash": ca_cert_hash, "runtime_label": runtime_label, "node_labels": node_labels}
TEMPLATE_GLOBALS = {"CRI_SOCKET": CRI_SOCKET, "TLS_CIPHER_SUITES": TLS_CIPHER_SUITES}
