"""Semantic mutations of the templates, the firewall matrix, the CIS check and the rerun fingerprint.

Each mutation weakens one security claim. It is applied to a copy of the work tree and the unit suite runs
there without the golden files (`test_golden_sample` deselected): a mutation is killed when at least one
other test fails. Prints each mutation's outcome and the score; exits 1 below the target.

    .venv/bin/python bench/mutation_run.py [-k substring]

Mutations of the roles that only a real cluster shows (`LAB_MUTATIONS`) run with `--lab` instead: each brings
up the lab with Kubernetes for the lab tests it names (several minutes a mutation), so under the lab's lock:

    flock /run/hclab.lock .venv/bin/python bench/mutation_run.py --lab
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.90
# The oracles run first on their own (seconds); the whole unit suite only for a mutation they miss.
ORACLES = ["tests/unit/test_security_oracles.py", "tests/unit/test_cis_kube_bench.py", "tests/unit/test_cis.py",
           "tests/unit/test_converged.py", "tests/unit/test_fingerprint_kinds.py"]
TESTS = ["tests/unit"]
DESELECT = ["tests/unit/test_render.py::test_golden_sample"]
# Tests of things outside the tree (the offline bundle being built) that can change during a run.
IGNORE = ["tests/unit/test_bundle.py"]
FW, NFT, CIS, CONV = ("hardened_cluster/plan/firewall.py", "templates/etc/nftables.conf.j2", "hardened_cluster/verify/cis.py",
                      "hardened_cluster/deliver/rerun.py")
INIT, KUBELET = "templates/etc/kubernetes/kubeadm/kubeadm-init.yaml.j2", "templates/var/lib/kubelet/config.yaml.j2"
CLUSTER = "templates/etc/kubernetes/kubeadm/_cluster-configuration.yaml.j2"
SSHD, ETCD = "templates/etc/ssh/sshd_config.d/10-hardened-cluster.conf.j2", "templates/etc/etcd/etcd.conf.yml.j2"
DELIVER = "hardened_cluster/deliver/ansible.py"
PERMISSIONS, BOOTSTRAP = "roles/control_plane/tasks/permissions.yml", "roles/control_plane/tasks/bootstrap.yml"
GUARDS = "tests/lab/test_kubernetes_guards.py"
# The lab's instance and spec (HC_LAB_INSTANCE, HC_LAB_SPEC) pass through to the lab runs.
LAB_ENV = ("HC_LAB_INSTANCE", "HC_LAB_SPEC")

# name: (file, text, replacement); the first occurrence is replaced.
MUTATIONS = {
    "kubelet port open to every node": (FW, 'Rule("kubelet", "tcp", "10250", control_plane)',
                                        'Rule("kubelet", "tcp", "10250", kube_nodes)'),
    "ssh open to the nodes too": (FW, "Rule(\"ssh\", \"tcp\", str(spec.ssh_port(node)), admins)",
                                  "Rule(\"ssh\", \"tcp\", str(spec.ssh_port(node)), admins + kube_nodes)"),
    "etcd client port open to workers": (FW, "control_plane + etcd))", "kube_nodes + etcd))"),
    "api server open to everyone in the node CIDRs": (FW, "admins + kube_nodes + (spec.network.pod_cidr,)",
                                                      "admins + tuple(spec.network.node_cidrs) + (spec.network.pod_cidr,)"),
    "nodeports open when disabled": (FW, 'if "worker" not in node.roles or not spec.firewall.nodeport_range.enabled:',
                                     'if "worker" not in node.roles:'),
    "nodeports on control-plane nodes": (FW, 'if "worker" not in node.roles or', 'if "etcd" in node.roles or'),
    "input policy accept": (NFT, "type filter hook input priority filter; policy drop;",
                            "type filter hook input priority filter; policy accept;"),
    "forward: anyone to pods": (NFT, "{{ pods }} saddr { {{ nodes | join(', ') }} } {{ pods }} daddr",
                                "{{ pods }} daddr"),
    "forward: DNAT-ed traffic not diverted": (NFT, "ct status dnat ct original {{ services }} daddr != {{ forwarding.service_cidr }} goto external_dnat",
                                              "ct status dnat ct original {{ services }} daddr == {{ forwarding.service_cidr }} goto external_dnat"),
    "forward: external DNAT accepted": (NFT, "\t\tdrop\n\t}\n{% endif %}", "\t\taccept\n\t}\n{% endif %}"),
    "TLS 1.0 on the API server": (CLUSTER, "value: VersionTLS12", "value: VersionTLS10"),
    "bootstrap token never expires": (INIT, "ttl: 2h0m0s", "ttl: 0s"),
    "kube-proxy metrics on every address": (INIT, "metricsBindAddress: 127.0.0.1:10249", "metricsBindAddress: 0.0.0.0:10249"),
    "protectKernelDefaults false": (KUBELET, "protectKernelDefaults: true", "protectKernelDefaults: false"),
    "kubelet anonymous auth": (KUBELET, "anonymous:\n    enabled: false", "anonymous:\n    enabled: true"),
    "kubelet read-only port": (KUBELET, "readOnlyPort: 0", "readOnlyPort: 10255"),
    "kubelet TLS 1.0": (KUBELET, "tlsMinVersion: VersionTLS12", "tlsMinVersion: VersionTLS10"),
    "etcd clients over http": (ETCD, "listen-client-urls: https://", "listen-client-urls: http://"),
    "etcd without client certificates": (ETCD, "  client-cert-auth: true", "  client-cert-auth: false"),
    "etcd as root": ("templates/etc/systemd/system/etcd.service.j2", "User=etcd", "User=root"),
    "sshd passwords": (SSHD, "PasswordAuthentication no", "PasswordAuthentication yes"),
    "sshd root login": (SSHD, "PermitRootLogin no", "PermitRootLogin prohibit-password"),
    "kptr_restrict 0": ("templates/etc/sysctl.d/90-hardened-cluster.conf.j2", "kernel.kptr_restrict = 2",
                        "kernel.kptr_restrict = 0"),
    "network policy: any namespace in": ("templates/manifests/_baseline.yaml.j2",
                                         "  ingress:\n    - from:\n        - podSelector: {}",
                                         "  ingress:\n    - from:\n        - namespaceSelector: {}"),
    "CIS 1.2.2 looks at the wrong flag": (CIS, '_unset(flags, "token-auth-file")', '_unset(flags, "token-auth-files")'),
    "CIS 1.2.6 allows AlwaysAllow": (CIS, 'bool(modes) and "AlwaysAllow" not in modes', "bool(modes)"),
    "CIS 1.2.9 skips the plugin": (CIS, 'if "EventRateLimit" not in plugins:', "if False:"),
    "CIS 1.2.20 accepts 0s": (CIS, "_result(seconds > 0,", "_result(seconds >= 0,"),
    "CIS 1.2.28 ignores Secrets": (CIS, "if not any(r in SECRETS_RESOURCES", "if False and not any(r in SECRETS_RESOURCES"),
    "CIS 1.3.6 reads the gate as text": (CIS, '.get("RotateKubeletServerCertificate", True)',
                                         '.get("RotateKubeletServerCertificate", True) is not False or True'),
    "CIS 1.3.7 any bind address": (CIS, '"1.3.7": _equals(flags, "bind-address", "127.0.0.1")',
                                   '"1.3.7": _set(flags, "bind-address")'),
    "CIS 1.4.2 any bind address": (CIS, '"1.4.2": _equals(flags, "bind-address", "127.0.0.1")',
                                   '"1.4.2": _set(flags, "bind-address")'),
    "CIS 2.1 one of the pair is enough": (CIS, "if not cert or not private:", "if not cert and not private:"),
    "CIS 4.2.1 ignores anonymous": (CIS, "_result(anonymous is False,", "_result(True,"),
    "CIS 4.2.11 static certificate": (CIS, 'gate is not False and config.get("serverTLSBootstrap") is True',
                                      "gate is not False"),
    "CIS 4.2.13 any pid limit": (CIS, "isinstance(pids, int) and pids > 0", "pids != 0"),
    "CIS 4.2.x without --config": (CIS, "elif not _kubelet_reads_config(host):", "elif False:"),
    "CIS 4.3.1 any metrics address": (CIS, 'ok = address.startswith(("127.0.0.1:", "[::1]:"))', "ok = True"),
    "fingerprint loses nftables": (CONV, "\"nft list table inet hardened_cluster 2>&1; echo \\\"nft $?\\\"\",",
                                   "\"true\","),
    "fingerprint loses sysctls": (CONV, "f\"grep -H '' -- {sysctls} /proc/swaps 2>&1\",", "\"grep -H '' /proc/swaps\","),
    "fingerprint loses packages": (CONV, "| {DPKG_STATUS})", ")"),
    "drift parser ignores changed tasks": (DELIVER, "if res.get(\"changed\"):\n                result.changed += 1",
                                           "if False:\n                result.changed += 1"),
    "drift parser ignores changed loop items": (DELIVER, "if kind == \"runner_item_on_ok\" and res.get(\"changed\"):",
                                                "if False:"),
    "fingerprint loses units": (CONV, "\"systemctl show --property=Id,ActiveState,SubState,NRestarts -- $units\",", "\"true\","),
}
# name: (file, text, replacement, the lab tests that must fail).
LAB_MUTATIONS = {
    "kubeadm PKI left as kubeadm made it (certificates 0644)": (
        PERMISSIONS, '    - {path: /etc/kubernetes/pki, patterns: ["*"], recurse: true}\n', "",
        [f"{GUARDS}::test_kubeadm_pki_is_root_only_and_a_loosened_file_is_found_and_fixed"]),
    "kubeadm init run again on an initialised control plane": (
        BOOTSTRAP, "    - control_plane_init\n    - not control_plane_member\n", "    - control_plane_init\n",
        [f"{GUARDS}::test_a_rerun_on_the_initialised_control_plane_never_runs_kubeadm_init"]),
}


def copy_tree(destination: Path) -> None:
    # artifacts/build holds the build modules' go.mod files, which rendering reads (versions): copied.
    skipped = {ROOT / ".venv", ROOT / ".git"}

    def ignore(directory: str, names: list[str]) -> list[str]:
        return [n for n in names if Path(directory) / n in skipped or n in ("__pycache__", ".pytest_cache")]
    shutil.copytree(ROOT, destination, ignore=ignore, symlinks=True)


def run_suite(tree: Path, deselect: list[str], first_failure: bool = True,
              tests: list[str] = TESTS, lab: bool = False) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *(["-x"] if first_failure else []),
            *(f"--deselect={d}" for d in deselect), *(f"--ignore={i}" for i in IGNORE), *tests]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(tree), "HOME": "/root"}
    if lab:
        # The lab runs Ansible and the CLI from this interpreter's environment.
        env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
        env.update({k: os.environ[k] for k in LAB_ENV if k in os.environ})
    return subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, timeout=2400 if lab else 900)


def run_one(name: str, tree: Path, deselect: list[str]) -> tuple[bool, float, str]:
    lab_tests = LAB_MUTATIONS[name][3] if name in LAB_MUTATIONS else []
    path, text, replacement = (LAB_MUTATIONS[name][:3] if lab_tests else MUTATIONS[name])
    target = tree / path
    original = target.read_text()
    if text not in original:
        raise SystemExit(f"mutation {name!r}: {text!r} is not in {path} any more; update the list")
    target.write_text(original.replace(text, replacement, 1))
    started = time.monotonic()
    try:
        if lab_tests:
            proc = run_suite(tree, [], first_failure=False, tests=lab_tests, lab=True)
        else:
            proc = run_suite(tree, deselect, tests=ORACLES)
            if proc.returncode == 0:
                proc = run_suite(tree, deselect)
    finally:
        target.write_text(original)
    failed = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    # On the lab only a named test failing counts: a lab that did not come up (an ERROR) kills nothing.
    dead = any(line.startswith(f"FAILED {t}") for line in failed for t in lab_tests) if lab_tests else proc.returncode != 0
    return dead, time.monotonic() - started, failed[0] if failed else proc.stdout.strip()[-200:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only mutations whose name contains this")
    parser.add_argument("--lab", action="store_true", help="the role mutations, against lab tests (take the lab lock)")
    args = parser.parse_args()
    selected = [n for n in (LAB_MUTATIONS if args.lab else MUTATIONS) if args.k in n]
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        copy_tree(tree)
        if args.lab:
            # The lab tests must pass unmutated (one lab run for all of them) before a failure counts as a kill.
            tests = sorted({t for n in selected for t in LAB_MUTATIONS[n][3]})
            clean = run_suite(tree, [], first_failure=False, tests=tests, lab=True)
            if clean.returncode != 0:
                print("the unmutated lab tests fail:\n" + clean.stdout[-3000:])
                return 2
            return report(selected, tree, [])
        # Tests that fail on the unmutated tree (work in progress elsewhere) cannot tell; they are left out.
        baseline = run_suite(tree, DESELECT, first_failure=False)
        broken = sorted({line.split()[1] for line in baseline.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))})
        if baseline.returncode != 0 and not broken:
            print("the unmutated suite does not run:\n" + baseline.stdout[-2000:])
            return 2
        for test in broken:
            print(f"left out, fails unmutated: {test}")
        # A kill must be a mutation's doing: with what is left out, the unmutated tree passes.
        clean = run_suite(tree, DESELECT + broken, tests=ORACLES)
        if clean.returncode != 0:
            print("the unmutated oracles fail:\n" + clean.stdout[-2000:])
            return 2
        return report(selected, tree, DESELECT + broken)


def report(selected: list[str], tree: Path, deselect: list[str]) -> int:
    """Runs each mutation, prints its outcome and the score; 0 when the score meets the target."""
    killed = 0
    for name in selected:
        dead, seconds, evidence = run_one(name, tree, deselect)
        killed += dead
        print(f"{'killed  ' if dead else 'SURVIVED'} {seconds:5.1f}s  {name}: {evidence}", flush=True)
    score = killed / len(selected)
    print(f"{killed}/{len(selected)} mutations killed ({score:.0%}); target {TARGET:.0%}: "
          f"{'PASS' if score >= TARGET else 'FAIL'}")
    return 0 if score >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
