"""Artifacts the roles install (etcd, kubeadm, kubelet, kubectl, crictl, CNI plugins, gVisor, Kata), checksum-verified.

`artifacts/manifest.yaml` pins every release artifact's version and digest per Kubernetes minor and
architecture; an offline bundle (`hardened_cluster.deliver.bundle`) records its own in `bundle.json`.
`fetch` puts one artifact into the controller's cache from a `Source` (upstream release URLs, an HTTP
mirror, a local directory or a bundle) and refuses it unless the digest matches, so the roles only
ever copy verified files to the hosts.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from hardened_cluster import resources
from hardened_cluster.deliver import bundle
from hardened_cluster.plan.render import SANDBOX_HANDLERS, HostPlan, Plan
from hardened_cluster.spec.model import Spec

MANIFEST = resources.ARTIFACTS / "manifest.yaml"
ARCHES = ("amd64", "arm64")
# The kernel's name for each architecture: gVisor's release paths use it.
MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}
DIGEST_ALGORITHMS = ("sha256", "sha512")
KUBERNETES_BINARIES = ("kubeadm", "kubelet", "kubectl")
# What each phase installs from the manifest, beyond the Kubernetes binaries.
RUNTIME_TOOLS = ("crictl", "cni-plugins")
GVISOR = ("runsc", "containerd-shim-runsc-v1")
# containerd itself, its runc shim and ctr: Debian's 1.6 package serves the distro and release sources,
# a bundle brings containerd 2 (the version its build module pins, as bundle.json records it).
CONTAINERD = ("containerd", "containerd-shim-runc-v2", "ctr")
KATA = ("kata",)
ETCD = ("etcd", "etcdctl", "etcdutl")
KUBE_BENCH = ("kube-bench", "kube-bench-cfg")  # the bundle's kube-bench and its cfg/ archive
# A bundle holds what Go modules build; gVisor and Kata are not among them (Debian's runsc serves
# the bundle's nodes as it serves the distro's).
NOT_IN_BUNDLE = GVISOR + KATA
# Images a bundle's nodes import (no registry is pulled from): the pod sandbox, the node agents of
# the network and the service proxy, CoreDNS and the namespace-baseline controller on every node; the
# control plane's own on theirs.
NODE_IMAGES = ("image:pause", "image:kube-proxy", "image:kube-router", "image:coredns",
               f"image:{bundle.NAMESPACE_BASELINE}")
CONTROL_PLANE_IMAGES = ("image:kube-apiserver", "image:kube-controller-manager", "image:kube-scheduler")
DOWNLOAD_TIMEOUT = 60.0
CHUNK = 1 << 20


class ArtifactError(Exception):
    """An artifact is not pinned, cannot be found, or does not match its pinned digest. Stops the run."""


@dataclass(frozen=True)
class Entry:
    """One pinned file: what it is, where upstream keeps it, and the digest it must have."""

    name: str
    version: str
    arch: str
    digest: str  # "<algorithm>:<hex>"
    url: str
    checksum_url: str | None
    file: str
    format: Literal["binary", "tar.gz", "tar.xz"]

    @property
    def relpath(self) -> str:
        """Where a mirror or a local directory keeps the file."""
        return f"{self.name}/{self.version}/{self.arch}/{self.file}"

    def describe(self) -> str:
        return f"{self.name} {self.version} ({self.arch})"


@dataclass(frozen=True)
class Source:
    """Where artifacts come from: upstream release URLs, an HTTP mirror, a local directory, or Debian."""

    kind: Literal["release", "mirror", "directory", "distro", "bundle"] = "release"
    location: str | None = None  # mirror base URL, directory or bundle path

    def __post_init__(self) -> None:
        if self.kind in ("mirror", "directory", "bundle") and not self.location:
            raise ValueError(f"a {self.kind} artifact source needs a location")

    def describe(self) -> str:
        return f"'{self.kind}'" + (f" ({self.location})" if self.location else "")


def source_for(spec: Spec) -> Source:
    """The spec's artifact source (`runtimes.artifacts`, and `runtimes.bundle` for a bundle)."""
    if spec.runtimes.artifacts == "bundle":
        return Source("bundle", str(spec.runtimes.bundle))
    return Source(spec.runtimes.artifacts)


def _load(manifest: Path) -> dict:
    try:
        data = yaml.safe_load(manifest.read_text())
    except OSError as exc:
        raise ArtifactError(f"cannot read artifact manifest {manifest}: {exc.strerror}") from None
    if not isinstance(data, dict) or data.get("schema") != 1:
        raise ArtifactError(f"{manifest}: not an artifact manifest (schema: 1 expected)")
    return data


def entry(name: str, minor: int, arch: str, manifest: Path = MANIFEST) -> Entry:
    """The pinned entry for `name` on Kubernetes 1.<minor> and `arch`; raises when it is not pinned."""
    data = _load(manifest)
    where = f"{manifest.name}: kubernetes.\"1.{minor}\".{name}"
    if arch not in ARCHES:
        raise ArtifactError(f"architecture '{arch}' is not supported; allowed: {', '.join(ARCHES)}")
    meta = data.get("artifacts", {}).get(name)
    pin = data.get("kubernetes", {}).get(f"1.{minor}", {}).get(name)
    if meta is None or pin is None:
        raise ArtifactError(f"{where}: no such entry in {manifest}")
    version = pin.get("version")
    digest = (pin.get("digests") or {}).get(arch)
    if not version or not digest:
        raise ArtifactError(
            f"{where} ({arch}) is not pinned yet (version and digest are null); pin it with "
            f"`hardened-cluster artifacts pin --kubernetes 1.{minor}.<patch>` or pick a pinned Kubernetes minor"
        )
    algorithm, _, hexdigest = str(digest).partition(":")
    if algorithm not in DIGEST_ALGORITHMS or len(hexdigest) != hashlib.new(algorithm).digest_size * 2:
        raise ArtifactError(f"{where} ({arch}): digest '{digest}' is not <sha256|sha512>:<hex>")
    return _make(name, meta, str(version), arch, f"{algorithm}:{hexdigest.lower()}")


def _make(name: str, meta: dict, version: str, arch: str, digest: str) -> Entry:
    values = {"version": version, "arch": arch, "machine": MACHINE[arch]}
    return Entry(
        name=name,
        version=version,
        arch=arch,
        digest=digest,
        url=meta["url"].format(**values),
        checksum_url=meta["checksum_url"].format(**values) if meta.get("checksum_url") else None,
        file=meta["file"].format(**values),
        format=meta["format"],
    )


# Where each artifact lands on a host: a binary's path, or the directory an archive is unpacked in.
INSTALL = {
    "kubeadm": "/usr/local/bin/kubeadm",
    "kubelet": "/usr/local/bin/kubelet",
    "kubectl": "/usr/local/bin/kubectl",
    "etcd": "/usr/local/bin/etcd",
    "etcdctl": "/usr/local/bin/etcdctl",
    "etcdutl": "/usr/local/bin/etcdutl",
    "crictl": "/usr/local/bin",
    "cni-plugins": "/opt/cni/bin",
    "containerd": "/usr/local/bin/containerd",
    "containerd-shim-runc-v2": "/usr/local/bin/containerd-shim-runc-v2",
    "ctr": "/usr/local/bin/ctr",
    "runsc": "/usr/local/bin/runsc",
    "containerd-shim-runsc-v1": "/usr/local/bin/containerd-shim-runsc-v1",
    "kata": "/",  # the static tarball holds ./opt/kata/...
}


def handlers(host: HostPlan) -> list[str]:
    """The runtime handlers containerd has on `host` (none off Kubernetes nodes)."""
    return [SANDBOX_HANDLERS.get(r, r) for r in host.runtimes]


def names_for(phases: Iterable[str], runtime_handlers: Iterable[str], etcd_member: bool = False,
              source: str = "release", control_plane: bool = False) -> list[str]:
    """The artifacts the given phases install on a node whose containerd has these handlers."""
    phases, runtime_handlers = set(phases), set(runtime_handlers)
    names: list[str] = []
    if "etcd" in phases and etcd_member:
        # A release has one tarball of all three; a bundle has each binary and the upgrade steps.
        names += ETCD + bundle.ETCD_UPGRADE_STEPS if source == "bundle" else ETCD[:1]
    if "runtime" in phases and runtime_handlers:
        names += CONTAINERD if source == "bundle" else ()
        names += RUNTIME_TOOLS
        names += GVISOR if "runsc" in runtime_handlers else ()
        names += KATA if "kata" in runtime_handlers else ()
    if "kubernetes" in phases and runtime_handlers:
        names += KUBERNETES_BINARIES
        if source == "bundle":
            names += NODE_IMAGES + (CONTROL_PLANE_IMAGES if control_plane else ())
    if "benchmark" in phases and runtime_handlers and source == "bundle":
        names += KUBE_BENCH
    if source == "bundle":
        names = [n for n in names if n not in NOT_IN_BUNDLE or n in KATA]
    return names


def bundle_entry(name: str, spec: Spec, arch: str = "amd64") -> Entry:
    """The entry for `name` from the spec's bundle manifest (its sha256 as recorded by the build)."""
    try:
        built = bundle.load(spec.runtimes.bundle)
    except bundle.BundleError as exc:
        raise ArtifactError(str(exc)) from None
    a = built.artifacts.get(name)
    if a is None or name in KATA:
        raise ArtifactError(f"{name} is not in the bundle at {spec.runtimes.bundle}"
                            + (": Kata is not built from Go modules; leave the node out of runtimes.kata.nodes"
                               if name in KATA else ""))
    return Entry(name=name, version=a.version.lstrip("v"), arch=arch, digest=f"sha256:{a.sha256}",
                 url=a.file, checksum_url=None, file=Path(a.file).name,
                 format="tar.gz" if a.file.endswith(".tar.gz") else "binary")


def entries_for(spec: Spec, names: Iterable[str], arch: str = "amd64", manifest: Path = MANIFEST) -> list[Entry]:
    """Pinned entries for `names`; the Kubernetes binaries must match the spec's version exactly."""
    out = []
    from_bundle = spec.runtimes.artifacts == "bundle"
    for name in names:
        e = bundle_entry(name, spec, arch) if from_bundle else entry(name, spec.cluster.minor, arch, manifest)
        if name in KUBERNETES_BINARIES and e.version != spec.cluster.kubernetes_version:
            raise ArtifactError(
                f"{'the bundle at ' + str(spec.runtimes.bundle) + ' has' if from_bundle else manifest.name + ' pins'} "
                f"{name} {e.version} for Kubernetes 1.{spec.cluster.minor}, but "
                f"cluster.kubernetes_version is {spec.cluster.kubernetes_version}: use {e.version}, or pin "
                f"{spec.cluster.kubernetes_version} with `hardened-cluster artifacts pin --kubernetes "
                f"{spec.cluster.kubernetes_version}`"
            )
        out.append(e)
    return out


def default_cache_dir() -> Path:
    root = os.environ.get("HC_ARTIFACT_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "hardened-cluster" / "artifacts"


def cache_path(e: Entry, cache_dir: Path | None = None) -> Path:
    """Where `fetch` keeps a verified copy of `e` (the roles' `src`)."""
    return (cache_dir or default_cache_dir()) / e.relpath


def _hasher(e: Entry):
    return hashlib.new(e.digest.partition(":")[0])


def _digest_of(path: Path, e: Entry) -> str:
    h = _hasher(e)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            h.update(chunk)
    return f"{h.name}:{h.hexdigest()}"


def _origin(e: Entry, source: Source) -> str:
    if source.kind == "release":
        return e.url
    if source.kind == "mirror":
        return f"{source.location.rstrip('/')}/{e.relpath}"
    if source.kind == "bundle":
        return str(Path(source.location) / e.url)  # a bundle entry's url is its path in the bundle
    return str(Path(source.location).expanduser() / e.relpath)


def _open(e: Entry, source: Source, origin: str):
    """A readable stream of the artifact, or ArtifactError naming what is missing and where."""
    missing = f"{e.describe()} not found in artifact source {source.describe()} (looked at: {origin})"
    if source.kind in ("directory", "bundle"):
        try:
            return open(origin, "rb")  # noqa: SIM115 - closed by the caller's `with`
        except FileNotFoundError:
            raise ArtifactError(missing) from None
        except OSError as exc:
            raise ArtifactError(f"{e.describe()}: cannot read {origin}: {exc.strerror}") from None
    try:
        return urllib.request.urlopen(origin, timeout=DOWNLOAD_TIMEOUT)  # noqa: S310 - https/http only, see Source
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise ArtifactError(missing) from None
        raise ArtifactError(f"{e.describe()}: {origin} answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ArtifactError(f"{e.describe()}: cannot download {origin}: {reason}") from None


def fetch(e: Entry, source: Source, cache_dir: Path | None = None) -> Path:
    """The verified cached copy of `e`, fetched from `source` when the cache has no good copy.

    The file is written beside its final name and only renamed into place once its digest matches,
    so the cache never holds an unverified file. A mismatch raises ArtifactError naming both
    digests and where the file came from.
    """
    if source.kind == "distro":
        raise ArtifactError(
            f"{e.describe()} not found in artifact source 'distro' (looked in: Debian packages): "
            "Debian does not package it; set runtimes.artifacts: release"
        )
    target = cache_path(e, cache_dir)
    if target.is_file() and _digest_of(target, e) == e.digest:
        return target
    origin = _origin(e, source)
    if source.kind in ("release", "mirror") and not origin.startswith(("https://", "http://")):
        raise ArtifactError(f"{e.describe()}: {origin} is not an http(s) URL")
    target.parent.mkdir(parents=True, exist_ok=True)
    h = _hasher(e)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{e.file}.", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, _open(e, source, origin) as stream:
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                h.update(chunk)
                out.write(chunk)
        got = f"{h.name}:{h.hexdigest()}"
        if got != e.digest:
            raise ArtifactError(
                f"{e.describe()} from {origin} has digest {got}, but the manifest pins {e.digest}: "
                "refusing it (a changed or corrupted download, or a wrong pin); nothing was installed"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def fetch_for(plan: Plan, phases: Iterable[str], arch: str = "amd64", cache_dir: Path | None = None) -> None:
    """Fill the cache with every artifact the phases install on the plan's hosts, verified.

    Runs before Ansible: an unpinned, missing or mismatching artifact stops the run with nothing
    changed on any host. Nothing is fetched from a distro source (the roles use Debian's packages).
    """
    source = source_for(plan.spec)
    if source.kind == "distro":
        return
    names = {name for host in plan.hosts.values()
             for name in names_for(phases, handlers(host), "etcd" in host.node.roles, source.kind,
                                   "control-plane" in host.node.roles)}
    for e in entries_for(plan.spec, sorted(names), arch):
        fetch(e, source, cache_dir)


def _install_list(spec: Spec, names: Iterable[str], arch: str, cache_dir: Path | None) -> list[dict]:
    out = []
    for name in names:
        try:
            [e] = entries_for(spec, [name], arch)
        except ArtifactError as exc:
            # Reported by the role that needs it, so phases that do not need it still run.
            out.append({"name": name, "unavailable": str(exc)})
            continue
        out.append({"name": name, "version": e.version, "src": str(cache_path(e, cache_dir)),
                    "dest": INSTALL[name], "format": e.format})
    return out


def kubernetes_bin_dir(spec: Spec) -> str:
    """Where kubeadm, the kubelet and kubectl are on the nodes: Debian-style packages (pkgs.k8s.io) put
    them in /usr/bin, release and bundle binaries go to /usr/local/bin."""
    return "/usr/bin" if source_for(spec).kind == "distro" else "/usr/local/bin"


def host_vars(spec: Spec, host: HostPlan, arch: str = "amd64", cache_dir: Path | None = None) -> dict:
    """Role variables for a Kubernetes node: where its release artifacts are and where they go."""
    runtime_handlers = handlers(host)
    if not runtime_handlers:
        return {}
    source = source_for(spec).kind
    release = source != "distro"
    runtime_names = names_for(["runtime"], runtime_handlers, source=source)
    images = names_for(["kubernetes"], runtime_handlers, source=source,
                       control_plane="control-plane" in host.node.roles)
    return {
        "kubernetes_node_images": _image_list(spec, [n for n in images if n.startswith("image:")], arch, cache_dir),
        "container_runtime_artifact_source": source,
        "container_runtime_handlers": runtime_handlers,
        "container_runtime_release_files": _install_list(spec, runtime_names, arch, cache_dir) if release else [],
        "kubernetes_node_artifact_source": source,
        "kubernetes_node_binaries": _install_list(spec, KUBERNETES_BINARIES, arch, cache_dir) if release else [],
        "kubernetes_node_bin_dir": kubernetes_bin_dir(spec),
    }


# Where an etcd upgrade step's binary waits on a member until the step runs.
ETCD_STEP_DIR = "/usr/local/libexec/hardened-cluster"


def _binary_file(e: Entry, dest: str, cache_dir: Path | None) -> dict:
    return {"name": e.name, "version": e.version, "src": str(cache_path(e, cache_dir)), "dest": dest,
            "sha256": e.digest.partition(":")[2], "mode": "0755", "owner": "root", "group": "root"}


def _image_list(spec: Spec, names: list[str], arch: str, cache_dir: Path | None) -> list[dict]:
    """The bundle's image archives for a node: each with the reference containerd knows it by."""
    if not names:
        return []
    try:
        built = bundle.load(spec.runtimes.bundle)
    except bundle.BundleError:
        built = None  # each entry below reports it as unavailable
    out = []
    for name in names:
        try:
            e = bundle_entry(name, spec, arch)
        except ArtifactError as exc:
            # Reported by the role that needs it, so phases that do not need it still run.
            out.append({"name": name.removeprefix("image:"), "unavailable": str(exc)})
            continue
        image = built.artifacts[name]
        out.append({"name": name.removeprefix("image:"), "reference": image.reference,
                    "held_as": f"{image.reference}@{image.image_id}", "src": str(cache_path(e, cache_dir))})
    return out


def etcd_host_vars(spec: Spec, arch: str = "amd64", cache_dir: Path | None = None) -> dict:
    """Role variables for an etcd member: the verified binaries to install and the minor versions a
    running older cluster must step through (etcd upgrades one minor at a time); none from Debian."""
    source = source_for(spec).kind
    out = {"etcd_artifact_source": source, "etcd_binary_files": [], "etcd_upgrade_steps": [],
           "etcd_unavailable": []}
    if source == "distro":
        return out
    try:
        entries = entries_for(spec, ETCD if source == "bundle" else ETCD[:1], arch)
        steps = entries_for(spec, bundle.ETCD_UPGRADE_STEPS, arch) if source == "bundle" else []
    except ArtifactError as exc:
        out["etcd_unavailable"].append(str(exc))  # reported by the etcd role, so other phases still run
        return out
    if any(e.format != "binary" for e in entries):
        out["etcd_unavailable"].append(f"etcd from artifact source '{source}' is not pinned as binaries")
        return out
    out["etcd_binary_files"] = [_binary_file(e, INSTALL[e.name], cache_dir) for e in entries]
    out["etcd_version"] = entries[0].version
    for e in steps:
        step = _binary_file(e, f"{ETCD_STEP_DIR}/{e.name}", cache_dir)
        out["etcd_upgrade_steps"].append(step | {"minor": ".".join(e.version.split(".")[:2])})
    return out


def _upstream_digest(e: Entry) -> str:
    """The digest upstream publishes next to the artifact."""
    algorithm = "sha512" if e.checksum_url.endswith(".sha512") else "sha256"
    try:
        with urllib.request.urlopen(e.checksum_url, timeout=DOWNLOAD_TIMEOUT) as answer:  # noqa: S310
            words = answer.read(4096).decode().split()
    except (urllib.error.URLError, OSError) as exc:
        raise ArtifactError(f"{e.name}: cannot read {e.checksum_url}: {getattr(exc, 'reason', exc)}") from None
    if not words or len(words[0]) != hashlib.new(algorithm).digest_size * 2:
        raise ArtifactError(f"{e.name}: {e.checksum_url} holds no {algorithm} digest")
    return f"{algorithm}:{words[0].lower()}"


def pin(kubernetes_version: str, arches: Iterable[str] = ARCHES, manifest: Path = MANIFEST) -> str:
    """`hardened-cluster artifacts pin`: the manifest block for one Kubernetes version, from upstream's
    published checksum files (kubeadm, kubelet, kubectl at that version; crictl at <minor>.0).

    Returns YAML for the operator to review and paste under `kubernetes:`; the shared artifacts
    (CNI plugins, gVisor, Kata) keep their pins.
    """
    meta = _load(manifest)["artifacts"]
    minor = ".".join(kubernetes_version.lstrip("v").split(".")[:2])
    versions = {name: kubernetes_version.lstrip("v") for name in KUBERNETES_BINARIES} | {"crictl": f"{minor}.0"}
    block = {}
    for name, version in versions.items():
        digests = {arch: _upstream_digest(_make(name, meta[name], version, arch, "")) for arch in arches}
        block[name] = {"version": version, "digests": digests}
    return yaml.safe_dump({minor: block}, sort_keys=False)
