"""The bundle's OCI archives import into a lab node's containerd and CRI lists every image kubeadm needs."""
from __future__ import annotations

import json
import subprocess

import pytest

pytestmark = pytest.mark.lab

NODE = "worker-2"


def test_images_import_and_crictl_lists_every_tag_kubeadm_asks_for(lab, bundle):
    lab.lab.exec(NODE, ["systemctl", "start", "containerd"])
    lab.lab.exec(NODE, ["sh", "-c", "cat > /tmp/crictl.tar.gz && tar -xzf /tmp/crictl.tar.gz -C /tmp"],
                 input=bundle.path("crictl").read_bytes())
    for a in bundle.artifacts.values():
        if a.kind == "image":
            lab.lab.exec(NODE, ["ctr", "-n", "k8s.io", "images", "import", "-"],
                         input=(bundle.root / a.file).read_bytes(), timeout=300)
    listed = subprocess.run([str(bundle.path("kubeadm")), "config", "images", "list", "--kubernetes-version",
                             f"v{bundle.kubernetes}"], capture_output=True, text=True, check=True).stdout.split()
    crictl = lab.lab.exec(NODE, ["/tmp/crictl", "--runtime-endpoint", "unix:///run/containerd/containerd.sock",
                                 "images", "-o", "json"]).stdout
    tags = {tag for image in json.loads(crictl)["images"] for tag in image["repoTags"]}
    assert {ref for ref in listed if "/etcd:" not in ref} <= tags
    # And the pause image, our own, runs: the sandbox of every pod.
    pause = next(ref for ref in listed if "/pause:" in ref)
    run = lab.lab.exec(NODE, ["ctr", "-n", "k8s.io", "run", "--rm", pause, "pause-version", "/usr/local/bin/pause",
                              "-v"], timeout=120)
    assert b"pause (hardened-cluster)" in run.stdout
