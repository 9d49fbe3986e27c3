"""Proofs against the live cluster, for the demo's report: one line and a verdict each.

- nodes Ready; the API server's /readyz; the control-plane static pods Ready;
- anonymous requests refused by the API server and by every kubelet;
- a Secret stored encrypted in etcd, and audited without its data;
- admission: Pod Security refuses a privileged pod, NodeRestriction a kubelet labelling another node,
  EventRateLimit among the running API server's plugins;
- RuntimeClasses: a runc pod sees its node's kernel, a gVisor pod gVisor's, a Kata pod runs or is not
  scheduled where Kata is absent;
- NetworkPolicy: a namespace created now gets the baseline, is shut off from the spec's namespaces, and
  same-namespace traffic works.

The lab tests hold many more, each on its own. kubectl is the bundle's; the admin kubeconfig is the one the
control_plane role fetched into the state directory. Node-side reads run over SSH (`sudo -n`) and print only
what the proof needs: no Secret value or log line of another object leaves a node.
"""
from __future__ import annotations

import json
import secrets
import shlex
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from hardened_cluster.deliver.artifacts import INSTALL
from hardened_cluster.deliver.bundle import kube_router_image
from hardened_cluster.deliver.preflight import ssh_run
from hardened_cluster.plan.kubeadm import KUBELET_KUBECONFIG
from hardened_cluster.secrets.store import encryption_key_names
from hardened_cluster.spec.model import LoadedSpec, Node
from hardened_cluster.verify.probes import etcdctl_argv

Proof = tuple[str, bool]
T = TypeVar("T")

# The name every object the proofs make starts with (each is deleted again).
PROOF = "hc-proof"
# A container the restricted Pod Security level admits.
RESTRICTED = {"runAsNonRoot": True, "runAsUser": 65534, "allowPrivilegeEscalation": False,
              "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
# Request bodies of Secrets carry their values: the audit policy logs them at Metadata, whatever audit.level says.
SECRET_AUDIT_LEVEL = "Metadata"
# The HTTP status an HTTPS request without credentials gets, asked on a node (argv[1]: the URL).
_ANONYMOUS = ("import ssl, sys, urllib.error, urllib.request\n"
              "c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n"
              "try: print(urllib.request.urlopen(sys.argv[1], context=c, timeout=10).status)\n"
              "except urllib.error.HTTPError as e: print(e.code)\n")


@dataclass(frozen=True)
class Cluster:
    kubectl: Path
    kubeconfig: Path

    def run(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.kubectl), "--kubeconfig", str(self.kubeconfig), *args], input=input,
                              capture_output=True, text=True, timeout=timeout, check=check)

    def get(self, *args: str) -> dict:
        return json.loads(self.run("get", *args, "-o", "json").stdout)


def anonymous_status(url: str) -> int:
    """The HTTP status an HTTPS request without any credentials gets."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # no credentials at all
    try:
        with urllib.request.urlopen(url, context=context, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def pod_manifest(name: str, namespace: str, command: list[str], image: str, runtime_class: str | None = None,
                 node: str | None = None, security: dict | None = None, labels: dict | None = None,
                 automount: bool | None = False) -> dict:
    """A pod running `command` once (restricted unless `security`); `automount=None` leaves the
    service-account token setting to the namespace's default."""
    spec: dict = {"restartPolicy": "Never",
                  "containers": [{"name": "c", "image": image, "imagePullPolicy": "Never", "command": command,
                                  "securityContext": security or RESTRICTED}]}
    if automount is not None:
        spec["automountServiceAccountToken"] = automount
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": name}}, "spec": spec}


def _until(predicate: Callable[[], T], timeout: float, every: float = 2.0) -> T | None:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def _url_host(node: Node) -> str:
    return f"[{node.address}]" if node.address.version == 6 else str(node.address)


def _kube_nodes(loaded: LoadedSpec) -> list[Node]:
    return [n for n in loaded.spec.nodes if {"control-plane", "worker"} & set(n.roles)]


def _ready(obj: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in obj.get("status", {}).get("conditions", []))


def nodes_ready(cluster: Cluster, expected: int) -> Proof:
    nodes = cluster.get("nodes")["items"]
    ready = [n for n in nodes if _ready(n)]
    versions = sorted({n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes})
    return f"nodes Ready: {len(ready)}/{expected} ({', '.join(versions)})", len(ready) == expected == len(nodes)


def api_ready(cluster: Cluster) -> Proof:
    answer = cluster.run("get", "--raw", "/readyz?verbose", check=False)
    failing = [line for line in answer.stdout.splitlines() if line.startswith("[-]")]
    good = answer.returncode == 0 and not failing
    return f"API server /readyz: {'every check ok' if good else 'failing: ' + ', '.join(failing)}", good


def static_pods_ready(loaded: LoadedSpec, cluster: Cluster) -> Proof:
    """kubeadm's three static pods per control plane (etcd is external), Ready: their probes pass
    with anonymous auth off."""
    expected = 3 * len(loaded.spec.nodes_with("control-plane"))
    pods = cluster.get("-n", "kube-system", "pods", "-l", "tier=control-plane")["items"]
    waiting = sorted(p["metadata"]["name"] for p in pods if not _ready(p))
    ready = len(pods) - len(waiting)
    detail = f", not Ready: {', '.join(waiting)}" if waiting else ""
    return f"control-plane static pods Ready: {ready}/{expected}{detail}", ready == expected == len(pods)


def anonymous_refused(loaded: LoadedSpec) -> Proof:
    """No credentials: the API server answers 401, and so does every kubelet, asked from a control plane
    (the firewall lets only the control planes reach port 10250)."""
    spec = loaded.spec
    api = anonymous_status(f"https://{spec.cluster.control_plane_endpoint}/api/v1/namespaces/kube-system/secrets")
    asker = spec.nodes_with("control-plane")[0]
    kubelets = {}
    for node in [n for n in _kube_nodes(loaded) if n.name != asker.name] or [asker]:
        rc, out, _ = ssh_run(loaded, asker, shlex.join(["python3", "-c", _ANONYMOUS, f"https://{_url_host(node)}:10250/pods"]))
        kubelets[node.name] = out.strip() if rc == 0 else f"no answer (exit {rc})"
    good = api == 401 and all(code == "401" for code in kubelets.values())
    answers = ", ".join(f"{name} {code}" for name, code in kubelets.items())
    return f"anonymous requests: API server {api}; kubelets (asked from {asker.name}): {answers}", good


def secret_encrypted(loaded: LoadedSpec, cluster: Cluster, writing_key: str) -> Proof:
    """A Secret written through the API is in etcd with the writing key's prefix and not in plain text."""
    spec = loaded.spec
    name, value = f"{PROOF}-encrypted", secrets.token_hex(16)
    cluster.run("-n", "default", "delete", "secret", name, "--ignore-not-found")
    cluster.run("-n", "default", "create", "secret", "generic", name, f"--from-literal=v={value}")
    try:
        member = spec.nodes_with("etcd")[0]
        get = [*etcdctl_argv(spec), "get", f"/registry/secrets/default/{name}", "--print-value-only"]
        rc, out, _ = ssh_run(loaded, member, "sudo -n " + shlex.join(get))
        prefix = stored_prefix(spec.encryption.provider, writing_key)
        good = rc == 0 and out.startswith(prefix) and value not in out
        seen = out[: len(prefix)] if rc == 0 else f"etcdctl exited {rc}"
        return f"Secret in etcd: starts with {seen!r}, plain text {'absent' if value not in out else 'PRESENT'}", good
    finally:
        cluster.run("-n", "default", "delete", "secret", name, "--ignore-not-found", check=False)


def stored_prefix(provider: str, key: str) -> str:
    """How the API server's envelope starts in etcd for a value encrypted with `key`."""
    return f"k8s:enc:{provider}:v1:{key}:"


def secret_audited(loaded: LoadedSpec, cluster: Cluster) -> Proof:
    """A Secret's creation is in a control plane's audit log at Metadata, and its value in no audit log."""
    spec = loaded.spec
    name, value = f"{PROOF}-audited", secrets.token_hex(16)
    log = shlex.quote(str(spec.audit.log_path))
    cluster.run("-n", "default", "delete", "secret", name, "--ignore-not-found")
    cluster.run("-n", "default", "create", "secret", "generic", name, f"--from-literal=v={value}")
    cluster.run("-n", "default", "delete", "secret", name)
    planes = spec.nodes_with("control-plane")

    def created() -> list[dict]:
        events = []
        for node in planes:  # behind a load balancer, any of them may have served the request
            _, out, _ = ssh_run(loaded, node, f"sudo -n grep -F {shlex.quote(json.dumps(name))} {log} || true")
            events += [e for e in map(json.loads, out.splitlines())
                       if e.get("verb") == "create" and e.get("objectRef", {}).get("resource") == "secrets"]
        return events

    events = _until(created, timeout=30) or []
    leaked = [n.name for n in planes if ssh_run(loaded, n, f"sudo -n grep -qF {value} {log}")[0] == 0]
    levels = sorted({e["level"] for e in events})
    good = bool(events) and levels == [SECRET_AUDIT_LEVEL] and not leaked
    found = f"at {', '.join(levels)}" if events else "NOT FOUND"
    data = f"its value in the log of {', '.join(leaked)}" if leaked else "its value in no audit log"
    return f"audit: the Secret's creation logged {found} (policy: {SECRET_AUDIT_LEVEL}), {data}", good


def privileged_pod_refused(cluster: Cluster, namespace: str | None, image: str) -> Proof:
    if namespace is None:
        return "Pod Security: no namespace enforces restricted (spec namespaces and namespace_baseline)", True
    manifest = pod_manifest(f"{PROOF}-privileged", namespace, ["/bin/busybox", "true"], image,
                            security={"privileged": True})
    answer = cluster.run("create", "--dry-run=server", "-f", "-", input=json.dumps(manifest), check=False)
    refused = answer.returncode != 0 and "violates PodSecurity" in answer.stderr
    verdict = "refused (violates PodSecurity)" if refused else f"NOT refused: {answer.stderr.strip() or answer.stdout.strip()}"
    return f"Pod Security: a privileged pod in {namespace}: {verdict}", refused


def admission_plugins(loaded: LoadedSpec, cluster: Cluster) -> Proof:
    """NodeRestriction stops a kubelet's own credentials labelling another node; EventRateLimit is in the
    running API server's plugins (read from its mirror pod)."""
    nodes = _kube_nodes(loaded)
    kubelet = next((n for n in nodes if "worker" in n.roles), nodes[0])
    other = next((n for n in nodes if n.name != kubelet.name), None)
    pod = cluster.get("-n", "kube-system", "pods", "-l", "component=kube-apiserver")["items"][0]
    flags = pod["spec"]["containers"][0]["command"]
    plugins = next((f.split("=", 1)[1].split(",") for f in flags if f.startswith("--enable-admission-plugins=")), [])
    rate_limit = "EventRateLimit" in plugins
    if other is None:
        return f"admission: one node only, NodeRestriction not tried; EventRateLimit {'on' if rate_limit else 'OFF'}", rate_limit
    label = [INSTALL["kubectl"], "--kubeconfig", KUBELET_KUBECONFIG, "label", "--dry-run=server", "node", other.name,
             "hardened-cluster.io/proof=1"]
    rc, _, err = ssh_run(loaded, kubelet, "sudo -n " + shlex.join(label))
    refused = rc != 0 and "forbidden" in err.lower()
    restriction = "refused" if refused else f"NOT refused ({err.strip() or 'exit 0'})"
    return (f"admission: NodeRestriction: {kubelet.name}'s kubelet labelling {other.name}: {restriction}; "
            f"EventRateLimit {'on' if rate_limit else 'OFF'}"), refused and rate_limit


def _pod_outcome(cluster: Cluster, name: str, namespace: str, timeout: float) -> dict:
    """The pod's end: {'exit': code, 'node': ...}, {'unschedulable': message} or {'stuck': why} (its sandbox
    could not be made, or it did not finish within `timeout`)."""
    def warnings() -> list[dict]:
        events = cluster.get("-n", namespace, "events", "--field-selector", f"involvedObject.name={name}")["items"]
        return [e for e in events if e.get("type") == "Warning"]

    def end() -> dict | None:
        pod = cluster.get("-n", namespace, "pod", name)
        status = pod.get("status", {})
        for condition in status.get("conditions", []):
            if condition["type"] == "PodScheduled" and condition.get("reason") == "Unschedulable":
                return {"unschedulable": condition.get("message", "")}
        for container in status.get("containerStatuses", []):
            terminated = container.get("state", {}).get("terminated")
            if terminated:
                return {"exit": terminated["exitCode"], "node": pod["spec"].get("nodeName")}
        # The kubelet retries a sandbox it could not make, with the same error: no need to wait it out.
        sandbox = [e["message"] for e in warnings() if e.get("reason") == "FailedCreatePodSandBox"]
        return {"stuck": sandbox[-1][:300]} if sandbox else None

    outcome = _until(end, timeout)
    if outcome:
        return outcome
    seen = [e["message"] for e in warnings()]
    return {"stuck": (seen[-1] if seen else f"not finished after {timeout:.0f}s")[:300]}


def _run_pod(cluster: Cluster, manifest: dict, timeout: float = 120) -> tuple[dict, str]:
    """Run a pod to its end; its outcome and its log."""
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    cluster.run("apply", "-f", "-", input=json.dumps(manifest))
    try:
        outcome = _pod_outcome(cluster, name, namespace, timeout)
        log = cluster.run("-n", namespace, "logs", name, check=False).stdout if "exit" in outcome else ""
        return outcome, log
    finally:
        cluster.run("-n", namespace, "delete", "pod", name, "--wait=false", check=False)


def runtime_classes(loaded: LoadedSpec, cluster: Cluster, namespace: str, image: str) -> list[Proof]:
    """runc sees the node's kernel; gVisor its own; Kata runs where it is, and is not scheduled elsewhere."""
    spec = loaded.spec
    out = []
    workers = [n for n in spec.nodes if "worker" in n.roles] or _kube_nodes(loaded)
    node = workers[0]
    _, host_kernel, _ = ssh_run(loaded, node, "uname -r")
    outcome, log = _run_pod(cluster, pod_manifest(f"{PROOF}-runc", namespace, ["/bin/busybox", "uname", "-r"], image,
                                                  node=node.name))
    good = outcome.get("exit") == 0 and log.strip() == host_kernel.strip()
    out.append((f"runc pod on {node.name}: kernel {log.strip() or outcome} (the node's: {host_kernel.strip()})", good))
    if spec.runtimes.gvisor.enabled:
        outcome, log = _run_pod(cluster, pod_manifest(f"{PROOF}-gvisor", namespace,
                                                      ["/bin/busybox", "sh", "-c", "uname -r; dmesg"], image,
                                                      runtime_class="gvisor"))
        good = outcome.get("exit") == 0 and "Starting gVisor" in log
        seen = f"on {outcome['node']}: {'gVisor kernel (dmesg: Starting gVisor)' if good else log.strip()[:120]}" \
            if "exit" in outcome else f"did not run: {next(iter(outcome.values()))}"
        out.append((f"gvisor pod {seen}", good))
    if spec.runtimes.kata.enabled:
        outcome, _ = _run_pod(cluster, pod_manifest(f"{PROOF}-kata", namespace, ["/bin/busybox", "true"], image,
                                                    runtime_class="kata"), timeout=60)
        if "unschedulable" in outcome:
            out.append((f"kata pod not scheduled where Kata is absent: {outcome['unschedulable']}", True))
        else:
            good = outcome.get("exit") == 0
            seen = f"ran on {outcome['node']}" if good else f"scheduled but did not run: {outcome}"
            out.append((f"kata pod {seen}", good))
    return out


@contextmanager
def later_namespace(cluster: Cluster) -> Iterator[str]:
    """A namespace made now, as users make them after apply; deleted afterwards."""
    name = f"{PROOF}-{secrets.token_hex(3)}"
    cluster.run("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.run("delete", "namespace", name, "--wait=false", check=False)


def namespace_baseline(loaded: LoadedSpec, cluster: Cluster, namespace: str) -> Proof:
    baseline = loaded.spec.namespace_baseline
    if not baseline.enabled:
        return f"later namespace {namespace}: no baseline (namespace_baseline.enabled is false in the spec)", True

    def given() -> dict | None:
        labels = cluster.get("namespace", namespace)["metadata"].get("labels", {})
        policies = [p["metadata"]["name"] for p in cluster.get("-n", namespace, "networkpolicies")["items"]]
        found = cluster.run("-n", namespace, "get", "serviceaccount", "default", "-o", "json", check=False)
        account = json.loads(found.stdout) if found.returncode == 0 else {}  # made by the controller-manager
        done = (labels.get("pod-security.kubernetes.io/enforce") == baseline.pod_security
                and (policies or not baseline.network_policy) and account.get("automountServiceAccountToken") is False)
        return {"labels": labels, "policies": policies, "automount": account.get("automountServiceAccountToken")} if done else None

    got = _until(given, timeout=60)
    if not got:
        return f"later namespace {namespace}: the baseline did not arrive within 60s", False
    return (f"later namespace {namespace}: Pod Security {baseline.pod_security}, NetworkPolicies "
            f"{', '.join(got['policies']) or 'none'}, no service-account token automount"), True


def network_isolation(loaded: LoadedSpec, cluster: Cluster, later: str, image: str) -> Proof:
    """A server in the spec's first baseline namespace answers a client beside it, not one in `later`."""
    home = next((ns.name for ns in loaded.spec.namespaces if ns.baseline_network_policy), None)
    if home is None:
        return "NetworkPolicy: no spec namespace has the baseline policy (namespaces[].baseline_network_policy)", True
    server = pod_manifest(f"{PROOF}-web", home, ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/etc"], image)
    cluster.run("apply", "-f", "-", input=json.dumps(server))
    try:
        def address() -> str | None:
            status = cluster.get("-n", home, "pod", server["metadata"]["name"]).get("status", {})
            return status.get("podIP") if status.get("phase") == "Running" else None

        ip = _until(address, timeout=120)
        if not ip:
            return f"NetworkPolicy: the server pod in {home} did not start", False
        # The network admits a new pod's address to its namespace's set within seconds: a few tries.
        fetch = ["/bin/busybox", "sh", "-c", f"for i in 1 2 3 4 5; do /bin/busybox nc -w 3 {ip} 8080 </dev/null "
                 "&& exit 0; /bin/busybox sleep 2; done; exit 1"]
        same, _ = _run_pod(cluster, pod_manifest(f"{PROOF}-client", home, fetch, image))
        other, _ = _run_pod(cluster, pod_manifest(f"{PROOF}-client", later, fetch, image))
    finally:
        cluster.run("-n", home, "delete", "pod", server["metadata"]["name"], "--wait=false", check=False)
    good = same.get("exit") == 0 and other.get("exit") not in (0, None)
    said = {0: "reached"}
    return (f"NetworkPolicy: a pod in {home} {said.get(same.get('exit'), f'NOT reached ({same})')} its neighbour; "
            f"a pod in {later} {'was refused' if other.get('exit') not in (0, None) else f'NOT refused ({other})'}"), good


def proofs(loaded: LoadedSpec, kubectl: Path, state: Path) -> Iterator[Proof]:
    """The proofs, one after another, with the admin kubeconfig and the keys (a rotation's, if any) of the
    state directory."""
    spec = loaded.spec
    cluster = Cluster(kubectl, state / "admin.conf")
    image = kube_router_image()  # busybox is in it, on every node: no registry is needed
    yield nodes_ready(cluster, len(_kube_nodes(loaded)))
    yield api_ready(cluster)
    yield static_pods_ready(loaded, cluster)
    yield anonymous_refused(loaded)
    yield secret_encrypted(loaded, cluster, encryption_key_names(loaded, state / "secrets")[0])
    yield secret_audited(loaded, cluster)
    yield admission_plugins(loaded, cluster)
    with later_namespace(cluster) as later:
        yield namespace_baseline(loaded, cluster, later)
        restricted = [ns.name for ns in spec.namespaces if ns.pod_security == "restricted"]
        if spec.namespace_baseline.enabled and spec.namespace_baseline.pod_security == "restricted":
            restricted.append(later)
        yield privileged_pod_refused(cluster, restricted[0] if restricted else None, image)
        yield from runtime_classes(loaded, cluster, later, image)
        yield network_isolation(loaded, cluster, later, image)
