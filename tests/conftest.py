import re
import shutil
from pathlib import Path

import pytest

from hardened_cluster.spec.load import load_spec
from hardened_cluster.spec.model import LoadedSpec

pytest_plugins = ["hardened_cluster.lab.pytest_plugin"]

REPO = Path(__file__).resolve().parents[1]
TEARDOWN_MODULE = "test_lab_teardown.py"
# Modules that run a lab of their own (same instance, other nodes): before the session's lab starts.
OWN_LAB_MODULES = {"test_firewall_ssh_port.py", "test_ha_control_plane.py", "test_kubernetes_upgrade.py"}
# Every host's full rerun, proving each module before restored what it changed: after them.
LAST_CLUSTER_MODULE = "test_kubernetes_rerun.py"
# After every other cluster test: they recreate etcd from empty (Debian's 3.4 to start from; the Pulumi
# tier providers with a state store of their own, so other certificates).
AFTER_CLUSTER_MODULES = {"test_bundle_etcd.py", "test_providers_lab.py"}


def spec_path() -> Path:
    """The lab spec the session's lab runs (the plugin's, imported once pytest has registered it)."""
    from hardened_cluster.lab.pytest_plugin import spec_path as plugin_spec_path

    return plugin_spec_path()


def _lab_order(item: pytest.Item) -> int:
    # The lab's own tests need nodes that nothing has hardened yet; the teardown tests take the
    # shared lab down, so they come after every other test.
    if item.path.name in OWN_LAB_MODULES:
        return -1
    if item.path.name == TEARDOWN_MODULE:
        return 4
    if item.path.name in AFTER_CLUSTER_MODULES:
        return 3
    if item.path.name == LAST_CLUSTER_MODULE:
        return 2
    return 0 if item.path.name.startswith("test_lab_") else 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_lab_order)


@pytest.fixture(scope="session")
def bundle():
    """The offline bundle the lab spec names (scripts/test.sh builds it where Go is installed)."""
    from hardened_cluster.deliver import bundle as bundles

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

    def text(root: Path) -> str:
        return re.sub(r"(?m)^  bundle: .*$", f"  bundle: {root}", spec_path().read_text())

    return text


@pytest.fixture(scope="session")
def distro_spec_text():
    """The lab spec's text with Debian's packages as the artifact source (etcd 3.4, no Kubernetes)."""
    return re.sub(r"(?m)^  artifacts: bundle\n  bundle: .*\n", "  artifacts: distro\n", spec_path().read_text())


@pytest.fixture(scope="session")
def lab_spec(lab, tmp_path_factory) -> LoadedSpec:
    """The lab spec, copied beside a known_hosts that pins the running nodes' keys."""
    directory = tmp_path_factory.mktemp("lab-spec")
    shutil.copy(spec_path(), directory / "cluster.yaml")
    shutil.copy(lab.known_hosts, directory / "known_hosts")
    return load_spec(directory / "cluster.yaml")


@pytest.fixture(scope="session")
def lab_state(tmp_path_factory) -> Path:
    """State dir (secrets, PKI, staged plan, reports) shared by the lab tests of one session."""
    return tmp_path_factory.mktemp("state") / "lab"
