"""Dependencies point one way: the CLI, the Pulumi program and the lab call the core, never back."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "hardened_cluster"
OUTER = ("hardened_cluster.cli", "hardened_cluster.lab_cli", "hardened_cluster.demo", "hardened_cluster.lab",
         "hardened_cluster.component", "hardened_cluster.providers", "pulumi", "pulumi_kubernetes")
CORE = sorted(p for p in PACKAGE.glob("*.py") if p.stem not in {"cli", "lab_cli", "demo", "component", "providers"})


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", CORE, ids=lambda p: p.stem)
def test_core_never_imports_outer_layers(module):
    bad = {name for name in _imports(module) if name.startswith(OUTER)}
    assert not bad, f"{module.name} imports {sorted(bad)}"


def test_core_modules_found():
    assert {"spec", "plan", "deliver", "core"} <= {p.stem for p in CORE}
