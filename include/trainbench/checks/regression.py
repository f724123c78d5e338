"""Flag regressions against history, without crying wolf.

For each case (host x framework x device set x environment, `trainbench.cases`) a run's
median of its counted repeats (warm-ups never count) is compared with the same case's
medians in earlier runs (lookback window of runs).  A case is only judged when its own noise is known and
small: one repeat, or repeats varying more than `max_cv` (coefficient of variation), give
`inconclusive`.  A change is flagged only when it exceeds both the practical threshold
(default 5 %) and twice the case's own historical spread (the CV of its run medians), and
Mann-Whitney U agrees: this run's samples against the history's, where the samples of
images/s are every steady epoch of every repeat and those of wall time the repeats.  A case
whose environment (driver, framework version, ...) has no history yet is a `new
environment`, never a regression; `trainbench.comparison` sets old and new side by side.
A run of the window whose median lies more than 3 robust spreads (1.4826 x MAD / median, at
least the threshold) from the window's median (a busy host, a broken week) is set aside, named
in the detail, so one slow run cannot inflate the spread, drag the baseline or blunt the test
and hide the next regression.  When the runs kept vary so much that a change beyond the threshold stays under
their spread, and there are too few of them or they are too spread to set an outlier aside, the verdict is
`inconclusive`, not `stable`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from trainbench import cases
from trainbench.cases import CaseSummary, Spread
from trainbench.config import RegressionPolicy as Policy
from trainbench.measure import protocol
from trainbench.result import Result

VERDICTS = ("regressed", "improved", "stable", "inconclusive", "insufficient history", "new environment")
SPREAD_FACTOR = 2.0  # a change must exceed this many historical CVs (of run medians) as well as the threshold
OUTLIER_FACTOR = 3.0  # a history run this many robust spreads from the window's median is set aside
METRICS = {"wall_s": +1, "images_per_s": -1}  # +1: higher is worse
METRIC_NAMES = {"wall_s": "wall time", "images_per_s": "images/s"}

DEFAULT_POLICY = Policy()


@dataclass
class Verdict:
    host: str
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


def spread(summary: CaseSummary, metric: str) -> Spread:
    """The case's figures of `metric` (a key of METRICS)."""
    return summary.wall if metric == "wall_s" else summary.ips


def _samples(results: list[Result], metric: str) -> list[float]:
    """What the test compares: every steady epoch's images/s of every repeat, or each repeat's wall time."""
    out: list[float] = []
    for r in cases.counted(results):
        value = getattr(r, metric)
        if value is None:
            continue
        rates = [e["images_per_s"] for e in protocol.steady(r.epochs) if e.get("images_per_s")]
        out += rates if metric == "images_per_s" and rates else [value]
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


def _typical(window: dict[str, Spread], threshold: float) -> dict[str, Spread]:
    """The window without runs whose median lies far outside the others' (what one busy week looks like)."""
    medians = Spread.of(s.median for s in window.values())
    middle = medians.median or 0.0
    scale = max(medians.robust_cv or 0.0, threshold)
    return {run: s for run, s in window.items() if abs((s.median or 0.0) / middle - 1) <= OUTLIER_FACTOR * scale}


def _blind(typical: dict, window: dict[str, CaseSummary], metric: str) -> bool:
    """Whether the history is too short or too spread to set an outlier aside: two runs cannot outvote each
    other, and a robust spread of 1 / OUTLIER_FACTOR or more keeps every run below the median, however far."""
    robust = Spread.of(spread(window[run], metric).median for run in typical).robust_cv or 0.0
    return len(typical) < 3 or OUTLIER_FACTOR * robust >= 1


def runs_read(
    current: Sequence[Result], history: Iterable[cases.CaseRun], run_order: list[str], policy: Policy = DEFAULT_POLICY
) -> set[str]:
    """The runs of `history` whose results `judge` reads for `current`: per case and environment of its host,
    framework and device set, the last `lookback_runs` holding each metric (the window, or the sign of another
    environment), so a year of history costs what eight weeks do."""
    rank = {run: i for i, run in enumerate(run_order)}
    wanted = {(r.host or "", r.framework, r.device_set) for r in current}
    holding: dict[tuple, list[str]] = defaultdict(list)
    for c in history:
        if c.run_id in rank and c.key[:3] in wanted:
            for metric, n in c.counts.items():
                if n:
                    holding[(c.key, metric)].append(c.run_id)
    return {run for found in holding.values() for run in sorted(found, key=rank.__getitem__)[-policy.lookback_runs :]}


def judge(
    current: Sequence[Result],
    history: Sequence[Result],
    run_order: list[str],
    policy: Policy = DEFAULT_POLICY,
    metric: str = "wall_s",
    max_cv: float = 0.05,
) -> list[Verdict]:
    """One verdict per measured case of `current` (a case without an ok repeat has none: its rows say why);
    `run_order` lists history run ids oldest first."""
    past = cases.per_run(history, max_cv)
    rank = {run: i for i, run in enumerate(run_order)}
    out = []
    for now in cases.summarize(current, max_cv):
        if not now.wall.n:
            continue
        k = now.key
        same_env = {run: s for run, s in past.get(k, {}).items() if spread(s, metric).n}
        window = dict(sorted(same_env.items(), key=lambda kv: rank.get(kv[0], -1))[-policy.lookback_runs :])
        other_envs = {
            o.env_key
            for o, by_run in past.items()
            if (o.host, o.framework, o.device_set) == (k.host, k.framework, k.device_set)
            and o.env_key != k.env_key
            and any(spread(s, metric).n for s in by_run.values())
        }
        found = _case(now, window, other_envs, policy, metric, max_cv)
        out.append(Verdict(k.host, k.framework, k.device_set, k.env_key, metric, history_runs=len(window), **found))
    return out


def _case(
    now: CaseSummary,
    window: dict[str, CaseSummary],
    other_envs: set[str],
    policy: Policy,
    metric: str,
    max_cv: float,
) -> dict:
    """One case's verdict, current, baseline, change, p_value and detail: the first rule that decides it wins."""
    values = spread(now, metric)
    if not values.n:
        why = "no steady images/s in this run: its repeats trained one epoch (steady state starts at epoch 2)"
        return _found("insufficient history", None, None, None, None, why)
    current = values.median
    if not window:
        if other_envs:
            detail = f"first run under this environment; {len(other_envs)} other environment(s) have history"
            return _found("new environment", current, None, None, None, detail)
        return _found("insufficient history", current, None, None, None, "no history for this case yet")
    typical = _typical({run: spread(s, metric) for run, s in window.items()}, policy.threshold)
    outliers = sorted(set(window) - set(typical))
    aside = f"; {len(outliers)} outlying run(s) set aside: {', '.join(outliers)}" if outliers else ""
    baseline = Spread(tuple(v for s in typical.values() for v in s.values)).median
    assert current is not None and baseline is not None
    change = current / baseline - 1
    noise = values.cv
    if noise is None or noise > max_cv:
        why = (
            f"{values.n} repeat: its noise is unknown, so no change can be told from it (use repeats >= 2)"
            if noise is None
            else f"noisy: repeats vary by CV {noise:.1%} > max_cv {max_cv:.0%}"
        )
        return _found("inconclusive", current, baseline, change, None, f"{change:+.1%}, but {why}")
    if len(typical) < policy.min_history_runs:
        detail = f"{len(typical)} earlier run(s); {policy.min_history_runs} needed"
        return _found("insufficient history", current, baseline, change, None, detail)
    past = [r for run in typical for r in window[run].results]
    p, test = _p_value(_samples(now.results, metric), _samples(past, metric), policy.alpha)
    if p is None:
        return _found("insufficient history", current, baseline, change, None, f"{change:+.1%}, but {test}")
    worse = METRICS[metric] * change > 0
    history_cv = Spread.of(s.median for s in typical.values()).cv or 0.0
    bar = max(policy.threshold, SPREAD_FACTOR * history_cv)
    flagged = abs(change) > bar and p < policy.alpha
    if not flagged and abs(change) > policy.threshold and bar > policy.threshold and _blind(typical, window, metric):
        detail = (
            f"{change:+.1%} against the median of {len(typical)} run(s), beyond the threshold {policy.threshold:.0%}, "
            f"but earlier runs vary by CV {history_cv:.1%}, too much to tell a change from their noise{aside}"
        )
        return _found("inconclusive", current, baseline, change, p, detail)
    verdict = ("regressed" if worse else "improved") if flagged else "stable"
    detail = (
        f"{change:+.1%} against the median of {len(typical)} run(s) (bar {bar:.1%}: threshold "
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
