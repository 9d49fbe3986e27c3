#!/usr/bin/env bash
# All tests: unit, golden, lint, Pulumi mocks and the lab integration tests (root, Linux).
# Extra arguments go to pytest, which then runs once, in the foreground.
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
pytest=(.venv/bin/python -m pytest -W error::pytest.PytestReturnNotNoneWarning)
if [ "$#" -gt 0 ]; then
  exec "${pytest[@]}" "$@"
fi
# The tests without a lab run beside the lab's (about 9 of its 60 minutes, sharing the cores): the two sessions
# split the suite by the `lab` marker, each with a temporary directory of its own; the other's report
# follows the lab's.
others=$(mktemp -d)
trap 'rm -rf "$others"' EXIT
"${pytest[@]}" -m "not lab" --basetemp="$others/tmp" >"$others/report" 2>&1 &
others_pid=$!
# CI's time allows the lab modules marked `long` only on request.
lab_tests="lab and not long"
if [ "${HC_LONG_TESTS:-}" = 1 ]; then
  lab_tests="lab"
fi
lab_rc=0
"${pytest[@]}" -m "$lab_tests" || lab_rc=$?
others_rc=0
wait "$others_pid" || others_rc=$?
echo "== the tests without a lab (pytest -m 'not lab'):"
cat "$others/report"
echo "test: lab tests exit $lab_rc, the others exit $others_rc"
[ "$lab_rc" -eq 0 ] && [ "$others_rc" -eq 0 ]
