"""How long until a trainer has its data? `cifar10.load` of the whole synthetic set (50,000 training and 10,000
test images) with a warm decoded cache (target <= 0.3 s), beside a cold load (decoding the pickles and writing
the cache) and a load that bypasses the cache.

    .venv/bin/python benchmarks/data_startup.py --repeats 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include" / "trainbench" / "trainers"))
import cifar10
from _common import parse, with_quick

TARGET_S = 0.3


def timed(root: str, cache: bool = True) -> float:
    started = time.perf_counter()
    train, test = cifar10.load(root, cache=cache)
    elapsed = time.perf_counter() - started
    assert len(train.labels) + len(test.labels) == 60_000
    return elapsed


def main() -> None:
    p = with_quick(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dir", help="where to write the synthetic set (default: a temporary folder, removed after)")
    args = parse(p, repeats=2)
    folder = args.dir or tempfile.mkdtemp(prefix="data-startup-")
    try:
        root = cifar10.write_synthetic(folder, seed=0)
        uncached = timed(root, cache=False)
        cold = timed(root)  # decodes and writes the cache
        warm = [timed(root) for _ in range(args.repeats)]
    finally:
        if not args.dir:
            shutil.rmtree(folder, ignore_errors=True)
    median = statistics.median(warm)
    print(f"decode without cache  {uncached:.3f} s")
    print(f"cold (decode + cache) {cold:.3f} s")
    print(f"warm cache            {median:.3f} s median of {len(warm)} (min {min(warm):.3f}, max {max(warm):.3f})")
    verdict = "meets" if median <= TARGET_S else "MISSES"
    print(f"60,000 images ready in {median:.3f} s: {verdict} the target <= {TARGET_S} s")


if __name__ == "__main__":
    main()
