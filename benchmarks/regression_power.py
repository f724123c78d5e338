"""How often does the regression judge cry wolf, and how often does it catch a real slowdown?

Simulates weekly runs of one case: `--history` earlier runs and a current run, each of `--repeats`
repeats whose level varies by the given coefficient of variation (wall time and images/s; every
repeat also has `--epochs` steady epochs with 1 % epoch-to-epoch noise), then asks
`trainbench.checks.regression.judge` for its verdict.  Prints, side by side for the noise measured on
the H200 before warm-up (wall CV 10 %, images/s CV 6 %) and for the post-warm-up goal (3 %, 2 %):
the false-alarm rate on an unchanged case (target <= 2 %), the detection rate of a 15 % slowdown
(target >= 90 %), and the share of verdicts that were `inconclusive` (noisy repeats); last, both rates for the
post-warm-up goal on one line.

    .venv/bin/python benchmarks/regression_power.py --trials 1000
"""

from __future__ import annotations

import argparse

import numpy as np

from trainbench.checks.regression import judge
from trainbench.config import RegressionPolicy
from trainbench.result import Result

from _common import parse, with_quick

NOISE = {
    "before warm-up (H200)": {"wall_s": 0.10, "images_per_s": 0.06},
    "goal after warm-up": {"wall_s": 0.03, "images_per_s": 0.02},
}


def run(rng, run_id: str, repeats: int, epochs: int, cv: dict, slowdown: float) -> list[Result]:
    rows = []
    for repeat in range(1, repeats + 1):
        wall = 20.0 * slowdown * (1 + rng.normal(0, cv["wall_s"]))
        ips = 50_000 / slowdown * (1 + rng.normal(0, cv["images_per_s"]))
        steady = list(ips * (1 + rng.normal(0, 0.01, epochs - 1)))
        rows.append(
            Result(
                run_id=run_id,
                case_key=f"pytorch__0__r{repeat}",
                env_key="k",
                framework="pytorch",
                device_set="0",
                repeat=repeat,
                status="ok",
                wall_s=wall,
                images_per_s=float(np.median(steady)),
                epochs=[{"images_per_s": ips * 0.5}] + [{"images_per_s": v} for v in steady],
            )
        )
    return rows


def rates(args, cv: dict, metric: str) -> tuple[float, float, float]:
    rng = np.random.default_rng(args.seed)
    policy = RegressionPolicy(lookback_runs=args.history)
    order = [f"w{i}" for i in range(args.history)]
    counts = {"false alarm": 0, "detected": 0, "inconclusive": 0}
    for _ in range(args.trials):
        history = [r for week in order for r in run(rng, week, args.repeats, args.epochs, cv, 1.0)]
        for slowdown, hit in ((1.0, "false alarm"), (1.15, "detected")):
            now = run(rng, "now", args.repeats, args.epochs, cv, slowdown)
            (v,) = judge(now, history, order, policy, metric=metric, max_cv=args.max_cv)
            counts[hit] += v.verdict in (("regressed", "improved") if slowdown == 1.0 else ("regressed",))
            counts["inconclusive"] += v.verdict == "inconclusive"
    return (
        counts["false alarm"] / args.trials,
        counts["detected"] / args.trials,
        counts["inconclusive"] / (2 * args.trials),
    )


def main() -> None:
    p = with_quick(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--history", type=int, default=8, help="earlier runs in the lookback window")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--max-cv", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    args = parse(p, trials=50)
    print(
        f"{args.trials} trials per cell, {args.repeats} repeats, {args.history} runs of history, "
        f"max_cv {args.max_cv:.0%}; targets: false alarms <= 2 %, detection of a 15 % slowdown >= 90 %"
    )
    print(f"{'noise':<24} {'metric':<13} {'false alarms':>12} {'detected':>9} {'inconclusive':>13}")
    goal = []
    for label, cv in NOISE.items():
        for metric in ("wall_s", "images_per_s"):
            false_alarms, detected, inconclusive = rates(args, cv, metric)
            print(
                f"{label + ' ' + format(cv[metric], '.0%'):<24} {metric:<13} {false_alarms:>12.1%} "
                f"{detected:>9.1%} {inconclusive:>13.1%}"
            )
            if label == "goal after warm-up":
                goal.append(f"{metric} false_alarms {100 * false_alarms:.1f}% detect_15pct {100 * detected:.1f}%")
    print("regression power after warm-up: " + "; ".join(goal))


if __name__ == "__main__":
    main()
