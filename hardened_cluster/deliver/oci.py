"""OCI image archives made from files on this machine, without a registry or a container engine.

An archive is an OCI image layout in one tar (`oci-layout`, `index.json`, `blobs/sha256/...`) with one
gzip layer; `ctr -n k8s.io images import` names the image after the index's
`io.containerd.image.name` annotation. Every byte is deterministic (mtime 0, root owner, sorted
entries), so the same inputs give the same digests.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONTAINERD_NAME = "io.containerd.image.name"
REF_NAME = "org.opencontainers.image.ref.name"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ImageFile:
    """One file of the image's only layer: `source` on this machine placed at `path` in the image."""

    path: str  # absolute, in the image
    source: Path | None = None  # a file on this machine; None and no data: a directory
    mode: int = 0o755
    link: str | None = None  # a symlink to this target instead of a file
    data: bytes | None = field(default=None, repr=False)  # the file's bytes instead of a source


@dataclass(frozen=True)
class ImageSpec:
    reference: str  # registry/name:tag, as kubeadm asks for it
    files: tuple[ImageFile, ...]
    entrypoint: tuple[str, ...]
    env: tuple[str, ...] = (PATH_ENV,)
    user: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return self.reference.rpartition(":")[2]


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _layer(files: tuple[ImageFile, ...]) -> bytes:
    """The uncompressed layer tar: parent directories first, entries sorted, all owned by root."""
    entries: dict[str, ImageFile] = {}
    for f in files:
        for parent in _parents(f.path):
            entries.setdefault(parent, ImageFile("/" + parent))
        entries[f.path.strip("/")] = f
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            f = entries[name]
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if f.link is not None:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, f.link, 0o777
                tar.addfile(info)
            elif f.source is None and f.data is None:
                info.type, info.mode = tarfile.DIRTYPE, f.mode
                tar.addfile(info)
            else:
                data = f.data if f.data is not None else f.source.read_bytes()
                info.size, info.mode = len(data), f.mode
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def _json(value: dict) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def write_archive(spec: ImageSpec, out: Path, arch: str = "amd64") -> None:
    """Write the image as an OCI layout tar at `out` (replaced atomically)."""
    layer_tar = _layer(spec.files)
    diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()
    layer_digest, layer = _blob(gzip.compress(layer_tar, compresslevel=6, mtime=0))
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Entrypoint": list(spec.entrypoint), "Env": list(spec.env), "User": spec.user,
                   "Labels": spec.labels},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "hardened-cluster artifacts build"}],
    }
    config_digest, config_bytes = _blob(_json(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": layer_digest, "size": len(layer)}],
    }
    manifest_digest, manifest_bytes = _blob(_json(manifest))
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_TYPE, "digest": manifest_digest, "size": len(manifest_bytes),
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {CONTAINERD_NAME: spec.reference, REF_NAME: spec.tag},
        }],
    }
    members = [("oci-layout", _json({"imageLayoutVersion": "1.0.0"})), ("index.json", _json(index))]
    members += [(f"blobs/sha256/{d.partition(':')[2]}", b)
                for d, b in ((config_digest, config_bytes), (layer_digest, layer), (manifest_digest, manifest_bytes))]
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)


def image_id(archive: Path) -> str:
    """The image's ID, its config's digest: what the CRI lists for the image once imported."""
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))
        manifest = json.load(tar.extractfile("blobs/sha256/" + index["manifests"][0]["digest"].partition(":")[2]))
    return manifest["config"]["digest"]
