"""HardenedCluster: the Pulumi component that provisions a cluster tier by tier.

PKI and secrets -> hosts (OS hardening, SSH, firewall) -> etcd -> container runtime -> control plane ->
workers -> cluster objects; each tier depends on the one before. The host tiers are dynamic resources
(providers.py) that run the same core as `hardened-cluster apply`; the cluster objects are typed
pulumi-kubernetes resources built from the plan's own manifests, so the CLI and Pulumi place the same
objects.

The spec document may hold Outputs of other resources at `nodes[].address` and `nodes[].ssh.host_key`.
Everything else in it decides which resources exist, so it must be known when the program runs.
"""
from __future__ import annotations

import inspect
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_cluster.deliver import bundle as offline_bundle
from hardened_cluster.deliver.ansible import delivered_digest
from hardened_cluster.plan.render import Context, Plan, render_plan
from hardened_cluster.pulumi import providers
from hardened_cluster.secrets.store import resolve_secrets
from hardened_cluster.spec.model import LoadedSpec, Spec
from hardened_cluster.verify.cis import check_plan
from hardened_cluster.verify.cis_controls import summary

TYPE = "hardened-cluster:index:HardenedCluster"


@dataclass(frozen=True)
class Tier:
    name: str
    phase: str  # the deliver.PHASES entry (Ansible tag) it runs
    select: Callable[[Spec], list[str]]
    provider: type[providers.TierProvider]

    def hosts(self, spec: Spec) -> list[str]:
        return self.select(spec)


def _nodes(*roles: str, without: str | None = None) -> Callable[[Spec], list[str]]:
    return lambda spec: [n.name for n in spec.nodes if set(roles) & set(n.roles) and without not in n.roles]


TIERS: tuple[Tier, ...] = (
    Tier("hosts", "hosts", lambda spec: [n.name for n in spec.nodes], providers.HostsTierProvider),
    Tier("etcd", "etcd", _nodes("etcd"), providers.EtcdTierProvider),
    Tier("runtime", "runtime", _nodes("control-plane", "worker"), providers.RuntimeTierProvider),
    # The load balancers serve the endpoint kubeadm init writes into the kubeconfigs: same phase, before it.
    Tier("control-plane", "kubernetes", _nodes("control-plane", "load-balancer"), providers.ControlPlaneTierProvider),
    Tier("workers", "kubernetes", _nodes("worker", without="control-plane"), providers.KubernetesTierProvider),
)

# Manifest kinds -> typed resource and the top-level fields it takes besides metadata.
KINDS: Mapping[str, tuple[type[pulumi.CustomResource], tuple[str, ...]]] = {
    "Namespace": (k8s.core.v1.Namespace, ()),
    "RuntimeClass": (k8s.node.v1.RuntimeClass, ("handler", "overhead", "scheduling")),
    "NetworkPolicy": (k8s.networking.v1.NetworkPolicy, ("spec",)),
    # The network (network.cni: kube-router).
    "ServiceAccount": (k8s.core.v1.ServiceAccount, ("automountServiceAccountToken",)),
    "ClusterRole": (k8s.rbac.v1.ClusterRole, ("rules",)),
    "ClusterRoleBinding": (k8s.rbac.v1.ClusterRoleBinding, ("roleRef", "subjects")),
    "ConfigMap": (k8s.core.v1.ConfigMap, ("data",)),
    "DaemonSet": (k8s.apps.v1.DaemonSet, ("spec",)),
    # The namespace-baseline controller.
    "Deployment": (k8s.apps.v1.Deployment, ("spec",)),
}


def _argument(field: str) -> str:
    """A manifest's top-level field as the typed resource's keyword argument (roleRef -> role_ref)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", field).lower()


def tier_hashes(plan: Plan, tier: Tier) -> dict[str, str]:
    """Per host: the digest of what the tier's phase delivers there, as the CLI's rerun key takes it
    (deliver.delivered_digest). Only what a tier delivers changes its hash, so `pulumi up` touches only that tier."""
    return {name: delivered_digest(plan, plan.spec.node(name), [tier.phase]) for name in tier.hosts(plan.spec)}


def manifest_objects(plan: Plan) -> dict[str, dict]:
    """The plan's cluster objects by "Kind/namespace/name", in manifest order."""
    out = {}
    for manifest in plan.manifests.values():
        for obj in yaml.safe_load_all(manifest.content):
            if obj:
                meta = obj["metadata"]
                out[f"{obj['kind']}/{meta.get('namespace', '')}/{meta['name']}"] = obj
    return out


def render(doc: dict, spec_path: str | None, bundle: dict[str, str] | None) -> dict[str, Any]:
    """What the component takes from one plan rendered without preflight facts."""
    loaded = providers.load(doc, spec_path)
    with providers.private_state() as state:
        providers.materialize(bundle, state)
        secrets = resolve_secrets(loaded, state)
    plan = render_plan(loaded, secrets)
    spec = loaded.spec
    return {
        "hashes": {tier.name: tier_hashes(plan, tier) for tier in TIERS},
        "objects": manifest_objects(plan),
        "cis": summary(check_plan(plan)),
        "api_endpoint": f"https://{spec.cluster.control_plane_endpoint}",
        "etcd_endpoints": Context(spec=spec, secrets=secrets, facts={}).etcd_endpoints,
    }


def kubernetes_plugin_version(spec: Spec) -> str | None:
    """The kubernetes provider plugin of the spec's offline bundle, which the engine must load (it loads a
    plugin only at exactly the version asked for, and the bundle's is not the SDK's); None: the SDK's own.
    A bundle not built yet has no plugin to ask for."""
    if spec.runtimes.artifacts != "bundle" or not (spec.runtimes.bundle / offline_bundle.BUNDLE_MANIFEST).is_file():
        return None
    plugin = offline_bundle.load(spec.runtimes.bundle).artifacts.get("pulumi-resource-kubernetes")
    return plugin.version.removeprefix("v") if plugin else None


@dataclass
class HardenedClusterArgs:
    spec: pulumi.Input[dict]
    """The cluster spec document (inventories/<env>/cluster.yaml as a dict). `nodes[].address` and
    `nodes[].ssh.host_key` may be Outputs of other resources."""
    spec_path: Optional[str] = None
    """The file the document came from: relative paths in it (known_hosts, secret files) start there."""
    encryption_keys: Optional[pulumi.Input[Mapping[str, pulumi.Input[str]]]] = None
    """Values for the spec's encryption.keys by name (base64); the others are generated."""
    snapshot_key: Optional[pulumi.Input[str]] = None
    bootstrap_token: Optional[pulumi.Input[str]] = None
    certificate_key: Optional[pulumi.Input[str]] = None
    rotate_encryption_key: Optional[pulumi.Input[str]] = None
    """Change it to rotate: a new key is prepended, the old ones keep decrypting."""
    state_dir: Optional[str] = None
    """Where the tiers keep their Ansible reports (default: the CLI's state dir for the cluster)."""


class HardenedCluster(pulumi.ComponentResource):
    api_endpoint: pulumi.Output[str]
    admin_kubeconfig: pulumi.Output[str]
    etcd_endpoints: pulumi.Output[list]
    cis_summary: pulumi.Output[dict]

    def __init__(self, name: str, args: HardenedClusterArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__(TYPE, name, None, opts)
        shape, objects = _shape(args.spec, args.spec_path)
        doc = pulumi.Output.from_input(args.spec)
        supplied = _supplied(args)
        names = pulumi.Output.unsecret(supplied.apply(sorted))
        asked = pulumi.Output.all(doc, names).apply(lambda a: _asked(a[0], set(a[1])))

        self.cluster_secrets = providers.ClusterSecrets(f"{name}-pki", {
            "spec": doc,
            "spec_path": args.spec_path,
            "supplied": supplied,
            "rotate": args.rotate_encryption_key if args.rotate_encryption_key is not None else "",
            "encryption_keys": asked.apply(lambda a: a["keys"]),
            "snapshot_ref": asked.apply(lambda a: a["snapshot"]),
        }, opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["bundle", "supplied"]))
        bundle = pulumi.Output.secret(self.cluster_secrets.bundle)
        effective = pulumi.Output.all(doc, self.cluster_secrets.encryption_keys, self.cluster_secrets.snapshot_ref).apply(
            lambda a: providers.effective_spec(*a))
        # Hashes, manifests, CIS results and endpoints hold no secret, though they come from the bundle.
        rendered = pulumi.Output.unsecret(pulumi.Output.all(effective, bundle).apply(
            lambda a: render(a[0], args.spec_path, a[1])))

        self.tiers: dict[str, providers.ClusterTier] = {}
        previous: pulumi.Resource = self.cluster_secrets
        for tier in TIERS:
            previous = self.tiers[tier.name] = providers.ClusterTier(tier.provider(), f"{name}-{tier.name}", {
                "tier": tier.name,
                "phase": tier.phase,
                "hosts": tier.hosts(shape.spec),
                "spec": effective,
                "spec_path": args.spec_path,
                "secrets": bundle,
                "hashes": rendered.apply(lambda r, t=tier.name: r["hashes"][t]),
                "report_dir": args.state_dir,
            }, opts=pulumi.ResourceOptions(parent=self, depends_on=[previous],
                                           additional_secret_outputs=["secrets", "admin_kubeconfig"]))

        self.admin_kubeconfig = pulumi.Output.secret(self.tiers["control-plane"].admin_kubeconfig)
        self.objects = self._cluster_objects(name, objects, rendered, previous,
                                             kubernetes_plugin_version(shape.spec))
        self.api_endpoint = rendered.apply(lambda r: r["api_endpoint"])
        self.etcd_endpoints = rendered.apply(lambda r: r["etcd_endpoints"])
        self.cis_summary = rendered.apply(lambda r: r["cis"])
        self.register_outputs({
            "api_endpoint": self.api_endpoint,
            "admin_kubeconfig": self.admin_kubeconfig,
            "etcd_endpoints": self.etcd_endpoints,
            "cis_summary": self.cis_summary,
        })

    def _cluster_objects(self, name: str, shape_objects: dict[str, dict], rendered: pulumi.Output,
                         workers: pulumi.Resource, plugin_version: str | None) -> dict[str, pulumi.CustomResource]:
        """One typed resource per manifest object, its fields taken from the real plan's manifests."""
        if not shape_objects:
            return {}
        expected = set(shape_objects)

        def same_objects(r: dict) -> dict:
            if set(r["objects"]) != expected:
                raise ValueError(f"cluster objects differ from the ones planned at construction: "
                                 f"{sorted(set(r['objects']) ^ expected)}")
            return r["objects"]

        live = rendered.apply(same_objects)
        provider = k8s.Provider(f"{name}-k8s", kubeconfig=self.admin_kubeconfig,
                                opts=pulumi.ResourceOptions(parent=self, depends_on=[workers],
                                                            version=plugin_version))
        out: dict[str, pulumi.CustomResource] = {}
        namespaces: dict[str, pulumi.CustomResource] = {}
        for key, obj in shape_objects.items():
            kind, namespace, obj_name = key.split("/")
            if kind not in KINDS:
                raise ValueError(f"{key}: no typed resource for kind {kind} (add it to component.KINDS)")
            cls, fields = KINDS[kind]
            this = live.apply(lambda o, key=key: o[key])
            depends = [namespaces[namespace]] if namespace in namespaces else [workers]
            resource = cls(
                f"{name}-{kind.lower()}-{namespace + '-' if namespace else ''}{obj_name}",
                metadata=this.apply(lambda o: o["metadata"]),
                **{_argument(field): this.apply(lambda o, f=field: o.get(f)) for field in fields},
                opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=depends),
            )
            if kind == "Namespace":
                namespaces[obj_name] = resource
            out[key] = resource
        return out


def _supplied(args: HardenedClusterArgs) -> pulumi.Output[dict]:
    """Secrets the caller supplies, by their file name in the state store; always secret."""
    singles = {"etcd-snapshot-key": args.snapshot_key, "bootstrap-token": args.bootstrap_token,
               "certificate-key": args.certificate_key}
    keys = pulumi.Output.from_input(args.encryption_keys or {})
    given = pulumi.Output.from_input({k: v for k, v in singles.items() if v is not None})
    return pulumi.Output.secret(pulumi.Output.all(keys, given).apply(lambda a: {
        **{f"encryption-{k}": v for k, v in a[0].items() if v is not None}, **a[1]}))


def _asked(doc: dict, supplied: set[str]) -> dict:
    """The spec's key references, with supplied ones read from the bundle like generated ones."""
    generated = {"generated": True}
    keys = [{"name": k["name"], "secret": generated if f"encryption-{k['name']}" in supplied else k["secret"]}
            for k in (doc.get("encryption") or {}).get("keys") or []]
    snapshot = ((doc.get("etcd") or {}).get("snapshot") or {}).get("encryption_key")
    return {"keys": keys, "snapshot": generated if "etcd-snapshot-key" in supplied else snapshot}


def _is_output(value: Any) -> bool:
    return isinstance(value, pulumi.Output) or inspect.isawaitable(value)


def _shape(spec: Any, spec_path: str | None) -> tuple[LoadedSpec, dict[str, dict]]:
    """The spec with stand-ins for its Outputs, validated and rendered once: which tiers, hosts and
    cluster objects exist. The real values are rendered again once the Outputs resolve."""
    if not isinstance(spec, Mapping):
        raise TypeError("HardenedClusterArgs.spec must be a dict (node addresses and host keys in it may be Outputs)")
    loaded = providers.load(_shape_document(spec), spec_path)
    with providers.private_state() as state:
        plan = render_plan(loaded, resolve_secrets(loaded, state))
    return loaded, manifest_objects(plan)


def _shape_document(spec: Mapping) -> dict:
    addresses = _standin_addresses(spec)
    host_key = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()

    def plain(value: Any, path: str) -> Any:
        if _is_output(value):
            raise ValueError(f"spec.{path} is an Output: only nodes[].address and nodes[].ssh.host_key may come "
                             "from other resources, because the rest decides which resources exist")
        if isinstance(value, Mapping):
            return {k: plain(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    def standin(node: Any) -> Any:
        if not isinstance(node, Mapping):
            return node
        node = dict(node)
        if _is_output(node.get("address")):
            node["address"] = next(addresses, None)
        if isinstance(node.get("ssh"), Mapping) and _is_output(node["ssh"].get("host_key")):
            node["ssh"] = {**node["ssh"], "host_key": host_key}
        return node

    doc = dict(spec)
    if isinstance(doc.get("nodes"), (list, tuple)):
        doc["nodes"] = [standin(n) for n in doc["nodes"]]
    return plain(doc, "")


def _standin_addresses(spec: Mapping) -> Iterator[str]:
    """Free addresses of the first node CIDR, so stand-ins pass the spec's own address checks."""
    try:
        network = ipaddress.ip_network(spec["network"]["node_cidrs"][0])
    except (KeyError, IndexError, TypeError, ValueError):
        return iter(())
    used = {str(n.get("address")) for n in spec.get("nodes") or []
            if isinstance(n, Mapping) and not _is_output(n.get("address"))}
    return (str(a) for a in network.hosts() if str(a) not in used)
