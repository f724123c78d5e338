"""How much a case's repeats vary: the figures every verdict and report qualifies its numbers with.

Per case (framework x device set x host x environment) of a run, over its measured repeats
(warm-ups excluded): median, min, max and the coefficient of variation (sample standard
deviation over the mean) of the wall time and of the steady images/s.  A case whose CV
exceeds `[measurement] max_cv` is noisy: its verdict is `inconclusive`, never a change.
With a single repeat the spread is unknown (CV None) and the case cannot be judged either.
"""

from __future__ import annotations

import statistics


def measured(rows: list[dict]) -> list[dict]:
    """The rows statistics and verdicts are made of: warm-up runs are shown, never counted."""
    return [r for r in rows if not r.get("warmup")]


def cv(values: list[float]) -> float | None:
    if len(values) < 2 or not statistics.fmean(values):
        return None
    return statistics.stdev(values) / statistics.fmean(values)


def robust_cv(values: list[float]) -> float | None:
    """1.4826 x the median absolute deviation over the median: the CV for normally spread values, but one outlier
    (a run on a busy host) cannot inflate it, as it inflates the standard deviation."""
    if len(values) < 2 or not statistics.median(values):
        return None
    middle = statistics.median(values)
    return 1.4826 * statistics.median(abs(v - middle) for v in values) / middle


def _spread(prefix: str, values: list[float]) -> dict:
    if not values:
        return {f"{prefix}_median": None, f"{prefix}_min": None, f"{prefix}_max": None, f"{prefix}_cv": None}
    return {
        f"{prefix}_median": statistics.median(values),
        f"{prefix}_min": min(values),
        f"{prefix}_max": max(values),
        f"{prefix}_cv": cv(values),
    }


def case_stats(rows: list[dict], max_cv: float) -> list[dict]:
    """One dict per case of `rows` (ok, measured repeats only), in the order the cases first appear."""
    groups: dict[tuple, list[dict]] = {}
    for r in measured(rows):
        if r["status"] == "ok":
            groups.setdefault((r["framework"], r["device_set"], r.get("host") or "", r["env_key"]), []).append(r)
    out = []
    for (framework, device_set, host, env_key), rs in groups.items():
        walls = [r["wall_s"] for r in rs if r.get("wall_s") is not None]
        rates = [r["images_per_s"] for r in rs if r.get("images_per_s") is not None]
        stats = {
            "framework": framework,
            "device_set": device_set,
            "host": host,
            "env_key": env_key,
            "repeats": len(rs),
            **_spread("wall", walls),
            **_spread("ips", rates),
        }
        cvs = [c for c in (stats["wall_cv"], stats["ips_cv"]) if c is not None]
        stats["noisy"] = any(c > max_cv for c in cvs) if cvs else None
        out.append(stats)
    return out
