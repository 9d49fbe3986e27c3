#!/usr/bin/env bash
# The main job: a 6-node lab on this machine, hardened and verified (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# The offline bundle the lab installs (Kubernetes, etcd 3.6, images): built once, then cached.
if command -v go >/dev/null || [ -x /usr/local/go/bin/go ]; then
  .venv/bin/hardened-cluster artifacts build
else
  echo "demo: Go is not installed, so the offline bundle cannot be built: etcd and Kubernetes phases will stop" >&2
fi
exec .venv/bin/hardened-cluster demo --spec inventories/lab/cluster.yaml "$@"
