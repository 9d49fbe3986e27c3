import pytest

TEARDOWN_MODULE = "test_lab_teardown.py"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The teardown tests take the shared lab down, so they must come after every other test.
    last = [item for item in items if item.path.name == TEARDOWN_MODULE]
    items[:] = [item for item in items if item.path.name != TEARDOWN_MODULE] + last
