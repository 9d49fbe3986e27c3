"""Loading a spec: the YAML read once, the model validated, then the checks across keys and files.

`load_spec` is the only way in. Every problem is reported with its key path (`nodes[3].roles`) and what is
allowed; nothing is contacted while loading.
"""
from __future__ import annotations

import base64
import binascii
import errno
import ipaddress
import os
import stat
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hardened_cluster.errors import SpecError, SpecIssue
from hardened_cluster.secrets.age_key import identity_problem
from hardened_cluster.spec import rules as spec_rules
from hardened_cluster.spec.limits import LOADER, MAX_BYTES, document_issues
from hardened_cluster.spec.messages import dedupe, validation_issues
from hardened_cluster.spec.model import KEY_LENGTHS, LoadedSpec, SecretRef, Spec, parse_host_key
from hardened_cluster.spec.text import shown




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
        parsed = parse_host_key(key)
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
            parsed = parse_host_key(node.ssh.host_key)
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
        got = "an empty document" if data is None else shown(data)
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
    issues += dedupe([i for i in spec_rules.semantic_issues(spec) if i.path not in taken])
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
