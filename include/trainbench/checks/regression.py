"""Flag regressions against history, without crying wolf.

For each case (framework x device set) a run's median of its measured repeats (warm-ups
never count) is compared with the history of the same case under the same comparability
key (lookback window of runs).  A case is only judged when its own noise is known and
small: one repeat, or repeats varying more than `max_cv` (coefficient of variation), give
`inconclusive`.  A change is flagged only when it exceeds both the practical threshold
(default 5 %) and twice the case's own historical spread (the CV of its run medians), and
Mann-Whitney U agrees: this run's samples against the history's, where the samples of
images/s are every steady epoch of every repeat and those of wall time the repeats.  A case
whose environment (driver, framework version, ...) has no history yet is a `new
environment`, never a regression; `driver_comparisons` sets old and new side by side.
A run of the window whose median lies more than 3 robust spreads (1.4826 x MAD / median, at
least the threshold) from the window's median (a busy host, a broken week) is set aside, named
in the detail, so one slow run cannot inflate the spread, drag the baseline or blunt the test
and hide the next regression.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

from trainbench.checks.dispersion import cv, measured, robust_cv
from trainbench.config import RegressionPolicy as Policy
from trainbench.fingerprint import KEY_FIELDS

VERDICTS = ("regressed", "improved", "stable", "inconclusive", "insufficient history", "new environment")
SPREAD_FACTOR = 2.0  # a change must exceed this many historical CVs (of run medians) as well as the threshold
OUTLIER_FACTOR = 3.0  # a history run this many robust spreads from the window's median is set aside
METRICS = {"wall_s": +1, "images_per_s": -1}  # +1: higher is worse
UPGRADE_FIELDS = ("driver_version", "cuda_driver_version", "framework_packages")

DEFAULT_POLICY = Policy()


@dataclass
class Verdict:
    framework: str
    device_set: str
    env_key: str
    metric: str
    verdict: str
    current: float | None
    baseline: float | None
    change: float | None
    p_value: float | None
    history_runs: int
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def _by_run(rows: list[dict], metric: str) -> dict[str, list[float]]:
    """Per run, the metric of each ok repeat."""
    runs: dict[str, list[float]] = {}
    for r in rows:
        if r["status"] == "ok" and r.get(metric) is not None:
            runs.setdefault(r["run_id"], []).append(r[metric])
    return runs


def _samples(rows: list[dict], metric: str) -> list[float]:
    """What the test compares: every steady epoch's images/s of every repeat, or each repeat's wall time."""
    out: list[float] = []
    for r in rows:
        if r["status"] != "ok" or r.get(metric) is None:
            continue
        steady = [e["images_per_s"] for e in (r.get("epochs") or [])[1:] if e.get("images_per_s")]
        out += steady if metric == "images_per_s" and steady else [r[metric]]
    return out


def _p_value(current: list[float], pooled: list[float], alpha: float) -> tuple[float | None, str]:
    """Mann-Whitney U's p-value, or None when these sample sizes cannot reach `alpha` at all."""
    from scipy import stats

    if len(current) < 2 or len(pooled) < 3:
        return None, "too few values for a test"
    smallest = 2 / math.comb(len(current) + len(pooled), len(current))
    if smallest >= alpha:
        return None, f"Mann-Whitney U cannot reach p < {alpha:g} with {len(current)} and {len(pooled)} values"
    return float(stats.mannwhitneyu(current, pooled, alternative="two-sided").pvalue), "Mann-Whitney U"


def _typical(window: dict[str, list[float]], threshold: float) -> dict[str, list[float]]:
    """The window without runs whose median lies far outside the others' (what one busy week looks like)."""
    medians = {run: statistics.median(vs) for run, vs in window.items()}
    middle = statistics.median(medians.values())
    scale = max(robust_cv(list(medians.values())) or 0.0, threshold)
    return {run: vs for run, vs in window.items() if abs(medians[run] / middle - 1) <= OUTLIER_FACTOR * scale}


def judge(
    current_rows: list[dict],
    history_rows: list[dict],
    run_order: list[str],
    policy: Policy = DEFAULT_POLICY,
    metric: str = "wall_s",
    max_cv: float = 0.05,
) -> list[Verdict]:
    """One verdict per case of `current_rows`; `run_order` lists history run ids oldest first."""
    current_rows, history_rows = measured(current_rows), measured(history_rows)
    out = []
    cases = dict.fromkeys((r["framework"], r["device_set"], r["env_key"]) for r in current_rows)
    rank = {run: i for i, run in enumerate(run_order)}
    for fw, ds, key in cases:
        mine = [r for r in current_rows if (r["framework"], r["device_set"], r["env_key"]) == (fw, ds, key)]
        same_case = [r for r in history_rows if (r["framework"], r["device_set"]) == (fw, ds)]
        same_env = _by_run([r for r in same_case if r["env_key"] == key], metric)
        window = dict(sorted(same_env.items(), key=lambda kv: rank.get(kv[0], -1))[-policy.lookback_runs :])
        found = _case(mine, same_case, key, window, policy, metric, max_cv)
        out.append(Verdict(framework=fw, device_set=ds, env_key=key, metric=metric, history_runs=len(window), **found))
    return out


def _case(
    mine: list[dict],
    same_case: list[dict],
    key: str,
    window: dict[str, list[float]],
    policy: Policy,
    metric: str,
    max_cv: float,
) -> dict:
    """One case's verdict, current, baseline, change, p_value and detail: the first rule that decides it wins."""
    values = [v for vs in _by_run(mine, metric).values() for v in vs]
    if not values:
        return _found("insufficient history", None, None, None, None, "no ok repeat in this run")
    current = statistics.median(values)
    if not window:
        other_envs = {r["env_key"] for r in same_case if r["status"] == "ok"} - {key}
        if other_envs:
            detail = f"first run under this environment; {len(other_envs)} other environment(s) have history"
            return _found("new environment", current, None, None, None, detail)
        return _found("insufficient history", current, None, None, None, "no history for this case yet")
    typical = _typical(window, policy.threshold)
    outliers = sorted(set(window) - set(typical))
    aside = f"; {len(outliers)} outlying run(s) set aside: {', '.join(outliers)}" if outliers else ""
    window = typical
    baseline = statistics.median(v for vs in window.values() for v in vs)
    change = current / baseline - 1
    noise = cv(values)
    if noise is None or noise > max_cv:
        why = (
            f"{len(values)} repeat: its noise is unknown, so no change can be told from it (use repeats >= 2)"
            if noise is None
            else f"noisy: repeats vary by CV {noise:.1%} > max_cv {max_cv:.0%}"
        )
        return _found("inconclusive", current, baseline, change, None, f"{change:+.1%}, but {why}")
    if len(window) < policy.min_history_runs:
        detail = f"{len(window)} earlier run(s); {policy.min_history_runs} needed"
        return _found("insufficient history", current, baseline, change, None, detail)
    past = [r for r in same_case if r["env_key"] == key and r["run_id"] in window]
    p, test = _p_value(_samples(mine, metric), _samples(past, metric), policy.alpha)
    if p is None:
        return _found("insufficient history", current, baseline, change, None, f"{change:+.1%}, but {test}")
    worse = METRICS[metric] * change > 0
    history_cv = cv([statistics.median(vs) for vs in window.values()]) or 0.0
    bar = max(policy.threshold, SPREAD_FACTOR * history_cv)
    flagged = abs(change) > bar and p < policy.alpha
    verdict = ("regressed" if worse else "improved") if flagged else "stable"
    detail = (
        f"{change:+.1%} against the median of {len(window)} run(s) (bar {bar:.1%}: threshold "
        f"{policy.threshold:.0%}, {SPREAD_FACTOR:g} x historical CV {history_cv:.1%}); {test}, p = {p:.3g}{aside}"
    )
    return _found(verdict, current, baseline, change, p, detail)


def _found(verdict, current, baseline, change, p_value, detail) -> dict:
    return {
        "verdict": verdict,
        "current": current,
        "baseline": baseline,
        "change": change,
        "p_value": p_value,
        "detail": detail,
    }


def driver_comparisons(current_rows: list[dict], history_rows: list[dict], metric: str = "wall_s") -> list[dict]:
    """Same case under two environments that differ only in driver, CUDA or framework versions."""

    def rest(env: dict) -> dict:
        return {k: env.get(k) for k in KEY_FIELDS if k not in UPGRADE_FIELDS}

    current_rows, history_rows = measured(current_rows), measured(history_rows)
    out = []
    cases: dict[tuple[str, str, str], tuple[dict, list[dict]]] = {}
    for r in current_rows:
        cases.setdefault((r["framework"], r["device_set"], r["env_key"]), (r["environment"] or {}, []))[1].append(r)
    for (fw, ds, key), (env, mine) in cases.items():
        now = [r[metric] for r in mine if r["status"] == "ok" and r.get(metric) is not None]
        older: dict[str, tuple[dict, list[float]]] = {}
        for r in history_rows:
            e = r.get("environment") or {}
            if (
                (r["framework"], r["device_set"]) == (fw, ds)
                and r["env_key"] != key
                and rest(e) == rest(env)
                and r["status"] == "ok"
                and r.get(metric) is not None
            ):
                older.setdefault(r["env_key"], (e, []))[1].append(r[metric])
        for _, (e, then) in older.items():
            if now:
                out.append(
                    {
                        "framework": fw,
                        "device_set": ds,
                        "metric": metric,
                        "before": {k: e.get(k) for k in UPGRADE_FIELDS},
                        "after": {k: env.get(k) for k in UPGRADE_FIELDS},
                        "before_median": statistics.median(then),
                        "after_median": statistics.median(now),
                        "ratio": statistics.median(now) / statistics.median(then),
                        "before_runs": len(then),
                        "after_runs": len(now),
                    }
                )
    return out
