"""The cluster spec's typed model: one YAML document per environment (`spec.load.load_spec` reads and
validates it once, `spec.messages` turns pydantic's errors into key paths and what is allowed)."""
from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import paramiko
from pydantic import (
    BeforeValidator,
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)
from pydantic_core import PydanticCustomError

from hardened_cluster.spec import rules as spec_rules


def _not_bool(value: Any) -> Any:
    # pydantic takes true for 1; YAML's true where a number belongs is a mistake
    if isinstance(value, bool):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


NotBool = BeforeValidator(_not_bool)


def _reference(value: Any) -> Any:
    # Refused before anything names the file: a message would show the key it holds.
    if isinstance(value, str) and spec_rules.looks_like_key_material(value):
        raise ValueError(spec_rules.INLINE_KEY)
    return value


FileRef = Annotated[Path, BeforeValidator(_reference)]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")]


SUPPORTED_KUBERNETES_MINORS = (33, 34, 35, 36, 37)
KEY_LENGTHS = {"aescbc": (16, 24, 32), "aesgcm": (16, 24, 32), "secretbox": (32,)}
ROLES = ("etcd", "control-plane", "worker", "load-balancer")

DnsLabel = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
Port = Annotated[int, NotBool, Field(ge=1, le=65535)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(Model):
    """Where a secret comes from. Its value is never written in the spec."""

    env: EnvName | None = None
    file: FileRef | None = None
    generated: bool = False

    def describe(self) -> str:
        if self.env:
            return f"environment variable {self.env}"
        if self.file:
            return f"file {self.file}"
        return "generated secret"


class NodeSSH(Model):
    host_key: str | None = None
    user: str | None = None
    port: Port | None = None


class Node(Model):
    name: DnsLabel
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    roles: list[Literal["etcd", "control-plane", "worker", "load-balancer"]] = Field(min_length=1)
    ssh: NodeSSH = NodeSSH()
    labels: dict[str, str] = {}


def parse_host_key(text: str) -> str | None:
    """Canonical 'type base64' form, or None when it is not an SSH public key."""
    parts = text.split()
    if len(parts) < 2:
        return None
    try:
        blob = base64.b64decode(parts[1], validate=True)
        key = paramiko.PKey.from_type_string(parts[0], blob)
    except (paramiko.SSHException, paramiko.pkey.UnknownKeyType, binascii.Error, ValueError, TypeError):
        return None
    # paramiko pads a truncated key blob with zeros; only an exact round trip is the key that was given.
    return f"{key.get_name()} {key.get_base64()}" if key.asbytes() == blob else None


def _public_key(value: str) -> str:
    if parse_host_key(value) is None:
        raise ValueError("not an SSH public key ('ssh-ed25519 AAAA... comment')")
    return " ".join(value.split())


PublicKey = Annotated[str, AfterValidator(_public_key)]


class SSH(Model):
    user: str = "hcadmin"
    port: Port = 22
    private_key_file: FileRef = Path("~/.ssh/id_ed25519")
    known_hosts: FileRef | None = None
    # Keys the login user may log in with besides the admin key (the public half of private_key_file).
    authorized_keys: list[PublicKey] = []
    # Keys root may log in with; none unless listed.
    root_authorized_keys: list[PublicKey] = []


class Cluster(Model):
    name: DnsLabel
    domain: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")] = "cluster.local"
    kubernetes_version: str
    control_plane_endpoint: str

    @field_validator("kubernetes_version")
    @classmethod
    def _version(cls, value: str) -> str:
        match = re.fullmatch(r"v?1\.(\d+)\.(\d+)", value)
        supported = ", ".join(f"1.{m}.x" for m in SUPPORTED_KUBERNETES_MINORS)
        if not match or int(match.group(1)) not in SUPPORTED_KUBERNETES_MINORS:
            raise ValueError(f"'{value}' is not supported; allowed: {supported}")
        return value.lstrip("v")

    @field_validator("control_plane_endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not _is_host(host):
            raise ValueError(
                f"'{value}' must be host:port with a DNS name or IP address as host (no scheme or path), "
                "e.g. api.example.com:6443"
            )
        return value

    @property
    def minor(self) -> int:
        return int(self.kubernetes_version.split(".")[1])

    @property
    def api_host(self) -> str:
        """The endpoint's host, an IPv6 address without its brackets."""
        return self.control_plane_endpoint.rpartition(":")[0].strip("[]")

    @property
    def api_port(self) -> int:
        """The endpoint's port: what the API servers listen on and the firewall opens."""
        return int(self.control_plane_endpoint.rpartition(":")[2])


def _is_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        try:
            return ipaddress.ip_address(host[1:-1]).version == 6
        except ValueError:
            return False
    return re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?", host) is not None


class Network(Model):
    node_cidrs: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(min_length=1)
    pod_cidr: ipaddress.IPv4Network | ipaddress.IPv6Network = ipaddress.IPv4Network("10.244.0.0/16")
    service_cidr: ipaddress.IPv4Network | ipaddress.IPv6Network = ipaddress.IPv4Network("10.96.0.0/12")
    admin_cidrs: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(min_length=1)
    i_accept_api_and_ssh_open_to_the_internet: bool = False
    # kube-router is installed by hardened-cluster (from the bundle's image); the others by their own tools.
    cni: Literal["calico", "cilium", "flannel", "kube-router", "none"] = "calico"


class LoadBalancer(Model):
    """What serves cluster.control_plane_endpoint (docs/load-balancer.md).

    external: something outside the spec (a cloud load balancer, DNS), or a control plane's own address;
    haproxy: the nodes with the role load-balancer run Debian's haproxy, which forwards the endpoint's port
    to every control plane's API server and takes one out while its /readyz fails.
    """

    provider: Literal["external", "haproxy"] = "external"


class Snapshot(Model):
    enabled: bool = True
    schedule: str = "*-*-* 02:00:00"
    retention: Annotated[int, NotBool, Field(ge=1, le=365)] = 7
    directory: Path = Path("/var/backups/etcd")
    encryption_key: SecretRef | None = None


class Etcd(Model):
    topology: Literal["external"] = "external"
    data_dir: Path = Path("/var/lib/etcd")
    client_port: Port = 2379
    peer_port: Port = 2380
    snapshot: Snapshot = Snapshot()
    heartbeat_interval_ms: Annotated[int, NotBool, Field(ge=10, le=5000)] = 100
    election_timeout_ms: Annotated[int, NotBool, Field(ge=50, le=50000)] = 1000


class EncryptionKey(Model):
    name: DnsLabel
    secret: SecretRef


class Kms(Model):
    name: DnsLabel
    endpoint: Annotated[str, StringConstraints(pattern=r"^unix:///.+")]
    timeout: Annotated[str, StringConstraints(pattern=r"^\d+(ms|s|m)$")] = "3s"


class Encryption(Model):
    provider: Literal["aescbc", "aesgcm", "secretbox", "kms-v2"] = "secretbox"
    keys: list[EncryptionKey] = []
    kms: Kms | None = None
    resources: list[str] = ["secrets", "configmaps"]


class AuditWebhook(Model):
    kubeconfig: Path
    mode: Literal["batch", "blocking", "blocking-strict"] = "batch"


class Audit(Model):
    level: Literal["Metadata", "Request", "RequestResponse"] = "Metadata"
    log_path: Path = Path("/var/log/kubernetes/audit/audit.log")
    max_age: Annotated[int, NotBool, Field(ge=1, le=3650)] = 30  # days
    max_backup: Annotated[int, NotBool, Field(ge=1, le=1000)] = 10
    max_size: Annotated[int, NotBool, Field(ge=1, le=10240)] = 100  # MB
    webhook: AuditWebhook | None = None


PodSecurityLevel = Literal["privileged", "baseline", "restricted"]


class PodSecurity(Model):
    enforce: PodSecurityLevel = "baseline"
    audit: PodSecurityLevel = "restricted"
    warn: PodSecurityLevel = "restricted"
    version: str = "latest"
    exempt_namespaces: list[DnsLabel] = ["kube-system"]


class EventRateLimitEntry(Model):
    type: Literal["Server", "Namespace", "User", "SourceAndObject"]
    qps: Annotated[int, NotBool, Field(ge=1, le=100_000)]
    burst: Annotated[int, NotBool, Field(ge=1, le=1_000_000)]
    cache_size: Annotated[int, NotBool, Field(ge=1, le=1_000_000)] | None = None


class Admission(Model):
    pod_security: PodSecurity = PodSecurity()
    event_rate_limit: list[EventRateLimitEntry] = [
        EventRateLimitEntry(type="Server", qps=50, burst=100),
        EventRateLimitEntry(type="Namespace", qps=50, burst=100, cache_size=2000),
    ]
    always_pull_images: bool = True


class SandboxRuntime(Model):
    enabled: bool = False
    nodes: list[DnsLabel] = []


class GVisor(SandboxRuntime):
    platform: Literal["systrap", "ptrace", "kvm"] = "systrap"


class Runtimes(Model):
    default: Literal["runc"] = "runc"
    gvisor: GVisor = GVisor()
    kata: SandboxRuntime = SandboxRuntime()
    # Where binaries come from: Debian's packages, upstream releases (pinned in artifacts/manifest.yaml),
    # or an offline bundle directory built by `hardened-cluster artifacts build` (`bundle`).
    artifacts: Literal["distro", "release", "bundle"] = "release"
    bundle: Path | None = None
    # Privileged pods (kube-proxy, the network) get no host devices and no device cgroup opening:
    # they do not need them, and a node whose own device cgroup is closed (the lab's) refuses it.
    privileged_pods_get_host_devices: bool = False


class ExtraPort(Model):
    name: DnsLabel
    port: Port
    protocol: Literal["tcp", "udp"] = "tcp"
    roles: list[Literal["etcd", "control-plane", "worker"]] = Field(min_length=1)
    sources: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(min_length=1)


class NodePortRange(Model):
    enabled: bool = False
    sources: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []


class Firewall(Model):
    nodeport_range: NodePortRange = NodePortRange()
    extra_ports: list[ExtraPort] = []
    # Sources shorter than /8 (IPv6 /16) for extra_ports or the NodePort range are refused without this.
    i_accept_ports_open_to_the_internet: bool = False


class OSHardening(Model):
    sysctl: bool = True
    swap_off: bool = True
    sensitive_file_permissions: bool = True
    remove_setuid: bool = True
    remove_dynamic_motd: bool = True
    disable_services: list[str] = ["avahi-daemon", "cups", "rpcbind", "bluetooth"]


class SSHHardening(Model):
    enabled: bool = True
    max_auth_tries: Annotated[int, NotBool, Field(ge=1, le=10)] = 3
    # 0 would turn off sshd's idle timeout
    client_alive_interval: Annotated[int, NotBool, Field(ge=1, le=3600)] = 300
    allow_tcp_forwarding: bool = False


class NamespacePolicy(Model):
    name: DnsLabel
    pod_security: PodSecurityLevel = "restricted"
    baseline_network_policy: bool = True


class NamespaceBaseline(Model):
    """Namespaces the spec does not name, including those created after apply, get this baseline from
    the namespace-baseline controller the cluster runs (its image is in the offline bundle)."""

    enabled: bool = True
    pod_security: PodSecurityLevel = "restricted"
    network_policy: bool = True
    # Left alone besides kube-system, kube-public, kube-node-lease and the namespaces named above.
    exclude: list[DnsLabel] = []


class LabExceptions(Model):
    """What only a lab on a shared, older kernel needs. Each one weakens a check; `check` names it.

    Never set on real machines: the sample spec keeps every one off.
    """

    # kubelet 1.35 refuses cgroup v1 hosts (failCgroupV1); the lab's machine has cgroup v1 only.
    kubelet_allow_cgroup_v1: bool = False
    # kubeadm's SystemVerification preflight reads the machine's kernel config and cgroups.
    kubeadm_skip_system_verification: bool = False
    # nf_conntrack_max is machine-wide: kube-proxy leaves it as it is instead of raising it.
    kube_proxy_keeps_conntrack_max: bool = False


class Spec(Model):
    api_version: Literal["hardened-cluster/v1"] = Field(alias="apiVersion")
    cluster: Cluster
    network: Network
    ssh: SSH = SSH()
    nodes: list[Node] = Field(min_length=1)
    etcd: Etcd = Etcd()
    encryption: Encryption = Encryption()
    audit: Audit = Audit()
    admission: Admission = Admission()
    runtimes: Runtimes = Runtimes()
    firewall: Firewall = Firewall()
    os_hardening: OSHardening = OSHardening()
    ssh_hardening: SSHHardening = SSHHardening()
    namespaces: list[NamespacePolicy] = []
    namespace_baseline: NamespaceBaseline = NamespaceBaseline()
    lab_exceptions: LabExceptions = LabExceptions()
    load_balancer: LoadBalancer = LoadBalancer()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def gvisor_from_debian(self) -> bool:
        """Debian's runsc serves distro and bundle artifacts: gVisor is not built from Go modules."""
        return self.runtimes.artifacts != "release"

    @property
    def containerd_from_bundle(self) -> bool:
        """A bundle brings containerd 2 (config version 3, a unit of our own); otherwise Debian's 1.6."""
        return self.runtimes.artifacts == "bundle"

    @property
    def etcd_bin_dir(self) -> str:
        """Debian installs etcd in /usr/bin; release artifacts go to /usr/local/bin."""
        return "/usr/bin" if self.runtimes.artifacts == "distro" else "/usr/local/bin"

    def nodes_with(self, role: str) -> list[Node]:
        return [n for n in self.nodes if role in n.roles]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def ssh_user(self, node: Node) -> str:
        return node.ssh.user or self.ssh.user

    def ssh_port(self, node: Node) -> int:
        return node.ssh.port or self.ssh.port


class LoadedSpec(BaseModel):
    """A validated spec plus where it came from and the host keys it pins."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    spec: Spec
    path: Path | None
    host_keys: dict[str, str]

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()


