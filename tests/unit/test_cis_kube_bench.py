"""`hardened-cluster check` against the CIS Benchmark's own audit logic: kube-bench's published test definitions.

kube-bench's cfg/ (v0.14.0, benchmark cis-1.11, whose check IDs and texts are those cis.py reports) is read
as data. Each check's audit commands run in a shell as kube-bench runs them, with `ps` answering the
command lines the hand-made plan starts the components with, and the files the audit reads written out
with the plan's modes; the test items are then evaluated with kube-bench's rules (check/test.go:
`set` defaults to true, the command line before the config file, and/or of the items).

For every control cis.py decides there is a plan that must PASS (the sample) and one that must FAIL
(a hand-made change of the sample). Both cis.py and kube-bench must give the hand-stated verdict, except
where a case names how kube-bench's test is weaker than the control; there kube-bench must still be
weaker, so a fix on its side shows up here. The component command lines are built from kubeadm's default
arguments written out below from kubeadm's source (cmd/kubeadm/app/phases/controlplane/manifests.go,
v1.35), not from hardened_cluster.plan.kubeadm.
"""
from __future__ import annotations

import copy
import dataclasses
import grp
import os
import pwd
import re
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from hardened_cluster.deliver import bundle
from hardened_cluster.plan import kubeadm
from hardened_cluster.plan.render import Plan, render_plan
from hardened_cluster.secrets.store import resolve_secrets
from hardened_cluster.spec.load import parse_spec
from hardened_cluster.verify.cis import check_plan

# kube-bench's cfg/ in the Go module cache (read-only), at the version its build module pins.
KUBE_BENCH = "github.com/aquasecurity/kube-bench"
KUBE_BENCH_CFG = (Path(bundle.go_env()["GOMODCACHE"])
                  / f"{KUBE_BENCH}@{bundle.pinned_version(bundle.BUILD_ROOT / 'kube-bench', KUBE_BENCH)}" / "cfg")
BENCHMARK = "cis-1.11"
if not (KUBE_BENCH_CFG / BENCHMARK / "master.yaml").is_file():
    pytest.skip(f"kube-bench's cfg/ is not at {KUBE_BENCH_CFG}", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "inventories" / "sample" / "cluster.yaml"
INIT = "/etc/kubernetes/kubeadm/kubeadm-init.yaml"
KUBELET = "/var/lib/kubelet/config.yaml"
DROP_IN = "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"
ETCD = "/etc/etcd/etcd.conf.yml"
ENCRYPTION = "/etc/kubernetes/encryption/encryption-config.yaml"
HOST = {"control-plane": "cp-1", "etcd": "etcd-1", "node": "cp-1"}  # cp-1 also runs a kubelet
ETCD_ID = 64999
# Where kube-bench's test fails the sample although the control passes.
PASSING_GAPS = {
    "1.1.8": "kube-bench wants root:root; external etcd reads its config as the etcd user, as the control allows",
    "1.2.1": "kube-bench reads only --anonymous-auth, not the structured authentication config that limits anonymous "
             "requests to the health endpoints and cluster-info",
    "4.2.9": "kube-bench wants static serving files; serverTLSBootstrap gets the certificate from the cluster CA",
}
EMPTY = "kubeadm always sets this flag, only an empty override unsets it, and kube-bench counts an empty flag as set"


def _checks() -> dict[str, dict]:
    checks = {}
    for name in ("master", "etcd", "node", "controlplane"):
        for group in yaml.safe_load((KUBE_BENCH_CFG / BENCHMARK / f"{name}.yaml").read_text())["groups"]:
            for check in group["checks"]:
                checks[str(check["id"])] = check
    return checks


CHECKS = _checks()

# kubeadm's getAPIServerCommand / getControllerManagerCommand / getSchedulerCommand defaults (external etcd).
APISERVER = {
    "advertise-address": "{advertise}", "allow-privileged": "true", "authorization-mode": "Node,RBAC",
    "client-ca-file": "/etc/kubernetes/pki/ca.crt", "enable-admission-plugins": "NodeRestriction",
    "enable-bootstrap-token-auth": "true", "etcd-cafile": "/etc/kubernetes/pki/etcd/ca.crt",
    "etcd-certfile": "/etc/kubernetes/pki/apiserver-etcd-client.crt",
    "etcd-keyfile": "/etc/kubernetes/pki/apiserver-etcd-client.key", "etcd-servers": "{etcd}",
    "kubelet-client-certificate": "/etc/kubernetes/pki/apiserver-kubelet-client.crt",
    "kubelet-client-key": "/etc/kubernetes/pki/apiserver-kubelet-client.key",
    "kubelet-preferred-address-types": "InternalIP,ExternalIP,Hostname",
    "proxy-client-cert-file": "/etc/kubernetes/pki/front-proxy-client.crt",
    "proxy-client-key-file": "/etc/kubernetes/pki/front-proxy-client.key",
    "requestheader-allowed-names": "front-proxy-client",
    "requestheader-client-ca-file": "/etc/kubernetes/pki/front-proxy-ca.crt",
    "requestheader-extra-headers-prefix": "X-Remote-Extra-", "requestheader-group-headers": "X-Remote-Group",
    "requestheader-username-headers": "X-Remote-User", "secure-port": "6443",
    "service-account-issuer": "https://kubernetes.default.svc.cluster.local",
    "service-account-key-file": "/etc/kubernetes/pki/sa.pub",
    "service-account-signing-key-file": "/etc/kubernetes/pki/sa.key", "service-cluster-ip-range": "10.96.0.0/12",
    "tls-cert-file": "/etc/kubernetes/pki/apiserver.crt", "tls-private-key-file": "/etc/kubernetes/pki/apiserver.key",
}
CONTROLLER_MANAGER = {
    "allocate-node-cidrs": "true", "authentication-kubeconfig": "/etc/kubernetes/controller-manager.conf",
    "authorization-kubeconfig": "/etc/kubernetes/controller-manager.conf", "bind-address": "127.0.0.1",
    "client-ca-file": "/etc/kubernetes/pki/ca.crt", "cluster-cidr": "10.244.0.0/16", "cluster-name": "prod-eu1",
    "cluster-signing-cert-file": "/etc/kubernetes/pki/ca.crt", "cluster-signing-key-file": "/etc/kubernetes/pki/ca.key",
    "controllers": "*,bootstrapsigner,tokencleaner", "kubeconfig": "/etc/kubernetes/controller-manager.conf",
    "leader-elect": "true", "requestheader-client-ca-file": "/etc/kubernetes/pki/front-proxy-ca.crt",
    "root-ca-file": "/etc/kubernetes/pki/ca.crt", "service-account-private-key-file": "/etc/kubernetes/pki/sa.key",
    "service-cluster-ip-range": "10.96.0.0/12", "use-service-account-credentials": "true",
}
SCHEDULER = {
    "authentication-kubeconfig": "/etc/kubernetes/scheduler.conf", "authorization-kubeconfig": "/etc/kubernetes/scheduler.conf",
    "bind-address": "127.0.0.1", "kubeconfig": "/etc/kubernetes/scheduler.conf", "leader-elect": "true",
}
SECTIONS = {"kube-apiserver": ("apiServer", APISERVER), "kube-controller-manager": ("controllerManager", CONTROLLER_MANAGER),
            "kube-scheduler": ("scheduler", SCHEDULER)}
# etcd's config file keys are its flags (etcd's docs: configuration options); the TLS sections nest them.
ETCD_FLAGS = {("client-transport-security", "cert-file"): "cert-file", ("client-transport-security", "key-file"): "key-file",
              ("client-transport-security", "client-cert-auth"): "client-cert-auth",
              ("client-transport-security", "trusted-ca-file"): "trusted-ca-file",
              ("client-transport-security", "auto-tls"): "auto-tls",
              ("peer-transport-security", "cert-file"): "peer-cert-file",
              ("peer-transport-security", "key-file"): "peer-key-file",
              ("peer-transport-security", "client-cert-auth"): "peer-client-cert-auth",
              ("peer-transport-security", "trusted-ca-file"): "peer-trusted-ca-file",
              ("peer-transport-security", "auto-tls"): "peer-auto-tls"}


# -- the hand-made plans --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Plan:
    loaded = parse_spec(yaml.safe_load(SAMPLE.read_text()), SAMPLE)
    return render_plan(loaded, resolve_secrets(loaded, tmp_path_factory.mktemp("state") / "prod-eu1"))


def edit(plan: Plan, path: str, change: Callable[[list], None] | None = None, **attributes) -> Plan:
    """A copy of plan in which every host's `path` has its YAML documents changed in place, or attributes set."""
    hosts = {}
    for name, host in plan.hosts.items():
        files = dict(host.files)
        if path in files:
            file = files[path]
            if change is not None:
                docs = list(yaml.safe_load_all(file.content))
                change(docs)
                attributes = {**attributes, "content": yaml.safe_dump_all(docs, sort_keys=False)}
            files[path] = dataclasses.replace(file, **attributes)
        hosts[name] = dataclasses.replace(host, files=files)
    return dataclasses.replace(plan, hosts=hosts)


def edit_text(plan: Plan, path: str, change: Callable[[str], str]) -> Plan:
    hosts = {name: dataclasses.replace(host, files={
        p: dataclasses.replace(f, content=change(f.content)) if p == path else f for p, f in host.files.items()})
        for name, host in plan.hosts.items()}
    return dataclasses.replace(plan, hosts=hosts)


def kind(docs: list, name: str) -> dict:
    return next(d for d in docs if d and d.get("kind") == name)


def args(section: str, **values):
    """Set (or with None remove) extraArgs of a ClusterConfiguration section."""
    def change(docs):
        component = kind(docs, "ClusterConfiguration")[section]
        extra = [a for a in component.get("extraArgs", []) if a["name"].replace("-", "_") not in values]
        extra += [{"name": k.replace("_", "-"), "value": v} for k, v in values.items() if v is not None]
        component["extraArgs"] = extra
    return lambda plan: edit(plan, INIT, change)


def kubelet(**values):
    def change(docs):
        for key, value in values.items():
            target = docs[0]
            *parents, leaf = key.split(".")
            for parent in parents:
                target = target.setdefault(parent, {})
            if value is None:
                target.pop(leaf, None)
            else:
                target[leaf] = value
    return lambda plan: edit(plan, KUBELET, change)


def etcd(section: str, key: str, value):
    def change(docs):
        if value is None:
            docs[0][section].pop(key)
        else:
            docs[0][section][key] = value
    return lambda plan: edit(plan, ETCD, change)


def proxy(address: str):
    return lambda plan: edit(plan, INIT, lambda docs: kind(docs, "KubeProxyConfiguration").update(metricsBindAddress=address))


def encryption(change: Callable[[dict], None]):
    return lambda plan: edit(plan, ENCRYPTION, lambda docs: change(docs[0]))


def join(*changes):
    def apply(plan):
        for change in changes:
            plan = change(plan)
        return plan
    return apply


def _drop_plugin(name):
    def change(docs):
        for entry in kind(docs, "ClusterConfiguration")["apiServer"]["extraArgs"]:
            if entry["name"] == "enable-admission-plugins":
                entry["value"] = ",".join(p for p in entry["value"].split(",") if p != name)
    return lambda plan: edit(plan, INIT, change)


def _identity_first(config):
    for entry in config["resources"]:
        entry["providers"].insert(0, {"identity": {}})


def _configmaps_only(config):
    config["resources"] = [{**config["resources"][0], "resources": ["configmaps"]}]


# id -> (the change that must make it FAIL, how kube-bench's test is weaker than the control or None)
FAILING = {
    "1.1.7": (lambda p: edit(p, ETCD, mode="0644"), None),
    "1.1.8": (lambda p: edit(p, ETCD, owner="nobody", group="nogroup"), None),
    "1.2.1": (args("apiServer", authentication_config=None, anonymous_auth="true"), None),
    "1.2.2": (args("apiServer", token_auth_file="/etc/kubernetes/tokens.csv"), None),
    "1.2.3": (_drop_plugin("DenyServiceExternalIPs"), None),
    "1.2.4": (args("apiServer", kubelet_client_certificate=""), EMPTY),
    "1.2.5": (args("apiServer", kubelet_certificate_authority=None), None),
    "1.2.6": (args("apiServer", authorization_mode="AlwaysAllow"), None),
    "1.2.7": (args("apiServer", authorization_mode="RBAC"), None),
    "1.2.8": (args("apiServer", authorization_mode="Node"), None),
    "1.2.9": (_drop_plugin("EventRateLimit"), None),
    "1.2.10": (args("apiServer", enable_admission_plugins="NodeRestriction,AlwaysAdmit"), None),
    "1.2.11": (_drop_plugin("AlwaysPullImages"), None),
    "1.2.12": (args("apiServer", disable_admission_plugins="ServiceAccount"), None),
    "1.2.13": (args("apiServer", disable_admission_plugins="NamespaceLifecycle"), None),
    "1.2.14": (_drop_plugin("NodeRestriction"), None),
    "1.2.15": (args("apiServer", profiling="true"), None),
    "1.2.16": (args("apiServer", audit_log_path=None), None),
    "1.2.17": (args("apiServer", audit_log_maxage="7"), None),
    "1.2.18": (args("apiServer", audit_log_maxbackup="2"), None),
    "1.2.19": (args("apiServer", audit_log_maxsize="10"), None),
    "1.2.20": (args("apiServer", request_timeout="0s"), "a manual check in kube-bench: no test to run"),
    "1.2.21": (args("apiServer", service_account_lookup="false"), None),
    "1.2.22": (args("apiServer", service_account_key_file=""), EMPTY),
    "1.2.23": (args("apiServer", etcd_keyfile=""), EMPTY),
    "1.2.24": (args("apiServer", tls_private_key_file=""), EMPTY),
    "1.2.25": (args("apiServer", client_ca_file=""), EMPTY),
    "1.2.26": (args("apiServer", etcd_cafile=""), EMPTY),
    "1.2.27": (args("apiServer", encryption_provider_config=None),
               "kube-bench's flag search is a substring match: --encryption-provider-config-automatic-reload counts"),
    "1.2.28": (encryption(_identity_first), None),
    "1.2.29": (args("apiServer", tls_cipher_suites="TLS_RSA_WITH_RC4_128_SHA"), None),
    "1.2.30": (args("apiServer", service_account_extend_token_expiration="true"), None),
    "1.3.1": (args("controllerManager", terminated_pod_gc_threshold=None), None),
    "1.3.2": (args("controllerManager", profiling="true"), None),
    "1.3.3": (args("controllerManager", use_service_account_credentials="false"), None),
    "1.3.4": (args("controllerManager", service_account_private_key_file=""), EMPTY),
    "1.3.5": (args("controllerManager", root_ca_file=""), EMPTY),
    "1.3.6": (args("controllerManager", feature_gates="RotateKubeletServerCertificate=false"), None),
    "1.3.7": (args("controllerManager", bind_address="0.0.0.0"), None),
    "1.4.1": (args("scheduler", profiling="true"), None),
    "1.4.2": (args("scheduler", bind_address="0.0.0.0"), None),
    "2.1": (etcd("client-transport-security", "key-file", None), None),
    "2.2": (etcd("client-transport-security", "client-cert-auth", False), None),
    "2.3": (etcd("client-transport-security", "auto-tls", True), None),
    "2.4": (etcd("peer-transport-security", "cert-file", None), None),
    "2.5": (etcd("peer-transport-security", "client-cert-auth", False), None),
    "2.6": (etcd("peer-transport-security", "auto-tls", True), None),
    "2.7": (etcd("client-transport-security", "trusted-ca-file", None), None),
    "4.1.1": (lambda p: edit(p, DROP_IN, mode="0644"), None),
    "4.1.2": (lambda p: edit(p, DROP_IN, owner="nobody", group="nogroup"), None),
    "4.1.7": (lambda p: edit(p, "/etc/kubernetes/pki/ca.crt", mode="0666"), None),
    "4.1.8": (lambda p: edit(p, "/etc/kubernetes/pki/ca.crt", owner="nobody", group="nogroup"), None),
    "4.1.9": (lambda p: edit(p, KUBELET, mode="0644"), None),
    "4.1.10": (lambda p: edit(p, KUBELET, owner="nobody", group="nogroup"), None),
    "4.2.1": (kubelet(**{"authentication.anonymous.enabled": True}), None),
    "4.2.2": (kubelet(**{"authorization.mode": "AlwaysAllow"}), None),
    "4.2.3": (kubelet(**{"authentication.x509.clientCAFile": None}), None),
    "4.2.4": (kubelet(readOnlyPort=10255), None),
    "4.2.5": (kubelet(streamingConnectionIdleTimeout="0s"), "kube-bench compares the text with 0, and 0s is not 0"),
    "4.2.6": (kubelet(makeIPTablesUtilChains=False), None),
    "4.2.8": (kubelet(eventRecordQPS=-1), None),
    "4.2.9": (kubelet(serverTLSBootstrap=False), None),
    "4.2.10": (kubelet(rotateCertificates=False), None),
    "4.2.11": (kubelet(**{"featureGates.RotateKubeletServerCertificate": False}), None),
    "4.2.12": (kubelet(tlsCipherSuites=["TLS_RSA_WITH_RC4_128_SHA"]), None),
    "4.2.13": (kubelet(podPidsLimit=None), None),
    "4.2.14": (kubelet(seccompDefault=None), None),
    "4.3.1": (proxy("0.0.0.0:10249"), None),
}
# More changes that must FAIL: the weaker variants the review found passing.
MORE_FAILING = {
    "secrets-left-out": ("1.2.28", encryption(_configmaps_only), "kube-bench reads only the provider, not the resources"),
    "gate-False": ("1.3.6", args("controllerManager", feature_gates="RotateKubeletServerCertificate=False"),
                   "kube-bench's nothave is case-sensitive; Go's ParseBool reads False as false"),
    "static-serving-cert": ("4.2.11", kubelet(serverTLSBootstrap=False, tlsCertFile="/var/lib/kubelet/pki/kubelet.crt",
                                              tlsPrivateKeyFile="/var/lib/kubelet/pki/kubelet.key"),
                            "kube-bench looks at the feature gate alone; a static certificate is never rotated"),
    "timeout-zero": ("1.2.20", args("apiServer", request_timeout="0"), "a manual check in kube-bench: no test to run"),
    "no-kubelet-config": ("4.2.1", lambda p: edit_text(p, DROP_IN, lambda t: t.replace(
        'Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"\n', "")), None),
    "no-kubelet-config-pids": ("4.2.13", lambda p: edit_text(p, DROP_IN, lambda t: t.replace(
        'Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"\n', "")), None),
    "anonymous-everywhere": ("1.2.1", lambda p: edit(p, "/etc/kubernetes/auth/authentication-config.yaml",
                                                     lambda docs: docs[0]["anonymous"].pop("conditions", None)), None),
}


# -- what the hosts would run ----------------------------------------------------------------------------

def _command(component: str, plan: Plan) -> list[str]:
    docs = list(yaml.safe_load_all(plan.hosts[HOST["control-plane"]].files[INIT].content))
    cluster, init = kind(docs, "ClusterConfiguration"), kind(docs, "InitConfiguration")
    section, defaults = SECTIONS[component]
    values = {"advertise": init["localAPIEndpoint"]["advertiseAddress"],
              "etcd": ",".join(cluster["etcd"]["external"]["endpoints"])}
    flags = {k: v.format(**values) for k, v in defaults.items()}
    extra = {a["name"]: str(a["value"]) for a in cluster[section].get("extraArgs") or []}
    if "authorization-config" in extra:
        flags.pop("authorization-mode", None)
    flags.update(extra)
    return [component] + [f"--{k}={v}" for k, v in flags.items()]


def _kubelet_command(plan: Plan) -> list[str]:
    host = plan.hosts[HOST["node"]]
    unit = host.files[DROP_IN].content
    env = dict(re.findall(r'^Environment="(\w+)=([^"]*)"', unit, re.M))
    exec_start = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart=")][-1]
    argv = shlex.split(re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), ""), exec_start))
    registration = kind(list(yaml.safe_load_all(host.files[INIT].content)), "InitConfiguration")["nodeRegistration"]
    argv += [f"--{a['name']}={a['value']}" for a in registration.get("kubeletExtraArgs") or []]
    return ["kubelet"] + argv[1:]


def _etcd_command(plan: Plan) -> list[str]:
    config = yaml.safe_load(plan.hosts[HOST["etcd"]].files[ETCD].content)
    flags = [f"--{k}={v}" for k, v in config.items() if not isinstance(v, (dict, list))]
    for (section, key), flag in ETCD_FLAGS.items():
        if key in (config.get(section) or {}):
            flags.append(f"--{flag}={str(config[section][key]).lower()}")
    return ["etcd"] + flags


def _write(directory: Path, name: str, file) -> str:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(file.content)
    os.chmod(path, int(file.mode, 8))
    os.chown(path, *_ids(file.owner, file.group))
    return str(path)


def _ids(owner: str, group: str) -> tuple[int, int]:
    # The etcd user exists on the etcd hosts, not here: any id that is not root's stands in for it.
    uid = ETCD_ID if owner == "etcd" else pwd.getpwnam(owner).pw_uid
    return uid, ETCD_ID if group == "etcd" else grp.getgrnam(group).gr_gid


def kube_bench(check_id: str, plan: Plan) -> str:
    """kube-bench's verdict on the hosts this plan makes: PASS, FAIL or MANUAL (no test to run)."""
    check = CHECKS[check_id]
    if check.get("type") == "manual" or not check.get("tests"):
        return "MANUAL"
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        node, cp, member = (plan.hosts[HOST[r]] for r in ("node", "control-plane", "etcd"))
        encryption_path = _write(directory, "encryption-config.yaml", cp.files[ENCRYPTION])
        commands = [_command(c, plan) for c in SECTIONS] + [_kubelet_command(plan), _etcd_command(plan),
                                                            ["kube-proxy", "--config=/var/lib/kube-proxy/config.conf"]]
        commands = [[a.replace(ENCRYPTION, encryption_path) for a in c] for c in commands]
        proxy_doc = kind(list(yaml.safe_load_all(cp.files[INIT].content)), "KubeProxyConfiguration")
        (directory / "kube-proxy.conf").write_text(yaml.safe_dump(proxy_doc))
        kubelet_argv = commands[3]
        config_path = next((a.split("=", 1)[1] for a in kubelet_argv if a.startswith("--config=")), None)
        env = {
            "PATH": "/usr/bin:/bin",
            "HC_PS": "\n".join(f"root {100 + i} 1 0 00:00 ? 00:00:00 {shlex.join(c)}" for i, c in enumerate(commands)),
            "apiserverbin": "kube-apiserver", "controllermanagerbin": "kube-controller-manager",
            "schedulerbin": "kube-scheduler", "etcdbin": "etcd", "kubeletbin": "kubelet", "proxybin": "kube-proxy",
            "etcdconf": _write(directory, "etcd.conf.yml", member.files[ETCD]),
            "kubeletsvc": _write(directory, "10-kubeadm.conf", node.files[DROP_IN]),
            "kubeletconf": _write(directory, "kubelet-config.yaml", node.files[KUBELET]) if config_path else
            str(directory / "absent"),
            "kubeletcafile": _write(directory, "ca.crt", node.files["/etc/kubernetes/pki/ca.crt"]),
            "proxykubeconfig": str(directory / "kube-proxy.conf"),
        }
        # The audit's own text, with ps answering from the planned command lines.
        stub = ('ps() { if [ "$1" = "-fC" ]; then printf "%s\\n" "$HC_PS" | grep " $2 "; '
                'else printf "%s\\n" "$HC_PS"; fi; }\n')

        def audit(text):
            if not text:
                return ""
            run = subprocess.run(["bash", "-c", stub + text.replace("/bin/ps", "ps")], env=env,
                                 capture_output=True, text=True, timeout=30)
            return run.stdout
        output, config_output = audit(check.get("audit")), audit(check.get("audit_config"))
    return "PASS" if _evaluate(check["tests"], output, config_output, bool(check.get("audit_config"))) else "FAIL"


# -- kube-bench's evaluation rules (check/check.go and check/test.go, v0.14.0) -----------------------------

def _evaluate(tests: dict, output: str, config_output: str, has_config: bool) -> bool:
    results = []
    for item in tests["test_items"]:
        found, ok = _item(item, output.rstrip(" \n"), "flag")
        if not found and has_config and config_output:
            found, ok = _item(item, config_output.rstrip(" \n"), "path")
        results.append(ok)
    return any(results) if tests.get("bin_op") == "or" else all(results)


def _item(item: dict, text: str, source: str) -> tuple[bool, bool]:
    if source == "flag":
        found, value = _flag_value(item.get("flag", ""), text)
    else:
        found, value = _path_value(item.get("path", ""), text)
    if not item.get("set", True):
        return found, not found
    compare = item.get("compare")
    if not (found and compare):
        return found, found
    return found, _compare(compare["op"], value, _go_text(compare["value"]))


def _go_text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _flag_value(flag: str, text: str) -> tuple[bool, str]:
    if not text or not flag or flag not in text:
        return False, ""
    match = re.search("(" + re.escape(flag) + r")(=|: *)*([^\s]*) *", text)
    if match.group(3):
        return True, match.group(3)
    return True, "true" if flag.startswith("--") else match.group(1)


def _path_value(path: str, text: str) -> tuple[bool, str]:
    if not path:
        return False, ""
    data = yaml.safe_load(text)
    if (m := re.fullmatch(r"\{range \.(\w+)\[:\]\}\{\}\{','\}\{end\}", path)):
        return bool(data.get(m.group(1))), "".join(f"{v}," for v in data.get(m.group(1)) or [])
    value = data
    for key in re.fullmatch(r"\{\.([\w.]+)\}", path).group(1).split("."):
        value = value.get(key) if isinstance(value, dict) else None
    text_value = "" if value is None else _go_text(value)
    return text_value != "", text_value


def _compare(op: str, value: str, want: str) -> bool:
    if op in ("eq", "noteq"):
        same = value.lower() == want if value.lower() in ("true", "false") else value == want
        return same if op == "eq" else not same
    if op in ("gt", "gte", "lt", "lte"):
        try:
            a, b = float(value), float(want)
        except ValueError:
            return False
        return {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[op]
    if op == "has":
        return want in value
    if op == "nothave":
        return want not in value
    if op == "regex":
        return re.search(want, value) is not None
    if op == "valid_elements":
        have = [s.strip() for s in value.strip().rstrip(",").split(",")] if value.strip().rstrip(",") else []
        allowed = [s.strip() for s in want.strip().rstrip(",").split(",")] if want.strip().rstrip(",") else []
        if not have and not allowed:
            return True
        return bool(have) and bool(allowed) and all(h in allowed for h in have)
    if op == "bitmask":
        requested, maximum = int(value, 8), int(want, 8)
        return maximum & requested == requested
    raise AssertionError(f"kube-bench compare op {op!r} is not implemented here")


# -- the tests ---------------------------------------------------------------------------------------------

def ours(check_id: str, plan: Plan) -> set[str]:
    """cis.py's verdicts on the hosts that decide the control (a worker leaves kubeadm's CA file to drift)."""
    return {f.status for f in check_plan(plan) if f.id == check_id and f.status != "NOT-DECIDABLE"}


def test_every_decided_control_has_a_failing_plan(sample):
    decided = {f.id for f in check_plan(sample) if f.status != "NOT-DECIDABLE"}
    assert decided == set(FAILING)


@pytest.mark.parametrize("check_id", sorted(FAILING, key=lambda i: [int(p) for p in i.split(".")]))
def test_sample_passes_and_the_change_fails(sample, check_id):
    change, kube_bench_gap = FAILING[check_id]
    assert ours(check_id, sample) == {"PASS"}
    manual = CHECKS[check_id].get("type") == "manual"
    assert kube_bench(check_id, sample) == ("MANUAL" if manual else "FAIL" if check_id in PASSING_GAPS else "PASS")
    failing = change(sample)
    assert ours(check_id, failing) == {"FAIL"}, [f.detail for f in check_plan(failing) if f.id == check_id]
    verdict = kube_bench(check_id, failing)
    if kube_bench_gap:
        assert verdict != "FAIL", f"kube-bench now fails {check_id} ({kube_bench_gap}): drop the note"
    else:
        assert verdict == "FAIL"


@pytest.mark.parametrize("case", list(MORE_FAILING))
def test_weaker_variants_fail(sample, case):
    check_id, change, kube_bench_gap = MORE_FAILING[case]
    failing = change(sample)
    assert ours(check_id, failing) == {"FAIL"}, [f.detail for f in check_plan(failing) if f.id == check_id]
    verdict = kube_bench(check_id, failing)
    if kube_bench_gap:
        assert verdict != "FAIL", f"kube-bench now fails {case} ({kube_bench_gap}): drop the note"
    else:
        assert verdict == "FAIL"


@pytest.mark.parametrize("component", list(SECTIONS))
def test_the_flag_model_matches_kubeadms_defaults_by_hand(sample, component):
    docs = list(yaml.safe_load_all(sample.hosts["cp-1"].files[INIT].content))
    model = kubeadm.component_flags(component, kind(docs, "ClusterConfiguration"),
                                    kind(docs, "InitConfiguration")["localAPIEndpoint"])
    assert model == dict(a[2:].split("=", 1) for a in _command(component, sample)[1:])


def test_kube_bench_data_is_the_benchmark_cis_py_reports():
    from hardened_cluster.verify.cis_controls import CONTROLS
    for control in CONTROLS:
        text = CHECKS[control.id]["text"]
        assert re.sub(r"\s*\((Automated|Manual)\)$", "", text).replace("--DenyServiceExternalIPs", "DenyServiceExternalIPs") \
            == control.title, control.id


def test_copying_keeps_the_sample_intact(sample):
    before = copy.deepcopy({p: f.content for p, f in sample.hosts["cp-1"].files.items()})
    args("apiServer", profiling="true")(sample)
    assert {p: f.content for p, f in sample.hosts["cp-1"].files.items()} == before
