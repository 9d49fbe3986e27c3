"""The container_runtime role on the lab: exactly the planned handlers, gVisor for real, idempotence, drift.

Containers are started through containerd with the runtime options the CRI config gives the handler
the RuntimeClass names (the lab image has no crictl: Debian 12 does not package cri-tools), from an
OCI image built here from the node's busybox-static, so no registry is needed.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tomllib

import pytest
import yaml

from hardened_cluster.deliver import bundle
from hardened_cluster.deliver.converge import converge
from hardened_cluster.plan.render import make_environment

pytestmark = pytest.mark.lab

PHASES = ["runtime"]  # needs nothing from the hosts or etcd phases
NAMESPACE = "hc-runtime-test"
IMAGE = "hc.local/busybox:runtime-test"
APPLETS = ("sh", "cat", "dmesg", "uname")
# The CRI plugin's runtime section: containerd 1.6's (config version 2) and containerd 2's (version 3).
CRI = {2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}
# Debian 12's runsc (20221219) takes every network namespace for the host's on kernels that give
# each namespace its own net.core.rmem_default, and refuses to start with its network stack on.


def _blob(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _add(tar: tarfile.TarFile, info: tarfile.TarInfo, data: bytes | None = None) -> None:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def busybox_oci_archive(busybox: bytes, name: str) -> bytes:
    """An OCI image layout tarball: one layer with busybox and its applet links, for `ctr images import`."""
    layer_io = io.BytesIO()
    with tarfile.open(fileobj=layer_io, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for directory in ("bin", "dev", "proc", "sys", "tmp"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            _add(layer, info)
        info = tarfile.TarInfo("bin/busybox")
        info.mode = 0o755
        _add(layer, info, busybox)
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, "busybox", 0o777
            _add(layer, info)
    layer_data = layer_io.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
                         "rootfs": {"type": "layers", "diff_ids": [_blob(layer_data)]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _blob(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _blob(layer_data),
                    "size": len(layer_data)}],
    }).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _blob(manifest), "size": len(manifest),
        "annotations": {"io.containerd.image.name": name}}]}).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        files = [("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'), ("index.json", index)]
        files += [(f"blobs/sha256/{_blob(b)[7:]}", b) for b in (layer_data, config, manifest)]
        for path, data in files:
            info = tarfile.TarInfo(path)
            info.mode = 0o644
            _add(tar, info, data)
    return out.getvalue()


@pytest.fixture(scope="module")
def converged(lab_spec, lab_state):
    result, _ = converge(lab_spec, check=False, phases=PHASES, state=lab_state)
    assert result.succeeded, {h: r.errors for h, r in result.hosts.items() if r.errors}
    return result


def containerd_config(lab, node: str) -> dict:
    return tomllib.loads(lab.lab.exec(node, ["cat", "/etc/containerd/config.toml"]).stdout.decode())


def runtimes(config: dict) -> dict:
    return config["plugins"][CRI[config["version"]]]["containerd"]["runtimes"]


def gvisor_handler() -> str:
    """The handler the gVisor RuntimeClass names, from the manifest template the plan renders."""
    return yaml.safe_load(make_environment().get_template("manifests/runtimeclass-gvisor.yaml.j2").render())["handler"]


@pytest.fixture(scope="module")
def image(lab, converged):
    """The busybox image imported on every worker, in a namespace of its own that is removed after."""
    workers = ["worker-1", "worker-2"]
    for node in workers:
        busybox = lab.lab.exec(node, ["cat", "/bin/busybox"]).stdout
        lab.lab.exec(node, ["ctr", "-n", NAMESPACE, "images", "import", "-"], input=busybox_oci_archive(busybox, IMAGE))
    yield IMAGE
    for node in workers:
        lab.lab.exec(node, ["sh", "-c", f"ctr -n {NAMESPACE} images rm {IMAGE}; ctr namespaces rm {NAMESPACE}"],
                     check=False)


def run_container(lab, node: str, runtime: dict, script: str, name: str, extra: list[str] = ()):
    """`ctr run` with the runtime type and binary the CRI config gives the handler; cleaned up even on failure."""
    argv = ["ctr", "-n", NAMESPACE, "run", "--rm", "--runtime", runtime["runtime_type"]]
    binary = runtime.get("options", {}).get("BinaryName")
    if binary:
        argv += ["--runc-binary", binary]
    try:
        return lab.lab.exec(node, [*argv, *extra, IMAGE, name, "/bin/sh", "-c", script], check=False, timeout=120)
    finally:
        # A start that failed leaves the task in `created`: only a forced delete removes it.
        lab.lab.exec(node, ["sh", "-c", f"ctr -n {NAMESPACE} tasks rm -f {name}; ctr -n {NAMESPACE} containers rm {name}"],
                     check=False)


def test_containerd_has_exactly_the_planned_handlers(lab, converged):
    assert set(runtimes(containerd_config(lab, "cp-1"))) == {"runc"}
    for worker in ("worker-1", "worker-2"):
        # The lab spec enables Kata on the workers, but the lab has no /dev/vhost-vsock.
        assert set(runtimes(containerd_config(lab, worker))) == {"runc", gvisor_handler()}
        assert lab.lab.exec(worker, ["test", "-e", "/dev/vhost-vsock"], check=False).returncode != 0
    for node in ("cp-1", "worker-1", "worker-2"):
        mode = lab.lab.exec(node, ["stat", "-c", "%a %U:%G", "/etc/containerd/config.toml"]).stdout.decode().split()
        assert mode == ["600", "root:root"]
        assert lab.lab.exec(node, ["systemctl", "is-enabled", "containerd"]).stdout.decode().strip() == "enabled"
        assert lab.lab.exec(node, ["systemctl", "is-active", "containerd"]).stdout.decode().strip() == "active"


def test_the_bundles_containerd_runs_and_debians_is_gone(lab, lab_spec, converged):
    """The lab nodes start with Debian's containerd 1.6 (the lab image): one apply leaves them on the
    bundle's containerd, at the version bundle.json records, and nothing of Debian's package."""
    spec = lab_spec.spec
    assert spec.runtimes.artifacts == "bundle"
    want = bundle.load(spec.runtimes.bundle).artifacts["containerd"].version
    for node in ("cp-1", "worker-1", "worker-2"):
        server = lab.lab.exec(node, ["ctr", "version"]).stdout.decode()
        assert f"Version:  {want}" in server.split("Server:", 1)[1], server
        assert containerd_config(lab, node)["version"] == 3
        main_pid = lab.lab.exec(node, ["systemctl", "show", "-P", "MainPID", "containerd"]).stdout.decode().strip()
        exe = lab.lab.exec(node, ["readlink", f"/proc/{main_pid}/exe"]).stdout.decode().strip()
        assert exe == "/usr/local/bin/containerd"
        dpkg = lab.lab.exec(node, ["dpkg-query", "-W", "-f", "${db:Status-Status}", "containerd"], check=False)
        # Purged: dpkg knows nothing of it, or only that it is not installed (no config-files left).
        assert dpkg.returncode != 0 or dpkg.stdout.decode() == "not-installed", dpkg.stdout.decode()
        assert lab.lab.exec(node, ["test", "-e", "/usr/bin/containerd"], check=False).returncode != 0


def test_runc_handler_runs_on_the_host_kernel(lab, image):
    host = lab.lab.exec("worker-1", ["uname", "-r"]).stdout.decode().strip()
    result = run_container(lab, "worker-1", runtimes(containerd_config(lab, "worker-1"))["runc"], "uname -r", "runc-probe")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == host


def test_gvisor_handler_runs_under_gvisor(lab, image):
    host = lab.lab.exec("worker-1", ["uname", "-r"]).stdout.decode().strip()
    runtime = runtimes(containerd_config(lab, "worker-1"))[gvisor_handler()]
    script = "uname -r; dmesg"
    result = run_container(lab, "worker-1", runtime, script, "gvisor-probe")
    assert result.returncode == 0, result.stderr.decode()
    kernel, log = result.stdout.decode().split("\n", 1)
    assert "Starting gVisor" in log
    assert kernel != host


def test_a_second_converge_changes_nothing(lab_spec, lab_state, converged):
    again, _ = converge(lab_spec, check=False, phases=PHASES, state=lab_state, full=True)
    assert again.succeeded and again.hosts and not any(r.unchanged for r in again.hosts.values())
    assert again.changed == 0, {h: [c.describe() for c in r.changes] for h, r in again.hosts.items() if r.changes}


def test_drift_in_the_containerd_config_is_reported_and_fixed(lab, lab_spec, lab_state, converged):
    lab.lab.exec("worker-2", ["sh", "-c", "echo '# tampered' >> /etc/containerd/config.toml"])
    drift, _ = converge(lab_spec, check=True, phases=PHASES, state=lab_state)
    changes = [c.describe() for c in drift.hosts["worker-2"].changes]
    assert any("/etc/containerd/config.toml" in c for c in changes), changes
    assert all(r.changed == 0 for h, r in drift.hosts.items() if h != "worker-2")
    fixed, _ = converge(lab_spec, check=False, phases=PHASES, state=lab_state)
    assert any("Restart containerd" in c.task for c in fixed.hosts["worker-2"].changes)
    clean, _ = converge(lab_spec, check=True, phases=PHASES, state=lab_state, full=True)
    assert clean.succeeded and clean.hosts and not any(r.unchanged for r in clean.hosts.values())
    assert clean.changed == 0

