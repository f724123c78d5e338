"""How often does the environment-change verdict cry wolf, how often does it catch a 5 % slowdown, and how many
repeats does it take?

Simulates cases through `trainbench.checks.environment_change.decide`, the whole design: a sequential measurement
up to `--cap` repeats and, where it finds a direction, a second one that must confirm it.  A case's "before" is
`--history-runs` runs of `--history-repeats` repeats (3 x 3); every repeat's images/s and wall time carry
independent lognormal noise of the given coefficient of variation (CV 2 %, 5 %, 10 %), and with `--session-cv`
every run and every after measurement also shifts all its repeats by a common lognormal factor (a session effect,
which one session's repeats cannot show; 0 by default).  With `--interleaved` the before is not history but the old
environment measured again in each measurement's session, alternating with the new (`decide`'s `control`, what the
before/after DAG does when the old interpreter is still there): compare the two at a `--session-cv` to see what
interleaving buys.  On an unchanged case a false alarm is any metric announced
`slower` or `faster`; on a slowed case (images/s x 0.95, wall time x 1.05) a detection is images/s announced
`slower`; "(first alone)" is what the first measurement would announce without confirmation.  Repeats are the
after repeats of both measurements, per scenario and (mean repeats) over both.  Targets at CV 2 % with a cap of
10: false alarms <= 1 %, detection >= 90 %.

    .venv/bin/python benchmarks/ab_power.py
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from trainbench.checks.environment_change import DIRECTIONS, SLOWER, Design, decide

from _common import parse, with_quick

NOISE = (0.02, 0.05, 0.10)
IPS, WALL = 50_000.0, 20.0


def lognormal(rng, cv: float, size: int) -> np.ndarray:
    """Factors of mean 1 and coefficient of variation `cv`."""
    sigma = math.sqrt(math.log1p(cv * cv))
    return rng.lognormal(-sigma * sigma / 2, sigma, size)


def simulate(args, rng, cv: float, ratio: float) -> tuple[dict[str, bool], int]:
    """One case: `decide`'s verdicts and the after repeats it used."""
    n = args.history_runs * args.history_repeats
    weeks = np.repeat(lognormal(rng, args.session_cv, args.history_runs), args.history_repeats)
    before = {
        "images_per_s": list(IPS * weeks * lognormal(rng, cv, n)),
        "wall_s": list(WALL * weeks * lognormal(rng, cv, n)),
    }
    sessions = lognormal(rng, args.session_cv, 2)

    def measure(n: int) -> dict[str, float | None]:
        ips, wall = lognormal(rng, cv, 2)
        return {"images_per_s": IPS * ratio * sessions[n - 1] * ips, "wall_s": WALL / ratio * sessions[n - 1] * wall}

    def control(n: int) -> dict[str, float | None]:
        ips, wall = lognormal(rng, cv, 2)
        return {"images_per_s": IPS * sessions[n - 1] * ips, "wall_s": WALL * sessions[n - 1] * wall}

    decision = decide(before, measure, Design(cap=args.cap), control if args.interleaved else None)
    verdicts = {m: v.verdict for m, v in decision.verdicts.items()}
    first = decision.measurements[0]
    return {
        "false alarm": any(v in DIRECTIONS for v in verdicts.values()),
        "first alone": any(v.verdict in DIRECTIONS for v in first.verdicts.values()),
        "detected": verdicts["images_per_s"] == SLOWER,
        "detected first": first.verdicts["images_per_s"].verdict == SLOWER,
        "inconclusive": verdicts["images_per_s"] == "inconclusive",
    }, decision.repeats


def main() -> None:
    p = with_quick(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    p.add_argument("--cases", type=int, default=20_000, help="simulated cases per noise level and scenario")
    p.add_argument("--cap", type=int, default=10)
    p.add_argument("--history-runs", type=int, default=3)
    p.add_argument("--history-repeats", type=int, default=3)
    p.add_argument("--session-cv", type=float, default=0.0)
    p.add_argument("--interleaved", action="store_true", help="the old environment measured again as the before")
    p.add_argument("--seed", type=int, default=0)
    args = parse(p, cases=500)
    started = time.perf_counter()
    se = {rate: math.sqrt(rate * (1 - rate) / args.cases) for rate in (0.01, 0.9)}
    print(
        f"{args.cases} cases per noise level and scenario; before "
        + (
            "the old environment, alternating"
            if args.interleaved
            else f"{args.history_runs} runs x {args.history_repeats} repeats"
        )
        + f", cap {args.cap}, session CV {args.session_cv:.0%}; standard error of a rate: "
        f"{se[0.01]:.2%} at 1 %, {se[0.9]:.2%} at 90 %"
    )
    print(
        f"{'noise CV':>8} {'false alarms':>12} {'(first alone)':>13} {'detect 5%':>9} {'(first alone)':>13} "
        f"{'inconclusive 5%':>15} {'repeats unchanged':>17} {'repeats 5%':>10} {'mean repeats':>12}"
    )
    last = ""
    for cv in NOISE:
        rng = np.random.default_rng([args.seed, round(cv * 1000)])
        unchanged = [simulate(args, rng, cv, 1.0) for _ in range(args.cases)]
        slowed = [simulate(args, rng, cv, 0.95) for _ in range(args.cases)]

        def rate(cases, key):
            return sum(c[key] for c, _ in cases) / len(cases)

        def repeats(cases):
            return sum(r for _, r in cases) / len(cases)

        false_alarms, detected, mean = (
            rate(unchanged, "false alarm"),
            rate(slowed, "detected"),
            repeats(unchanged + slowed),
        )
        print(
            f"{cv:>8.0%} {false_alarms:>12.2%} {rate(unchanged, 'first alone'):>13.2%} {detected:>9.1%} "
            f"{rate(slowed, 'detected first'):>13.1%} {rate(slowed, 'inconclusive'):>15.1%} "
            f"{repeats(unchanged):>17.1f} {repeats(slowed):>10.1f} {mean:>12.1f}"
        )
        if cv == NOISE[0]:
            last = (
                f"ab power: cv {cv:.0%} false_alarms {100 * false_alarms:.2f}% detect_5pct {100 * detected:.1f}% "
                f"mean_repeats {mean:.1f}"
            )
    print(f"({time.perf_counter() - started:.0f} s)")
    print(last)


if __name__ == "__main__":
    main()
