"""Every Kubernetes build module (artifacts/build/kubernetes-<minor>) pins one release and replaces its
staging modules with the matching v0.<minor>.<patch> releases; read from go.mod and go.sum, no Go needed."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from hardened_cluster.deliver import bundle

K8S = "k8s.io/kubernetes"
MODULES = sorted(bundle.BUILD_ROOT.glob("kubernetes-*"))
_BLOCK = re.compile(r"^(require|replace|tool)\s*\(\s*$")
_SINGLE = re.compile(r"^(require|replace|tool)\s+(.+)$")


def _directives(go_mod: str) -> dict[str, list[str]]:
    """The lines of each require/replace/tool directive, block or single-line, comments dropped."""
    out: dict[str, list[str]] = {"require": [], "replace": [], "tool": []}
    block = None
    for raw in go_mod.splitlines():
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        if block:
            if line == ")":
                block = None
            else:
                out[block].append(line)
        elif match := _BLOCK.match(line):
            block = match.group(1)
        elif match := _SINGLE.match(line):
            out[match.group(1)].append(match.group(2).strip())
    return out


def problems(module_dir: Path) -> list[str]:
    """What is wrong with one Kubernetes build module (empty when it is sound)."""
    found: list[str] = []
    directives = _directives((module_dir / "go.mod").read_text())
    required = dict(line.split()[:2] for line in directives["require"])
    pin = required.get(K8S)
    if pin is None:
        return [f"{module_dir.name}/go.mod does not require {K8S}"]
    release = re.fullmatch(r"v1\.(\d+)\.(\d+)", pin)
    if release is None:
        return [f"{module_dir.name}: {K8S} {pin} is not a v1.<minor>.<patch> release"]
    if bundle.kubernetes_build(pin[1:]) != module_dir.name:
        found.append(f"{module_dir.name}: {K8S} is pinned at {pin}, another minor than the directory's")
    staging = f"v0.{release.group(1)}.{release.group(2)}"

    replaced: dict[str, tuple[str, str]] = {}
    for line in directives["replace"]:
        source, target = (side.split() for side in line.split("=>"))
        if len(target) != 2:
            found.append(f"{module_dir.name}: replace {line!r} is not a module@version (a path cannot be built)")
            continue
        replaced[source[0]] = (target[0], target[1])
    for name, (target, version) in sorted(replaced.items()):
        if (target, version) != (name, staging):
            found.append(f"{module_dir.name}: {name} is replaced by {target} {version}, not {name} {staging}")
    for name, version in sorted(required.items()):
        if name.startswith("k8s.io/") and version == "v0.0.0" and name not in replaced:
            found.append(f"{module_dir.name}: {name} is required at v0.0.0 and not replaced")

    go_sum = set((module_dir / "go.sum").read_text().split("\n"))
    sums = {tuple(line.split()[:2]) for line in go_sum if line}
    for entry in ((K8S, pin), (K8S, f"{pin}/go.mod")):
        if entry not in sums:
            found.append(f"{module_dir.name}/go.sum has no line for {' '.join(entry)}")
    for name in sorted(set(required) & set(replaced)):
        if (name, f"{replaced[name][1]}/go.mod") not in sums:
            found.append(f"{module_dir.name}/go.sum has no line for {name} {replaced[name][1]}/go.mod")
    return found


def test_there_are_kubernetes_build_modules():
    assert {m.name for m in MODULES} >= {"kubernetes-1.35", "kubernetes-1.36"}


@pytest.mark.parametrize("module_dir", MODULES, ids=[m.name for m in MODULES])
def test_module_pins_one_release_and_its_staging_modules(module_dir):
    assert problems(module_dir) == []


@pytest.mark.parametrize("module_dir", MODULES, ids=[m.name for m in MODULES])
def test_module_builds_every_kubernetes_command(module_dir):
    tools = set(_directives((module_dir / "go.mod").read_text())["tool"])
    assert tools == {f"{K8S}/cmd/{c}" for c in bundle.KUBERNETES_COMMANDS}


@pytest.mark.parametrize("version", ["1.35.4", "1.36.3"])
def test_binaries_of_a_release_come_from_its_minors_module(version):
    commands = [b for b in bundle.binaries(version) if b.module == K8S]
    assert sorted(b.name for b in commands) == sorted(bundle.KUBERNETES_COMMANDS)
    minor = ".".join(version.split(".")[:2])
    for b in commands:
        assert b.build == f"kubernetes-{minor}", b
        assert b.build_dir.is_dir(), b
        assert bundle.pinned_version(b.build_dir, K8S) == f"v{version}"
        assert b.package in _directives((b.build_dir / "go.mod").read_text())["tool"]


def _copy(module_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / module_dir.name
    shutil.copytree(module_dir, copy)
    return copy


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_a_pin_of_another_minor_is_caught(tmp_path):
    copy = _copy(bundle.BUILD_ROOT / "kubernetes-1.36", tmp_path)
    _edit(copy / "go.mod", f"{K8S} v1.36.3", f"{K8S} v1.35.4")
    found = problems(copy)
    assert any("another minor" in p for p in found), found
    assert any("go.sum has no line for k8s.io/kubernetes v1.35.4" in p for p in found), found
    # Every staging replace is now of another release than the pin's.
    assert sum("not k8s.io/" in p and "v0.35.4" in p for p in found) >= 30, found


def test_a_staging_module_of_another_patch_is_caught(tmp_path):
    copy = _copy(bundle.BUILD_ROOT / "kubernetes-1.36", tmp_path)
    _edit(copy / "go.mod", "k8s.io/kubelet => k8s.io/kubelet v0.36.3", "k8s.io/kubelet => k8s.io/kubelet v0.36.2")
    assert problems(copy) == ["kubernetes-1.36: k8s.io/kubelet is replaced by k8s.io/kubelet v0.36.2, "
                              "not k8s.io/kubelet v0.36.3",
                              "kubernetes-1.36/go.sum has no line for k8s.io/kubelet v0.36.2/go.mod"]


def test_a_staging_module_left_unreplaced_is_caught(tmp_path):
    copy = _copy(bundle.BUILD_ROOT / "kubernetes-1.36", tmp_path)
    _edit(copy / "go.mod", "\tk8s.io/kubectl => k8s.io/kubectl v0.36.3\n", "")
    assert problems(copy) == ["kubernetes-1.36: k8s.io/kubectl is required at v0.0.0 and not replaced"]


def test_a_replace_by_a_staging_path_is_caught(tmp_path):
    copy = _copy(bundle.BUILD_ROOT / "kubernetes-1.36", tmp_path)
    _edit(copy / "go.mod", "k8s.io/api => k8s.io/api v0.36.3", "k8s.io/api => ./staging/src/k8s.io/api")
    assert any("k8s.io/api" in p and "a path cannot be built" in p for p in problems(copy))
