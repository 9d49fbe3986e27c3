"""Every certificate of the cluster and when it expires (`hardened-cluster certs`).

Two sources: the state store (the plan's PKI) and the nodes. On each node a root shell prints the
certificate blocks of what kubeadm and the kubelet write and of the copies the plan delivers there,
and nothing else: the kubelet's .pem files and the kubeconfigs hold a key beside the certificate,
so only certificate blocks and the kubeconfigs' certificate fields leave the node. They are parsed
here. A certificate expiring within pki.RENEW_BEFORE is a finding, and so is a delivered copy that
is not the state store's.
"""
from __future__ import annotations

import base64
import binascii
import json
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from hardened_cluster.deliver.preflight import Command, require_key_file, ssh_run
from hardened_cluster.errors import DeliveryError
from hardened_cluster.plan.render import HostPlan, Plan
from hardened_cluster.secrets.pki import RENEW_BEFORE, ClusterPKI

# kubeadm's certificates and kubeconfigs, the kubelet's: its -current links name the pairs in use (rotated
# files stay behind beside them and are not listed).
NODE_GLOBS = ("/etc/kubernetes/pki/*.crt", "/etc/kubernetes/pki/etcd/*.crt", "/etc/kubernetes/*.conf",
              "/var/lib/kubelet/pki/*.crt", "/var/lib/kubelet/pki/*-current.pem")
KUBECONFIG_FIELDS = ("certificate-authority-data", "client-certificate-data")
STORE = "state store"
_BEGIN, _END_CERT = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
_DONE = "hc-certs-end"


@dataclass(frozen=True)
class Cert:
    path: str  # file on the host (a kubeconfig's field follows its path), or path in the PKI directory
    subject: str
    issuer: str
    serial: str
    not_after: datetime
    days_left: int
    sans: tuple[str, ...]
    sha256: str
    problems: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"path": self.path, "subject": self.subject, "issuer": self.issuer, "serial": self.serial,
                "not_after": _iso(self.not_after), "days_left": self.days_left, "sans": list(self.sans),
                "sha256": self.sha256, "problems": list(self.problems)}


@dataclass
class HostCerts:
    roles: tuple[str, ...]
    address: str
    certs: list[Cert] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the host's own: unreachable, a delivered copy missing


@dataclass
class CertReport:
    now: datetime
    store: list[Cert]
    hosts: dict[str, HostCerts]

    def findings(self) -> list[str]:
        out = [f"{STORE} {c.path}: {p}" for c in self.store for p in c.problems]
        for name, host in self.hosts.items():
            out += [f"{name}: {p}" for p in host.problems]
            out += [f"{name} {c.path}: {p}" for c in host.certs for p in c.problems]
        return out

    def to_json(self) -> str:
        return json.dumps({
            "now": _iso(self.now),
            "renew_before_days": RENEW_BEFORE.days,
            "store": [c.to_dict() for c in self.store],
            "hosts": {name: {"roles": list(h.roles), "address": h.address, "problems": h.problems,
                             "certificates": [c.to_dict() for c in h.certs]} for name, h in self.hosts.items()},
            "findings": self.findings(),
        }, indent=1)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now(now: datetime | None) -> datetime:
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc)


def _sans(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple([f"DNS:{n}" for n in names.get_values_for_type(x509.DNSName)]
                 + [f"IP:{a}" for a in names.get_values_for_type(x509.IPAddress)])


def expiry_problem(not_after: datetime, now: datetime) -> str | None:
    """Why a certificate valid until `not_after` needs attention, or None."""
    left = not_after - now
    if left <= timedelta(0):
        return f"expired {_iso(not_after)}"
    if left <= RENEW_BEFORE:
        return f"expires within {RENEW_BEFORE.days} days ({_iso(not_after)})"
    return None


def describe(path: str, cert: x509.Certificate, now: datetime, problems: tuple[str, ...] = ()) -> Cert:
    not_after = cert.not_valid_after_utc
    expiring = expiry_problem(not_after, now)
    return Cert(path, cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), f"{cert.serial_number:x}",
                not_after, (not_after - now) // timedelta(days=1), _sans(cert),
                cert.fingerprint(hashes.SHA256()).hex(), (*([expiring] if expiring else []), *problems))


def store_certificates(pki: ClusterPKI, now: datetime | None = None) -> list[Cert]:
    """The state store's certificates, each with its expiry problem if it has one."""
    now = _now(now)
    return [describe(path, x509.load_pem_x509_certificate(pem.encode("ascii")), now)
            for path, pem in pki.certificates().items()]


def delivered(host: HostPlan) -> dict[str, str]:
    """The certificates the plan places on `host` (copies of the store's), by path."""
    return {f.path: f.content for f in host.files.values() if f.content.startswith(_BEGIN)}


def script(planned: list[str]) -> str:
    """Shell (run as root) that prints each certificate file's path and its certificate blocks, each
    kubeconfig's certificate fields, then `!! <path>` for each planned file that is missing."""
    paths = " ".join([*NODE_GLOBS, *(shlex.quote(p) for p in planned)])
    wanted = " || ".join(f'$1 == "{name}:"' for name in KUBECONFIG_FIELDS)
    return "\n".join([
        "seen=' '",
        f"for f in {paths}; do",
        '  [ -f "$f" ] || continue',  # a glob that matched nothing stays as it is
        '  case "$seen" in *" $f "*) continue ;; esac',
        '  seen="$seen$f "',
        '  echo "== $f"',
        '  case "$f" in',
        f"    *.conf) awk '{wanted} {{ print \"-- \" substr($1, 1, length($1) - 1) \" \" $2 }}' \"$f\" ;;",
        f"    *) awk '/^{_BEGIN}/ {{ p = 1 }} p {{ print }} /^{_END_CERT}/ {{ p = 0 }}' \"$f\" ;;",
        "  esac",
        "done",
        *([f'for f in {" ".join(shlex.quote(p) for p in planned)}; do [ -f "$f" ] || echo "!! $f"; done']
          if planned else []),
        f"echo {_DONE}",
    ]) + "\n"


def parse(out: str) -> tuple[dict[str, list[tuple[str, str]]], list[str]]:
    """What `script` printed: per file its (label, PEM) certificates, and the missing planned files.

    Raises ValueError when the listing did not run to its end.
    """
    lines = out.splitlines()
    if not lines or lines[-1] != _DONE:
        raise ValueError("the listing did not run to its end")
    files: dict[str, list[tuple[str, str]]] = {}
    missing: list[str] = []
    current, block = "", []
    for line in lines[:-1]:
        if line.startswith("== "):
            current = line[3:]
            files[current] = []
        elif line.startswith("!! "):
            missing.append(line[3:])
        elif line.startswith("-- "):
            name, _, data = line[3:].partition(" ")
            try:
                text = base64.b64decode(data, validate=True).decode("ascii")
            except (binascii.Error, UnicodeDecodeError):
                text = ""
            blocks = _blocks(text.splitlines()) or [""]
            files[current] += [(f"{current} {name}", pem) for pem in blocks]
        else:
            block.append(line)
            if line == _END_CERT:
                files[current] += [(current, pem) for pem in _blocks(block)]
                block = []
    return files, missing


def _blocks(lines: list[str]) -> list[str]:
    out, block = [], None
    for line in lines:
        if line == _BEGIN:
            block = [line]
        elif block is not None:
            block.append(line)
            if line == _END_CERT:
                out.append("\n".join(block) + "\n")
                block = None
    return out


def _load(pem: str) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return None


def _fingerprints(pem_text: str) -> set[bytes]:
    return {c.fingerprint(hashes.SHA256()) for pem in _blocks(pem_text.splitlines()) if (c := _load(pem))}


def host_certs(host: HostPlan, out: str, now: datetime) -> HostCerts:
    """One host's certificates from what `script` printed there, each delivered copy compared with the plan's."""
    result = HostCerts(tuple(host.node.roles), str(host.node.address))
    try:
        files, missing = parse(out)
    except ValueError as exc:
        result.problems.append(str(exc))
        return result
    planned = delivered(host)
    result.problems += [f"{path}: missing (the plan delivers the state store's copy)" for path in missing]
    for path, entries in files.items():
        store_copy = planned.get(path)
        stale: tuple[str, ...] = ()
        if store_copy is not None and _fingerprints("".join(pem for _, pem in entries)) != _fingerprints(store_copy):
            stale = (_stale(entries, store_copy),)
        for label, pem in entries:
            cert = _load(pem)
            if cert is None:
                result.problems.append(f"{label}: not a readable certificate")
            else:
                result.certs.append(describe(label, cert, now, stale))
        if not entries and not path.endswith(".conf"):  # a kubeconfig may name certificate files instead
            result.problems.append(f"{path}: holds no certificate")
    return result


def _stale(entries: list[tuple[str, str]], store_copy: str) -> str:
    ours = _load(_blocks(store_copy.splitlines())[0])
    theirs = [c for _, pem in entries if (c := _load(pem))]
    older = theirs and all(c.not_valid_before_utc < ours.not_valid_before_utc for c in theirs)
    what = "an older copy than" if older else "not the copy in"
    return f"stale: {what} the state store (the store's expires {_iso(ours.not_valid_after_utc)}, serial {ours.serial_number:x})"


def _ask(plan: Plan, host: HostPlan, now: datetime) -> HostCerts:
    command = Command("exec sudo -n sh -s", script(sorted(delivered(host))))
    try:
        rc, out, err = ssh_run(plan.loaded, host.node, command, timeout=60)
    except DeliveryError as exc:
        return HostCerts(tuple(host.node.roles), str(host.node.address), problems=[str(exc)])
    result = host_certs(host, out, now)
    if rc != 0:
        result.problems.append(f"the listing exited {rc}: {err.strip()[:200]}")
    return result


def list_certificates(plan: Plan, *, now: datetime | None = None) -> CertReport:
    """The state store's certificates and every node's (over SSH, in parallel), with their findings."""
    require_key_file(plan.loaded)
    now = _now(now)
    hosts = list(plan.hosts.values())
    with ThreadPoolExecutor(max_workers=min(32, max(1, len(hosts)))) as pool:
        found = list(pool.map(lambda h: _ask(plan, h, now), hosts))
    return CertReport(now, store_certificates(plan.pki, now), {h.node.name: r for h, r in zip(hosts, found)})


def lines(report: CertReport) -> list[str]:
    """The report as a table per host, then the findings."""
    out: list[str] = []
    sections = [(STORE, "", report.store)] + [
        (name, f" ({', '.join(h.roles)}, {h.address})", h.certs) for name, h in report.hosts.items()]
    for name, about, certs in sections:
        out.append(f"{name}{about}")
        rows = [("PATH", "SUBJECT", "ISSUER", "NOT AFTER", "DAYS")] + [
            (c.path, c.subject, c.issuer, _iso(c.not_after), str(c.days_left)) for c in certs]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        out += ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[4] for r in rows]
    findings = report.findings()
    out += ["findings:"] + [f"  {f}" for f in findings] if findings else []
    total = len(report.store) + sum(len(h.certs) for h in report.hosts.values())
    out.append(f"{total} certificates ({len(report.store)} in the {STORE}, the rest on {len(report.hosts)} hosts); "
               f"{len(findings)} findings")
    return out
