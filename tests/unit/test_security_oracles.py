"""Each security setting of the plan checked against values written out here by hand, not against goldens.

Every expected value below is copied from the documented matrix and hardening (README, docs/lab.md) or
from the CIS Benchmark, so a template or code change that weakens one fails here even after the goldens
are regenerated. Nothing here is computed by the code under test.
"""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
import yaml

from hardened_cluster.plan.render import render_plan
from hardened_cluster.secrets.store import resolve_secrets
from hardened_cluster.spec.load import parse_spec

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "inventories" / "sample" / "cluster.yaml"

# ECDHE key exchange with an AEAD cipher, TLS 1.2's strong suites (CIS 1.2.29, 4.2.12).
AEAD_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
}
MIN_TLS = {"VersionTLS12", "VersionTLS13"}


def _render(data: dict, tmp_path_factory):
    loaded = parse_spec(data, SAMPLE)
    return render_plan(loaded, resolve_secrets(loaded, tmp_path_factory.mktemp("state") / "prod-eu1"))


def sample_data() -> dict:
    return yaml.safe_load(SAMPLE.read_text())


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    return _render(sample_data(), tmp_path_factory)


def content(plan, host: str, path: str) -> str:
    return plan.hosts[host].files[path].content


def documents(text: str) -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all(text) if d}


def extra_args(component: dict) -> dict[str, str]:
    return {a["name"]: a["value"] for a in component["extraArgs"]}


# --- TLS, tokens, kubelet -------------------------------------------------------------------------------

def test_control_plane_components_speak_tls12_or_later_with_aead_suites(plan):
    config = documents(content(plan, "cp-1", "/etc/kubernetes/kubeadm/kubeadm-init.yaml"))["ClusterConfiguration"]
    for component in ("apiServer", "controllerManager", "scheduler"):
        args = extra_args(config[component])
        assert args["tls-min-version"] in MIN_TLS, component
        assert set(args["tls-cipher-suites"].split(",")) <= AEAD_SUITES, component


def test_kubelet_config_is_hardened(plan):
    kubelet = yaml.safe_load(content(plan, "worker-1", "/var/lib/kubelet/config.yaml"))
    assert kubelet["tlsMinVersion"] in MIN_TLS
    assert set(kubelet["tlsCipherSuites"]) <= AEAD_SUITES
    assert kubelet["protectKernelDefaults"] is True
    assert kubelet["authentication"]["anonymous"]["enabled"] is False
    assert kubelet["authentication"]["webhook"]["enabled"] is True
    assert kubelet["authorization"]["mode"] == "Webhook"
    assert kubelet["readOnlyPort"] == 0
    assert kubelet["rotateCertificates"] is True and kubelet["serverTLSBootstrap"] is True
    assert kubelet["featureGates"].get("RotateKubeletServerCertificate", True) is True


def _seconds(duration: str) -> float:
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, duration
    h, m, s = (int(p or 0) for p in parts.groups())
    return h * 3600 + m * 60 + s


def test_bootstrap_token_expires_within_a_day(plan):
    init = documents(content(plan, "cp-1", "/etc/kubernetes/kubeadm/kubeadm-init.yaml"))["InitConfiguration"]
    for token in init["bootstrapTokens"]:
        assert 0 < _seconds(token["ttl"]) <= 24 * 3600, token["ttl"]  # kubeadm reads 0 as never expiring


# --- etcd -------------------------------------------------------------------------------------------------

def test_etcd_serves_only_mutual_tls(plan):
    config = yaml.safe_load(content(plan, "etcd-1", "/etc/etcd/etcd.conf.yml"))
    for key in ("listen-peer-urls", "listen-client-urls", "advertise-client-urls", "initial-advertise-peer-urls"):
        assert all(url.startswith("https://") for url in config[key].split(",")), key
    assert all(url.startswith("https://") for url in re.findall(r"=(\S+?)(?:,|$)", config["initial-cluster"]))
    for side in ("client-transport-security", "peer-transport-security"):
        assert config[side]["client-cert-auth"] is True and config[side]["auto-tls"] is False, side
        assert config[side]["trusted-ca-file"] and config[side]["cert-file"] and config[side]["key-file"], side
    assert set(config["cipher-suites"]) <= AEAD_SUITES
    assert config.get("enable-v2") is False


def test_etcd_runs_as_its_own_user(plan):
    unit = content(plan, "etcd-1", "/etc/systemd/system/etcd.service")
    service = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert service["User"] == "etcd" and service["Group"] == "etcd"
    assert service["NoNewPrivileges"] == "yes"
    assert service["UMask"] == "0077"


# --- sshd -------------------------------------------------------------------------------------------------

def test_sshd_takes_keys_only_and_no_root(plan):
    text = content(plan, "worker-1", "/etc/ssh/sshd_config.d/10-hardened-cluster.conf")
    first: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            first.setdefault(key.lower(), value.strip())  # sshd takes the first value it reads
    assert first["permitrootlogin"] == "no"
    assert first["passwordauthentication"] == "no"
    assert first["kbdinteractiveauthentication"] == "no"
    assert first["permitemptypasswords"] == "no"
    assert first["authenticationmethods"] == "publickey"
    assert first["hostbasedauthentication"] == "no"
    assert int(first["maxauthtries"]) <= 4
    assert first["x11forwarding"] == "no" and first["allowagentforwarding"] == "no"
    assert first["allowtcpforwarding"] == "no"  # the sample says allow_tcp_forwarding: false


# --- sysctls ------------------------------------------------------------------------------------------------

# CIS Debian 12 and the kernel self-protection project's values; kubelet's protectKernelDefaults ones.
SYSCTLS = {
    "kernel.kptr_restrict": "2", "kernel.dmesg_restrict": "1", "kernel.randomize_va_space": "2",
    "kernel.sysrq": "0", "kernel.unprivileged_bpf_disabled": "1", "kernel.yama.ptrace_scope": "1",
    "net.core.bpf_jit_harden": "2", "fs.protected_hardlinks": "1", "fs.protected_symlinks": "1",
    "fs.suid_dumpable": "0", "vm.overcommit_memory": "1", "vm.panic_on_oom": "0", "kernel.panic": "10",
    "kernel.panic_on_oops": "1",
    "net.ipv4.conf.all.send_redirects": "0", "net.ipv4.conf.default.send_redirects": "0",
    "net.ipv4.conf.all.accept_redirects": "0", "net.ipv4.conf.default.accept_redirects": "0",
    "net.ipv4.conf.all.secure_redirects": "0", "net.ipv4.conf.all.accept_source_route": "0",
    "net.ipv4.conf.all.log_martians": "1", "net.ipv4.conf.all.rp_filter": "1",
    "net.ipv4.conf.default.rp_filter": "1", "net.ipv4.tcp_syncookies": "1",
    "net.ipv4.icmp_echo_ignore_broadcasts": "1", "net.ipv6.conf.all.accept_redirects": "0",
    "net.ipv6.conf.all.accept_source_route": "0", "net.ipv6.conf.all.accept_ra": "0",
}


@pytest.mark.parametrize("host,forwarding", [("etcd-1", "0"), ("cp-1", "1"), ("worker-1", "1")])
def test_sysctl_drop_in_hardens_the_kernel(plan, host, forwarding):
    values = {}
    for line in content(plan, host, "/etc/sysctl.d/90-hardened-cluster.conf").splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip().lstrip("-")] = value.strip()
    for key, value in SYSCTLS.items():
        assert values.get(key) == value, key
    assert values["net.ipv4.ip_forward"] == forwarding and values["net.ipv6.conf.all.forwarding"] == forwarding


# --- NetworkPolicies ------------------------------------------------------------------------------------

def test_network_policies_deny_all_but_dns_and_the_namespace(plan):
    policies = [d for d in yaml.safe_load_all(plan.manifests["manifests/networkpolicies.yaml"].content) if d]
    by_namespace: dict[str, dict[str, dict]] = {}
    for policy in policies:
        by_namespace.setdefault(policy["metadata"]["namespace"], {})[policy["metadata"]["name"]] = policy["spec"]
    assert set(by_namespace) == {"apps", "sandboxed"}
    for namespace, specs in by_namespace.items():
        assert set(specs) == {"default-deny", "allow-dns", "allow-same-namespace"}, namespace
        deny = specs["default-deny"]
        assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, namespace
        dns = specs["allow-dns"]
        assert dns["policyTypes"] == ["Egress"] and "ingress" not in dns
        [rule] = dns["egress"]
        assert sorted((p["protocol"], p["port"]) for p in rule["ports"]) == [("TCP", 53), ("UDP", 53)]
        [peer] = rule["to"]
        assert peer == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
        same = specs["allow-same-namespace"]
        assert same["ingress"] == [{"from": [{"podSelector": {}}]}]
        assert same["egress"] == [{"to": [{"podSelector": {}}]}]


# --- the firewall ------------------------------------------------------------------------------------

# Who is who in the sample (inventories/sample/cluster.yaml), by hand.
SOURCE = {
    "admin": "172.25.0.9", "etcd": "10.20.0.12", "control-plane": "10.20.0.22", "worker": "10.20.0.32",
    "pod": "10.244.5.5", "node-cidr-stranger": "10.20.0.99", "outside": "192.0.2.7",
}
CALICO = {("tcp", 179), ("udp", 4789), ("tcp", 5473)}
EXPORTER = ("tcp", 9100)  # the sample's extra port, from the admin CIDR on every role
# The sample's matrix by hand: (protocol, port) each source reaches on each role. Everything else is dropped.
INPUT = {
    "etcd": {"admin": {("tcp", 22), EXPORTER}, "etcd": {("tcp", 2379), ("tcp", 2380)},
             "control-plane": {("tcp", 2379)}},
    "control-plane": {"admin": {("tcp", 22), ("tcp", 6443), EXPORTER},
                      "control-plane": {("tcp", 6443), ("tcp", 10250)} | CALICO,
                      "worker": {("tcp", 6443)} | CALICO, "pod": {("tcp", 6443)}},
    "worker": {"admin": {("tcp", 22), EXPORTER}, "control-plane": {("tcp", 10250)} | CALICO, "worker": CALICO},
}
HOST = {"etcd": "etcd-1", "control-plane": "cp-1", "worker": "worker-1"}
CANDIDATE_PORTS = (22, 179, 2379, 2380, 4789, 5473, 6443, 8472, 9100, 10250, 10255, 10257, 10259, 30000, 30080,
                   32767)
KUBE_NODES = {"10.20.0.21", "10.20.0.22", "10.20.0.23", "10.20.0.31", "10.20.0.32", "10.20.0.33"}
RULE = re.compile(r"^\s*(ip6?) saddr \{ ([^}]*) \} (tcp|udp) dport (\d+)(?:-(\d+))? accept comment \"[^\"]+\"$")
PREAMBLE = {"ct state established,related accept", 'iif "lo" accept'}


def chains(ruleset: str) -> dict[str, list[str]]:
    found, name = {}, None
    for line in ruleset.splitlines():
        line = line.strip()
        if m := re.fullmatch(r"chain (\w+) \{", line):
            name = m.group(1)
            found[name] = []
        elif line == "}":
            name = None
        elif name and line and not line.startswith("#"):
            found[name].append(line)
    return found


def input_reach(ruleset: str, source: str) -> set[tuple[str, int]]:
    """Which (protocol, candidate port) the input chain accepts from source: a reading of the text, not the matrix."""
    lines = chains(ruleset)["input"]
    assert lines[0] == "type filter hook input priority filter; policy drop;"
    address = ipaddress.ip_address(source)
    reach = set()
    for line in lines[1:]:
        if "accept" not in line or line in PREAMBLE or line.startswith(("icmp type", "icmpv6 type")):
            continue
        match = RULE.match(line)
        assert match, f"an accept rule the oracle does not know: {line}"
        family, sources, proto, low, high = match.groups()
        networks = [ipaddress.ip_network(s.strip()) for s in sources.split(",")]
        if (address.version == 4) != (family == "ip") or not any(address in n for n in networks):
            continue
        reach |= {(proto, p) for p in CANDIDATE_PORTS if int(low) <= p <= int(high or low)}
    return reach


def test_icmp_and_preamble_accept_only_what_is_documented(plan):
    for host in HOST.values():
        lines = chains(content(plan, host, "/etc/nftables.conf"))["input"]
        icmp = [line for line in lines if line.startswith(("icmp ", "icmpv6 "))]
        assert icmp == [
            "icmp type { echo-request, destination-unreachable, time-exceeded } limit rate 20/second accept",
            "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert, destination-unreachable, "
            "packet-too-big, time-exceeded, echo-request } accept",
        ]
        assert "ct state invalid drop" in lines


@pytest.mark.parametrize("role", list(INPUT))
@pytest.mark.parametrize("source", list(SOURCE))
def test_input_chain_matches_the_hand_written_matrix(plan, role, source):
    ruleset = content(plan, HOST[role], "/etc/nftables.conf")
    assert input_reach(ruleset, SOURCE[source]) == INPUT[role].get(source, set())


def ipv6_sample() -> dict:
    """The sample with IPv6 throughout (one address family per cluster): node n at fd20::n."""
    data = sample_data()
    data["network"].update({"node_cidrs": ["fd20::/64"], "pod_cidr": "fd44::/56", "service_cidr": "fd96::/112",
                            "admin_cidrs": ["fd25::/64"]})
    data["cluster"]["control_plane_endpoint"] = "[fd20::21]:6443"
    for node in data["nodes"]:
        node["address"] = "fd20::" + node["address"].rsplit(".", 1)[1]
    for extra in data["firewall"]["extra_ports"]:
        extra["sources"] = ["fd25::/64"]
    return data


V6_SOURCE = {"admin": "fd25::9", "etcd": "fd20::12", "control-plane": "fd20::22", "worker": "fd20::32",
             "pod": "fd44::5", "node-cidr-stranger": "fd20::99", "outside": "2001:db8::7"}


@pytest.fixture(scope="module")
def v6_plan(tmp_path_factory):
    return _render(ipv6_sample(), tmp_path_factory)


@pytest.mark.parametrize("role", list(INPUT))
@pytest.mark.parametrize("source", list(SOURCE))
def test_ipv6_input_chain_matches_the_hand_written_matrix(v6_plan, role, source):
    ruleset = content(v6_plan, HOST[role], "/etc/nftables.conf")
    assert input_reach(ruleset, V6_SOURCE[source]) == INPUT[role].get(source, set())
    assert input_reach(ruleset, SOURCE[source]) == set()  # no IPv4 source reaches an IPv6 cluster


def test_ipv6_forward_chain(v6_plan):
    lines = chains(content(v6_plan, "worker-1", "/etc/nftables.conf"))["forward"]
    assert "meta nfproto ipv4 ct status dnat goto external_dnat" in lines
    assert "ct status dnat ct original ip6 daddr != fd96::/112 goto external_dnat" in lines
    assert 'ip6 saddr fd44::/56 accept comment "pod egress"' in lines
    [node_to_pod] = [line for line in lines if "node-to-pod" in line]
    match = re.fullmatch(r'ip6 saddr \{ ([^}]*) \} ip6 daddr fd44::/56 accept comment "node-to-pod"', node_to_pod)
    assert match and _addresses(match.group(1)) == {"fd20::" + a.rsplit(".", 1)[1] for a in KUBE_NODES}


def forward_accepts(ruleset: str) -> dict[str, list[str]]:
    found = chains(ruleset)
    return {name: [line for line in lines if "accept" in line] for name, lines in found.items() if name != "input"}


def _addresses(sources: str) -> set[str]:
    return {str(a) for s in sources.split(",") for a in ipaddress.ip_network(s.strip())}


def test_forward_chain_lets_pods_out_and_only_nodes_in(plan):
    for role, host in HOST.items():
        ruleset = content(plan, host, "/etc/nftables.conf")
        lines = chains(ruleset)["forward"]
        assert lines[0] == "type filter hook forward priority filter; policy drop;", role
        accepts = forward_accepts(ruleset)
        if role == "etcd":
            assert accepts == {"forward": ["ct state established,related accept"]}
            continue
        assert accepts["external_dnat"] == [], role  # NodePorts are off in the sample
        assert chains(ruleset)["external_dnat"][-1] == "drop", role
        established, egress, node_to_pod = accepts["forward"]
        assert established == "ct state established,related accept"
        assert egress == 'ip saddr 10.244.0.0/16 accept comment "pod egress"'
        match = re.fullmatch(r'ip saddr \{ ([^}]*) \} ip daddr 10\.244\.0\.0/16 accept comment "node-to-pod"',
                             node_to_pod)
        assert match and _addresses(match.group(1)) == KUBE_NODES, node_to_pod
        # Every DNAT-ed connection not aimed at a ClusterIP goes to external_dnat before any accept.
        dnat = lines.index("ct status dnat ct original ip daddr != 10.96.0.0/12 goto external_dnat")
        assert lines.index("meta nfproto ipv6 ct status dnat goto external_dnat") < lines.index(egress)
        assert dnat < lines.index(egress)


def test_nodeports_only_on_workers_only_from_their_sources(tmp_path_factory):
    data = sample_data()
    data["firewall"]["nodeport_range"] = {"enabled": True, "sources": ["198.51.100.0/24"]}
    on = _render(data, tmp_path_factory)
    nodeports = {("tcp", p) for p in (30000, 30080, 32767)} | {("udp", p) for p in (30000, 30080, 32767)}
    worker = content(on, "worker-1", "/etc/nftables.conf")
    assert input_reach(worker, "198.51.100.7") == nodeports
    assert input_reach(worker, SOURCE["admin"]) == INPUT["worker"]["admin"]
    assert forward_accepts(worker)["external_dnat"] == [
        'ip saddr { 198.51.100.0/24 } meta l4proto { tcp, udp } ct original proto-dst 30000-32767 accept '
        'comment "nodeports"']
    for host in ("cp-1", "etcd-1"):
        ruleset = content(on, host, "/etc/nftables.conf")
        assert input_reach(ruleset, "198.51.100.7") == set(), host
        assert forward_accepts(ruleset).get("external_dnat", []) == [], host
    # Enabled without sources: the admin CIDRs.
    data["firewall"]["nodeport_range"] = {"enabled": True}
    default = content(_render(data, tmp_path_factory), "worker-1", "/etc/nftables.conf")
    assert input_reach(default, SOURCE["admin"]) == INPUT["worker"]["admin"] | nodeports
    assert input_reach(default, "198.51.100.7") == set()
