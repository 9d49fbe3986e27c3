#!/usr/bin/env bash
# All tests: unit, golden, lint, Pulumi mocks and the lab integration tests (root, Linux).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
# The offline bundle (Kubernetes, etcd 3.6, containerd, images, ...) from the pinned Go modules:
# compiled once, then taken from /var/cache/hardened-cluster in seconds.
if command -v go >/dev/null || [ -x /usr/local/go/bin/go ]; then
  hardened-cluster artifacts build
else
  echo "test: Go is not installed: the offline bundle is not built, and the tests that need it are skipped"
fi
exec .venv/bin/python -m pytest -W error::pytest.PytestReturnNotNoneWarning "$@"
