"""The plan: every file for every host, rendered from `templates/` with one Jinja2 environment.

A template's path mirrors where its output lands (`templates/etc/nftables.conf.j2` becomes
`/etc/nftables.conf`). Each planned file names the role that delivers it; roles only copy their
own files and manage host state.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import jinja2
import jinja2.meta
import jinja2.nodes
import pydantic
import yaml

from hardened_cluster import resources
from hardened_cluster.deliver import bundle
from hardened_cluster.plan import firewall, kubeadm, sysctl
from hardened_cluster.secrets.pki import ClusterPKI
from hardened_cluster.secrets.private import private_dir
from hardened_cluster.secrets.store import ClusterSecrets
from hardened_cluster.spec.model import LoadedSpec, Node, Spec


# containerd's handler name of each sandbox runtime (the RuntimeClass name); runc's is its own.
SANDBOX_HANDLERS = {"gvisor": "runsc", "kata": "kata"}


@dataclass(frozen=True)
class HostFacts:
    """What preflight found on a host that changes what is rendered for it."""

    kata_capable: bool = True
    # Where the controller's SSH session comes from, as the host sees it (preflight; None when not asked).
    controller_address: str | None = None


@dataclass(frozen=True)
class PlannedFile:
    path: str
    content: str = field(repr=False)
    mode: str
    role: str
    owner: str = "root"
    group: str = "root"
    secret: bool = False

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode()).hexdigest()


@dataclass
class HostPlan:
    node: Node
    files: dict[str, PlannedFile]
    notes: list[str]
    # The runtimes containerd gets here (Context.runtimes_on); none off the Kubernetes nodes.
    runtimes: list[str] = field(default_factory=list)

    def for_role(self, role: str) -> list[PlannedFile]:
        return [f for f in self.files.values() if f.role == role]


@dataclass
class Plan:
    loaded: LoadedSpec
    hosts: dict[str, HostPlan]
    manifests: dict[str, PlannedFile]
    pki: ClusterPKI = field(repr=False)  # the state store the files were rendered from
    # What preflight found per host (empty for a plan rendered without contacting hosts).
    facts: dict[str, HostFacts] = field(default_factory=dict)

    @property
    def spec(self) -> Spec:
        return self.loaded.spec

    def write_tree(self, out: Path) -> int:
        """Write `<out>/<host>/<path>` and `<out>/cluster/manifests/...`.

        Directories are 0700 and files 0600: the tree holds keys (the roles give each file its
        planned mode on the host). Files no longer planned are removed, so the tree is exactly the plan.
        """
        private_dir(out)
        wanted: dict[Path, PlannedFile] = {}
        for name, host in self.hosts.items():
            for f in host.files.values():
                wanted[out / name / f.path.lstrip("/")] = f
        for f in self.manifests.values():
            wanted[out / "cluster" / f.path] = f
        for path, f in wanted.items():
            if not path.parent.is_dir():
                private_dir(path.parent)
            data = f.content.encode()
            if not (path.is_file() and path.read_bytes() == data):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
            os.chmod(path, 0o600)
        for path in sorted(out.rglob("*"), reverse=True):
            if path.is_file() and path not in wanted:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
            elif path.is_dir() and stat.S_IMODE(path.stat().st_mode) != 0o700:
                os.chmod(path, 0o700)
        return len(wanted)


@dataclass(frozen=True)
class Context:
    """Cluster-wide values every template may use, computed once per plan."""

    spec: Spec
    secrets: ClusterSecrets
    facts: dict[str, HostFacts]

    @cached_property
    def etcd_members(self) -> list[Node]:
        return self.spec.nodes_with("etcd")

    @cached_property
    def control_plane(self) -> list[Node]:
        return self.spec.nodes_with("control-plane")

    @cached_property
    def etcd_endpoints(self) -> list[str]:
        return etcd_endpoints(self.spec)

    @cached_property
    def cluster_configuration(self) -> dict:
        return kubeadm.cluster_configuration(self.spec, self.etcd_endpoints)

    @property
    def etcd_cluster_token(self) -> str:
        return etcd_cluster_token(self.spec)

    @cached_property
    def etcd_initial_cluster(self) -> str:
        return ",".join(f"{n.name}=https://{_host(n)}:{self.spec.etcd.peer_port}" for n in self.etcd_members)

    @cached_property
    def _sandboxed(self) -> dict[str, set[str]]:
        """Per sandbox runtime, the names of the nodes it is enabled on (a set: it is asked once per node)."""
        rt = self.spec.runtimes
        return {name: set(r.nodes) if r.enabled else set() for name, r in (("gvisor", rt.gvisor), ("kata", rt.kata))}

    def runtimes_on(self, node: Node) -> list[str]:
        """Runtime handlers containerd gets on this node; Kata only where preflight found KVM."""
        out = ["runc"]
        if node.name in self._sandboxed["gvisor"]:
            out.append("gvisor")
        if node.name in self._sandboxed["kata"] and self.facts.get(node.name, HostFacts()).kata_capable:
            out.append("kata")
        return out


def _host(node: Node) -> str:
    return f"[{node.address}]" if node.address.version == 6 else str(node.address)


def etcd_cluster_token(spec: Spec) -> str:
    """etcd's initial-cluster-token: the members' config and a restore's new cluster use the same."""
    return f"{spec.cluster.name}-etcd"


def etcd_endpoints(spec: Spec) -> list[str]:
    """The etcd members' client URLs."""
    return [f"https://{_host(n)}:{spec.etcd.client_port}" for n in spec.nodes_with("etcd")]


Predicate = Callable[[Context, Node], bool]
Source = Callable[[Context, Node], str]


@dataclass(frozen=True)
class FileRule:
    """One file a role places on the hosts it applies to."""

    path: str
    role: str
    mode: str
    when: Predicate
    owner: str = "root"
    group: str = "root"
    source: Source | None = None  # data from secrets/PKI instead of a template
    secret: bool = False

    def planned(self, content: str) -> PlannedFile:
        return PlannedFile(self.path, content, self.mode, self.role, self.owner, self.group, self.secret)


def _roles(*names: str) -> Predicate:
    wanted = frozenset(names)
    return lambda ctx, node: not wanted.isdisjoint(node.roles)


def _first_cp(ctx: Context, node: Node) -> bool:
    return node.name == ctx.control_plane[0].name


def _other_cp(ctx: Context, node: Node) -> bool:
    return "control-plane" in node.roles and not _first_cp(ctx, node)


def _etcd_pki(kind: str, part: str) -> Source:
    return lambda ctx, node: getattr(getattr(ctx.secrets.pki, kind)[node.name], part)


def _pki(attr: str, part: str) -> Source:
    return lambda ctx, node: getattr(getattr(ctx.secrets.pki, attr), part)


def _snapshot_key(ctx: Context, node: Node) -> str:
    return ctx.secrets.snapshot_key + "\n"


def _all(*preds: Predicate) -> Predicate:
    return lambda ctx, node: all(p(ctx, node) for p in preds)


_etcd = _roles("etcd")
_cp = _roles("control-plane")
_kube = _roles("control-plane", "worker")

# What `kubeadm init phase control-plane all` renders a control plane's static pod manifests from.
CONTROL_PLANE_CONFIG = "/etc/kubernetes/kubeadm/kubeadm-control-plane.yaml"
# What `hardened-cluster upgrade` runs `kubeadm upgrade apply|node --config` with (an UpgradeConfiguration).
UPGRADE_CONFIG = "/etc/kubernetes/kubeadm/kubeadm-upgrade.yaml"

FILES: list[FileRule] = [
    FileRule("/etc/sysctl.d/90-hardened-cluster.conf", "os_hardening", "0644", lambda c, n: c.spec.os_hardening.sysctl),
    FileRule("/etc/ssh/sshd_config.d/10-hardened-cluster.conf", "ssh_hardening", "0600", lambda c, n: c.spec.ssh_hardening.enabled),
    FileRule("/etc/nftables.conf", "firewall", "0600", lambda c, n: True),
    # sudo reads the main file, then the drop-ins; a later rule wins, so both are planned.
    FileRule("/etc/sudoers", "access", "0440", lambda c, n: True),
    FileRule("/etc/sudoers.d/hardened-cluster", "access", "0440", lambda c, n: True),
    # etcd
    FileRule("/etc/etcd/etcd.conf.yml", "etcd", "0600", _etcd, owner="etcd", group="etcd"),
    FileRule("/etc/systemd/system/etcd.service", "etcd", "0644", _etcd),
    FileRule("/etc/etcd/pki/ca.crt", "etcd", "0600", _etcd, "etcd", "etcd", _pki("etcd_ca", "cert_pem")),
    FileRule("/etc/etcd/pki/server.crt", "etcd", "0600", _etcd, "etcd", "etcd", _etcd_pki("etcd_server", "cert_pem")),
    FileRule("/etc/etcd/pki/server.key", "etcd", "0600", _etcd, "etcd", "etcd", _etcd_pki("etcd_server", "key_pem"), True),
    FileRule("/etc/etcd/pki/peer.crt", "etcd", "0600", _etcd, "etcd", "etcd", _etcd_pki("etcd_peer", "cert_pem")),
    FileRule("/etc/etcd/pki/peer.key", "etcd", "0600", _etcd, "etcd", "etcd", _etcd_pki("etcd_peer", "key_pem"), True),
    FileRule("/etc/etcd/pki/healthcheck-client.crt", "etcd", "0600", _etcd, source=_pki("etcd_healthcheck_client", "cert_pem")),
    FileRule("/etc/etcd/pki/healthcheck-client.key", "etcd", "0600", _etcd, source=_pki("etcd_healthcheck_client", "key_pem"), secret=True),
    FileRule("/usr/local/sbin/etcd-snapshot", "etcd", "0700", _all(_etcd, lambda c, n: c.spec.etcd.snapshot.enabled)),
    FileRule("/etc/systemd/system/etcd-snapshot.service", "etcd", "0644", _all(_etcd, lambda c, n: c.spec.etcd.snapshot.enabled)),
    FileRule("/etc/systemd/system/etcd-snapshot.timer", "etcd", "0644", _all(_etcd, lambda c, n: c.spec.etcd.snapshot.enabled)),
    FileRule("/etc/etcd/snapshot.key", "etcd", "0600",
             _all(_etcd, lambda c, n: c.spec.etcd.snapshot.enabled and c.secrets.snapshot_key is not None),
             source=_snapshot_key, secret=True),
    # container runtime
    FileRule("/etc/containerd/config.toml", "container_runtime", "0600", _kube),
    FileRule("/etc/containerd/runsc.toml", "container_runtime", "0644",
             lambda c, n: "gvisor" in c.runtimes_on(n) and not c.spec.gvisor_from_debian),
    FileRule("/usr/local/sbin/runsc-containerd", "container_runtime", "0755",
             lambda c, n: "gvisor" in c.runtimes_on(n) and c.spec.gvisor_from_debian),
    FileRule("/etc/crictl.yaml", "container_runtime", "0644", _kube),
    # The bundle's containerd has no package to bring a unit: ours starts /usr/local/bin/containerd.
    FileRule("/etc/systemd/system/containerd.service", "container_runtime", "0644",
             _all(_kube, lambda c, n: c.spec.containerd_from_bundle)),
    # kubelet on every Kubernetes node (CIS 4.1.1: service files 0600)
    FileRule("/etc/systemd/system/kubelet.service", "kubernetes_node", "0600", _kube),
    FileRule("/etc/systemd/system/kubelet.service.d/10-kubeadm.conf", "kubernetes_node", "0600", _kube),
    FileRule("/var/lib/kubelet/config.yaml", "kubernetes_node", "0600", _kube),
    # control plane
    FileRule("/etc/kubernetes/kubeadm/kubeadm-init.yaml", "control_plane", "0600", _first_cp, secret=True),
    FileRule("/etc/kubernetes/kubeadm/kubeadm-join.yaml", "control_plane", "0600", _other_cp, secret=True),
    FileRule(CONTROL_PLANE_CONFIG, "control_plane", "0600", _cp),
    FileRule(UPGRADE_CONFIG, "control_plane", "0600", _cp),
    FileRule("/etc/kubernetes/encryption/encryption-config.yaml", "control_plane", "0600", _cp,
             secret=True),
    FileRule("/etc/kubernetes/auth/authentication-config.yaml", "control_plane", "0600", _cp),
    FileRule("/etc/kubernetes/audit/audit-policy.yaml", "control_plane", "0600", _cp),
    FileRule("/etc/kubernetes/admission/admission-config.yaml", "control_plane", "0600", _cp),
    FileRule("/etc/kubernetes/admission/event-rate-limit.yaml", "control_plane", "0600",
             _all(_cp, lambda c, n: bool(c.spec.admission.event_rate_limit))),
    FileRule("/etc/kubernetes/pki/etcd/ca.crt", "control_plane", "0600", _cp, source=_pki("etcd_ca", "cert_pem")),
    FileRule("/etc/kubernetes/pki/apiserver-etcd-client.crt", "control_plane", "0600", _cp, source=_pki("apiserver_etcd_client", "cert_pem")),
    FileRule("/etc/kubernetes/pki/apiserver-etcd-client.key", "control_plane", "0600", _cp, source=_pki("apiserver_etcd_client", "key_pem"), secret=True),
    FileRule("/etc/kubernetes/pki/ca.crt", "control_plane", "0600", _first_cp, source=_pki("kubernetes_ca", "cert_pem")),
    FileRule("/etc/kubernetes/pki/ca.key", "control_plane", "0600", _first_cp, source=_pki("kubernetes_ca", "key_pem"), secret=True),
    FileRule("/etc/kubernetes/pki/front-proxy-ca.crt", "control_plane", "0600", _first_cp, source=_pki("front_proxy_ca", "cert_pem")),
    FileRule("/etc/kubernetes/pki/front-proxy-ca.key", "control_plane", "0600", _first_cp, source=_pki("front_proxy_ca", "key_pem"), secret=True),
    FileRule("/etc/kubernetes/pki/sa.pub", "control_plane", "0600", _first_cp, source=_pki("service_account", "cert_pem")),
    FileRule("/etc/kubernetes/pki/sa.key", "control_plane", "0600", _first_cp, source=_pki("service_account", "key_pem"), secret=True),
    # the API endpoint's load balancer (load_balancer.provider: haproxy)
    FileRule("/etc/haproxy/haproxy.cfg", "load_balancer", "0644", _roles("load-balancer")),
    FileRule("/etc/haproxy/kubernetes-ca.crt", "load_balancer", "0644", _roles("load-balancer"),
             source=_pki("kubernetes_ca", "cert_pem")),
    # worker join
    FileRule("/etc/kubernetes/kubeadm/kubeadm-join.yaml", "worker", "0600",
             lambda c, n: "worker" in n.roles and "control-plane" not in n.roles, secret=True),
    FileRule(UPGRADE_CONFIG, "worker", "0600", lambda c, n: "worker" in n.roles and "control-plane" not in n.roles),
]

# Cluster objects, applied with the admin kubeconfig (CLI) or as typed resources (Pulumi).
MANIFESTS: list[tuple[str, Callable[[Context], bool]]] = [
    ("manifests/namespaces.yaml", lambda c: bool(c.spec.namespaces)),
    ("manifests/runtimeclass-gvisor.yaml", lambda c: c.spec.runtimes.gvisor.enabled),
    ("manifests/runtimeclass-kata.yaml", lambda c: c.spec.runtimes.kata.enabled),
    ("manifests/networkpolicies.yaml", lambda c: any(ns.baseline_network_policy for ns in c.spec.namespaces)),
    ("manifests/kube-router.yaml", lambda c: c.spec.network.cni == "kube-router"),
    # The controller's image is built into the offline bundle only.
    ("manifests/namespace-baseline.yaml",
     lambda c: c.spec.namespace_baseline.enabled and c.spec.runtimes.artifacts == "bundle"),
]


def _yaml_filter(value) -> str:
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=False).rstrip("\n")


def make_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(resources.TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["to_yaml"] = _yaml_filter
    env.filters["to_json"] = lambda v: json.dumps(v)
    env.filters["sha256"] = lambda v: hashlib.sha256(str(v).encode()).hexdigest()
    env.filters.update(kubeadm.TEMPLATE_FILTERS)
    env.globals.update(kubeadm.TEMPLATE_GLOBALS)
    env.globals["KUBE_ROUTER_IMAGE"] = bundle.kube_router_image()
    env.globals["NAMESPACE_BASELINE_IMAGE"] = bundle.namespace_baseline_image()
    from hardened_cluster.deliver.artifacts import INSTALL  # artifacts imports this module

    env.globals["CONTAINERD_BIN"] = INSTALL["containerd"]
    return env


def load_templates(env: jinja2.Environment) -> None:
    """Compile every template into `env`'s cache, so that its renders only render."""
    for name in env.list_templates(extensions=["j2"]):
        env.get_template(name)


def _template_name(path: str) -> str:
    return path.lstrip("/") + ".j2"


def node_inputs(env: jinja2.Environment, name: str, per_node: frozenset[str],
                including: frozenset[str] = frozenset()) -> frozenset[str] | None:
    """The per-node values template `name` and what it includes can read: `node.<attribute>` or another
    of the variables named in `per_node` (the rest, such as spec and ctx, are the same for every node).

    None when it may read more of the node than named attributes (the node passed on whole, to a method
    or a macro; a template included by a computed name; a filter, test or global given the context).
    """
    ast = env.parse(env.loader.get_source(env, name)[0], name)
    attributes = [g for g in ast.find_all(jinja2.nodes.Getattr)
                  if isinstance(g.node, jinja2.nodes.Name) and g.node.name == "node"]
    read = {f"node.{g.attr}" for g in attributes}
    named = {id(g.node) for g in attributes}
    for n in ast.find_all(jinja2.nodes.Name):
        if n.ctx == "load" and (n.name == "node" or n.name in per_node) and id(n) not in named:
            if n.name == "node":
                return None
            read.add(n.name)
    used = [(env.filters, f.name) for f in ast.find_all(jinja2.nodes.Filter)]
    used += [(env.tests, t.name) for t in ast.find_all(jinja2.nodes.Test)]
    used += [(env.globals, n.name) for n in ast.find_all(jinja2.nodes.Name)]
    if any(getattr(getattr(where.get(what), "jinja_pass_arg", None), "name", None) == "context" for where, what in used):
        return None
    for other in jinja2.meta.find_referenced_templates(ast):
        if other is None:
            return None
        if other not in including:
            more = node_inputs(env, other, per_node, including | {name})
            if more is None:
                return None
            read |= more
    return frozenset(read)


def _frozen(value: object) -> object:
    """`value` as a hashable key equal only for equal values of the same types (1, 1.0 and True differ)."""
    if isinstance(value, pydantic.BaseModel):
        return type(value), tuple((k, _frozen(v)) for k, v in value)
    if isinstance(value, dict):
        return dict, tuple((k, _frozen(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value), tuple(_frozen(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return type(value), frozenset(_frozen(v) for v in value)
    hash(value)
    return type(value), value


def _render_key(inputs: tuple[str, ...], node: Node, per_node: dict[str, object]) -> object:
    """Equal for two nodes only when the template reads equal values for both, so it renders the same.

    `inputs` are node_inputs in a fixed order; `per_node` holds, for each per-node variable other than the
    node, a hashable value it is a function of.
    """
    missing = object()
    try:
        return tuple(_frozen(getattr(node, read[5:], missing)) if read.startswith("node.") else per_node[read]
                     for read in inputs)
    except TypeError:  # an unhashable value: render for this node alone
        return object()


def render_plan(
    loaded: LoadedSpec,
    secrets: ClusterSecrets,
    facts: dict[str, HostFacts] | None = None,
    env: jinja2.Environment | None = None,
) -> Plan:
    env = env or make_environment()
    ctx = Context(spec=loaded.spec, secrets=secrets, facts=facts or {})
    templates: dict[str, tuple[jinja2.Template, tuple[str, ...] | None]] = {}
    # Most files are the same on every node of a role: each is rendered once per distinct input it reads.
    rendered: dict[tuple[int, object], PlannedFile] = {}
    hosts: dict[str, HostPlan] = {}
    # A node's firewall rules depend only on its roles and SSH port; computing them per node is O(nodes^2).
    rules: dict[tuple[tuple[str, ...], int], tuple[list[firewall.Rule], firewall.Forwarding | None]] = {}
    for node in loaded.spec.nodes:
        files: dict[str, PlannedFile] = {}
        notes: list[str] = []
        shape = (tuple(sorted(node.roles)), ctx.spec.ssh_port(node))
        if shape not in rules:
            rules[shape] = firewall.node_rules(ctx.spec, node), firewall.node_forwarding(ctx.spec, node)
        runtimes = ctx.runtimes_on(node)
        sysctls = sysctl.node_sysctls(node)
        variables = {"spec": ctx.spec, "ctx": ctx, "node": node, "rules": rules[shape][0],
                     "forwarding": rules[shape][1], "runtimes": runtimes, "sysctls": sysctls}
        per_node = {"rules": shape, "forwarding": shape, "runtimes": tuple(runtimes), "sysctls": sysctls}
        for index, rule in enumerate(FILES):
            if not rule.when(ctx, node):
                continue
            if rule.source is not None:
                files[rule.path] = rule.planned(rule.source(ctx, node))
                continue
            name = _template_name(rule.path)
            if name not in templates:
                inputs = node_inputs(env, name, frozenset(per_node))
                # Node names are unique: a file that reads its node's name is that node's alone.
                alone = inputs is None or "node.name" in inputs
                templates[name] = env.get_template(name), None if alone else tuple(sorted(inputs))
            template, inputs = templates[name]
            if inputs is None:
                files[rule.path] = rule.planned(template.render(variables))
                continue
            key = (index, _render_key(inputs, node, per_node))
            if key not in rendered:
                rendered[key] = rule.planned(template.render(variables))
            files[rule.path] = rendered[key]
        if node.name in ctx._sandboxed["kata"] and "kata" not in runtimes:
            notes.append("kata handler left out: preflight found no /dev/kvm with vhost-vsock on this host")
        hosts[node.name] = HostPlan(node, files, notes, runtimes if _kube(ctx, node) else [])
    manifests = {}
    for path, when in MANIFESTS:
        if when(ctx):
            content = env.get_template(_template_name(path)).render({"spec": ctx.spec, "ctx": ctx})
            manifests[path] = PlannedFile(path, content, "0644", "cluster_objects")
    return Plan(loaded, hosts, manifests, secrets.pki, ctx.facts)
