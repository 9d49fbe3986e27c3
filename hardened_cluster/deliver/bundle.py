"""The offline bundle: every binary and image a cluster installs, built here from pinned Go modules.

Each build module under `artifacts/build/<dir>/` (a `go.mod` + `go.sum` of our own, `tool` lines naming
the commands) pins what one group of artifacts is built from; the versions below are read from those
files, never written twice. `build` compiles what its cache lacks, keyed on the module files, the
package, the flags and the Go version; a bundle directory gets the binaries, OCI image archives made
from them, and `bundle.json` (name, version, sha256, size, source module@version of every file).
A bundle directory is an artifact source of the spec (`runtimes.artifacts: bundle`,
`runtimes.bundle: DIR`): the controller checks every digest before anything reaches a host.
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hardened_cluster import resources
from hardened_cluster.deliver import oci
from hardened_cluster.plan import kubeadm

BUILD_ROOT = resources.ARTIFACTS / "build"
BUNDLE_MANIFEST = "bundle.json"
BUNDLE_SCHEMA = 1
DEFAULT_KUBERNETES = "1.35.4"
GO_TIMEOUT = 3 * 3600.0
# A go command that failed on the way to the module proxy is tried again, this often, waiting longer each time.
GO_ATTEMPTS = 4
GO_RETRY_SECONDS = 10
GO_TRANSIENT = re.compile(r"unexpected EOF|connection (?:abort|reset|refused)|i/o timeout|TLS handshake timeout|"
                          r"timeout awaiting response headers|server misbehaving|\b50[234] (?:Bad Gateway|Service "
                          r"Unavailable|Gateway Timeout)|stream error|context deadline exceeded")


class BundleError(Exception):
    """The bundle cannot be built or read; the message names the artifact and the reason."""


def cache_root() -> Path:
    return Path(os.environ.get("HC_CACHE_DIR", "/var/cache/hardened-cluster"))


def default_out(kubernetes: str) -> Path:
    return cache_root() / "bundle" / kubernetes


@dataclass(frozen=True)
class GoBinary:
    """One command built from a build module."""

    name: str  # file name in the bundle
    build: str  # directory under artifacts/build
    package: str  # import path of the main package
    module: str  # the module whose pinned version this binary carries
    ldflags: tuple[str, ...] = ()  # -X name=value, with {version} {semver} {major} {minor} {date} filled in
    # A main package that embeds files its go:generate step makes before a release (not in the module
    # zip): it is built from a copy in the cache, after this command of upstream's has run in it with
    # VERSION set (the plugin's semantic version).
    generate: tuple[str, ...] = ()

    @property
    def build_dir(self) -> Path:
        return BUILD_ROOT / self.build


K8S_VERSION_VARS = tuple(
    f"{pkg}.{var}={value}"
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
    for var, value in (("gitVersion", "{version}"), ("gitMajor", "{major}"), ("gitMinor", "{minor}"),
                       # Built from the module zip, not a git tree: kubeadm's word for that is "archive".
                       ("gitTreeState", "archive"), ("buildDate", "{date}"))
)
# Our own controller that gives namespaces created after apply the baseline (client-go informers).
NAMESPACE_BASELINE = "namespace-baseline"
NAMESPACE_BASELINE_MODULE = "hardened-cluster/artifacts/build/namespace-baseline"
KUBERNETES_COMMANDS = ("kubeadm", "kubelet", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                       "kubectl", "kube-proxy")
# etcd upgrades one minor at a time: a running 3.4 cluster (Debian's) steps through 3.5 to reach 3.6.
ETCD_UPGRADE_STEPS = ("etcd-3.5",)
CNI_PLUGINS = {"bridge": "main/bridge", "loopback": "main/loopback", "host-local": "ipam/host-local",
               "portmap": "meta/portmap"}


def kubernetes_build(kubernetes: str) -> str:
    return "kubernetes-" + ".".join(kubernetes.split(".")[:2])


def coredns_build(kubernetes: str) -> str:
    """CoreDNS follows the Kubernetes minor (kubeadm names its tag): one build module per minor."""
    return "coredns-" + ".".join(kubernetes.split(".")[:2])


COREDNS_MODULE = "github.com/coredns/coredns"


def binaries(kubernetes: str) -> list[GoBinary]:
    k8s = kubernetes_build(kubernetes)
    out = [GoBinary(c, k8s, f"k8s.io/kubernetes/cmd/{c}", "k8s.io/kubernetes", K8S_VERSION_VARS)
           for c in KUBERNETES_COMMANDS]
    out += [
        GoBinary("etcd", "etcd", "go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/server/v3"),
        GoBinary("etcdctl", "etcd", "go.etcd.io/etcd/etcdctl/v3", "go.etcd.io/etcd/etcdctl/v3"),
        GoBinary("etcdutl", "etcd", "go.etcd.io/etcd/etcdutl/v3", "go.etcd.io/etcd/etcdutl/v3"),
    ]
    out += [GoBinary(step, step, "go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/server/v3")
            for step in ETCD_UPGRADE_STEPS]
    containerd_version = ("github.com/containerd/containerd/v2/version.Version={version}",)
    out += [GoBinary(c, "containerd", f"github.com/containerd/containerd/v2/cmd/{c}",
                     "github.com/containerd/containerd/v2", containerd_version)
            for c in ("containerd", "containerd-shim-runc-v2", "ctr")]
    out.append(GoBinary("crictl", "cri-tools", "sigs.k8s.io/cri-tools/cmd/crictl", "sigs.k8s.io/cri-tools",
                        ("sigs.k8s.io/cri-tools/pkg/version.Version={version}",)))
    out += [GoBinary(f"cni-{name}", "cni-plugins", f"github.com/containernetworking/plugins/plugins/{path}",
                     "github.com/containernetworking/plugins",
                     ("github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion={version}",))
            for name, path in CNI_PLUGINS.items()]
    out.append(GoBinary("coredns", coredns_build(kubernetes), COREDNS_MODULE, COREDNS_MODULE))
    # gVisor's `go` branch is a module with no releases: its pseudo-version names the commit.
    gvisor_version = ("gvisor.dev/gvisor/runsc/version.version={version}",)
    out += [GoBinary(name, "gvisor", f"gvisor.dev/gvisor/{package}", "gvisor.dev/gvisor", gvisor_version)
            for name, package in (("runsc", "runsc"), ("containerd-shim-runsc-v1", "shim"))]
    out.append(GoBinary("kube-router", "kube-router", "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router",
                        "github.com/cloudnativelabs/kube-router/v2",
                        ("github.com/cloudnativelabs/kube-router/v2/pkg/version.Version={version}",
                         "github.com/cloudnativelabs/kube-router/v2/pkg/version.BuildDate={date}")))
    out.append(GoBinary("kube-bench", "kube-bench", "github.com/aquasecurity/kube-bench",
                        "github.com/aquasecurity/kube-bench",
                        ("github.com/aquasecurity/kube-bench/cmd.KubeBenchVersion={version}",)))
    out.append(GoBinary("pulumi", "pulumi", "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi", "github.com/pulumi/pulumi/pkg/v3",
                        ("github.com/pulumi/pulumi/sdk/v3/go/common/version.Version={version}",)))
    out.append(GoBinary("pulumi-resource-kubernetes", "pulumi-kubernetes",
                        "github.com/pulumi/pulumi-kubernetes/provider/v4/cmd/pulumi-resource-kubernetes",
                        "github.com/pulumi/pulumi-kubernetes/provider/v4",
                        ("github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version={semver}",),
                        generate=("run", "generate.go")))
    out.append(GoBinary("pause", "pause", "hardened-cluster/artifacts/build/pause", "hardened-cluster/artifacts/build/pause"))
    out.append(GoBinary(NAMESPACE_BASELINE, NAMESPACE_BASELINE, NAMESPACE_BASELINE_MODULE, NAMESPACE_BASELINE_MODULE))
    return out


@dataclass(frozen=True)
class Artifact:
    """One file of a bundle, as `bundle.json` records it."""

    name: str
    version: str
    file: str  # relative to the bundle directory
    sha256: str
    size: int
    source: str  # module@version, or what the file was made from
    kind: str  # binary | image | archive
    reference: str = ""  # an image's name as containerd knows it after import
    image_id: str = ""  # and its ID there (its config's digest)

    def describe(self) -> str:
        return f"{self.name} {self.version}"


# --- the Go toolchain -------------------------------------------------------------------------------


def go_env() -> dict[str, str]:
    """The environment of every go command: caches under the cache root, static binaries, no VCS."""
    root = cache_root() / "go"
    env = dict(os.environ)
    env.update(GOMODCACHE=str(root / "mod"), GOCACHE=str(root / "build"), CGO_ENABLED="0",
               GOFLAGS="-mod=readonly -trimpath -buildvcs=false", GOTOOLCHAIN="local")
    return env


def go_path() -> str:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise BundleError("Go is not installed (looked for `go` on PATH and /usr/local/go/bin/go); "
                          "the bundle is built from Go modules")
    return go


def transient(stderr: str) -> bool:
    """Whether a go command failed on the way to the module proxy (a dropped or refused connection, a
    truncated zip, a gateway error), not on the modules themselves: worth another attempt."""
    return bool(GO_TRANSIENT.search(stderr))


def _go(args: list[str] | tuple[str, ...], cwd: Path, timeout: float = GO_TIMEOUT,
        env: dict[str, str] | None = None) -> str:
    for attempt in range(1, GO_ATTEMPTS + 1):
        result = subprocess.run([go_path(), *args], cwd=cwd, env={**go_env(), **(env or {})}, capture_output=True,
                                text=True, timeout=timeout, check=False)
        if result.returncode == 0:
            return result.stdout
        if attempt == GO_ATTEMPTS or not transient(result.stderr):
            break
        # What was fetched stays in the module cache: the next attempt goes on from there.
        time.sleep(GO_RETRY_SECONDS * attempt)
    tail = "\n".join(result.stderr.strip().splitlines()[-15:])
    where = cwd.relative_to(resources.ROOT) if cwd.is_relative_to(resources.ROOT) else cwd
    tries = f" ({attempt} attempts: the module proxy kept failing)" if attempt > 1 else ""
    raise BundleError(f"go {' '.join(args[:2])} in {where} failed{tries}:\n{tail}")


def go_version() -> str:
    return _go(["env", "GOVERSION"], resources.ROOT).strip()


_REQUIRE = re.compile(r"^\s*(?:require\s+)?(\S+)\s+(v\S+)\s*(?://.*)?$")


def pinned_version(build_dir: Path, module: str) -> str:
    """The version of `module` that the build module's go.mod requires (its own version for itself)."""
    if module.startswith("hardened-cluster/"):
        return "v" + _own_version()
    for line in (build_dir / "go.mod").read_text().splitlines():
        match = _REQUIRE.match(line)
        if match and match.group(1) == module:
            return match.group(2)
    raise BundleError(f"{build_dir.relative_to(resources.ROOT)}/go.mod does not require {module}")


def _own_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hardened-cluster")
    except PackageNotFoundError:
        return "0.0.0"


def _module_time(build_dir: Path, module: str) -> str:
    """The pinned release's commit time (reproducible build dates)."""
    if module.startswith("hardened-cluster/"):
        return "1970-01-01T00:00:00Z"
    info = json.loads(_go(["list", "-m", "-json", module], build_dir))
    return info.get("Time", "1970-01-01T00:00:00Z")


def module_dir(binary: GoBinary) -> Path:
    """Where the module cache holds the pinned `binary.module`, downloaded first if it is not there yet
    (`go list -m` names no directory for a module not downloaded)."""
    info = json.loads(_go(["mod", "download", "-json", binary.module], binary.build_dir))
    return Path(info["Dir"])


def _ldflags(binary: GoBinary, version: str, date: str) -> list[str]:
    plain = version.lstrip("v")
    major, minor = (plain.split(".") + ["0"])[:2]
    values = {"version": version, "semver": plain, "major": major, "minor": minor, "date": date}
    return ["-s", "-w"] + [f"-X={flag.format(**values)}" for flag in binary.ldflags]


def _tree_digest(build_dir: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in build_dir.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(build_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- building ---------------------------------------------------------------------------------------

Progress = Callable[[str], None]


@dataclass
class Builder:
    kubernetes: str = DEFAULT_KUBERNETES
    progress: Progress = print

    def __post_init__(self) -> None:
        self._go_version: str | None = None
        self._trees: dict[str, str] = {}

    @property
    def cache(self) -> Path:
        return cache_root() / "artifacts"

    def key(self, binary: GoBinary, ldflags: list[str]) -> str:
        if self._go_version is None:
            self._go_version = go_version()
        if binary.build not in self._trees:
            self._trees[binary.build] = _tree_digest(binary.build_dir)
        material = json.dumps([self._trees[binary.build], binary.package, ldflags, binary.generate,
                               self._go_version, go_env()["GOFLAGS"], "amd64"])
        return hashlib.sha256(material.encode()).hexdigest()[:24]

    def binary(self, binary: GoBinary) -> tuple[Path, str, str]:
        """The cached binary (built when missing), its version and its source module@version."""
        if not (binary.build_dir / "go.mod").is_file():
            raise BundleError(f"{binary.name}: no build module at {binary.build_dir.relative_to(resources.ROOT)} "
                              f"(Kubernetes {self.kubernetes} has none; add artifacts/build/{binary.build})")
        version = pinned_version(binary.build_dir, binary.module)
        date = _module_time(binary.build_dir, binary.module) if "{date}" in "".join(binary.ldflags) else ""
        ldflags = _ldflags(binary, version, date)
        target = self.cache / "bin" / binary.name / self.key(binary, ldflags) / binary.name
        started = time.monotonic()
        if target.is_file():
            self.progress(f"  {binary.name:<26} {version:<14} cached")
        else:
            self.progress(f"  {binary.name:<26} {version:<14} building ...")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{binary.name}.{os.getpid()}.tmp")
            try:
                if binary.generate:
                    stage = self._generated_copy(binary, version, target.parent / "stage")
                    _go(["build", f"-ldflags={' '.join(ldflags)}", "-o", str(tmp), "."], stage)
                    shutil.rmtree(stage)
                else:
                    _go(["build", f"-ldflags={' '.join(ldflags)}", "-o", str(tmp), binary.package],
                        binary.build_dir)
                tmp.replace(target)
            finally:
                tmp.unlink(missing_ok=True)
            self.progress(f"  {binary.name:<26} {version:<14} built in {time.monotonic() - started:.0f}s")
        return target, version, f"{binary.module}@{version}"

    @staticmethod
    def _generated_copy(binary: GoBinary, version: str, stage: Path) -> Path:
        """The main package copied out of the read-only module cache into a module of its own (the build
        module's go.mod and go.sum), with upstream's generator run in it."""
        package_dir = module_dir(binary) / binary.package.removeprefix(binary.module).lstrip("/")
        shutil.rmtree(stage, ignore_errors=True)
        shutil.copytree(package_dir, stage)
        for name in ("go.mod", "go.sum"):
            shutil.copyfile(binary.build_dir / name, stage / name)
        for path in [stage, *stage.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        _go(binary.generate, stage, env={"VERSION": version.lstrip("v")})
        return stage


def kubeadm_images(kubeadm: Path, kubernetes: str) -> dict[str, str]:
    """`kubeadm config images list`: image name (without registry) -> full reference, etcd left out
    (the clusters use external etcd)."""
    result = subprocess.run([str(kubeadm), "config", "images", "list", "--kubernetes-version", f"v{kubernetes}"],
                            capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise BundleError(f"kubeadm config images list failed: {result.stderr.strip()[-400:]}")
    refs = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    images = {ref.rpartition(":")[0].rpartition("/")[2]: ref for ref in refs if "/etcd:" not in ref}
    check_image_tags(images, kubernetes)
    return images


def check_image_tags(images: dict[str, str], kubernetes: str) -> None:
    """Refuse a kubeadm whose pause or CoreDNS tag is not the one kubeadm.KUBEADM_IMAGE_TAGS records for its
    minor (containerd's sandbox image would then name an image the bundle lacks), and a CoreDNS build
    module that pins another CoreDNS than the tag."""
    minor = int(kubernetes.split(".")[1])
    tags = kubeadm.image_tags(minor)
    for name, want in (("pause", tags.pause), ("coredns", tags.coredns)):
        got = images.get(name, "").rpartition(":")[2]
        if got != want:
            raise BundleError(f"kubeadm {kubernetes} lists {images.get(name) or f'no {name} image'}, but "
                              f"kubeadm.KUBEADM_IMAGE_TAGS[{minor}].{name} is {want!r}: correct the table")
    build_dir = BUILD_ROOT / coredns_build(kubernetes)
    pinned = pinned_version(build_dir, COREDNS_MODULE) if (build_dir / "go.mod").is_file() else None
    if pinned != tags.coredns:
        raise BundleError(f"artifacts/build/{build_dir.name} pins CoreDNS {pinned or '(no go.mod)'}, but kubeadm "
                          f"{kubernetes} names {tags.coredns}: pin {COREDNS_MODULE} {tags.coredns} there")


def _member(path: str, data: bytes, mode: int = 0o755) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(path)
    info.size, info.mode, info.mtime = len(data), mode, 0
    return info, io.BytesIO(data)


def _write_tar_gz(out: Path, members: list[tuple[str, bytes, int]]) -> None:
    """A deterministic tar.gz (mtime 0, root owner) of in-memory files."""
    import gzip

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data, mode in sorted(members):
            tar.addfile(*_member(path, data, mode))
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(gzip.compress(buffer.getvalue(), mtime=0))
    tmp.replace(out)


@dataclass
class Bundle:
    """A built bundle directory and its manifest."""

    root: Path
    kubernetes: str
    artifacts: dict[str, Artifact]

    def path(self, name: str) -> Path:
        return self.root / self.artifacts[name].file


def build(kubernetes: str | None = None, out: Path | None = None, progress: Progress = print) -> Bundle:
    """Build (or reuse from the cache) every artifact of the bundle for `kubernetes` into `out`."""
    kubernetes = kubernetes or DEFAULT_KUBERNETES
    out = out or default_out(kubernetes)
    builder = Builder(kubernetes, progress)
    builder.cache.mkdir(parents=True, exist_ok=True)
    # One build at a time on a machine: a second waits, then finds the first one's work cached.
    with open(builder.cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(builder, out)


def _build(builder: Builder, out: Path) -> Bundle:
    kubernetes, progress = builder.kubernetes, builder.progress
    (out / "bin").mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    started = time.monotonic()
    progress(f"bundle for Kubernetes {kubernetes} in {out} ({go_version()}):")
    artifacts: dict[str, Artifact] = {}
    built: dict[str, tuple[Path, str, str]] = {}

    def place(name: str, src: Path, rel: str, version: str, source: str, kind: str, reference: str = "",
              image_id: str = "") -> None:
        dest = out / rel
        if not dest.exists() or _sha256(dest) != _sha256(src):
            tmp = dest.with_name(f".{dest.name}.tmp")
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o755 if kind == "binary" else 0o644)
            tmp.replace(dest)
        artifacts[name] = Artifact(name, version, rel, _sha256(dest), dest.stat().st_size, source, kind, reference,
                                   image_id)

    for binary in binaries(kubernetes):
        path, version, source = builder.binary(binary)
        built[binary.name] = (path, version, source)
        if not binary.name.startswith("cni-") and binary.name != "crictl":
            place(binary.name, path, f"bin/{binary.name}", version, source, "binary")

    # crictl and the CNI plugins travel as archives, as upstream releases them (the roles unpack them).
    crictl, crictl_version, crictl_source = built["crictl"]
    crictl_archive = builder.cache / "crictl.tar.gz"
    _write_tar_gz(crictl_archive, [("./crictl", crictl.read_bytes(), 0o755)])
    place("crictl", crictl_archive, f"bin/crictl-{crictl_version}.tar.gz", crictl_version, crictl_source, "archive")

    cni = [name for name in built if name.startswith("cni-")]
    _, cni_version, cni_source = built[cni[0]]
    cni_archive = builder.cache / "cni-plugins.tar.gz"
    _write_tar_gz(cni_archive, [(f"./{n.removeprefix('cni-')}", built[n][0].read_bytes(), 0o755) for n in cni])
    place("cni-plugins", cni_archive, f"bin/cni-plugins-{cni_version}.tar.gz", cni_version, cni_source, "archive")

    # kube-bench reads its checks from cfg/: shipped as an archive from the same pinned module.
    bench_version = built["kube-bench"][1]
    cfg = Path(_go(["list", "-m", "-f", "{{.Dir}}", "github.com/aquasecurity/kube-bench"],
                   BUILD_ROOT / "kube-bench").strip()) / "cfg"
    cfg_archive = builder.cache / "kube-bench-cfg.tar.gz"
    _write_tar_gz(cfg_archive, [(f"./cfg/{p.relative_to(cfg)}", p.read_bytes(), 0o644)
                                for p in sorted(cfg.rglob("*")) if p.is_file()])
    place("kube-bench-cfg", cfg_archive, f"bin/kube-bench-cfg-{bench_version}.tar.gz", bench_version,
          f"github.com/aquasecurity/kube-bench@{bench_version}", "archive")

    for image, made_from in image_specs(kubernetes, built, builder.cache, progress):
        name = image.reference.rpartition(":")[0].rpartition("/")[2]
        # The binaries' cache paths carry their build keys, made_from the Debian package versions.
        inputs = [image.reference, made_from, [str(f.source) for f in image.files if f.source]]
        key = hashlib.sha256(json.dumps(inputs).encode()).hexdigest()[:24]
        archive = builder.cache / "images" / f"{name}-{key}.tar"
        archive.parent.mkdir(parents=True, exist_ok=True)
        if not archive.is_file():
            oci.write_archive(image, archive)
        place(f"image:{name}", archive, f"images/{name}.tar", image.tag, made_from, "image", image.reference,
              oci.image_id(archive))
        progress(f"  image {image.reference:<40} {artifacts[f'image:{name}'].size >> 20} MiB")

    manifest = {"schema": BUNDLE_SCHEMA, "kubernetes": kubernetes, "go": builder._go_version,
                "artifacts": [vars(a) for a in sorted(artifacts.values(), key=lambda a: a.name)]}
    tmp = out / f".{BUNDLE_MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(out / BUNDLE_MANIFEST)
    total = sum(a.size for a in artifacts.values())
    progress(f"bundle: {len(artifacts)} artifacts, {total >> 20} MiB, in {time.monotonic() - started:.0f}s")
    return Bundle(out, kubernetes, artifacts)


# kube-proxy and kube-router program the kernel through iptables, ipset and conntrack: their images
# carry those tools (and what they link) from Debian's packages, with apt resolving the closure.
USERLAND = ("iptables", "ipset", "conntrack")
# kube-router's init container installs the CNI config it then keeps up to date (busybox's sh and install).
KUBE_ROUTER_EXTRA = ("busybox-static",)
# What update-alternatives would link in the image (no maintainer scripts run there): the nf_tables
# backend, as on the hosts.
XTABLES_LINKS = tuple(f"/usr/sbin/{tool}{suffix}" for tool in ("iptables", "ip6tables")
                      for suffix in ("", "-save", "-restore"))
KUBE_ROUTER_IMAGE = "docker.io/cloudnativelabs/kube-router"


def kube_router_image() -> str:
    """The kube-router image the network's DaemonSet runs, at the version its build module pins."""
    module = "github.com/cloudnativelabs/kube-router/v2"
    return f"{KUBE_ROUTER_IMAGE}:{pinned_version(BUILD_ROOT / 'kube-router', module)}"


def namespace_baseline_image() -> str:
    """The namespace-baseline controller's image: a name of our own (no registry serves it)."""
    return f"hardened-cluster.local/{NAMESPACE_BASELINE}:{pinned_version(BUILD_ROOT / NAMESPACE_BASELINE, NAMESPACE_BASELINE_MODULE)}"


def debian_closure(packages: tuple[str, ...]) -> list[str]:
    """The packages and every package they depend on (Depends and Pre-Depends), as apt resolves them."""
    result = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
         "--no-breaks", "--no-replaces", "--no-enhances", *packages],
        capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise BundleError(f"apt-cache depends {' '.join(packages)} failed: {result.stderr.strip()[-300:]}")
    return sorted({line.strip() for line in result.stdout.splitlines()
                   if line and not line.startswith((" ", "<"))})


def debian_files(packages: tuple[str, ...], cache: Path, progress: Progress) -> tuple[list[oci.ImageFile], list[str]]:
    """The files of `packages` and their dependencies (from .debs apt downloads into `cache`), and
    name=version of each package, for the bundle manifest."""
    cache.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["apt-cache", "show", *packages], capture_output=True, timeout=60, check=False).returncode:
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600, check=False)
    files: list[oci.ImageFile] = []
    versions: list[str] = []
    for package in debian_closure(packages):
        debs = sorted(cache.glob(f"{package}_*.deb"))
        if not debs:
            result = subprocess.run(["apt-get", "download", "-q", package], cwd=cache, capture_output=True,
                                    text=True, timeout=300, check=False)
            debs = sorted(cache.glob(f"{package}_*.deb"))
            if result.returncode != 0 or not debs:
                raise BundleError(f"apt-get download {package} failed: {result.stderr.strip()[-300:]}")
            progress(f"  debian {debs[-1].name} downloaded")
        deb = debs[-1]
        versions.append(deb.name.split("_")[0] + "=" + deb.name.split("_")[1].replace("%3a", ":"))
        data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, timeout=120, check=True)
        with tarfile.open(fileobj=io.BytesIO(data.stdout)) as tar:
            for member in tar.getmembers():
                path = "/" + member.name.lstrip("./")
                if path == "/" or path.startswith(("/usr/share/doc", "/usr/share/man", "/usr/share/lintian")):
                    continue
                if member.issym():
                    files.append(oci.ImageFile(path, link=member.linkname))
                elif member.isdir():
                    files.append(oci.ImageFile(path, mode=member.mode))
                elif member.isfile() or member.islnk():
                    files.append(oci.ImageFile(path, mode=member.mode, data=tar.extractfile(member).read()))
    files += [oci.ImageFile(link, link="xtables-nft-multi") for link in XTABLES_LINKS]
    return files, versions


def image_specs(kubernetes: str, built: dict[str, tuple[Path, str, str]], cache: Path,
                progress: Progress) -> list[tuple[oci.ImageSpec, str]]:
    """The images kubeadm pulls (named by the bundle's own kubeadm) and the network's, from the bundle's
    binaries, each with what it was made from."""
    refs = kubeadm_images(built["kubeadm"][0], kubernetes)

    def image(ref: str, binary: str, extra: list[oci.ImageFile] = ()) -> oci.ImageSpec:
        path = f"/usr/local/bin/{binary}"
        return oci.ImageSpec(ref, (oci.ImageFile(path, built[binary][0]), *extra), (path,))

    specs = [(image(refs[name], name), built[name][2])
             for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "pause", "coredns")]
    userland, debs = debian_files(USERLAND, cache / "debian", progress)
    with_debs = " + debian " + " ".join(debs)
    specs.append((image(refs["kube-proxy"], "kube-proxy", userland), built["kube-proxy"][2] + with_debs))
    router_land, router_debs = debian_files(USERLAND + KUBE_ROUTER_EXTRA, cache / "debian", progress)
    router_ref = kube_router_image()
    specs.append((image(router_ref, "kube-router", router_land),
                  built["kube-router"][2] + " + debian " + " ".join(router_debs)))
    controller = f"/usr/local/bin/{NAMESPACE_BASELINE}"
    # Runs as a non-root user (the Deployment asks for the same one with runAsNonRoot).
    specs.append((oci.ImageSpec(namespace_baseline_image(), (oci.ImageFile(controller, built[NAMESPACE_BASELINE][0]),),
                                (controller,), user="65532:65532"), built[NAMESPACE_BASELINE][2]))
    return specs


# --- reading a bundle -------------------------------------------------------------------------------


def load(root: Path) -> Bundle:
    """The bundle at `root`, from its manifest (digests are checked when files are used, see `verify`)."""
    manifest = root / BUNDLE_MANIFEST
    try:
        data = json.loads(manifest.read_text())
    except FileNotFoundError:
        raise BundleError(f"{root} is not a bundle: {BUNDLE_MANIFEST} is missing "
                          "(make one with `hardened-cluster artifacts build --out DIR`)") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read {manifest}: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != BUNDLE_SCHEMA:
        raise BundleError(f"{manifest}: not a bundle manifest (schema: {BUNDLE_SCHEMA} expected)")
    artifacts = {a["name"]: Artifact(**a) for a in data["artifacts"]}
    return Bundle(root, data["kubernetes"], artifacts)


def verify(bundle: Bundle, names: list[str] | None = None) -> None:
    """Refuse the bundle unless every named file (all by default) has its recorded size and sha256."""
    for name in names or sorted(bundle.artifacts):
        a = bundle.artifacts.get(name)
        if a is None:
            raise BundleError(f"{name} is not in the bundle at {bundle.root} (Kubernetes {bundle.kubernetes})")
        path = bundle.root / a.file
        if not path.is_file():
            raise BundleError(f"{a.describe()}: {path} is missing from the bundle")
        got = _sha256(path)
        if got != a.sha256:
            raise BundleError(f"{a.describe()}: {path} has sha256 {got}, but {BUNDLE_MANIFEST} records {a.sha256}: "
                              "refusing the bundle (a changed or corrupted file); nothing was installed")
