"""The rendered plan: goldens for inventories/sample, schemas, secrets only where they belong.

Goldens live in tests/golden/sample/<host>/<dest path> (manifests under manifests/). Files whose
content comes from the PKI or the secret store are not templates and are left out; secret
template files (kubeadm init/join, encryption config) are stored with every secret value replaced
by a placeholder. Regenerate after an intended change with:

    HC_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_render.py
"""
from __future__ import annotations

import copy
import hashlib
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from hardened_cluster.plan.kubeadm import ca_cert_hash, runtime_label
from hardened_cluster.plan.render import FILES, MANIFESTS, Plan, render_plan
from hardened_cluster.secrets.store import ClusterSecrets, resolve_secrets
from hardened_cluster.spec.load import parse_spec

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "inventories" / "sample" / "cluster.yaml"
GOLDEN = ROOT / "tests" / "golden" / "sample"
SOURCED = {rule.path for rule in FILES if rule.source is not None}
INIT = "/etc/kubernetes/kubeadm/kubeadm-init.yaml"
JOIN = "/etc/kubernetes/kubeadm/kubeadm-join.yaml"
ENCRYPTION = "/etc/kubernetes/encryption/encryption-config.yaml"
KUBELET = "/var/lib/kubelet/config.yaml"
CONTAINERD = "/etc/containerd/config.toml"


def sample_data() -> dict:
    return yaml.safe_load(SAMPLE.read_text())


def everything_on(data: dict) -> dict:
    data["encryption"] = {"provider": "kms-v2", "kms": {"name": "vault", "endpoint": "unix:///var/run/kms/vault.sock"}}
    data["audit"]["webhook"] = {"kubeconfig": "/etc/kubernetes/audit/webhook.kubeconfig", "mode": "blocking"}
    data["audit"]["level"] = "RequestResponse"
    data["runtimes"]["artifacts"] = "distro"
    data["runtimes"]["gvisor"]["platform"] = "ptrace"
    data["runtimes"]["kata"]["nodes"] = ["worker-2", "worker-3"]
    data["firewall"]["nodeport_range"] = {"enabled": True, "sources": ["172.25.0.0/24"]}
    data["nodes"][6]["labels"] = {"topology.kubernetes.io/zone": "eu1-a", "example.com/tier": "batch"}
    data["namespaces"].append({"name": "legacy", "pod_security": "baseline", "baseline_network_policy": False})
    return data


def everything_off(data: dict) -> dict:
    data["namespaces"] = []
    data["runtimes"]["gvisor"] = {"enabled": False, "nodes": []}
    data["runtimes"]["kata"] = {"enabled": False, "nodes": []}
    data["admission"]["event_rate_limit"] = []
    data["admission"]["always_pull_images"] = False
    data["etcd"]["snapshot"] = {"enabled": False}
    data["ssh_hardening"]["enabled"] = False
    data["os_hardening"]["sysctl"] = False
    return data


VARIANTS = {
    "sample": lambda d: d,
    "everything-on": everything_on,
    "everything-off": everything_off,
    "kubernetes-1.33": lambda d: {**d, "cluster": {**d["cluster"], "kubernetes_version": "1.33.5"}},
    "kubernetes-1.37": lambda d: {**d, "cluster": {**d["cluster"], "kubernetes_version": "1.37.0"}},
}


@pytest.fixture(scope="session")
def state(tmp_path_factory) -> Path:
    """One state dir for every variant: they share the cluster name and etcd members, so one PKI."""
    return tmp_path_factory.mktemp("state") / "prod-eu1"


def render(variant: str, state: Path) -> tuple[Plan, ClusterSecrets]:
    loaded = parse_spec(VARIANTS[variant](copy.deepcopy(sample_data())), SAMPLE)
    secrets = resolve_secrets(loaded, state)
    return render_plan(loaded, secrets), secrets


@pytest.fixture(scope="session")
def sample(state) -> tuple[Plan, ClusterSecrets]:
    return render("sample", state)


@pytest.fixture(scope="session", params=list(VARIANTS))
def variant(request, state) -> tuple[Plan, ClusterSecrets]:
    return render(request.param, state)


def all_files(plan: Plan):
    for host in plan.hosts.values():
        for file in host.files.values():
            yield host.node.name, file
    for file in plan.manifests.values():
        yield None, file


def redacted(text: str, secrets: ClusterSecrets) -> str:
    # The discovery hash pins a CA generated per state dir, so it varies like a secret.
    for value in [*secrets.values(), ca_cert_hash(secrets.pki.kubernetes_ca.cert_pem)]:
        text = text.replace(value, "<redacted>")
    return text


def golden_renders(plan: Plan, secrets: ClusterSecrets) -> dict[Path, str]:
    out = {}
    for host, file in all_files(plan):
        if file.path in SOURCED:
            continue
        content = redacted(file.content, secrets) if file.secret else file.content
        out[Path(host or "") / file.path.lstrip("/")] = content
    return out


def test_golden_sample(sample):
    renders = golden_renders(*sample)
    if os.environ.get("HC_UPDATE_GOLDEN"):
        shutil.rmtree(GOLDEN, ignore_errors=True)
        for rel, content in renders.items():
            (GOLDEN / rel).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / rel).write_text(content)
    stored = {p.relative_to(GOLDEN) for p in GOLDEN.rglob("*") if p.is_file()}
    assert stored == set(renders), "planned files changed; rerun with HC_UPDATE_GOLDEN=1 if intended"
    for rel, content in renders.items():
        assert (GOLDEN / rel).read_text() == content, f"{rel} differs from its golden; HC_UPDATE_GOLDEN=1 to accept"


def test_secret_goldens_hold_no_secret(sample):
    plan, secrets = sample
    for path in GOLDEN.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert not any(value in text for value in secrets.values()), path


def test_every_template_renders_and_parses(variant):
    plan, _ = variant
    for host, file in all_files(plan):
        if file.path in SOURCED:
            continue
        if file.path.endswith((".yaml", ".yml")):
            docs = [d for d in yaml.safe_load_all(file.content) if d is not None]
            assert docs and all(isinstance(d, dict) for d in docs), f"{host}:{file.path}"
        elif file.path.endswith(".toml"):
            tomllib.loads(file.content)


def test_manifests_validate_strictly_against_target_version(variant):
    plan, _ = variant
    version = plan.spec.cluster.kubernetes_version
    kinds = set()
    for file in plan.manifests.values():
        for obj in yaml.safe_load_all(file.content):
            kubernetes_validate.validate(obj, version, strict=True)
            kinds.add(obj["kind"])
    expected = {path for path, when in MANIFESTS}
    assert len(plan.manifests) <= len(expected)
    if plan.spec.namespaces:
        assert {"Namespace", "NetworkPolicy"} <= kinds
    if plan.spec.runtimes.gvisor.enabled:
        assert "RuntimeClass" in kinds


def test_encryption_config_provider_first_identity_last_all_keys(variant):
    plan, secrets = variant
    enc = plan.spec.encryption
    for host in plan.spec.nodes_with("control-plane"):
        file = plan.hosts[host.name].files[ENCRYPTION]
        assert file.secret and file.mode == "0600"
        (config,) = yaml.safe_load_all(file.content)
        assert config["apiVersion"] == "apiserver.config.k8s.io/v1"
        (entry,) = config["resources"]
        assert entry["resources"] == enc.resources
        providers = entry["providers"]
        assert providers[-1] == {"identity": {}}
        assert len(providers) == 2
        if enc.provider == "kms-v2":
            assert providers[0]["kms"] == {"apiVersion": "v2", "name": enc.kms.name,
                                           "endpoint": enc.kms.endpoint, "timeout": enc.kms.timeout}
        else:
            keys = providers[0][enc.provider]["keys"]
            assert [(k["name"], k["secret"]) for k in keys] == secrets.encryption_keys


def test_secret_values_only_in_the_file_that_needs_them(variant):
    plan, secrets = variant
    pki = secrets.pki
    kubeadm_files = {INIT, JOIN}
    allowed: dict[str, tuple[set[str], str]] = {}  # value -> (paths, which hosts: any/control-plane/<name>)
    for _, key in secrets.encryption_keys:
        allowed[key] = ({ENCRYPTION}, "control-plane")
    allowed[secrets.bootstrap_token] = (kubeadm_files, "any")
    allowed[secrets.certificate_key] = (kubeadm_files, "control-plane")
    if secrets.snapshot_key:
        allowed[secrets.snapshot_key] = ({"/etc/etcd/snapshot.key"}, "etcd")
    allowed[pki.etcd_ca.key_pem] = (set(), "none")
    allowed[pki.etcd_healthcheck_client.key_pem] = ({"/etc/etcd/pki/healthcheck-client.key"}, "etcd")
    allowed[pki.apiserver_etcd_client.key_pem] = ({"/etc/kubernetes/pki/apiserver-etcd-client.key"}, "control-plane")
    allowed[pki.kubernetes_ca.key_pem] = ({"/etc/kubernetes/pki/ca.key"}, "control-plane")
    allowed[pki.front_proxy_ca.key_pem] = ({"/etc/kubernetes/pki/front-proxy-ca.key"}, "control-plane")
    allowed[pki.service_account.key_pem] = ({"/etc/kubernetes/pki/sa.key"}, "control-plane")
    for member, pair in pki.etcd_server.items():
        allowed[pair.key_pem] = ({"/etc/etcd/pki/server.key"}, member)
    for member, pair in pki.etcd_peer.items():
        allowed[pair.key_pem] = ({"/etc/etcd/pki/peer.key"}, member)
    assert set(allowed) == set(secrets.values()), "a secret in ClusterSecrets.values() has no expected home"

    files = list(all_files(plan))
    for value, (paths, hosts) in allowed.items():
        holders = [(host, f) for host, f in files if value in f.content]
        for host, f in holders:
            assert host is not None, f"a secret leaked into manifest {f.path}"
            assert f.path in paths, f"a secret leaked into {host}:{f.path}"
            assert f.mode == "0600" and f.secret, f"{host}:{f.path} holds a secret but is {f.mode}"
            node = plan.spec.node(host)
            assert hosts in ("any", host) or hosts in node.roles, f"{host}:{f.path} should not hold this secret"


def test_certificate_key_only_reaches_control_plane_nodes(sample):
    plan, secrets = sample
    for node in plan.spec.nodes:
        kubeadm = plan.hosts[node.name].files.get(INIT) or plan.hosts[node.name].files.get(JOIN)
        if kubeadm:
            assert (secrets.certificate_key in kubeadm.content) == ("control-plane" in node.roles)


def test_kubeadm_init_carries_the_kubelet_config_and_hardened_flags(sample):
    plan, _ = sample
    first = plan.spec.nodes_with("control-plane")[0]
    files = plan.hosts[first.name].files
    docs = {d["kind"]: d for d in yaml.safe_load_all(files[INIT].content)}
    assert docs["InitConfiguration"]["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert docs["KubeletConfiguration"] == yaml.safe_load(files[KUBELET].content)
    assert docs["KubeProxyConfiguration"]["metricsBindAddress"] == "127.0.0.1:10249"
    cluster = docs["ClusterConfiguration"]
    assert cluster["kubernetesVersion"] == "v1.35.1"
    assert cluster["etcd"]["external"]["endpoints"] == [f"https://10.20.0.1{i}:2379" for i in (1, 2, 3)]
    args = {a["name"]: a["value"] for a in cluster["apiServer"]["extraArgs"]}
    assert all(isinstance(v, str) for v in args.values()), "kubeadm v1beta4 extraArgs values are strings"
    assert "anonymous-auth" not in args, "excludes --authentication-config's anonymous section"
    mounted = {v["hostPath"] for v in cluster["apiServer"]["extraVolumes"]}
    for flag in ("authentication-config", "audit-policy-file", "encryption-provider-config",
                 "admission-control-config-file"):
        assert str(Path(args[flag]).parent) in mounted, flag
        assert args[flag] in files, f"--{flag} points to a file that is not planned"
    assert str(Path(args["audit-log-path"]).parent) in mounted


def test_authentication_config_version_follows_kubernetes_minor(variant):
    plan, _ = variant
    cp = plan.spec.nodes_with("control-plane")[0]
    config = yaml.safe_load(plan.hosts[cp.name].files["/etc/kubernetes/auth/authentication-config.yaml"].content)
    want = "apiserver.config.k8s.io/v1beta1" if plan.spec.cluster.minor < 34 else "apiserver.config.k8s.io/v1"
    assert config["apiVersion"] == want
    assert {c["path"] for c in config["anonymous"]["conditions"]} >= {"/livez", "/readyz", "/healthz"}


def test_join_files_pin_the_cluster_ca(sample):
    plan, secrets = sample
    want = ca_cert_hash(secrets.pki.kubernetes_ca.cert_pem)
    assert want.startswith("sha256:") and len(want) == 7 + 64
    for node in plan.spec.nodes:
        file = plan.hosts[node.name].files.get(JOIN)
        if file is None:
            continue
        (join,) = yaml.safe_load_all(file.content)
        assert join["discovery"]["bootstrapToken"]["caCertHashes"] == [want]
        assert join["discovery"]["bootstrapToken"]["apiServerEndpoint"] == plan.spec.cluster.control_plane_endpoint
        assert ("controlPlane" in join) == ("control-plane" in node.roles)


def test_ca_cert_hash_matches_openssl(sample):
    openssl = shutil.which("openssl")
    assert openssl, "scripts/bootstrap.sh installs openssl"

    _, secrets = sample
    pem = secrets.pki.kubernetes_ca.cert_pem.encode()
    pub = subprocess.run([openssl, "x509", "-pubkey", "-noout"], input=pem, capture_output=True, check=True).stdout
    der = subprocess.run([openssl, "pkey", "-pubin", "-outform", "DER"], input=pub, capture_output=True, check=True).stdout
    assert ca_cert_hash(secrets.pki.kubernetes_ca.cert_pem) == "sha256:" + hashlib.sha256(der).hexdigest()


def test_containerd_gets_exactly_the_handlers_of_its_node(variant):
    plan, _ = variant
    spec = plan.spec
    handler = {"runc": "runc", "gvisor": "runsc", "kata": "kata"}
    for node in spec.nodes:
        file = plan.hosts[node.name].files.get(CONTAINERD)
        if file is None:
            assert "worker" not in node.roles and "control-plane" not in node.roles
            continue
        cri = tomllib.loads(file.content)["plugins"]["io.containerd.grpc.v1.cri"]
        runtimes = cri["containerd"]["runtimes"]
        enabled = ["runc"] + [r for r in ("gvisor", "kata")
                              if getattr(spec.runtimes, r).enabled and node.name in getattr(spec.runtimes, r).nodes]
        assert set(runtimes) == {handler[r] for r in enabled}
        assert runtimes["runc"]["options"]["SystemdCgroup"] is True
        assert cri["containerd"]["default_runtime_name"] == "runc"
        if "runsc" in runtimes:
            if spec.runtimes.artifacts == "release":
                assert runtimes["runsc"]["runtime_type"] == "io.containerd.runsc.v1"
                assert runtimes["runsc"]["options"]["ConfigPath"] == "/etc/containerd/runsc.toml"
            else:
                assert runtimes["runsc"]["runtime_type"] == "io.containerd.runc.v2"
                assert runtimes["runsc"]["options"]["BinaryName"] == "/usr/local/sbin/runsc-containerd"
                wrapper = plan.hosts[node.name].files["/usr/local/sbin/runsc-containerd"].content
                assert "exec /usr/bin/runsc --platform=ptrace --network=none" in wrapper
        if "kata" in runtimes:
            assert runtimes["kata"]["runtime_type"] == "io.containerd.kata.v2"


def test_runtime_labels_match_runtimeclass_selectors(variant):
    plan, _ = variant
    selectors = {}
    for path in ("manifests/runtimeclass-gvisor.yaml", "manifests/runtimeclass-kata.yaml"):
        if path in plan.manifests:
            rc = yaml.safe_load(plan.manifests[path].content)
            selectors[rc["handler"]] = rc["scheduling"]["nodeSelector"]
    assert selectors.get("runsc", {runtime_label("gvisor"): "true"}) == {runtime_label("gvisor"): "true"}
    assert selectors.get("kata", {runtime_label("kata"): "true"}) == {runtime_label("kata"): "true"}
    for node in plan.spec.nodes:
        host = plan.hosts[node.name].files
        kubeadm = host.get(INIT) or host.get(JOIN)
        if kubeadm is None:
            continue
        registration = next(d for d in yaml.safe_load_all(kubeadm.content) if "nodeRegistration" in d)["nodeRegistration"]
        args = {a["name"]: a["value"] for a in registration["kubeletExtraArgs"]}
        assert args["node-ip"] == str(node.address)
        labels = dict(kv.split("=", 1) for kv in args.get("node-labels", "").split(",") if kv)
        toml = tomllib.loads(host[CONTAINERD].content)["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
        assert (labels.get(runtime_label("gvisor")) == "true") == ("runsc" in toml)
        assert (labels.get(runtime_label("kata")) == "true") == ("kata" in toml)
        assert node.labels.items() <= labels.items()


def test_namespaces_and_network_policies(variant):
    plan, _ = variant
    spec = plan.spec
    if not spec.namespaces:
        assert "manifests/namespaces.yaml" not in plan.manifests
        assert "manifests/networkpolicies.yaml" not in plan.manifests
        return
    namespaces = {o["metadata"]["name"]: o for o in yaml.safe_load_all(plan.manifests["manifests/namespaces.yaml"].content)}
    assert list(namespaces) == [ns.name for ns in spec.namespaces]
    for ns in spec.namespaces:
        labels = namespaces[ns.name]["metadata"]["labels"]
        for mode in ("enforce", "audit", "warn"):
            assert labels[f"pod-security.kubernetes.io/{mode}"] == ns.pod_security
            assert labels[f"pod-security.kubernetes.io/{mode}-version"] == spec.admission.pod_security.version
    policies = list(yaml.safe_load_all(plan.manifests["manifests/networkpolicies.yaml"].content))
    by_ns: dict[str, dict[str, dict]] = {}
    for policy in policies:
        by_ns.setdefault(policy["metadata"]["namespace"], {})[policy["metadata"]["name"]] = policy
    assert set(by_ns) == {ns.name for ns in spec.namespaces if ns.baseline_network_policy}
    for policies_of_ns in by_ns.values():
        deny = policies_of_ns["default-deny"]["spec"]
        assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        dns = policies_of_ns["allow-dns"]["spec"]["egress"][0]
        assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
        assert "allow-same-namespace" in policies_of_ns


def test_audit_policy_keeps_secret_bodies_out(variant):
    plan, _ = variant
    cp = plan.spec.nodes_with("control-plane")[0]
    policy = yaml.safe_load(plan.hosts[cp.name].files["/etc/kubernetes/audit/audit-policy.yaml"].content)
    assert policy["omitStages"] == ["RequestReceived"]
    rules = policy["rules"]
    assert rules[-1] == {"level": plan.spec.audit.level}
    for resource in ("secrets", "configmaps"):
        first = next(r for r in rules if any(resource in g.get("resources", []) for g in r.get("resources", [])))
        assert first["level"] == "Metadata"
    tokenreviews = next(r for r in rules if any("tokenreviews" in g.get("resources", []) for g in r.get("resources", [])))
    assert tokenreviews["level"] == "Metadata"


def test_admission_config_matches_plugins(variant):
    plan, _ = variant
    spec = plan.spec
    cp = plan.spec.nodes_with("control-plane")[0]
    files = plan.hosts[cp.name].files
    config = yaml.safe_load(files["/etc/kubernetes/admission/admission-config.yaml"].content)
    plugins = {p["name"]: p for p in config["plugins"]}
    pss = plugins["PodSecurity"]["configuration"]
    assert pss["defaults"]["enforce"] == spec.admission.pod_security.enforce
    assert pss["exemptions"]["namespaces"] == spec.admission.pod_security.exempt_namespaces
    if spec.admission.event_rate_limit:
        limits = yaml.safe_load(files[plugins["EventRateLimit"]["path"]].content)["limits"]
        assert [(x["type"], x["qps"], x["burst"], x.get("cacheSize")) for x in limits] == [
            (x.type, x.qps, x.burst, x.cache_size) for x in spec.admission.event_rate_limit]
    else:
        assert "EventRateLimit" not in plugins
        assert "/etc/kubernetes/admission/event-rate-limit.yaml" not in files


def test_render_is_deterministic(sample, state):
    again, secrets = render("sample", state)
    assert golden_renders(*sample) == golden_renders(again, secrets)


BUNDLE_DIR = Path("/var/cache/hardened-cluster/bundle/1.35.4")
CONTAINERD_UNIT = "/etc/systemd/system/containerd.service"


def render_bundle(state: Path) -> Plan:
    data = sample_data()
    data["runtimes"] |= {"artifacts": "bundle", "bundle": str(BUNDLE_DIR)}
    data["runtimes"]["gvisor"]["platform"] = "ptrace"  # Debian's runsc serves a bundle's nodes
    loaded = parse_spec(data, SAMPLE)
    return render_plan(loaded, resolve_secrets(loaded, state))


def test_bundle_containerd_gets_a_version_3_config_with_every_hardening_setting(state):
    """The bundle's containerd 2 reads config version 3: the CRI runtime and images plugins' v3 names."""
    host = render_bundle(state).hosts["worker-1"]
    config = tomllib.loads(host.files[CONTAINERD].content)
    assert config["version"] == 3
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["containerd"]["default_runtime_name"] == "runc"
    runc = runtime["containerd"]["runtimes"]["runc"]
    assert runc["privileged_without_host_devices"] is True and runc["options"]["SystemdCgroup"] is True
    assert runtime["containerd"]["runtimes"]["runsc"]["options"]["BinaryName"] == "/usr/local/sbin/runsc-containerd"
    images = config["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == "registry.k8s.io/pause:3.10.1"
    assert "io.containerd.grpc.v1.cri" not in config["plugins"]
    unit = host.files[CONTAINERD_UNIT].content
    assert "\nExecStart=/usr/local/bin/containerd\n" in unit and "\nOOMScoreAdjust=-999\n" in unit


def test_debian_containerd_keeps_the_version_2_config_and_its_packaged_unit(sample):
    plan, _ = sample
    host = plan.hosts["worker-1"]
    config = tomllib.loads(host.files[CONTAINERD].content)
    assert config["version"] == 2 and config["plugins"]["io.containerd.grpc.v1.cri"]["restrict_oom_score_adj"] is True
    assert CONTAINERD_UNIT not in host.files


@pytest.mark.skipif(not (BUNDLE_DIR / "bin" / "containerd").is_file(), reason="no built bundle on this machine")
def test_bundle_containerd_reads_the_rendered_config_as_planned(state, tmp_path):
    """The bundle's own containerd parses the rendered file: every hardening setting survives its
    `config dump` (a misplaced key would be dropped and fall back to the default)."""
    path = tmp_path / "config.toml"
    path.write_text(render_bundle(state).hosts["worker-1"].files[CONTAINERD].content)
    dumped = subprocess.run([str(BUNDLE_DIR / "bin" / "containerd"), "--config", str(path), "config", "dump"],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    default = subprocess.run([str(BUNDLE_DIR / "bin" / "containerd"), "config", "default"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    got, base = tomllib.loads(dumped), tomllib.loads(default)
    runtime = got["plugins"]["io.containerd.cri.v1.runtime"]
    assert base["plugins"]["io.containerd.cri.v1.runtime"]["restrict_oom_score_adj"] is False
    assert runtime["restrict_oom_score_adj"] is True
    runc = runtime["containerd"]["runtimes"]["runc"]
    assert runc["privileged_without_host_devices"] is True and runc["options"]["SystemdCgroup"] is True
    assert runtime["containerd"]["runtimes"]["runsc"]["options"]["BinaryName"] == "/usr/local/sbin/runsc-containerd"
    assert got["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == "registry.k8s.io/pause:3.10.1"
