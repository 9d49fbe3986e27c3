"""The pause and CoreDNS tags of each Kubernetes minor have one owner (kubeadm.KUBEADM_IMAGE_TAGS): the
CoreDNS build module of the minor pins that CoreDNS, kubeadm's own source of the pinned release names the
same tags, containerd's sandbox image follows the spec's minor, and a bundle build refuses a kubeadm
that lists others."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from hardened_cluster.deliver import bundle
from hardened_cluster.plan import kubeadm
from hardened_cluster.plan.render import render_plan
from hardened_cluster.secrets.store import resolve_secrets
from hardened_cluster.spec.load import parse_spec

SAMPLE = Path(__file__).resolve().parents[2] / "inventories" / "sample" / "cluster.yaml"
K8S = "k8s.io/kubernetes"
MINORS = sorted(m.name.removeprefix("kubernetes-") for m in bundle.BUILD_ROOT.glob("kubernetes-*"))


@pytest.mark.parametrize("minor", MINORS)
def test_every_kubernetes_build_module_has_a_coredns_module_at_kubeadms_tag(minor):
    tags = kubeadm.image_tags(int(minor.split(".")[1]))
    build_dir = bundle.BUILD_ROOT / f"coredns-{minor}"
    assert bundle.coredns_build(f"{minor}.0") == build_dir.name
    assert bundle.pinned_version(build_dir, bundle.COREDNS_MODULE) == tags.coredns
    assert f"tool {bundle.COREDNS_MODULE}" in (build_dir / "go.mod").read_text()
    [coredns] = [b for b in bundle.binaries(f"{minor}.0") if b.name == "coredns"]
    assert coredns.build_dir == build_dir


@pytest.mark.parametrize("minor", MINORS)
def test_the_table_is_what_the_pinned_kubeadm_source_says(minor):
    """Read from kubeadm's constants.go in the module cache (where a build or `go mod download` left it)."""
    version = bundle.pinned_version(bundle.BUILD_ROOT / f"kubernetes-{minor}", K8S)
    constants = (Path(bundle.go_env()["GOMODCACHE"]) / f"k8s.io/kubernetes@{version}" / "cmd/kubeadm/app/constants"
                 / "constants.go")
    if not constants.is_file():
        pytest.skip(f"{K8S}@{version} is not in the module cache")
    source = constants.read_text()
    pause = re.search(r'^\s*PauseVersion = "([^"]+)"', source, re.M).group(1)
    coredns = re.search(r'^\s*CoreDNSVersion = "([^"]+)"', source, re.M).group(1)
    assert kubeadm.image_tags(int(minor.split(".")[1])) == kubeadm.ImageTags(pause=pause, coredns=coredns)


def test_the_1_36_tags_differ_from_1_35s():
    assert kubeadm.image_tags(35) == kubeadm.ImageTags(pause="3.10.1", coredns="v1.13.1")
    assert kubeadm.image_tags(36) == kubeadm.ImageTags(pause="3.10.2", coredns="v1.14.2")


def test_an_unknown_minor_is_refused_naming_the_table():
    with pytest.raises(ValueError, match=r"Kubernetes 1\.99 .*kubeadm\.KUBEADM_IMAGE_TAGS"):
        kubeadm.image_tags(99)


@pytest.mark.parametrize("version, pause", [("1.35.4", "3.10.1"), ("1.36.3", "3.10.2"), ("1.33.5", "3.10")])
def test_containerds_sandbox_image_follows_the_specs_minor(version, pause, tmp_path):
    data = yaml.safe_load(SAMPLE.read_text())
    data["cluster"]["kubernetes_version"] = version
    loaded = parse_spec(data, SAMPLE)
    plan = render_plan(loaded, resolve_secrets(loaded, tmp_path / "state"))
    configs = [host.files["/etc/containerd/config.toml"].content for host in plan.hosts.values()
               if "/etc/containerd/config.toml" in host.files]
    assert configs
    for config in configs:
        assert re.findall(r'sandbox_image = "([^"]+)"', config) == [f"registry.k8s.io/pause:{pause}"]


def _listing(pause: str, coredns: str) -> dict[str, str]:
    return {"kube-apiserver": "registry.k8s.io/kube-apiserver:v1.36.3", "pause": f"registry.k8s.io/pause:{pause}",
            "coredns": f"registry.k8s.io/coredns/coredns:{coredns}"}


def test_a_kubeadm_listing_other_tags_is_refused():
    bundle.check_image_tags(_listing("3.10.2", "v1.14.2"), "1.36.3")
    with pytest.raises(bundle.BundleError, match=r"pause:3\.10\.1.*KUBEADM_IMAGE_TAGS\[36\]\.pause is '3\.10\.2'"):
        bundle.check_image_tags(_listing("3.10.1", "v1.14.2"), "1.36.3")
    with pytest.raises(bundle.BundleError, match=r"coredns:v1\.13\.1.*KUBEADM_IMAGE_TAGS\[36\]\.coredns"):
        bundle.check_image_tags(_listing("3.10.2", "v1.13.1"), "1.36.3")


def test_a_coredns_module_at_another_version_is_refused(monkeypatch, tmp_path):
    (tmp_path / "coredns-1.36").mkdir()
    go_mod = (bundle.BUILD_ROOT / "coredns-1.36" / "go.mod").read_text()
    (tmp_path / "coredns-1.36" / "go.mod").write_text(go_mod.replace("coredns/coredns v1.14.2", "coredns/coredns v1.13.1"))
    monkeypatch.setattr(bundle, "BUILD_ROOT", tmp_path)
    with pytest.raises(bundle.BundleError, match=r"coredns-1\.36 pins CoreDNS v1\.13\.1, but kubeadm 1\.36\.3 names v1\.14\.2"):
        bundle.check_image_tags(_listing("3.10.2", "v1.14.2"), "1.36.3")
