"""`hardened-cluster check`: the CIS Kubernetes Benchmark v1.12 evaluated on the plan.

Nothing is contacted: every control is decided from the rendered files, their modes and owners,
and what kubeadm adds on its own (`kubeadm.component_flags`). A control the plan cannot decide,
such as the mode of a file kubeadm creates at init, is NOT-DECIDABLE with the reason; drift
verifies those on the hosts.

Scopes: control-plane controls (1.1 files, 1.2 API server, 1.3 controller manager, 1.4 scheduler)
are reported for every control-plane host, the component flags coming from the cluster-wide
ClusterConfiguration in kubeadm-init.yaml; etcd controls (2.x, and 1.1.7/1.1.8/1.1.11/1.1.12,
whose files live with the external etcd members) for every etcd host; kubelet and kube-proxy
controls (4.x) for every Kubernetes node. Each file's content is parsed once however many hosts
share it.
"""
from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Callable
from typing import Any

import yaml

from hardened_cluster.plan import kubeadm
from hardened_cluster.plan.render import HostPlan, PlannedFile, Plan
from hardened_cluster.secrets.pki import RENEW_BEFORE, PKIError, fingerprint
from hardened_cluster.verify.certs import store_certificates
from hardened_cluster.verify.cis_controls import CONTROLS, Finding, Status

Result = tuple[Status, str]

# The benchmark's lists (1.2.29 API server, 4.2.12 kubelet) of strong TLS cipher suites.
APISERVER_STRONG_CIPHERS = frozenset({
    "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
})
KUBELET_STRONG_CIPHERS = frozenset({
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
})
STRONG_ENCRYPTION_PROVIDERS = ("aescbc", "kms", "secretbox")  # 1.2.28
SECRETS_RESOURCES = frozenset({"secrets", "*.", "*.*"})  # encryption config names that cover Secrets
# Paths anonymous requests may reach under 1.2.1: kubeadm's static-pod probes and the
# cluster-info ConfigMap `kubeadm join` reads before it has credentials.
ANONYMOUS_PATHS_ALLOWED = frozenset({
    "/livez", "/readyz", "/healthz", "/api/v1/namespaces/kube-public/configmaps/cluster-info",
})

INIT_CONFIG = "/etc/kubernetes/kubeadm/kubeadm-init.yaml"
JOIN_CONFIG = "/etc/kubernetes/kubeadm/kubeadm-join.yaml"
KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
KUBELET_UNITS = ("/etc/systemd/system/kubelet.service", "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf")
ETCD_CONFIG = "/etc/etcd/etcd.conf.yml"
PKI_DIR = "/etc/kubernetes/pki/"
# What /etc/kubernetes/pki holds on a control-plane node with external etcd; kubeadm creates
# whatever of it the plan does not place.
CONTROL_PLANE_PKI = (
    "ca.crt", "ca.key", "apiserver.crt", "apiserver.key", "apiserver-kubelet-client.crt",
    "apiserver-kubelet-client.key", "front-proxy-ca.crt", "front-proxy-ca.key", "front-proxy-client.crt",
    "front-proxy-client.key", "sa.key", "sa.pub", "etcd/ca.crt", "apiserver-etcd-client.crt",
    "apiserver-etcd-client.key",
)
DRIFT = "verified on hosts by drift"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the plan has a file per node


# What each lab exception (spec lab_exceptions) gives up, reported by `check` as WARN.
LAB_EXCEPTIONS = {
    "kubelet_allow_cgroup_v1": (
        "kubelet runs on a cgroup v1 host (failCgroupV1: false)",
        "no CIS control; cgroup v1 lacks the memory and PSI accounting kubelet's eviction and swap "
        "handling rely on, and kubelet 1.35 refuses it by default"),
    "kube_proxy_keeps_conntrack_max": (
        "kube-proxy leaves nf_conntrack_max as it is (conntrack.maxPerCore: 0)",
        "no CIS control; under heavy connection load the kernel's default table may fill and drop packets"),
    "kubeadm_skip_system_verification": (
        "kubeadm's SystemVerification preflight is skipped",
        "no CIS control; kernel version, kernel config and cgroup controllers are not checked before "
        "kubeadm init and join"),
}


def lab_exception_findings(spec) -> list[Finding]:
    """One WARN for each lab exception the spec sets."""
    return [Finding(f"LAB.{key}", title, "WARN", None, detail)
            for key, (title, detail) in LAB_EXCEPTIONS.items() if getattr(spec.lab_exceptions, key)]


def certificate_findings(plan: Plan) -> list[Finding]:
    """A WARN for each certificate in the state store that expires within pki.RENEW_BEFORE. That
    matters for the CAs, which are never replaced on their own (ensure_pki reissues the leaves)."""
    return [Finding(f"PKI.{c.path}", f"Certificate {c.path} in the state store expires within "
                    f"{RENEW_BEFORE.days} days", "WARN", None, f"{c.subject}: {'; '.join(c.problems)}")
            for c in store_certificates(plan.pki) if c.problems]


def check_plan(plan: Plan) -> list[Finding]:
    """Every control for every host it applies to, in spec node order and benchmark order."""
    return _Check(plan).run() + lab_exception_findings(plan.spec) + certificate_findings(plan)


class _Check:
    """One evaluation: parsed documents and cluster-wide results are shared by all hosts."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.parsed: dict[str, list[Any]] = {}
        self.kubelet_results: dict[str, dict[str, Result]] = {}
        self.init_host = next((h for h in plan.hosts.values() if INIT_CONFIG in h.files), None)
        init = self.init_host.files[INIT_CONFIG] if self.init_host else None
        self.cluster_config = self.doc(init, "ClusterConfiguration")
        endpoint = self.doc(init, "InitConfiguration").get("localAPIEndpoint") or {}
        self.api_flags = kubeadm.component_flags("kube-apiserver", self.cluster_config, endpoint)
        self.cluster = self._cluster_results()
        self.kube_proxy = self._kube_proxy()

    def run(self) -> list[Finding]:
        findings = []
        for name, host in self.plan.hosts.items():
            roles = set(host.node.roles)
            results: dict[str, Result] = {}
            if "etcd" in roles:
                results |= self._etcd_host(host)
            if "control-plane" in roles:
                results |= self._control_plane_host(host)
            if roles & {"control-plane", "worker"}:
                results |= self._node_host(host)
            for control in CONTROLS:
                if control.id in results:
                    status, detail = results[control.id]
                    findings.append(Finding(control.id, control.title, status, name, detail))
        return findings

    def docs(self, file: PlannedFile) -> list[Any]:
        if file.sha256 not in self.parsed:
            self.parsed[file.sha256] = [d for d in yaml.load_all(file.content, Loader=_Loader) if d is not None]
        return self.parsed[file.sha256]

    def doc(self, file: PlannedFile | None, kind: str) -> dict:
        if file is None:
            return {}
        return next((d for d in self.docs(file) if isinstance(d, dict) and d.get("kind") == kind), {})

    # -- control plane -------------------------------------------------------------------------

    def _cluster_results(self) -> dict[str, Result]:
        """1.2-1.4 from the ClusterConfiguration every control-plane node runs with."""
        if self.init_host is None:
            return {c.id: ("NOT-DECIDABLE", f"no {INIT_CONFIG} in the plan") for c in CONTROLS
                    if c.id.startswith(("1.2.", "1.3.", "1.4."))}
        files = self.init_host.files
        results = _apiserver(self.api_flags, lambda path: self.docs(files[path]) if path in files else None)
        results |= _controller_manager(kubeadm.component_flags("kube-controller-manager", self.cluster_config))
        results |= _scheduler(kubeadm.component_flags("kube-scheduler", self.cluster_config))
        return results

    def _control_plane_host(self, host: HostPlan) -> dict[str, Result]:
        results = {
            "1.1.1": _kubeadm_made("/etc/kubernetes/manifests/kube-apiserver.yaml"),
            "1.1.2": _kubeadm_made("/etc/kubernetes/manifests/kube-apiserver.yaml"),
            "1.1.3": _kubeadm_made("/etc/kubernetes/manifests/kube-controller-manager.yaml"),
            "1.1.4": _kubeadm_made("/etc/kubernetes/manifests/kube-controller-manager.yaml"),
            "1.1.5": _kubeadm_made("/etc/kubernetes/manifests/kube-scheduler.yaml"),
            "1.1.6": _kubeadm_made("/etc/kubernetes/manifests/kube-scheduler.yaml"),
            "1.1.9": self._cni(),
            "1.1.10": self._cni(),
            "1.1.13": _kubeadm_made("/etc/kubernetes/admin.conf and super-admin.conf"),
            "1.1.14": _kubeadm_made("/etc/kubernetes/admin.conf and super-admin.conf"),
            "1.1.15": _kubeadm_made("/etc/kubernetes/scheduler.conf"),
            "1.1.16": _kubeadm_made("/etc/kubernetes/scheduler.conf"),
            "1.1.17": _kubeadm_made("/etc/kubernetes/controller-manager.conf"),
            "1.1.18": _kubeadm_made("/etc/kubernetes/controller-manager.conf"),
            "1.1.19": _pki(host, "", _owned_by_root, "root:root"),
            "1.1.20": _pki(host, ".crt", lambda f: _mode_within(f, 0o644), "644 or stricter"),
            "1.1.21": _pki(host, ".key", lambda f: _mode_within(f, 0o600), "600"),
        }
        results |= self.cluster
        # Files the flags point to must be on every control-plane node, not just the first.
        for cid, flag in (("1.2.1", "authentication-config"), ("1.2.9", "admission-control-config-file"),
                          ("1.2.16", "audit-policy-file"), ("1.2.27", "encryption-provider-config")):
            path = self.api_flags.get(flag)
            if path and path not in host.files and results[cid][0] == "PASS":
                results[cid] = ("FAIL", f"--{flag}={path} is not planned on this host")
        return results

    def _cni(self) -> Result:
        cni = self.plan.spec.network.cni
        if cni == "none":
            return "NOT-DECIDABLE", "network.cni is none: the CNI and its files come from outside hardened-cluster"
        return "NOT-DECIDABLE", f"CNI files are written by the {cni} installation, not rendered; {DRIFT}"

    # -- etcd ----------------------------------------------------------------------------------

    def _etcd_host(self, host: HostPlan) -> dict[str, Result]:
        file = host.files.get(ETCD_CONFIG)
        if file is None:
            return {cid: ("FAIL", f"{ETCD_CONFIG} is not planned") for cid in
                    ("1.1.7", "1.1.8", "1.1.11", "1.1.12", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7")}
        config = next(iter(self.docs(file)), {})
        client = config.get("client-transport-security") or {}
        peer = config.get("peer-transport-security") or {}
        data_dir = config.get("data-dir", "the etcd data directory")
        made = f"{data_dir} is created by the etcd role, not rendered; {DRIFT}"
        return {
            # External etcd has no pod spec; its config file carries every etcd flag instead.
            "1.1.7": _modes([file], 0o600, f"{ETCD_CONFIG} (external etcd: the config file holds the flags)"),
            # etcd runs as the etcd user here and must read its config, unlike a kubelet-read pod spec.
            "1.1.8": _owners([file], {"root", "etcd"}, "root or etcd (the etcd service user)"),
            "1.1.11": ("NOT-DECIDABLE", made),
            "1.1.12": ("NOT-DECIDABLE", made),
            "2.1": _tls_pair(host, client, "client-transport-security"),
            "2.2": _is_true(client.get("client-cert-auth"), "client-transport-security.client-cert-auth"),
            "2.3": _not_true(client.get("auto-tls"), "client-transport-security.auto-tls"),
            "2.4": _tls_pair(host, peer, "peer-transport-security"),
            "2.5": _is_true(peer.get("client-cert-auth"), "peer-transport-security.client-cert-auth"),
            "2.6": _not_true(peer.get("auto-tls"), "peer-transport-security.auto-tls"),
            "2.7": self._etcd_ca(host, client, peer),
        }

    def _etcd_ca(self, host: HostPlan, client: dict, peer: dict) -> Result:
        cas = {client.get("trusted-ca-file"), peer.get("trusted-ca-file")}
        if None in cas:
            return "FAIL", "trusted-ca-file is not set for clients and peers"
        kube_ca = self.init_host.files.get(PKI_DIR + "ca.crt") if self.init_host else None
        if kube_ca is None:
            return "NOT-DECIDABLE", "the Kubernetes CA is not in the plan"
        try:
            kube = fingerprint(kube_ca.content)
            etcd = {fingerprint(host.files[path].content) for path in sorted(cas) if path in host.files}
        except PKIError:
            return "FAIL", "a trusted CA file is not a PEM certificate"
        if len(etcd) != len(cas):
            return "FAIL", f"trusted-ca-file {', '.join(sorted(cas))} is not planned on this host"
        if kube in etcd:
            return "FAIL", "etcd trusts the Kubernetes CA"
        return "PASS", f"etcd CA sha256 {min(etcd)[:16]}... differs from the Kubernetes CA sha256 {kube[:16]}..."

    # -- kubelet and kube-proxy ----------------------------------------------------------------

    def _node_host(self, host: HostPlan) -> dict[str, Result]:
        kubelet_file = host.files.get(KUBELET_CONFIG)
        kubelet = self.doc(kubelet_file, "KubeletConfiguration")
        ca_path = ((kubelet.get("authentication") or {}).get("x509") or {}).get("clientCAFile")
        ca_file = host.files.get(ca_path) if ca_path else None
        proxy = "kube-proxy's kubeconfig comes from the kube-proxy ConfigMap kubeadm creates at init; " + DRIFT
        results: dict[str, Result] = {
            "4.1.1": _modes(_planned(host, KUBELET_UNITS), 0o600, "kubelet unit and drop-in"),
            "4.1.2": _owners(_planned(host, KUBELET_UNITS), {"root"}, "root:root"),
            "4.1.3": ("NOT-DECIDABLE", proxy),
            "4.1.4": ("NOT-DECIDABLE", proxy),
            "4.1.5": _kubeadm_made("/etc/kubernetes/kubelet.conf"),
            "4.1.6": _kubeadm_made("/etc/kubernetes/kubelet.conf"),
            "4.1.7": _modes([ca_file], 0o644, ca_path) if ca_file else _kubeadm_made(ca_path or "the kubelet client CA"),
            "4.1.8": _owners([ca_file], {"root"}, "root:root") if ca_file else _kubeadm_made(ca_path or "the kubelet client CA"),
            "4.1.9": _modes(_planned(host, (KUBELET_CONFIG,)), 0o600, KUBELET_CONFIG),
            "4.1.10": _owners(_planned(host, (KUBELET_CONFIG,)), {"root"}, "root:root"),
            "4.2.7": self._hostname_override(host),
        }
        if kubelet_file is None:
            results |= {f"4.2.{i}": ("FAIL", f"{KUBELET_CONFIG} is not planned") for i in range(1, 15) if i != 7}
        elif not _kubelet_reads_config(host):
            results |= {f"4.2.{i}": ("FAIL", f"the kubelet unit does not start it with --config={KUBELET_CONFIG}: "
                                             "it runs on its flag defaults") for i in range(1, 15) if i != 7}
        else:
            if kubelet_file.sha256 not in self.kubelet_results:
                self.kubelet_results[kubelet_file.sha256] = _kubelet(kubelet)
            results |= self.kubelet_results[kubelet_file.sha256]
        results["4.3.1"] = self.kube_proxy
        return results

    def _hostname_override(self, host: HostPlan) -> Result:
        file = host.files.get(INIT_CONFIG) or host.files.get(JOIN_CONFIG)
        kind = "InitConfiguration" if INIT_CONFIG in host.files else "JoinConfiguration"
        registration = self.doc(file, kind).get("nodeRegistration")
        if registration is None:
            return "FAIL", "no kubeadm init/join configuration planned for this node"
        if any(a.get("name") == "hostname-override" for a in registration.get("kubeletExtraArgs") or []):
            return "FAIL", "kubeletExtraArgs sets hostname-override"
        if registration.get("name"):
            return "NOT-DECIDABLE", (f"kubeadm adds --hostname-override when the host's hostname differs from "
                                     f"nodeRegistration.name {registration['name']!r}; {DRIFT}")
        return "PASS", "not set; kubeadm registers the host's own hostname"

    def _kube_proxy(self) -> Result:
        if self.init_host is None:
            return "NOT-DECIDABLE", f"no {INIT_CONFIG} in the plan"
        proxy = self.doc(self.init_host.files[INIT_CONFIG], "KubeProxyConfiguration")
        address = proxy.get("metricsBindAddress")
        if address is None:
            return "PASS", "metricsBindAddress not set: default 127.0.0.1:10249"
        ok = address.startswith(("127.0.0.1:", "[::1]:"))
        return ("PASS" if ok else "FAIL"), f"KubeProxyConfiguration metricsBindAddress {address}"


# -- component flags ---------------------------------------------------------------------------

def _apiserver(flags: dict[str, str], read: Callable[[str], list[Any] | None]) -> dict[str, Result]:
    plugins = _csv(flags.get("enable-admission-plugins"))
    disabled = _csv(flags.get("disable-admission-plugins"))
    modes = _csv(flags.get("authorization-mode"))
    authz = f"--authorization-mode={flags.get('authorization-mode', '(unset: AlwaysAllow)')}"

    def authorization(ok: bool) -> Result:
        if "authorization-config" in flags:
            return "NOT-DECIDABLE", "structured --authorization-config is not evaluated"
        return _result(ok, authz)

    return {
        "1.2.1": _anonymous(flags, read),
        "1.2.2": _unset(flags, "token-auth-file"),
        "1.2.3": _plugin(plugins, "DenyServiceExternalIPs"),
        "1.2.4": _set(flags, "kubelet-client-certificate", "kubelet-client-key"),
        "1.2.5": _set(flags, "kubelet-certificate-authority"),
        "1.2.6": authorization(bool(modes) and "AlwaysAllow" not in modes),
        "1.2.7": authorization("Node" in modes),
        "1.2.8": authorization("RBAC" in modes),
        "1.2.9": _event_rate_limit(flags, plugins, read),
        "1.2.10": _result("AlwaysAdmit" not in plugins, f"--enable-admission-plugins={flags.get('enable-admission-plugins', '')}"),
        "1.2.11": _plugin(plugins, "AlwaysPullImages"),
        "1.2.12": _result("ServiceAccount" not in disabled, f"--disable-admission-plugins={flags.get('disable-admission-plugins', '(unset)')}"),
        "1.2.13": _result("NamespaceLifecycle" not in disabled, f"--disable-admission-plugins={flags.get('disable-admission-plugins', '(unset)')}"),
        "1.2.14": _plugin(plugins, "NodeRestriction"),
        "1.2.15": _equals(flags, "profiling", "false"),
        "1.2.16": _set(flags, "audit-log-path"),
        "1.2.17": _at_least(flags, "audit-log-maxage", 30),
        "1.2.18": _at_least(flags, "audit-log-maxbackup", 10),
        "1.2.19": _at_least(flags, "audit-log-maxsize", 100),
        "1.2.20": _request_timeout(flags.get("request-timeout")),
        "1.2.21": _result(flags.get("service-account-lookup", "true") == "true",
                          f"--service-account-lookup={flags.get('service-account-lookup', '(unset: true)')}"),
        "1.2.22": _set(flags, "service-account-key-file"),
        "1.2.23": _set(flags, "etcd-certfile", "etcd-keyfile"),
        "1.2.24": _set(flags, "tls-cert-file", "tls-private-key-file"),
        "1.2.25": _set(flags, "client-ca-file"),
        "1.2.26": _set(flags, "etcd-cafile"),
        "1.2.27": _set(flags, "encryption-provider-config"),
        "1.2.28": _providers(flags, read),
        "1.2.29": _ciphers(_csv(flags.get("tls-cipher-suites")), APISERVER_STRONG_CIPHERS, "--tls-cipher-suites"),
        "1.2.30": _equals(flags, "service-account-extend-token-expiration", "false"),
    }


def _anonymous(flags: dict[str, str], read: Callable[[str], list[Any] | None]) -> Result:
    if flags.get("anonymous-auth") == "false":
        return "PASS", "--anonymous-auth=false"
    path = flags.get("authentication-config")
    if path is None:
        return "FAIL", f"--anonymous-auth={flags.get('anonymous-auth', '(unset: true)')}"
    docs = read(path)
    if not docs:
        return "FAIL", f"--authentication-config={path} is not planned"
    anonymous = docs[0].get("anonymous")
    if anonymous is None:
        return "FAIL", f"{path} does not configure anonymous; --anonymous-auth defaults to true"
    if not anonymous.get("enabled"):
        return "PASS", f"{path}: anonymous disabled"
    paths = {c.get("path") for c in anonymous.get("conditions") or []}
    if paths and paths <= ANONYMOUS_PATHS_ALLOWED:
        return "PASS", f"{path}: anonymous requests only reach {', '.join(sorted(paths))}"
    return "FAIL", f"{path}: anonymous requests reach {', '.join(sorted(p or '(any)' for p in paths)) or 'every path'}"


def _event_rate_limit(flags: dict[str, str], plugins: list[str], read: Callable[[str], list[Any] | None]) -> Result:
    if "EventRateLimit" not in plugins:
        return "FAIL", f"--enable-admission-plugins={flags.get('enable-admission-plugins', '')}"
    path = flags.get("admission-control-config-file")
    docs = read(path) if path else None
    if not docs:
        return "FAIL", "EventRateLimit is enabled without a planned --admission-control-config-file"
    entry = next((p for p in docs[0].get("plugins") or [] if p.get("name") == "EventRateLimit"), None)
    if entry is None:
        return "FAIL", f"{path} has no EventRateLimit configuration"
    return "PASS", f"EventRateLimit enabled, configured in {entry.get('path') or path}"


def _providers(flags: dict[str, str], read: Callable[[str], list[Any] | None]) -> Result:
    path = flags.get("encryption-provider-config")
    docs = read(path) if path else None
    if not docs:
        return "FAIL", "no planned --encryption-provider-config"
    firsts = []
    for entry in docs[0].get("resources") or []:
        providers = entry.get("providers") or [{}]
        firsts.append((entry.get("resources") or [], next(iter(providers[0]), "none")))
    weak = [f"{','.join(res)}: {provider}" for res, provider in firsts if provider not in STRONG_ENCRYPTION_PROVIDERS]
    if not firsts or weak:
        return "FAIL", "first provider not one of aescbc, kms, secretbox: " + ("; ".join(weak) or "no resources")
    # The API server stores a resource with the first entry that names it; "*." is the core group, "*.*" all.
    if not any(r in SECRETS_RESOURCES for res, _ in firsts for r in res):
        return "FAIL", f"{path} leaves Secrets out: " + "; ".join(",".join(res) for res, _ in firsts)
    return "PASS", "; ".join(f"{','.join(res)}: {provider}" for res, provider in firsts)


def _controller_manager(flags: dict[str, str]) -> dict[str, Result]:
    rotate = _feature_gates(flags.get("feature-gates")).get("RotateKubeletServerCertificate", True)
    return {
        "1.3.1": _set(flags, "terminated-pod-gc-threshold"),
        "1.3.2": _equals(flags, "profiling", "false"),
        "1.3.3": _equals(flags, "use-service-account-credentials", "true"),
        "1.3.4": _set(flags, "service-account-private-key-file"),
        "1.3.5": _set(flags, "root-ca-file"),
        "1.3.6": _result(rotate is True,
                         f"--feature-gates={flags.get('feature-gates', '(unset: RotateKubeletServerCertificate on)')}"),
        "1.3.7": _equals(flags, "bind-address", "127.0.0.1"),
    }


def _go_bool(value: str) -> bool | None:
    """Go's strconv.ParseBool, which components use for flag and feature-gate values."""
    return {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
            "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}.get(value.strip())


def _feature_gates(value: str | None) -> dict[str, bool | None]:
    gates = {}
    for pair in _csv(value):
        name, _, setting = pair.partition("=")
        gates[name.strip()] = _go_bool(setting)
    return gates


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def _request_timeout(value: str | None) -> Result:
    """1.2.20: any positive timeout is "appropriate"; 0 turns the timeout off."""
    if value is None:
        return "PASS", "--request-timeout not set: default 1m0s"
    text = value.strip()
    parts = _DURATION.findall(text)
    if text == "0":
        return "FAIL", "--request-timeout=0: no timeout"
    if not parts or "".join(n + u for n, u in parts) != text:
        return "FAIL", f"--request-timeout={value} is not a duration"
    seconds = sum(float(n) * _SECONDS[u] for n, u in parts)
    return _result(seconds > 0, f"--request-timeout={value}")


def _scheduler(flags: dict[str, str]) -> dict[str, Result]:
    return {"1.4.1": _equals(flags, "profiling", "false"), "1.4.2": _equals(flags, "bind-address", "127.0.0.1")}


def _kubelet_reads_config(host: HostPlan) -> bool:
    """Whether the kubelet's effective ExecStart (the drop-in's, else the unit's) passes --config=KUBELET_CONFIG."""
    return _units_read_config(tuple(file.content if file else "" for file in _planned(host, KUBELET_UNITS)))


@functools.lru_cache(maxsize=64)  # every Kubernetes node of a plan has the same kubelet units
def _units_read_config(units: tuple[str, ...]) -> bool:
    environment: dict[str, str] = {}
    command = ""
    for text in units:
        for line in text.splitlines():
            key, _, value = line.strip().partition("=")
            if key == "Environment":
                for assignment in shlex.split(value):
                    name, _, setting = assignment.partition("=")
                    environment[name] = setting
            elif key == "ExecStart" and value:
                command = value
    argv = shlex.split(re.sub(r"\$\{?(\w+)\}?", lambda m: environment.get(m.group(1), ""), command))
    return f"--config={KUBELET_CONFIG}" in argv or any(
        a == "--config" and b == KUBELET_CONFIG for a, b in zip(argv, argv[1:]))


def _kubelet(config: dict) -> dict[str, Result]:
    """4.2.x except 4.2.7 (a flag, per host), with kubelet.config.k8s.io/v1beta1 defaults where unset."""
    auth = config.get("authentication") or {}
    anonymous = (auth.get("anonymous") or {}).get("enabled", False)
    mode = (config.get("authorization") or {}).get("mode", "Webhook")
    ca = (auth.get("x509") or {}).get("clientCAFile")
    read_only = config.get("readOnlyPort", 0)
    idle = str(config.get("streamingConnectionIdleTimeout", "4h0m0s"))
    chains = config.get("makeIPTablesUtilChains", True)
    qps = config.get("eventRecordQPS")
    rotate = config.get("rotateCertificates")
    gate = (config.get("featureGates") or {}).get("RotateKubeletServerCertificate")
    pids = config.get("podPidsLimit")
    seccomp = config.get("seccompDefault")
    if config.get("tlsCertFile") and config.get("tlsPrivateKeyFile"):
        serving: Result = ("PASS", f"tlsCertFile {config['tlsCertFile']}, tlsPrivateKeyFile {config['tlsPrivateKeyFile']}")
    elif config.get("serverTLSBootstrap"):
        serving = ("PASS", "serverTLSBootstrap: the serving certificate is issued by the cluster CA through the CSR API")
    else:
        serving = ("FAIL", "neither tlsCertFile/tlsPrivateKeyFile nor serverTLSBootstrap: a self-signed serving certificate")
    return {
        "4.2.1": _result(anonymous is False, f"authentication.anonymous.enabled: {str(anonymous).lower()}"),
        "4.2.2": _result(mode != "AlwaysAllow", f"authorization.mode: {mode}"),
        "4.2.3": _result(bool(ca), f"authentication.x509.clientCAFile: {ca or '(unset)'}"),
        "4.2.4": _result(read_only == 0, f"readOnlyPort: {read_only}"),
        "4.2.5": _result(any(c in "123456789" for c in idle), f"streamingConnectionIdleTimeout: {idle}"),
        "4.2.6": _result(chains is True, f"makeIPTablesUtilChains: {str(chains).lower()}"),
        "4.2.8": _result(qps is None or qps >= 0, f"eventRecordQPS: {qps if qps is not None else '(unset: 50)'}"),
        "4.2.9": serving,
        "4.2.10": _result(rotate is not False, f"rotateCertificates: {str(rotate).lower() if rotate is not None else '(unset)'}"),
        # The gate only rotates a serving certificate the kubelet requests through the CSR API.
        "4.2.11": _result(gate is not False and config.get("serverTLSBootstrap") is True,
                          f"featureGates.RotateKubeletServerCertificate: "
                          f"{str(gate).lower() if gate is not None else '(unset: on)'}, serverTLSBootstrap: "
                          f"{str(config.get('serverTLSBootstrap', False)).lower()}"),
        "4.2.12": _ciphers(config.get("tlsCipherSuites") or [], KUBELET_STRONG_CIPHERS, "tlsCipherSuites"),
        "4.2.13": _result(isinstance(pids, int) and pids > 0, f"podPidsLimit: {pids if pids is not None else '(unset)'}"),
        "4.2.14": _result(seccomp is True, f"seccompDefault: {str(seccomp).lower() if seccomp is not None else '(unset)'}"),
    }


# -- small predicates --------------------------------------------------------------------------

def _result(ok: bool, detail: str) -> Result:
    return ("PASS" if ok else "FAIL"), detail


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",")] if value else []


def _set(flags: dict[str, str], *names: str) -> Result:
    missing = [n for n in names if not flags.get(n)]
    if missing:
        return "FAIL", "not set: " + ", ".join(f"--{n}" for n in missing)
    return "PASS", ", ".join(f"--{n}={flags[n]}" for n in names)


def _unset(flags: dict[str, str], name: str) -> Result:
    return _result(name not in flags, f"--{name} {'is set' if name in flags else 'not set'}")


def _equals(flags: dict[str, str], name: str, want: str) -> Result:
    return _result(flags.get(name) == want, f"--{name}={flags.get(name, '(unset)')}")


def _at_least(flags: dict[str, str], name: str, minimum: int) -> Result:
    value = flags.get(name)
    ok = value is not None and value.isdigit() and int(value) >= minimum
    return _result(ok, f"--{name}={value if value is not None else '(unset)'} (benchmark: {minimum} or more)")


def _plugin(plugins: list[str], name: str) -> Result:
    return _result(name in plugins, f"--enable-admission-plugins={','.join(plugins) or '(unset)'}")


def _ciphers(suites: list[str], strong: frozenset[str], what: str) -> Result:
    weak = sorted(set(suites) - strong)
    if not suites:
        return "FAIL", f"{what} not set: Go's defaults include CBC suites"
    if weak:
        return "FAIL", f"{what} includes {', '.join(weak)}"
    return "PASS", f"{what}: {len(suites)} ECDHE AEAD suites"


def _is_true(value: Any, key: str) -> Result:
    return _result(value is True, f"{key}: {str(value).lower() if value is not None else '(unset)'}")


def _not_true(value: Any, key: str) -> Result:
    return _result(value is not True, f"{key}: {str(value).lower() if value is not None else '(unset: false)'}")


def _tls_pair(host: HostPlan, section: dict, key: str) -> Result:
    cert, private = section.get("cert-file"), section.get("key-file")
    if not cert or not private:
        return "FAIL", f"{key}: cert-file and key-file must both be set"
    missing = [p for p in (cert, private) if p not in host.files]
    if missing:
        return "FAIL", f"{key}: {', '.join(missing)} not planned on this host"
    return "PASS", f"{key}: cert-file {cert}, key-file {private}"


# -- files -------------------------------------------------------------------------------------

def _kubeadm_made(what: str) -> Result:
    return "NOT-DECIDABLE", f"{what}: created by kubeadm at init; {DRIFT}"


def _planned(host: HostPlan, paths: tuple[str, ...]) -> list[PlannedFile | None]:
    return [host.files.get(p) for p in paths]


def _mode_within(file: PlannedFile, limit: int) -> bool:
    return int(file.mode, 8) & ~limit == 0


def _owned_by_root(file: PlannedFile) -> bool:
    return file.owner == "root" and file.group == "root"


def _modes(files: list[PlannedFile | None], limit: int, what: str) -> Result:
    if not files or None in files:
        return "FAIL", f"{what}: not planned"
    bad = [f"{f.path} {f.mode}" for f in files if not _mode_within(f, limit)]
    if bad:
        return "FAIL", f"{', '.join(bad)} (benchmark: {limit:o} or stricter)"
    return "PASS", ", ".join(f"{f.path} {f.mode}" for f in files)


def _owners(files: list[PlannedFile | None], allowed: set[str], want: str) -> Result:
    if not files or None in files:
        return "FAIL", "not planned"
    bad = [f"{f.path} {f.owner}:{f.group}" for f in files if f.owner not in allowed or f.group not in allowed]
    if bad:
        return "FAIL", f"{', '.join(bad)} (benchmark: {want})"
    return "PASS", ", ".join(f"{f.path} {f.owner}:{f.group}" for f in files)


def _pki(host: HostPlan, suffix: str, ok: Callable[[PlannedFile], bool], want: str) -> Result:
    """A PKI control over the planned files; whatever kubeadm adds on this host is for drift."""
    planned = [f for path, f in host.files.items() if path.startswith(PKI_DIR) and path.endswith(suffix)]
    bad = [f"{f.path} {f.mode} {f.owner}:{f.group}" for f in planned if not ok(f)]
    if bad:
        return "FAIL", f"{', '.join(bad)} (benchmark: {want})"
    names = {f.path.removeprefix(PKI_DIR) for f in planned}
    made = [n for n in CONTROL_PLANE_PKI if n.endswith(suffix) and n not in names]
    evidence = f"{len(planned)} planned files are {want}"
    if made:
        return "NOT-DECIDABLE", f"{evidence}; {', '.join(made)}: created by kubeadm at init; {DRIFT}"
    return "PASS", evidence
