import re
import shutil
from pathlib import Path

import pytest

from hardened_cluster.spec import LoadedSpec, load_spec

pytest_plugins = ["hardened_cluster.lab.pytest_plugin"]

REPO = Path(__file__).resolve().parents[1]
LAB_SPEC = REPO / "inventories" / "lab" / "cluster.yaml"
TEARDOWN_MODULE = "test_lab_teardown.py"
# Recreates etcd from empty to start from Debian's 3.4: after every other cluster test.
AFTER_CLUSTER_MODULES = {"test_bundle_etcd.py"}


def _lab_order(item: pytest.Item) -> int:
    # The lab's own tests need nodes that nothing has hardened yet; the teardown tests take the
    # shared lab down, so they come after every other test.
    if item.path.name == TEARDOWN_MODULE:
        return 3
    if item.path.name in AFTER_CLUSTER_MODULES:
        return 2
    return 0 if item.path.name.startswith("test_lab_") else 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_lab_order)


@pytest.fixture(scope="session")
def bundle():
    """The offline bundle the lab spec names (scripts/test.sh builds it where Go is installed)."""
    from hardened_cluster import bundle as bundles

    root = bundles.default_out(bundles.DEFAULT_KUBERNETES)
    try:
        built = bundles.load(root)
    except bundles.BundleError as exc:
        reason = "Go is not installed" if shutil.which("go") is None else "it was not built"
        pytest.skip(f"needs the offline bundle ({reason}: {exc})")
    return built


@pytest.fixture(scope="session")
def bundle_spec_text():
    """The lab spec's text with its artifacts from the bundle at a given directory."""
    from hardened_cluster.bundle import DEFAULT_KUBERNETES

    def text(root: Path) -> str:
        spec = re.sub(r"(?m)^  artifacts: \w+$", f"  artifacts: bundle\n  bundle: {root}", LAB_SPEC.read_text())
        return re.sub(r'kubernetes_version: "[0-9.]+"', f'kubernetes_version: "{DEFAULT_KUBERNETES}"', spec)

    return text


@pytest.fixture(scope="session")
def lab_spec(lab, tmp_path_factory) -> LoadedSpec:
    """The lab spec, copied beside a known_hosts that pins the running nodes' keys."""
    directory = tmp_path_factory.mktemp("lab-spec")
    shutil.copy(LAB_SPEC, directory / "cluster.yaml")
    shutil.copy(lab.known_hosts, directory / "known_hosts")
    return load_spec(directory / "cluster.yaml")


@pytest.fixture(scope="session")
def lab_state(tmp_path_factory) -> Path:
    """State dir (secrets, PKI, staged plan, reports) shared by the lab tests of one session."""
    return tmp_path_factory.mktemp("state") / "lab"
