"""artifacts.fetch: digest-verified copies from a local directory and from an HTTP server on 127.0.0.1."""
from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import yaml

from hardened_cluster.deliver import artifacts
from hardened_cluster.deliver.artifacts import ArtifactError, Source
from hardened_cluster.spec.model import SUPPORTED_KUBERNETES_MINORS

PAYLOAD = b"#!/bin/sh\necho kubeadm stand-in\n"


def _manifest(tmp_path: Path, url: str, digest: str, version: str = "1.35.1") -> Path:
    data = {
        "schema": 1,
        "artifacts": {
            "kubeadm": {"url": url + "/v{version}/bin/linux/{arch}/kubeadm", "checksum_url": None,
                        "file": "kubeadm", "format": "binary"},
        },
        "kubernetes": {
            "1.35": {"kubeadm": {"version": version, "digests": {"amd64": digest, "arm64": None}}},
        },
    }
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def server(tmp_path: Path):
    """A plain HTTP server on 127.0.0.1 serving `<tmp>/www`."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _put(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_directory_source_accepts_the_pinned_digest(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, "https://dl.k8s.io/release", _sha256(PAYLOAD))
    e = artifacts.entry("kubeadm", 35, "amd64", manifest)
    _put(tmp_path / "offline", "kubeadm/1.35.1/amd64/kubeadm", PAYLOAD)

    path = artifacts.fetch(e, Source("directory", str(tmp_path / "offline")), tmp_path / "cache")

    assert path == tmp_path / "cache" / "kubeadm/1.35.1/amd64/kubeadm"
    assert path.read_bytes() == PAYLOAD


def test_directory_source_refuses_a_digest_mismatch_and_caches_nothing(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, "https://dl.k8s.io/release", _sha256(PAYLOAD))
    e = artifacts.entry("kubeadm", 35, "amd64", manifest)
    _put(tmp_path / "offline", "kubeadm/1.35.1/amd64/kubeadm", PAYLOAD + b"tampered\n")

    with pytest.raises(ArtifactError) as err:
        artifacts.fetch(e, Source("directory", str(tmp_path / "offline")), tmp_path / "cache")

    message = str(err.value)
    assert "kubeadm 1.35.1 (amd64)" in message
    assert _sha256(PAYLOAD + b"tampered\n") in message and _sha256(PAYLOAD) in message
    assert "refusing it" in message
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def test_directory_source_names_what_is_missing_and_where_it_looked(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, "https://dl.k8s.io/release", _sha256(PAYLOAD))
    e = artifacts.entry("kubeadm", 35, "amd64", manifest)
    (tmp_path / "offline").mkdir()

    with pytest.raises(ArtifactError) as err:
        artifacts.fetch(e, Source("directory", str(tmp_path / "offline")), tmp_path / "cache")

    assert str(err.value) == (
        f"kubeadm 1.35.1 (amd64) not found in artifact source 'directory' ({tmp_path / 'offline'}) "
        f"(looked at: {tmp_path / 'offline' / 'kubeadm/1.35.1/amd64/kubeadm'})"
    )


def test_release_urls_from_a_local_http_server(tmp_path: Path, server) -> None:
    root, base = server
    _put(root, "v1.35.1/bin/linux/amd64/kubeadm", PAYLOAD)
    e = artifacts.entry("kubeadm", 35, "amd64", _manifest(tmp_path, base, _sha256(PAYLOAD)))

    path = artifacts.fetch(e, Source("release"), tmp_path / "cache")

    assert path.read_bytes() == PAYLOAD


def test_mirror_refuses_a_mismatch(tmp_path: Path, server) -> None:
    root, base = server
    _put(root, "kubeadm/1.35.1/amd64/kubeadm", b"not the pinned file\n")
    e = artifacts.entry("kubeadm", 35, "amd64", _manifest(tmp_path, "https://dl.k8s.io/release", _sha256(PAYLOAD)))

    with pytest.raises(ArtifactError, match=r"from http://127\.0\.0\.1:\d+/kubeadm/1\.35\.1/amd64/kubeadm has digest"):
        artifacts.fetch(e, Source("mirror", base + "/"), tmp_path / "cache")
    assert not (tmp_path / "cache" / e.relpath).exists()


def test_mirror_names_what_is_missing_and_where_it_looked(tmp_path: Path, server) -> None:
    _, base = server
    e = artifacts.entry("kubeadm", 35, "amd64", _manifest(tmp_path, "https://dl.k8s.io/release", _sha256(PAYLOAD)))

    with pytest.raises(ArtifactError) as err:
        artifacts.fetch(e, Source("mirror", base), tmp_path / "cache")

    assert str(err.value) == (
        f"kubeadm 1.35.1 (amd64) not found in artifact source 'mirror' ({base}) "
        f"(looked at: {base}/kubeadm/1.35.1/amd64/kubeadm)"
    )


def test_a_verified_cached_copy_is_reused_without_the_source(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, "https://dl.k8s.io/release", _sha256(PAYLOAD))
    e = artifacts.entry("kubeadm", 35, "amd64", manifest)
    _put(tmp_path / "cache", e.relpath, PAYLOAD)

    assert artifacts.fetch(e, Source("directory", str(tmp_path / "empty")), tmp_path / "cache").read_bytes() == PAYLOAD


def test_a_tampered_cached_copy_is_fetched_again(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, "https://dl.k8s.io/release", _sha256(PAYLOAD))
    e = artifacts.entry("kubeadm", 35, "amd64", manifest)
    _put(tmp_path / "cache", e.relpath, b"tampered")
    _put(tmp_path / "offline", e.relpath, PAYLOAD)

    assert artifacts.fetch(e, Source("directory", str(tmp_path / "offline")), tmp_path / "cache").read_bytes() == PAYLOAD


def test_distro_source_has_no_release_artifacts(tmp_path: Path) -> None:
    e = artifacts.entry("kubeadm", 35, "amd64", _manifest(tmp_path, "https://dl.k8s.io/release", _sha256(PAYLOAD)))

    with pytest.raises(ArtifactError, match=r"kubeadm 1\.35\.1 \(amd64\) not found in artifact source 'distro' "
                                            r"\(looked in: Debian packages\)"):
        artifacts.fetch(e, Source("distro"), tmp_path / "cache")


def test_an_unpinned_entry_is_refused_before_any_download(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, "https://dl.k8s.io/release", _sha256(PAYLOAD))

    with pytest.raises(ArtifactError, match=r'kubernetes\."1\.35"\.kubeadm \(arm64\) is not pinned yet'):
        artifacts.entry("kubeadm", 35, "arm64", manifest)


def test_kubernetes_binaries_must_match_the_spec_version(tmp_path: Path) -> None:
    from hardened_cluster.spec.load import load_spec

    spec = load_spec(Path("inventories/sample/cluster.yaml")).spec
    spec = spec.model_copy(update={"cluster": spec.cluster.model_copy(update={"kubernetes_version": "1.35.1"})})
    manifest = _manifest(tmp_path, "https://dl.k8s.io/release", _sha256(PAYLOAD), version="1.35.0")

    with pytest.raises(ArtifactError, match=r"pins kubeadm 1\.35\.0 for Kubernetes 1\.35, but cluster\.kubernetes_version is 1\.35\.1"):
        artifacts.entries_for(spec, ["kubeadm"], "amd64", manifest)


def test_the_shipped_manifest_covers_every_supported_minor_with_wellformed_pins() -> None:
    data = yaml.safe_load(artifacts.MANIFEST.read_text())
    assert set(data["kubernetes"]) == {f"1.{m}" for m in SUPPORTED_KUBERNETES_MINORS}
    for minor, pins in data["kubernetes"].items():
        assert set(pins) == set(data["artifacts"]), minor
        for name, pin in pins.items():
            for arch in artifacts.ARCHES:
                digest = pin["digests"][arch]
                if digest is None:
                    continue  # not pinned yet: `entry` refuses it with a message
                e = artifacts.entry(name, int(minor.split(".")[1]), arch)
                assert e.url.startswith("https://") and e.version in e.url
                if name in artifacts.KUBERNETES_BINARIES:
                    assert e.version.startswith(minor + ".")


def test_pin_reads_upstream_checksum_files(tmp_path: Path, server) -> None:
    root, base = server
    data = yaml.safe_load(_manifest(tmp_path, base, _sha256(PAYLOAD)).read_text())
    for name in ("kubeadm", "kubelet", "kubectl", "crictl"):
        data["artifacts"][name] = {"url": f"{base}/{name}/{{version}}/{{arch}}/{name}",
                                   "checksum_url": f"{base}/{name}/{{version}}/{{arch}}/{name}.sha256",
                                   "file": name, "format": "binary"}
        version = "1.36.0" if name == "crictl" else "1.36.2"
        _put(root, f"{name}/{version}/amd64/{name}.sha256", f"{'ab' * 32}  {name}\n".encode())
    manifest = tmp_path / "pin.yaml"
    manifest.write_text(yaml.safe_dump(data))

    block = yaml.safe_load(artifacts.pin("1.36.2", ["amd64"], manifest))

    assert block["1.36"]["kubeadm"] == {"version": "1.36.2", "digests": {"amd64": "sha256:" + "ab" * 32}}
    assert block["1.36"]["crictl"]["version"] == "1.36.0"


def test_fetch_for_stops_on_an_unpinned_artifact_before_ansible(tmp_path: Path) -> None:
    from hardened_cluster.plan.render import render_plan
    from hardened_cluster.secrets.store import resolve_secrets
    from hardened_cluster.spec.load import parse_spec

    sample = Path("inventories/sample/cluster.yaml")
    data = yaml.safe_load(sample.read_text())
    data["cluster"]["kubernetes_version"] = "1.36.2"  # release artifacts, a minor not pinned yet
    loaded = parse_spec(data, sample.resolve())
    plan = render_plan(loaded, resolve_secrets(loaded, tmp_path / "state"))

    with pytest.raises(ArtifactError, match=r'kubernetes\."1\.36"\.crictl \(amd64\) is not pinned yet'):
        artifacts.fetch_for(plan, ["runtime"], cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_a_bundle_node_gets_containerd_from_the_bundle_and_other_sources_keep_debians() -> None:
    bundle_names = artifacts.names_for(["runtime"], ["runc", "runsc"], source="bundle")
    assert set(artifacts.CONTAINERD) <= set(bundle_names)
    assert all(artifacts.INSTALL[n] == f"/usr/local/bin/{n}" for n in artifacts.CONTAINERD)
    for source in ("release", "distro"):
        assert not set(artifacts.CONTAINERD) & set(artifacts.names_for(["runtime"], ["runc"], source=source))
    # Off the runtime phase, or on a host without containerd (an etcd member), nothing of containerd.
    assert not set(artifacts.CONTAINERD) & set(artifacts.names_for(["kubernetes"], ["runc"], source="bundle"))
    assert not set(artifacts.CONTAINERD) & set(artifacts.names_for(["runtime"], [], source="bundle"))
