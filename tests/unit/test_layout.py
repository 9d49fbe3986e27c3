"""Dependencies point one way, in every module and subpackage: the rings call inwards, never out.

Rings, inner to outer: the core; the lab and the Pulumi component (each calls the core, not the other);
the CLI and the demo (they call any of them).
"""
import ast
import shutil
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "hardened_cluster"
CLI = ("hardened_cluster.cli",)
LAB = ("hardened_cluster.lab",)
PULUMI = ("hardened_cluster.pulumi", "pulumi", "pulumi_kubernetes")
# What each ring must never import.
FORBIDDEN = {"core": CLI + LAB + PULUMI, "lab": CLI + PULUMI, "pulumi": CLI + LAB, "cli": ()}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def ring(module: str) -> str:
    for name, prefixes in (("cli", CLI), ("lab", LAB), ("pulumi", PULUMI)):
        if _within(module, prefixes):
            return name
    return "core"


def module_names(package: Path) -> dict[str, Path]:
    """Every module of the package, subpackages included, by dotted name."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(module: str, path: Path) -> set[str]:
    """Absolute names a module imports; relative imports resolved against its package."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from pkg import mod` may import a module: both names are checked.
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


def wrong_way_imports(package: Path) -> dict[str, list[str]]:
    found = {}
    for module, path in module_names(package).items():
        bad = sorted(n for n in imports(module, path) if _within(n, FORBIDDEN[ring(module)]))
        if bad:
            found[module] = bad
    return found


def test_no_module_imports_an_outer_ring():
    assert wrong_way_imports(PACKAGE) == {}


def test_every_ring_and_subpackage_is_walked():
    rings = {}
    for module in module_names(PACKAGE):
        rings.setdefault(ring(module), set()).add(module)
    assert {"hardened_cluster.spec.model", "hardened_cluster.plan.render", "hardened_cluster.deliver.ansible"} <= rings["core"]
    assert {"hardened_cluster.lab", "hardened_cluster.lab.pytest_plugin", "hardened_cluster.lab.from_spec"} <= rings["lab"]
    assert {"hardened_cluster.pulumi.component", "hardened_cluster.pulumi.providers"} <= rings["pulumi"]
    assert {"hardened_cluster.cli.main", "hardened_cluster.cli.lab", "hardened_cluster.cli.demo"} <= rings["cli"]


@pytest.mark.parametrize("planted, expected", [
    ("from hardened_cluster.cli.lab import start\n", "hardened_cluster.cli.lab"),
    ("from ..cli import main\n", "hardened_cluster.cli.main"),
    ("import hardened_cluster.pulumi.component\n", "hardened_cluster.pulumi.component"),
], ids=["absolute", "relative", "pulumi"])
def test_planted_wrong_way_import_in_a_subfolder_fails_the_check(tmp_path, planted, expected):
    copy = tmp_path / "hardened_cluster"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "lab" / "planted.py").write_text(planted)
    found = wrong_way_imports(copy)
    assert list(found) == ["hardened_cluster.lab.planted"] and expected in found["hardened_cluster.lab.planted"]


def test_core_importing_the_lab_from_a_nested_module_fails_the_check(tmp_path):
    copy = tmp_path / "hardened_cluster"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "nested").mkdir()
    (copy / "nested" / "__init__.py").write_text("from ..lab import Lab\n")
    assert wrong_way_imports(copy) == {"hardened_cluster.nested": ["hardened_cluster.lab", "hardened_cluster.lab.Lab"]}


def test_no_module_is_over_about_600_lines():
    long = {module: n for module, path in module_names(PACKAGE).items() if (n := len(path.read_text().splitlines())) > 650}
    assert long == {}
