"""The offline bundle as `hardened-cluster artifacts build` leaves it: digests, versions, images."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hardened_cluster.deliver import artifacts, bundle as bundles
from hardened_cluster.plan.render import render_plan
from hardened_cluster.secrets.store import resolve_secrets
from hardened_cluster.spec.load import load_spec

REPO = Path(__file__).resolve().parents[2]

PINNED = {  # what each binary prints about itself, from the build modules' pins
    "kubeadm": (["version", "-o", "short"], "v1.35.4"),
    "kubelet": (["--version"], "Kubernetes v1.35.4"),
    "kube-apiserver": (["--version"], "Kubernetes v1.35.4"),
    "kubectl": (["version", "--client"], "Client Version: v1.35.4"),
    "etcd": (["--version"], "etcd Version: 3.6.16"),
    "etcdctl": (["version"], "etcdctl version: 3.6.16"),
    "etcd-3.5": (["--version"], "etcd Version: 3.5.35"),
    "containerd": (["--version"], "v2.2.9"),
    "kube-bench": (["version"], "v0.14.0"),
    "kube-router": (["--version"], "v2.1.0"),
    "coredns": (["-version"], "CoreDNS-1.13.1"),
    "pulumi": (["version"], "v3.274.1"),
    "runsc": (["--version"], "runsc version v0.0.0-20260905035102-160fafc42237"),
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_digests_and_sizes_match_the_files(bundle):
    assert bundle.kubernetes == bundles.DEFAULT_KUBERNETES
    for a in bundle.artifacts.values():
        path = bundle.root / a.file
        assert path.stat().st_size == a.size, a.name
        assert _sha256(path) == a.sha256, a.name
        assert "@" in a.source or a.kind == "image", a.name
    bundles.verify(bundle)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_binaries_print_their_pinned_versions(bundle, name):
    args, expected = PINNED[name]
    result = subprocess.run([str(bundle.path(name)), *args], capture_output=True, text=True, timeout=60)
    assert expected in result.stdout + result.stderr


def test_kubernetes_provider_plugin_serves_its_generated_schema(bundle, tmp_path):
    """The plugin's schema is generated at build time (not in the module zip) and carries the version the
    bundle records; the bundle's own Pulumi CLI loads the plugin over gRPC to read it."""
    plugin = bundle.artifacts["pulumi-resource-kubernetes"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PULUMI_HOME": str(tmp_path / ".pulumi"),
           "PULUMI_SKIP_UPDATE_CHECK": "true", "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true"}
    result = subprocess.run([str(bundle.path("pulumi")), "package", "get-schema", str(bundle.path(plugin.name))],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    schema = json.loads(result.stdout)
    assert schema["name"] == "kubernetes"
    assert schema["version"] == plugin.version.removeprefix("v")
    assert "kubernetes:core/v1:Secret" in schema["resources"]
    assert plugin.source == f"github.com/pulumi/pulumi-kubernetes/provider/v4@{plugin.version}"


def test_a_generated_main_package_is_found_in_an_empty_module_cache(bundle, tmp_path, monkeypatch):
    """On a new machine the module of a binary with a generate step is not downloaded yet when its main
    package is copied out; it is fetched first (here from the shared download cache as a file proxy, so
    the module cache is empty but nothing comes from the network)."""
    [plugin] = [b for b in bundles.binaries(bundle.kubernetes) if b.generate]
    shared = Path(bundles.go_env()["GOMODCACHE"]) / "cache" / "download"
    empty = {"GOMODCACHE": str(tmp_path / "mod"), "GOPROXY": f"file://{shared}", "GOSUMDB": "off"}
    monkeypatch.setattr(bundles, "go_env", lambda real=bundles.go_env: {**real(), **empty})
    package = bundles.module_dir(plugin) / plugin.package.removeprefix(plugin.module).lstrip("/")
    assert package.is_relative_to(tmp_path / "mod")
    assert (package / "main.go").is_file() and (package / "generate.go").is_file()
    subprocess.run(["chmod", "-R", "u+w", str(tmp_path / "mod")], check=True)  # the cache is read-only


def test_archives_hold_the_tools_as_upstream_releases_do(bundle):
    with tarfile.open(bundle.path("crictl")) as tar:
        assert tar.getnames() == ["./crictl"]
    with tarfile.open(bundle.path("cni-plugins")) as tar:
        assert sorted(tar.getnames()) == ["./bridge", "./host-local", "./loopback", "./portmap"]
    with tarfile.open(bundle.path("kube-bench-cfg")) as tar:
        assert "./cfg/config.yaml" in tar.getnames()
        assert any(n.startswith("./cfg/cis-1.11/") for n in tar.getnames())


def _image_reference(archive: Path) -> str:
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))
        [manifest] = index["manifests"]
        blob = tar.extractfile("blobs/sha256/" + manifest["digest"].partition(":")[2]).read()
        assert hashlib.sha256(blob).hexdigest() == manifest["digest"].partition(":")[2]
        return manifest["annotations"]["io.containerd.image.name"]


def test_images_carry_every_tag_kubeadm_asks_for(bundle):
    listed = subprocess.run([str(bundle.path("kubeadm")), "config", "images", "list", "--kubernetes-version",
                             f"v{bundle.kubernetes}"], capture_output=True, text=True, check=True).stdout.split()
    references = {_image_reference(bundle.root / a.file) for a in bundle.artifacts.values() if a.kind == "image"}
    # External etcd: the etcd image is the only one kubeadm lists that the clusters never run.
    assert {ref for ref in listed if "/etcd:" not in ref} <= references
    assert "docker.io/cloudnativelabs/kube-router:v2.1.0" in references


def test_second_build_compiles_nothing(bundle):
    lines: list[str] = []
    again = bundles.build(bundle.kubernetes, bundle.root, progress=lines.append)
    assert not [line for line in lines if "building" in line]
    assert {a.sha256 for a in again.artifacts.values()} == {a.sha256 for a in bundle.artifacts.values()}


def test_a_changed_pin_changes_only_what_it_pins(bundle, monkeypatch):
    builder = bundles.Builder(bundle.kubernetes, progress=lambda line: None)
    catalogue = {b.name: b for b in bundles.binaries(bundle.kubernetes)}

    def key(name: str) -> str:
        b = catalogue[name]
        return builder.key(b, bundles._ldflags(b, "v0", ""))

    before = {name: key(name) for name in ("kubeadm", "etcd", "coredns")}
    real = bundles._tree_digest
    monkeypatch.setattr(bundles, "_tree_digest",
                        lambda d: real(d) + ("-changed" if d.name == bundles.coredns_build(bundle.kubernetes) else ""))
    builder._trees.clear()
    after = {name: key(name) for name in before}
    assert after["coredns"] != before["coredns"]
    assert after["kubeadm"] == before["kubeadm"] and after["etcd"] == before["etcd"]


def test_tampered_file_is_refused_before_anything_is_installed(bundle, bundle_spec_text, tmp_path):
    """A bundle whose kubeadm does not match bundle.json: the controller refuses it, naming it."""
    root = tmp_path / "bundle"
    shutil.copytree(bundle.root, root, copy_function=lambda s, d: Path(d).symlink_to(s))
    kubeadm = root / bundle.artifacts["kubeadm"].file
    kubeadm.unlink()
    data = bytearray(bundle.path("kubeadm").read_bytes())
    data[len(data) // 2] ^= 0xFF
    kubeadm.write_bytes(bytes(data))
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    (spec_dir / "cluster.yaml").write_text(bundle_spec_text(root))
    key = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    nodes = yaml.safe_load(bundle_spec_text(root))["nodes"]
    (spec_dir / "known_hosts").write_text("".join(f"{n['address']} {key}\n" for n in nodes))
    loaded = load_spec(spec_dir / "cluster.yaml")
    plan = render_plan(loaded, resolve_secrets(loaded, tmp_path / "state"))
    with pytest.raises(artifacts.ArtifactError, match=r"kubeadm 1\.35\.4 \(amd64\) from .*/bin/kubeadm has digest sha256:"):
        artifacts.fetch_for(plan, ["etcd", "kubernetes"], cache_dir=tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").rglob("kubeadm") if p.is_file()]


def _flaky_go(tmp_path, monkeypatch, failures: int, message: str) -> Path:
    """A `go` that fails `failures` times with `message` on stderr, then succeeds; the calls are counted."""
    calls = tmp_path / "calls"
    script = tmp_path / "go"
    script.write_text(f"#!/bin/sh\necho x >> {calls}\n"
                      f"[ $(wc -l < {calls}) -gt {failures} ] && {{ echo built; exit 0; }}\n"
                      f"echo {json.dumps(message)} >&2; exit 1\n")
    script.chmod(0o755)
    monkeypatch.setattr(bundles, "go_path", lambda: str(script))
    monkeypatch.setattr(bundles, "GO_RETRY_SECONDS", 0)
    return calls


def test_a_go_command_cut_off_from_the_module_proxy_is_tried_again(tmp_path, monkeypatch):
    # What a cold CI run met on the proxy: a truncated zip, then a dropped connection.
    calls = _flaky_go(tmp_path, monkeypatch, 2, 'read "https://proxy.golang.org/x/@v/v1.zip": unexpected EOF')
    assert bundles._go(["mod", "download"], tmp_path) == "built\n"
    assert len(calls.read_text().splitlines()) == 3


def test_a_proxy_that_keeps_failing_is_reported_with_the_attempts(tmp_path, monkeypatch):
    calls = _flaky_go(tmp_path, monkeypatch, 99, "read tcp: read: software caused connection abort")
    with pytest.raises(bundles.BundleError, match=r"4 attempts: the module proxy kept failing"):
        bundles._go(["build", "."], tmp_path)
    assert len(calls.read_text().splitlines()) == bundles.GO_ATTEMPTS


def test_a_go_command_failing_on_the_modules_themselves_is_not_retried(tmp_path, monkeypatch):
    calls = _flaky_go(tmp_path, monkeypatch, 99, "go: example.com/x@v9.9.9: invalid version: unknown revision v9.9.9")
    with pytest.raises(bundles.BundleError, match=r"failed:\n.*unknown revision") as caught:
        bundles._go(["build", "."], tmp_path)
    assert "attempts" not in str(caught.value)
    assert len(calls.read_text().splitlines()) == 1
