"""The cluster spec: one typed YAML document per environment, validated once at load.

`load_spec` is the only way in. Every problem is reported with its key path
(`nodes[3].roles`) and what is allowed; nothing is contacted while loading.
"""
from __future__ import annotations

import base64
import binascii
import difflib
import errno
import ipaddress
import os
import re
import stat
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import paramiko
import yaml
from pydantic import (
    BeforeValidator,
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

from hardened_cluster.spec import rules as spec_rules
from hardened_cluster.secrets.age_key import identity_problem
from hardened_cluster.errors import SpecError, SpecIssue
from hardened_cluster.spec.limits import LOADER, MAX_BYTES, document_issues
from hardened_cluster.spec.text import HIDDEN, key_path, shown


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


def _public_key(value: str) -> str:
    if _parse_host_key(value) is None:
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


_path = key_path


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that owns the key at `loc`, for 'did you mean' hints."""
    model: Any = Spec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) or next(
            (f for f in model.model_fields.values() if f.alias == part), None
        )
        if field is None:
            return None
        model = _unwrap_model(field.annotation)
        if model is None:
            return None
    return model


def _unwrap_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _unwrap_model(arg)
        if found:
            return found
    return None


def validation_issues(error: ValidationError) -> list[SpecIssue]:
    """Pydantic's errors as issues naming the key path, what is wrong and what is allowed."""
    issues = []
    suggested = set()
    for err in error.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p in _UNION_TAGS)))
        path = _path(loc)
        kind, value = err["type"], err.get("input")
        if _SECRET_KEYS & {p for p in loc if isinstance(p, str)}:
            value = HIDDEN
        if kind == "extra_forbidden":
            model = _model_at(loc)
            allowed = sorted((f.alias or n) for n, f in model.model_fields.items()) if model else []
            key = str(loc[-1])
            close = [a for a in allowed if len(key) >= 3 and a.startswith(key)][:1]
            close = close or difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            suggested |= {_path(loc[:-1] + (close[0],))} if close else set()
            issues.append(SpecIssue(path, f"unknown key{hint}; allowed: {', '.join(allowed)}"))
        elif kind == "missing":
            issues.append(SpecIssue(path, "required key is missing"))
        elif kind == "literal_error":
            allowed = [str(a) for a in err.get("ctx", {}).get("expected", "").replace("'", "").replace(" or ", ", ").split(", ")]
            hint = spec_rules.did_you_mean(value, allowed) if isinstance(value, str) else ""
            issues.append(SpecIssue(path, f"{_shown(value)} is not allowed; {err['msg'].replace('Input should be', 'allowed:')}{hint}"))
        elif kind in ("ip_v4_network", "ip_v6_network"):
            issues.append(SpecIssue(path, _network_message(value)))
        elif kind in ("ip_v4_address", "ip_v6_address"):
            issues.append(SpecIssue(path, f"{_shown(value)} is not a valid IPv4 or IPv6 address"))
        elif kind == "string_pattern_mismatch":
            pattern = err.get("ctx", {}).get("pattern")
            want = _PATTERNS.get(pattern, f"a string matching {pattern}")
            issues.append(SpecIssue(path, f"{_shown(value)} is not allowed; expected {want}"))
        elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            bounds = _bounds(loc) or err["msg"].removeprefix("Input should be ")
            issues.append(SpecIssue(path, f"{_shown(value)} is out of range; allowed: {bounds}"))
        elif kind in ("int_type", "int_parsing", "int_from_float"):
            bounds = _bounds(loc)
            within = f" ({bounds})" if bounds else ""
            issues.append(SpecIssue(path, f"expected an integer{within}, got {_shown(value)}"))
        elif kind in ("bool_type", "bool_parsing"):
            issues.append(SpecIssue(path, f"expected true or false, got {_shown(value)}"))
        elif kind == "string_type":
            quote = " (quote it in YAML)" if isinstance(value, (int, float, bool)) else ""
            issues.append(SpecIssue(path, f"expected a string, got {_shown(value)}{quote}"))
        elif kind == "path_type":
            issues.append(SpecIssue(path, f"expected a file path, got {_shown(value)}"))
        elif kind == "list_type":
            issues.append(SpecIssue(path, f"expected a list, got {_shown(value)}"))
        elif kind in ("dict_type", "model_type", "model_attributes_type"):
            model = _model_at(loc + ("",))
            names = sorted((f.alias or n) for n, f in model.model_fields.items()) if model else []
            keys = f" with keys: {', '.join(names)}" if names else ""
            issues.append(SpecIssue(path, f"expected a mapping{keys}; got {_shown(value)}"))
        elif kind == "too_short":
            choices = _choices(loc)
            allowed = f"; allowed: {choices}" if choices else ""
            need = err["ctx"]["min_length"]
            issues.append(SpecIssue(path, f"needs at least {need} entry, got {len(value) or 'none'}{allowed}"))
        else:
            msg = err["msg"].removeprefix("Value error, ")
            issues.append(SpecIssue(path, msg))
    return _dedupe([i for i in issues if not (i.path in suggested and i.message == "required key is missing")])


# Keys whose values hold or reference key material: messages about them never show the value.
_SECRET_KEYS = {"secret", "encryption_key", "private_key_file"}

# Pydantic names union members in error locations; they are not key paths.
_UNION_TAGS = {"IPv4Network", "IPv6Network", "IPv4Address", "IPv6Address", "int", "str", "bool"}

_PATTERNS = {
    DnsLabel.__metadata__[0].pattern: "a DNS label: lowercase letters, digits and '-', starting and ending "
    "with a letter or digit, at most 63 characters (e.g. worker-1)",
    Cluster.model_fields["domain"].metadata[0].pattern: "a DNS domain: lowercase letters, digits, '-' and '.' "
    "(e.g. cluster.local)",
    Kms.model_fields["endpoint"].metadata[0].pattern: "a unix socket URL, e.g. unix:///run/kms/plugin.sock",
    Kms.model_fields["timeout"].metadata[0].pattern: "a duration such as 500ms, 3s or 1m",
    EnvName.__metadata__[0].pattern: "an environment variable name: letters, digits and '_', not starting with a digit",
}


_shown = shown


def _network_message(value: Any) -> str:
    if isinstance(value, str):
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            pass
        else:
            return f"{value!r} has host bits set; did you mean {network}?"
    return f"{_shown(value)} is not a valid IPv4 or IPv6 network (CIDR such as 10.0.0.0/24)"


def _field_at(loc: tuple[Any, ...]) -> Any:
    model = _model_at(loc)
    return model.model_fields.get(loc[-1]) if model and isinstance(loc[-1], str) else None


def _bounds(loc: tuple[Any, ...]) -> str:
    """'1 to 365' for a constrained integer field, from its annotation."""
    field = _field_at(loc)
    if field is None:
        return ""
    metadata = list(field.metadata)
    for arg in getattr(field.annotation, "__args__", ()):
        for extra in getattr(arg, "__metadata__", ()):
            metadata += getattr(extra, "metadata", [extra])
    low = next((m.ge for m in metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in metadata if hasattr(m, "le")), None)
    if low is not None and high is not None:
        return f"{low} to {high}"
    return f"at least {low}" if low is not None else f"at most {high}" if high is not None else ""


def _choices(loc: tuple[Any, ...]) -> str:
    """The allowed values of a list-of-literals field ('etcd', 'control-plane' or 'worker')."""
    field = _field_at(loc)
    members = getattr(field.annotation, "__args__", ()) if field else ()
    return ", ".join(repr(a) for arg in members if get_origin(arg) is Literal for a in get_args(arg))


def _dedupe(issues: list[SpecIssue]) -> list[SpecIssue]:
    seen: dict[str, SpecIssue] = {}
    for issue in issues:
        seen.setdefault(issue.path, issue)
    return list(seen.values())


def read_secret(ref: SecretRef, base_dir: Path) -> str | None:
    """The secret's text, or None for generated secrets (the state store has them)."""
    if ref.env:
        return os.environ.get(ref.env)
    if ref.file:
        path = ref.file.expanduser()
        path = path if path.is_absolute() else base_dir / path
        return path.read_text().strip() if path.is_file() else None
    return None


def _secret_ref_issues(ref: SecretRef, path: str, base_dir: Path) -> list[SpecIssue]:
    chosen = [name for name, on in (("env", ref.env), ("file", ref.file), ("generated", ref.generated)) if on]
    if len(chosen) != 1:
        return [SpecIssue(path, f"set exactly one of env, file or generated: true (got {', '.join(chosen) or 'none'})")]
    if ref.generated:
        return []
    if ref.file:
        problem = file_problem(ref.file, base_dir)
        if problem:
            return [SpecIssue(path, problem)]
    try:
        value = read_secret(ref, base_dir)
    except UnicodeDecodeError:
        return [SpecIssue(path, f"{ref.describe()} is not UTF-8 text; store the secret base64-encoded")]
    except OSError as exc:
        return [SpecIssue(path, f"{ref.describe()} cannot be read: {exc.strerror}")]
    if value is None:
        if ref.env:
            return [SpecIssue(path, f"environment variable {ref.env} is not set")]
        file = ref.file.expanduser()
        return [SpecIssue(path, f"file {file if file.is_absolute() else base_dir / file} does not exist")]
    if not value.strip():
        return [SpecIssue(path, f"{ref.describe()} is empty")]
    return []


def file_problem(file: Path, base_dir: Path) -> str | None:
    """What keeps a file named in the spec from being read, exactly: missing, a directory, not a file."""
    path = file.expanduser()
    path = path if path.is_absolute() else base_dir / path
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return f"file {path} does not exist" if exc.errno == errno.ENOENT else f"file {path} cannot be read: {exc.strerror}"
    if stat.S_ISDIR(mode):
        return f"file {path} is a directory, not a file"
    if not stat.S_ISREG(mode):
        return f"file {path} is not a regular file"
    return None


def _key_issues(spec: Spec, base_dir: Path) -> list[SpecIssue]:
    enc = spec.encryption
    issues: list[SpecIssue] = []
    if enc.provider == "kms-v2":
        if enc.kms is None:
            issues.append(SpecIssue("encryption.kms", "required when provider is kms-v2 (name, endpoint unix:///path.sock)"))
        if enc.keys:
            issues.append(SpecIssue("encryption.keys", "kms-v2 keeps keys in the KMS plugin; remove encryption.keys"))
        return issues
    if enc.kms is not None:
        issues.append(SpecIssue("encryption.kms", f"only used with provider kms-v2, not {enc.provider}"))
    if not enc.keys:
        issues.append(SpecIssue("encryption.keys", f"{enc.provider} needs at least one key (the first one encrypts)"))
    names = [k.name for k in enc.keys]
    for i, key in enumerate(enc.keys):
        path = f"encryption.keys[{i}]"
        if names.index(key.name) != i:
            issues.append(SpecIssue(f"{path}.name", f"duplicate key name '{key.name}'"))
        ref_issues = _secret_ref_issues(key.secret, f"{path}.secret", base_dir)
        issues += ref_issues
        value = None if ref_issues else read_secret(key.secret, base_dir)
        if value is not None:
            try:
                length = len(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError):
                size = KEY_LENGTHS[enc.provider][-1]
                issues.append(SpecIssue(
                    f"{path}.secret",
                    f"{key.secret.describe()} is not base64; expected {size} random bytes, base64-encoded "
                    f"(e.g. head -c {size} /dev/urandom | base64)",
                ))
                continue
            allowed = KEY_LENGTHS[enc.provider]
            if length not in allowed:
                want = " or ".join(str(n) for n in allowed)
                issues.append(SpecIssue(
                    f"{path}.secret",
                    f"{key.secret.describe()} decodes to {length} bytes; {enc.provider} needs {want} bytes",
                ))
    return issues


def _parse_host_key(text: str) -> str | None:
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


def _known_hosts(spec: Spec, base_dir: Path) -> tuple[dict[str, str], list[SpecIssue]]:
    """Host keys from ssh.known_hosts, by node address and name."""
    if spec.ssh.known_hosts is None:
        return {}, []
    path = spec.ssh.known_hosts.expanduser()
    path = path if path.is_absolute() else base_dir / path
    problem = file_problem(path, base_dir)
    if problem:
        missing = " (for the lab, run: hardened-cluster lab up)" if problem.endswith("does not exist") else ""
        return {}, [SpecIssue("ssh.known_hosts", problem + missing)]
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not UTF-8 text"
        return {}, [SpecIssue("ssh.known_hosts", f"file {path} cannot be read: {why}")]
    if not text.strip():
        return {}, [SpecIssue("ssh.known_hosts", f"file {path} is empty (for the lab, run: hardened-cluster lab up)")]
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        hosts, _, key = line.partition(" ")
        parsed = _parse_host_key(key)
        if parsed is None:
            return {}, [SpecIssue("ssh.known_hosts", f"{path}:{number} is not a 'host keytype base64' line")]
        for host in hosts.split(","):
            found[host.strip("[]").split("]:")[0]] = parsed
    return found, []


def _node_issues(spec: Spec, base_dir: Path) -> tuple[dict[str, str], list[SpecIssue]]:
    issues: list[SpecIssue] = []
    known, kh_issues = _known_hosts(spec, base_dir)
    issues += kh_issues
    host_keys: dict[str, str] = {}
    names: dict[str, int] = {}
    addresses: dict[str, int] = {}
    for i, node in enumerate(spec.nodes):
        path = f"nodes[{i}]"
        if node.name in names:
            issues.append(SpecIssue(f"{path}.name", f"duplicate name '{node.name}' (also nodes[{names[node.name]}])"))
        names.setdefault(node.name, i)
        addr = str(node.address)
        if addr in addresses:
            issues.append(SpecIssue(f"{path}.address", f"duplicate address {addr} (also nodes[{addresses[addr]}])"))
        addresses.setdefault(addr, i)
        if len(set(node.roles)) != len(node.roles):
            issues.append(SpecIssue(f"{path}.roles", "a role is listed twice"))
        if "etcd" in node.roles and "control-plane" in node.roles:
            issues.append(SpecIssue(
                f"{path}.roles",
                "'etcd' and 'control-plane' on the same node contradict etcd.topology=external",
            ))
        if not any(node.address in cidr for cidr in spec.network.node_cidrs):
            cidrs = ", ".join(str(c) for c in spec.network.node_cidrs)
            issues.append(SpecIssue(f"{path}.address", f"{addr} is outside network.node_cidrs ({cidrs})"))
        if node.ssh.host_key is not None:
            parsed = _parse_host_key(node.ssh.host_key)
            if parsed is None:
                issues.append(SpecIssue(f"{path}.ssh.host_key", "not an SSH public key ('ssh-ed25519 AAAA...')"))
            else:
                host_keys[node.name] = parsed
        elif addr in known or node.name in known:
            host_keys[node.name] = known.get(addr) or known[node.name]
        elif not kh_issues:
            where = f" or an entry for {addr} in ssh.known_hosts" if spec.ssh.known_hosts else ""
            issues.append(SpecIssue(
                f"{path}.ssh.host_key",
                f"no SSH host key pinned for '{node.name}'; set host_key{where} (host key checking is never disabled)",
            ))
    return host_keys, issues


def _topology_issues(spec: Spec) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    etcd = spec.nodes_with("etcd")
    if not etcd:
        issues.append(SpecIssue(
            "nodes", "no node has the role 'etcd'; etcd.topology=external needs 1, 3, 5 or 7 etcd nodes",
        ))
    elif len(etcd) % 2 == 0:
        issues.append(SpecIssue(
            "nodes",
            f"{len(etcd)} etcd members; etcd needs an odd number (1, 3, 5 or 7) to keep quorum",
        ))
    elif len(etcd) > 7:
        issues.append(SpecIssue("nodes", f"{len(etcd)} etcd members; more than 7 slows every write, allowed: 1, 3, 5 or 7"))
    if not spec.nodes_with("control-plane"):
        issues.append(SpecIssue("nodes", "no node has the role 'control-plane'; at least one is required"))
    issues += _load_balancer_issues(spec)
    names = {n.name: n for n in spec.nodes}  # by name: spec.node() per entry is quadratic in the node count
    for runtime in ("gvisor", "kata"):
        rt = getattr(spec.runtimes, runtime)
        for j, name in enumerate(rt.nodes):
            if name not in names:
                issues.append(SpecIssue(f"runtimes.{runtime}.nodes[{j}]", f"unknown node '{name}'; nodes: {', '.join(sorted(names))}"))
            elif "worker" not in names[name].roles:
                issues.append(SpecIssue(f"runtimes.{runtime}.nodes[{j}]", f"'{name}' is not a worker; sandboxed runtimes run on workers"))
        if rt.enabled and not rt.nodes:
            issues.append(SpecIssue(f"runtimes.{runtime}.nodes", f"{runtime} is enabled on no node; list the workers that run it or set enabled: false"))
    return issues


def _load_balancer_issues(spec: Spec) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    provider = spec.load_balancer.provider
    balancers = spec.nodes_with("load-balancer")
    for i, node in enumerate(spec.nodes):
        if "load-balancer" not in node.roles:
            continue
        if provider != "haproxy":
            issues.append(SpecIssue(f"nodes[{i}].roles", f"'load-balancer' needs load_balancer.provider: haproxy "
                                    f"(it is '{provider}')"))
        elif len(node.roles) > 1:
            issues.append(SpecIssue(f"nodes[{i}].roles", "'load-balancer' runs alone on its node: haproxy listens "
                                    "on the API server's port there; remove the other roles"))
    if provider == "haproxy" and not balancers:
        issues.append(SpecIssue("load_balancer.provider", "haproxy needs at least one node with the role "
                                "'load-balancer'; add one or set load_balancer.provider: external"))
    try:
        address = ipaddress.ip_address(spec.cluster.api_host)
    except ValueError:
        address = None  # a DNS name: the operator's DNS points it at the load balancers
    if provider == "haproxy" and balancers and address is not None and address not in {n.address for n in balancers}:
        named = ", ".join(f"{n.name} ({n.address})" for n in balancers)
        issues.append(SpecIssue("cluster.control_plane_endpoint", f"{address} is not a load-balancer node's "
                                f"address; with load_balancer.provider haproxy the endpoint is one of: {named}"))
    return issues


def _network_issues(spec: Spec) -> list[SpecIssue]:
    net = spec.network
    issues: list[SpecIssue] = []
    named = [("network.pod_cidr", net.pod_cidr), ("network.service_cidr", net.service_cidr)]
    named += [(f"network.node_cidrs[{i}]", c) for i, c in enumerate(net.node_cidrs)]
    for a in range(len(named)):
        for b in range(a + 1, len(named)):
            (pa, ca), (pb, cb) = named[a], named[b]
            if ca.version == cb.version and ca.overlaps(cb):
                issues.append(SpecIssue(pb, f"{cb} overlaps {pa} ({ca}); pod, service and node CIDRs must be disjoint"))
    for i, cidr in enumerate(net.admin_cidrs):
        # Shorter than /8 (or /16 for IPv6) is internet-scale: 0.0.0.0/1 plus 128.0.0.0/1 is everyone too.
        wide = cidr.prefixlen < (8 if cidr.version == 4 else 16)
        if wide and not net.i_accept_api_and_ssh_open_to_the_internet:
            whom = "everyone" if cidr.prefixlen == 0 else "a large part of the internet"
            issues.append(SpecIssue(
                f"network.admin_cidrs[{i}]",
                f"{cidr} opens the API server and SSH to {whom}; list your admin networks "
                "(e.g. 172.25.0.0/24) or set network.i_accept_api_and_ssh_open_to_the_internet: true",
            ))
    return issues


def _other_issues(spec: Spec, base_dir: Path) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    snap = spec.etcd.snapshot
    if snap.encryption_key is not None:
        ref_issues = _secret_ref_issues(snap.encryption_key, "etcd.snapshot.encryption_key", base_dir)
        issues += ref_issues
        value = None if ref_issues else read_secret(snap.encryption_key, base_dir)
        problem = identity_problem(value) if value is not None else None
        if problem:
            issues.append(SpecIssue("etcd.snapshot.encryption_key", f"{snap.encryption_key.describe()} {problem}"))
    runtimes = spec.runtimes
    if runtimes.artifacts == "bundle" and runtimes.bundle is None:
        issues.append(SpecIssue("runtimes.bundle", "runtimes.artifacts is 'bundle': name the bundle directory "
                                "(made by `hardened-cluster artifacts build --out DIR`)"))
    elif runtimes.bundle is not None and runtimes.artifacts != "bundle":
        issues.append(SpecIssue("runtimes.bundle", f"set, but runtimes.artifacts is '{runtimes.artifacts}'; "
                                "set runtimes.artifacts: bundle or remove runtimes.bundle"))
    elif runtimes.bundle is not None and not runtimes.bundle.is_absolute():
        issues.append(SpecIssue("runtimes.bundle", "must be an absolute path"))
    gvisor = spec.runtimes.gvisor
    if gvisor.enabled and spec.gvisor_from_debian and gvisor.platform == "systrap":
        issues.append(SpecIssue(
            "runtimes.gvisor.platform",
            f"systrap needs gVisor from release artifacts; with '{spec.runtimes.artifacts}' artifacts gVisor is "
            "Debian's runsc (2022), which has ptrace and kvm",
        ))
    if spec.etcd.election_timeout_ms < 5 * spec.etcd.heartbeat_interval_ms:
        issues.append(SpecIssue(
            "etcd.election_timeout_ms",
            f"{spec.etcd.election_timeout_ms} is less than 5x etcd.heartbeat_interval_ms "
            f"({spec.etcd.heartbeat_interval_ms}); must be at least {5 * spec.etcd.heartbeat_interval_ms}",
        ))
    if spec.etcd.client_port == spec.etcd.peer_port:
        issues.append(SpecIssue("etcd.peer_port", "must differ from etcd.client_port"))
    if not spec.audit.log_path.is_absolute():
        issues.append(SpecIssue("audit.log_path", "must be an absolute path"))
    seen = {}
    for i, ns in enumerate(spec.namespaces):
        if ns.name in seen:
            issues.append(SpecIssue(f"namespaces[{i}].name", f"duplicate namespace '{ns.name}'"))
        seen[ns.name] = i
    managed = {spec.etcd.client_port: "etcd.client_port", spec.etcd.peer_port: "etcd.peer_port"}
    managed.setdefault(spec.cluster.api_port, "the API server port")
    managed.setdefault(10250, "the kubelet port")
    for node in spec.nodes:
        managed.setdefault(spec.ssh_port(node), "the SSH port")
    for i, port in enumerate(spec.firewall.extra_ports):
        if port.port in managed:
            issues.append(SpecIssue(
                f"firewall.extra_ports[{i}].port",
                f"{port.port} is {managed[port.port]}; it is managed by the role matrix, not extra_ports",
            ))
    return issues


def parse_spec(data: Any, path: Path | None = None, source: str = "") -> LoadedSpec:
    """Validate a spec document already read from YAML (or given inline)."""
    source = source or (str(path) if path else "")
    if not isinstance(data, dict):
        got = "an empty document" if data is None else _shown(data)
        raise SpecError(
            [SpecIssue("", f"the document must be a mapping with apiVersion, cluster, network and nodes; got {got}")],
            source,
        )
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(validation_issues(exc), source) from None
    base_dir = path.parent if path else Path.cwd()
    host_keys, issues = _node_issues(spec, base_dir)
    issues += _topology_issues(spec)
    issues += _network_issues(spec)
    issues += _key_issues(spec, base_dir)
    issues += _other_issues(spec, base_dir)
    # One issue per key: a rule's finding where an earlier check already spoke would repeat it.
    taken = {issue.path for issue in issues}
    issues += _dedupe([i for i in spec_rules.semantic_issues(spec) if i.path not in taken])
    if issues:
        raise SpecError(issues, source)
    return LoadedSpec(spec=spec, path=path, host_keys=host_keys)


class _UniqueKeys:
    """safe_load that rejects a key given twice in one mapping instead of keeping the last value."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if (key_node.tag, key_node.value) in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None,
                        f"duplicate key '{key_node.value}' (the later value would silently replace the earlier one)",
                        key_node.start_mark,
                    )
                seen.add((key_node.tag, key_node.value))
        return super().construct_mapping(node, deep)


class _UniqueKeyLoader(_UniqueKeys, LOADER):
    pass


class _ExplainingLoader(_UniqueKeys, yaml.SafeLoader):
    pass


def load_spec(path: Path | str) -> LoadedSpec:
    path = Path(path)
    try:
        info = path.stat()
        if stat.S_ISREG(info.st_mode) and info.st_size > MAX_BYTES:
            raise SpecError([SpecIssue("", f"the document is {info.st_size:,} bytes; at most {MAX_BYTES:,} are read")],
                            str(path))
        if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):
            raise SpecError([SpecIssue("", "cannot read spec: not a regular file")], str(path))
        text = path.read_text()
    except OSError as exc:
        raise SpecError([SpecIssue("", f"cannot read spec: {exc.strerror}")], str(path)) from None
    except UnicodeDecodeError as exc:
        raise SpecError([SpecIssue("", f"cannot read spec: not UTF-8 text (byte {exc.start})")], str(path)) from None
    limits = document_issues(text)
    if limits:
        raise SpecError(limits, str(path))
    try:
        try:
            data = yaml.load(text, Loader=_UniqueKeyLoader)
        except yaml.YAMLError:
            data = yaml.load(text, Loader=_ExplainingLoader)  # the pure-Python parser's messages are clearer
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        start = getattr(exc, "context_mark", None)
        context = getattr(exc, "context", None)
        at = f" started at line {start.line + 1}, column {start.column + 1}" if start else ""
        started = f" ({context}{at})" if context else ""
        raise SpecError(
            [SpecIssue("", f"not valid YAML: {where}{getattr(exc, 'problem', exc)}{started}")], str(path)
        ) from None
    return parse_spec(data, path.resolve())
