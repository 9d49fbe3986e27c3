"""What kubeadm does on its own that the plan relies on, kept in one place.

kubeadm starts the control-plane components with flags of its own and lets the
ClusterConfiguration's `extraArgs` override them by name. The CIS check evaluates
the flags a component really gets: `component_flags` rebuilds them the way kubeadm does.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization

if TYPE_CHECKING:
    from hardened_cluster.spec.model import Node, Spec

# The kubeadm configuration API every rendered kubeadm file and the typed ClusterConfiguration use.
KUBEADM_API = "kubeadm.k8s.io/v1beta4"
CRI_SOCKET = "unix:///run/containerd/containerd.sock"
# The kubeconfig kubeadm writes on every control plane (cluster-admin; root only).
ADMIN_KUBECONFIG = "/etc/kubernetes/admin.conf"
# The kubelet's own credentials kubeadm writes on every node (the system:node:<name> identity).
KUBELET_KUBECONFIG = "/etc/kubernetes/kubelet.conf"
# ECDHE with AEAD only; every name is in CIS 1.2.29's and 4.2.12's lists.
TLS_CIPHER_SUITES = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
)

# The image registry kubeadm names its images under (no imageRepository is set: the bundle's images carry
# these names, and the release artifacts' nodes pull from it).
IMAGE_REGISTRY = "registry.k8s.io"


@dataclass(frozen=True)
class ImageTags:
    """The tags kubeadm of one Kubernetes minor gives the images it does not version with Kubernetes."""

    pause: str  # cmd/kubeadm/app/constants PauseVersion
    coredns: str  # cmd/kubeadm/app/constants CoreDNSVersion


# Per Kubernetes minor, as that minor's kubeadm source names them (1.35 and 1.36 read from the pinned
# modules' constants.go). containerd's sandbox image, the bundle's pause and CoreDNS images and the
# CoreDNS build module of each minor (artifacts/build/coredns-<minor>, checked against this) follow it;
# `hardened-cluster artifacts build` refuses a kubeadm that lists other tags.
# 1.37: no 1.37 kubeadm has been read here; 1.36's tags stand in for it until one is.
KUBEADM_IMAGE_TAGS: dict[int, ImageTags] = {
    33: ImageTags(pause="3.10", coredns="v1.12.0"),
    34: ImageTags(pause="3.10.1", coredns="v1.12.1"),
    35: ImageTags(pause="3.10.1", coredns="v1.13.1"),
    36: ImageTags(pause="3.10.2", coredns="v1.14.2"),
    37: ImageTags(pause="3.10.2", coredns="v1.14.2"),
}


def image_tags(minor: int) -> ImageTags:
    """The pause and CoreDNS tags kubeadm 1.<minor> uses."""
    try:
        return KUBEADM_IMAGE_TAGS[minor]
    except KeyError:
        raise ValueError(f"no pause/CoreDNS tags are known for Kubernetes 1.{minor} "
                         "(add them to kubeadm.KUBEADM_IMAGE_TAGS)") from None


def pause_image(minor: int) -> str:
    """The pod sandbox image kubeadm 1.<minor> expects (containerd's sandbox_image)."""
    return f"{IMAGE_REGISTRY}/pause:{image_tags(minor).pause}"


def ignored_preflight_errors(spec: Spec) -> list[str]:
    """kubeadm's preflight checks skipped on every kubeadm init, join and upgrade (lab only:
    lab_exceptions.kubeadm_skip_system_verification; the sample spec skips none)."""
    return ["SystemVerification"] if spec.lab_exceptions.kubeadm_skip_system_verification else []


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

# Every control-plane component serves modern TLS only.
_TLS_ARGS = (("tls-cipher-suites", ",".join(TLS_CIPHER_SUITES)), ("tls-min-version", "VersionTLS12"))


def _volume(name: str, path: str, read_only: bool, path_type: str) -> dict:
    return {"name": name, "hostPath": path, "mountPath": path, "readOnly": read_only, "pathType": path_type}


def cluster_configuration(spec: Spec, etcd_endpoints: list[str]) -> dict:
    """The ClusterConfiguration every control plane runs (the kubeadm init and control-plane files hold it)."""
    plugins = ["NodeRestriction", "DenyServiceExternalIPs"]
    plugins += ["EventRateLimit"] if spec.admission.event_rate_limit else []
    plugins += ["AlwaysPullImages"] if spec.admission.always_pull_images else []
    audit, webhook = spec.audit, spec.audit.webhook
    audit_dir = str(audit.log_path.parent)
    api_args = [
        ("admission-control-config-file", "/etc/kubernetes/admission/admission-config.yaml"),
        ("audit-log-maxage", str(audit.max_age)),
        ("audit-log-maxbackup", str(audit.max_backup)),
        ("audit-log-maxsize", str(audit.max_size)),
        ("audit-log-path", str(audit.log_path)),
        ("audit-policy-file", "/etc/kubernetes/audit/audit-policy.yaml"),
    ]
    if webhook:
        api_args += [("audit-webhook-config-file", str(webhook.kubeconfig)), ("audit-webhook-mode", webhook.mode)]
    api_args += [
        # Replaces --anonymous-auth (the two exclude each other): anonymous requests reach only the health
        # endpoints kubeadm's probes use and the cluster-info ConfigMap `kubeadm join` discovery reads.
        ("authentication-config", "/etc/kubernetes/auth/authentication-config.yaml"),
        ("authorization-mode", "Node,RBAC"),
        ("enable-admission-plugins", ",".join(plugins)),
        ("encryption-provider-config", "/etc/kubernetes/encryption/encryption-config.yaml"),
        # A changed key list is also a start input (the API servers restart one at a time); the reload
        # has it sooner, before the restart reaches this API server.
        ("encryption-provider-config-automatic-reload", "true"),
        ("kubelet-certificate-authority", "/etc/kubernetes/pki/ca.crt"),
        ("profiling", "false"),
        ("service-account-extend-token-expiration", "false"),
        ("service-account-lookup", "true"),
        *_TLS_ARGS,
    ]
    # Directories, not files: an atomically replaced file stays visible in the pod.
    volumes = [
        _volume("admission", "/etc/kubernetes/admission", True, "Directory"),
        _volume("audit-policy", "/etc/kubernetes/audit", True, "Directory"),
        _volume("audit-log", audit_dir, False, "DirectoryOrCreate"),
    ]
    if webhook:
        volumes.append(_volume("audit-webhook", str(webhook.kubeconfig), True, "File"))
    volumes += [
        _volume("authentication", "/etc/kubernetes/auth", True, "Directory"),
        _volume("encryption", "/etc/kubernetes/encryption", True, "Directory"),
    ]
    if spec.encryption.provider == "kms-v2":
        kms_dir = spec.encryption.kms.endpoint.removeprefix("unix://").rpartition("/")[0]
        volumes.append(_volume("kms-socket", kms_dir, False, "DirectoryOrCreate"))
    controller_args = [("bind-address", "127.0.0.1"), ("profiling", "false"), ("terminated-pod-gc-threshold", "10"),
                       *_TLS_ARGS, ("use-service-account-credentials", "true")]

    def args(pairs: list[tuple[str, str]]) -> list[dict]:
        return [{"name": name, "value": value} for name, value in pairs]

    return {
        "apiVersion": KUBEADM_API,
        "kind": "ClusterConfiguration",
        "clusterName": spec.cluster.name,
        "kubernetesVersion": f"v{spec.cluster.kubernetes_version}",
        "controlPlaneEndpoint": spec.cluster.control_plane_endpoint,
        "certificatesDir": "/etc/kubernetes/pki",
        "networking": {"dnsDomain": spec.cluster.domain, "podSubnet": str(spec.network.pod_cidr),
                       "serviceSubnet": str(spec.network.service_cidr)},
        "etcd": {"external": {"endpoints": list(etcd_endpoints), "caFile": "/etc/kubernetes/pki/etcd/ca.crt",
                              "certFile": "/etc/kubernetes/pki/apiserver-etcd-client.crt",
                              "keyFile": "/etc/kubernetes/pki/apiserver-etcd-client.key"}},
        "apiServer": {"extraArgs": args(api_args), "extraVolumes": volumes},
        "controllerManager": {"extraArgs": args(controller_args)},
        "scheduler": {"extraArgs": args([("bind-address", "127.0.0.1"), ("profiling", "false"), *_TLS_ARGS])},
    }


def local_api_endpoint(spec: Spec, node: Node) -> dict:
    """Where a control plane's API server listens (its InitConfiguration's localAPIEndpoint)."""
    return {"advertiseAddress": str(node.address), "bindPort": spec.cluster.api_port}


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
TEMPLATE_GLOBALS = {"CRI_SOCKET": CRI_SOCKET, "TLS_CIPHER_SUITES": TLS_CIPHER_SUITES, "KUBEADM_API": KUBEADM_API,
                    "pause_image": pause_image, "ignored_preflight_errors": ignored_preflight_errors}
