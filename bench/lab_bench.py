"""Lab timings against their targets: image build, `lab up` of 6 nodes (cached image), `lab down`.

Usage (root): .venv/bin/python bench/lab_bench.py [--rebuild]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from hardened_cluster.lab import Lab, default_nodes
from hardened_cluster.lab.image import image_key

BUILD_TARGET = 180.0
UP_TARGET = 15.0
DOWN_TARGET = 10.0
NODES = 6


def report(label: str, seconds: float, target: float) -> bool:
    ok = seconds < target
    print(f"{'PASS' if ok else 'FAIL'}  {label:<28} {seconds:7.1f} s  (target < {target:.0f} s)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild", action="store_true", help="drop the cached image and time a fresh build")
    args = parser.parse_args()
    lab = Lab()
    results = []
    lab.down()
    cached = lab.cache_dir / f"image-{image_key()}"
    if args.rebuild and cached.exists():
        shutil.rmtree(cached)
    if cached.exists():
        print(f"SKIP  image build                  cached at {cached} (use --rebuild to time a build)")
    else:
        start = time.monotonic()
        lab.build_image()
        results.append(report("image build", time.monotonic() - start, BUILD_TARGET))
    start = time.monotonic()
    lab.up(default_nodes(NODES))
    results.append(report(f"lab up ({NODES} nodes)", time.monotonic() - start, UP_TARGET))
    states = sorted({s["state"] for s in lab.status()})
    print(f"      node states: {', '.join(states)}")
    start = time.monotonic()
    lab.down()
    results.append(report("lab down", time.monotonic() - start, DOWN_TARGET))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
