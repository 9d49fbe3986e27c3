"""The software the project's roles configure runs inside a node: systemd services, etcd, containerd, runc, runsc."""

import hashlib
import io
import json
import tarfile

import pytest

pytestmark = pytest.mark.lab

IMAGE_REF = "docker.io/hclab/busybox:test"
NAMESPACE = "hclab-test"
BUSYBOX_APPLETS = ("sh", "echo", "cat", "hostname")


def node_name(lab):
    return lab.nodes[-1].name


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _blob(tar, data):
    digest = hashlib.sha256(data).hexdigest()
    _add(tar, f"blobs/sha256/{digest}", data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def busybox_oci_archive(busybox: bytes) -> bytes:
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w") as layer:
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(busybox), 0o755
        layer.addfile(info, io.BytesIO(busybox))
        for applet in BUSYBOX_APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            layer.addfile(link)
    layer_data = layer_buf.getvalue()
    diff_id = f"sha256:{hashlib.sha256(layer_data).hexdigest()}"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        _add(archive, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        layer = _blob(archive, layer_data)
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
        config_desc = _blob(archive, json.dumps(config).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer}],
        }
        manifest_desc = _blob(archive, json.dumps(manifest).encode())
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    **manifest_desc,
                    "annotations": {"io.containerd.image.name": IMAGE_REF},
                }
            ],
        }
        _add(archive, "index.json", json.dumps(index).encode())
    return out.getvalue()


@pytest.fixture
def containerd(lab):
    """containerd running on a node; what the test adds lives in its own namespace and is removed after."""
    node = node_name(lab)
    was_active = lab.lab.exec(node, ["systemctl", "is-active", "containerd"], check=False).returncode == 0
    lab.lab.exec(node, ["systemctl", "start", "containerd"])
    yield node
    cleanup = (
        f"for t in $(ctr -n {NAMESPACE} tasks ls -q); do ctr -n {NAMESPACE} tasks kill -s KILL $t; done; "
        f"sleep 0.2; ctr -n {NAMESPACE} containers ls -q | xargs -r ctr -n {NAMESPACE} containers rm; "
        f"ctr -n {NAMESPACE} images ls -q | xargs -r ctr -n {NAMESPACE} images rm; "
        f"ctr -n {NAMESPACE} content ls -q | xargs -r ctr -n {NAMESPACE} content rm; "
        f"ctr namespaces rm {NAMESPACE}; rm -rf /tmp/hclab-*"
    )
    lab.lab.exec(node, ["sh", "-c", cleanup], check=False)
    if not was_active:
        lab.lab.exec(node, ["systemctl", "stop", "containerd"])


def test_systemctl_starts_a_service(lab):
    node = node_name(lab)
    result = lab.lab.exec(node, ["systemd-run", "--unit=hclab-hello", "--wait", "--quiet", "/bin/true"])
    assert result.returncode == 0
    assert lab.lab.exec(node, ["systemctl", "is-active", "hclab-hello"], check=False).stdout.strip() == b"inactive"


def test_etcd_starts_by_hand_and_serves(lab):
    node = node_name(lab)
    client, peer = "http://127.0.0.1:23790", "http://127.0.0.1:23800"
    etcd = [
        "systemd-run",
        "--unit=hclab-etcd",
        "--property=Type=notify",
        "/usr/bin/etcd",
        "--name=hclab",
        "--data-dir=/tmp/hclab-etcd",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=hclab={peer}",
    ]
    lab.lab.exec(node, etcd)
    try:
        etcdctl = ["env", "ETCDCTL_API=3", "etcdctl", f"--endpoints={client}"]
        lab.lab.exec(node, [*etcdctl, "put", "hclab", "works"])
        assert lab.lab.exec(node, [*etcdctl, "get", "--print-value-only", "hclab"]).stdout.strip() == b"works"
    finally:
        lab.lab.exec(node, ["systemctl", "stop", "hclab-etcd"], check=False)
        lab.lab.exec(node, ["rm", "-rf", "/tmp/hclab-etcd"])


def test_runc_runs_a_container_from_an_imported_image(lab, containerd):
    busybox = lab.lab.exec(containerd, ["cat", "/bin/busybox"]).stdout
    lab.lab.exec(containerd, ["sh", "-c", "cat > /tmp/hclab-busybox.tar"], input=busybox_oci_archive(busybox))
    lab.lab.exec(containerd, ["ctr", "-n", NAMESPACE, "images", "import", "/tmp/hclab-busybox.tar"])
    run = ["ctr", "-n", NAMESPACE, "run", "--rm", IMAGE_REF, "hclab-runc"]
    result = lab.lab.exec(containerd, [*run, "sh", "-c", "echo in-runc; cat /proc/self/cgroup"])
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "in-runc"
    assert any(line.endswith(f"/{NAMESPACE}/hclab-runc") for line in lines[1:])


def test_runsc_runs_a_container(lab, containerd):
    # Debian's 2022 runsc takes any netns on kernel 6.x for the root one, so its sandbox network mode fails.
    wrapper = b'#!/bin/sh\nexec /usr/bin/runsc --network=none "$@"\n'
    lab.lab.exec(containerd, ["sh", "-c", "cat > /tmp/hclab-runsc && chmod 755 /tmp/hclab-runsc"], input=wrapper)
    rootfs = "mkdir -p /tmp/hclab-rootfs/bin && cd /tmp/hclab-rootfs/bin && cp /bin/busybox ."
    lab.lab.exec(containerd, ["sh", "-c", f"{rootfs} && ln -s busybox sh && ln -s busybox dmesg"])
    ctr = ["ctr", "-n", NAMESPACE, "run", "--rm", "--runc-binary", "/tmp/hclab-runsc", "--rootfs", "/tmp/hclab-rootfs"]
    result = lab.lab.exec(containerd, [*ctr, "hclab-runsc", "/bin/dmesg"])
    assert b"gVisor" in result.stdout
