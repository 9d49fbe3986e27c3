#!/usr/bin/env bash
# All tests: unit, golden, lint, Pulumi mocks and the lab integration tests (root, Linux).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m pytest -W error::pytest.PytestReturnNotNoneWarning "$@"
