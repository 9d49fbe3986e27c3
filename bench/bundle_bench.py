"""Bundle benchmark: `hardened-cluster artifacts build`, cold and warm, with the size of what it made.

    .venv/bin/python bench/bundle_bench.py            # warm: the machine's caches (target: < 30 s)
    .venv/bin/python bench/bundle_bench.py --cold     # cold: empty module, build and artifact caches

A cold run builds into a fresh cache directory (HC_CACHE_DIR) so nothing of the machine's caches is
used: every module is downloaded from the Go module proxy and every package compiled. It takes the
better part of an hour on 2 cores and leaves that cache behind (its path is printed).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WARM_TARGET = 30.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="build into an empty cache directory")
    args = parser.parse_args()
    env = dict(os.environ)
    out = None
    if args.cold:
        cache = Path(tempfile.mkdtemp(prefix="hc-bundle-cold-", dir="/var/tmp"))
        env["HC_CACHE_DIR"] = str(cache)
        out = cache / "bundle"
        print(f"cold build into {cache}")
    argv = [str(REPO / ".venv/bin/hardened-cluster"), "artifacts", "build"] + (["--out", str(out)] if out else [])
    started = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    print(result.stdout, end="")
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        return 1
    built = [line for line in result.stdout.splitlines() if " built in " in line]
    summary = result.stdout.strip().splitlines()[-1]
    print(f"\n{'cold' if args.cold else 'warm'} build: {seconds:.1f} s, {len(built)} compiled; {summary}")
    if not args.cold:
        verdict = "PASS" if seconds < WARM_TARGET and not built else "FAIL"
        print(f"warm target < {WARM_TARGET:.0f} s with nothing compiled: {verdict}")
        return 0 if verdict == "PASS" else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
