"""Flag regressions against history, without crying wolf.

For each case (framework x device set) a run's median of repeats is compared with the
history of the same case under the same comparability key (lookback window of runs).
A change is flagged only when it exceeds a practical threshold (default 5 %) and a
statistical test agrees: Mann-Whitney U between this run's repeats and the history's,
or, with a single repeat, a z-score against the history's run medians.  A case whose
environment (driver, framework version, ...) has no history yet is a `new environment`,
never a regression; `driver_comparisons` sets the old and new environments side by side.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

from trainbench.config import RegressionPolicy as Policy
from trainbench.fingerprint import KEY_FIELDS

VERDICTS = ("regressed", "improved", "stable", "insufficient history", "new environment")
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
    runs: dict[str, list[float]] = {}
    for r in rows:
        if r["status"] == "ok" and r.get(metric) is not None:
            runs.setdefault(r["run_id"], []).append(r[metric])
    return runs


def _p_value(current: list[float], history: dict[str, list[float]], alpha: float) -> tuple[float | None, str]:
    """The test's p-value, or None when these sample sizes cannot reach `alpha` at all."""
    from scipy import stats

    pooled = [v for values in history.values() for v in values]
    if len(current) >= 2 and len(pooled) >= 3:
        smallest = 2 / math.comb(len(current) + len(pooled), len(current))
        if smallest >= alpha:
            return None, f"Mann-Whitney U cannot reach p < {alpha:g} with {len(current)} and {len(pooled)} values"
        return float(stats.mannwhitneyu(current, pooled, alternative="two-sided").pvalue), "Mann-Whitney U"
    medians = [statistics.median(v) for v in history.values()]
    if len(medians) >= 3:
        spread = statistics.stdev(medians)
        if spread == 0:
            return (1.0 if statistics.median(current) == medians[0] else 0.0), "z-score (history without spread)"
        z = (statistics.median(current) - statistics.mean(medians)) / spread
        return math.erfc(abs(z) / math.sqrt(2)), f"z-score {z:+.2f}"
    return None, "too few values for a test"


def judge(
    current_rows: list[dict],
    history_rows: list[dict],
    run_order: list[str],
    policy: Policy = DEFAULT_POLICY,
    metric: str = "wall_s",
) -> list[Verdict]:
    """One verdict per case of `current_rows`; `run_order` lists history run ids oldest first."""
    out = []
    cases = dict.fromkeys((r["framework"], r["device_set"], r["env_key"]) for r in current_rows)
    rank = {run: i for i, run in enumerate(run_order)}
    for fw, ds, key in cases:
        mine = [r for r in current_rows if (r["framework"], r["device_set"], r["env_key"]) == (fw, ds, key)]
        values = [v for vs in _by_run(mine, metric).values() for v in vs]
        same_case = [r for r in history_rows if (r["framework"], r["device_set"]) == (fw, ds)]
        same_env = _by_run([r for r in same_case if r["env_key"] == key], metric)
        window = dict(sorted(same_env.items(), key=lambda kv: rank.get(kv[0], -1))[-policy.lookback_runs :])
        base = dict(framework=fw, device_set=ds, env_key=key, metric=metric, history_runs=len(window))
        if not values:
            out.append(
                Verdict(
                    **base,
                    verdict="insufficient history",
                    current=None,
                    baseline=None,
                    change=None,
                    p_value=None,
                    detail="no ok repeat in this run",
                )
            )
            continue
        current = statistics.median(values)
        if not window:
            other_envs = {r["env_key"] for r in same_case if r["status"] == "ok"} - {key}
            verdict = "new environment" if other_envs else "insufficient history"
            detail = (
                f"first run under this environment; {len(other_envs)} other environment(s) have history"
                if other_envs
                else "no history for this case yet"
            )
            out.append(
                Verdict(
                    **base, verdict=verdict, current=current, baseline=None, change=None, p_value=None, detail=detail
                )
            )
            continue
        baseline = statistics.median(v for vs in window.values() for v in vs)
        change = current / baseline - 1
        if len(window) < policy.min_history_runs:
            out.append(
                Verdict(
                    **base,
                    verdict="insufficient history",
                    current=current,
                    baseline=baseline,
                    change=change,
                    p_value=None,
                    detail=f"{len(window)} earlier run(s); {policy.min_history_runs} needed",
                )
            )
            continue
        p, test = _p_value(values, window, policy.alpha)
        if p is None:
            out.append(
                Verdict(
                    **base,
                    verdict="insufficient history",
                    current=current,
                    baseline=baseline,
                    change=change,
                    p_value=None,
                    detail=f"{change:+.1%}, but {test}",
                )
            )
            continue
        worse = METRICS[metric] * change > 0
        flagged = abs(change) > policy.threshold and p < policy.alpha
        verdict = ("regressed" if worse else "improved") if flagged else "stable"
        detail = (
            f"{change:+.1%} against the median of {len(window)} run(s) "
            f"(threshold {policy.threshold:.0%}); {test}, p = {p:.3g}"
        )
        out.append(
            Verdict(
                **base, verdict=verdict, current=current, baseline=baseline, change=change, p_value=p, detail=detail
            )
        )
    return out


def driver_comparisons(current_rows: list[dict], history_rows: list[dict], metric: str = "wall_s") -> list[dict]:
    """Same case under two environments that differ only in driver, CUDA or framework versions."""

    def rest(env: dict) -> dict:
        return {k: env.get(k) for k in KEY_FIELDS if k not in UPGRADE_FIELDS}

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
