"""How repeatable is one case? N runs of one trainer through the runner, cold (after `--idle-s` of idle
before each run, as a weekly run meets the machine) and warm (right after a warm-up run); prints the CV
of the wall time and of the steady images/s for both, side by side, warm last (goal on a GPU after warm-up:
images/s CV <= 2 %, wall CV <= 3 %).  With `--lock-clocks` on a GPU host, the GPU clocks are locked
for the warm series (`trainbench.measure.clocks`, needs root) and restored afterwards.

    .venv/bin/python benchmarks/repeatability.py --device-set 0 --runs 5 --epochs 10 --train-images 0
"""

from __future__ import annotations

import time

from trainbench import devices
from trainbench.cases import Spread
from trainbench.measure import clocks

from _common import TRAINER_QUICK, launched, parse, parser, trainer_launch


def series(spec, runs: int, idle_s: float, warm: bool) -> tuple[list[float], list[float]]:
    walls, rates = [], []
    if warm:
        launched(spec)
    for i in range(runs):
        if not warm:
            time.sleep(idle_s)
        r, report = launched(spec)
        rate = report.steady_images_per_s
        walls.append(r.wall_s)
        rates.append(rate)
        print(f"{'warm' if warm else 'cold'} run {i + 1}: {r.wall_s:.3f} s, {rate:.1f} images/s", flush=True)
    return walls, rates


def describe(label: str, walls: list[float], rates: list[float]) -> str:
    wall, rate = Spread.of(walls), Spread.of(rates)
    return (
        f"{label:<28} wall median {wall.median or 0:.3f} s CV {wall.cv or 0:.2%} | "
        f"images/s median {rate.median or 0:,.0f} CV {rate.cv or 0:.2%} (n={wall.n})"
    )


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--idle-s", type=float, default=30.0, help="idle time before each cold run")
    p.add_argument("--lock-clocks", action="store_true")
    args = parse(p, **TRAINER_QUICK, runs=2, idle_s=0.0)
    spec, case, _ = trainer_launch(args)
    cold = series(spec, args.runs, args.idle_s, warm=False)
    locked = None
    if args.lock_clocks and case.device_set.kind == "gpu":
        nvml, error = devices.load_nvml()
        locked = clocks.lock(nvml, case.device_set.gpu_uuids) if nvml else {"error": error}
        print(f"clocks: {locked}")
    try:
        warm = series(spec, args.runs, args.idle_s, warm=True)
    finally:
        if locked and "error" not in locked:
            clocks.restore(nvml, locked)
    print(f"{case.label}, {args.epochs} epochs, {args.train_images or 50_000} images")
    print(describe("cold (after idle)", *cold))
    print(describe("warm (after a warm-up run)" + (" + locked" if locked else ""), *warm))


if __name__ == "__main__":
    main()
