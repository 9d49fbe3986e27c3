#!/usr/bin/env bash
# The main job: a 6-node lab on this machine, hardened and verified (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/hardened-cluster demo --spec inventories/lab/cluster.yaml "$@"
