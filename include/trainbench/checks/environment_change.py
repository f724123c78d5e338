"""Did an environment change (driver, CUDA, a framework) make a case slower or faster, and by how much?

Per case and metric (steady images/s, wall time) the change is after / before - 1 of the geometric means of the
per-repeat figures, with a confidence interval from Welch's t on their logarithms.  "Before" is every counted
repeat of the case in the old environment (its runs pooled), "after" the repeats of the new measurement.

- Repeats are the unit.  The steady epochs of one repeat share its process, clocks, memory placement and data
  order, so they are not independent draws: a test over epochs (Mann-Whitney over every steady epoch) counts
  nine correlated values as nine and gives intervals too narrow.  A repeat's steady images/s is already the
  median of its steady epochs; epochs are not an input here.
- Logarithms: noise and changes are multiplicative (a slower driver slows every epoch by a share), so the change
  is a difference of log means and its interval, mapped back, a ratio.
- Welch's t, not a pooled variance: the new environment may be noisier than the old, and a pooled variance would
  lend a few after repeats the before's quietness.  One outlying repeat (a busy host) widens the interval more
  than it moves it: the case is measured longer or ends inconclusive rather than flagged.
- Not the bootstrap over repeats: resampling 3 to 10 values covers less than the level it claims (no t
  quantile, a handful of distinct resamples).  Not Hodges-Lehmann with its Mann-Whitney interval over repeats:
  exact but discrete, against 9 before repeats it cannot reach the per-look level below (0.6 %) before 4 after
  repeats, and there its interval is nearly the range of all pairwise ratios.

Verdicts, on the interval: `no change` when it lies inside +-threshold (any change is smaller than the threshold,
even one the interval tells from zero: its figure is in the detail); `slower` / `faster` when it excludes zero
and reaches beyond the threshold; otherwise `inconclusive`, with the noise of both sides in the detail.

Sequential measurement (`measure_sequentially`): after repeats are added one at a time; from `min_repeats` (3:
with 2 the after noise rests on one degree of freedom and no interval could decide) every repeat is a look at each
metric still undecided; a metric's verdict is fixed at its first decision, and the measurement stops when every
metric is decided, or at the cap (then `inconclusive`).  False alarms over the looks: Bonferroni, alpha (5 %)
spent evenly, each look's interval at level 1 - alpha / looks (looks = cap - min_repeats + 1: 8 with a cap of
10), so the chance that any look's interval misses a metric's true change is at most alpha and the reported interval is
a 95 % interval whichever look stopped.  Pocock's boundary is narrower, but it is derived for a known variance; with t
and Welch's degrees of freedom changing from look to look it has no exact form, and Bonferroni meets the targets
(`benchmarks/ab_power.py`).

Confirmation (`confirm`, `decide`): `slower` / `faster` is announced only when a second sequential measurement,
made after the first, finds the same; otherwise it is `inconclusive`, both shown.  The second's repeats are new
draws, so a streak of unlucky repeats must recur to fool both.  It follows the first at once, on the same host
(the before/after DAG runs both in one task): a state lasting the whole session (a busy host, a thermal or clock
state) is seen by both alike, and the confirmation does not guard against it.  Both compare against the same
before repeats, so an unlucky history is shared; the simulated false-alarm rate includes that.

Interleaving (`control`): where the old environment can run again (a host pointed at another interpreter while the
old one is still there), "before" is not history but the old environment measured again in the same session, a
pair of repeats at a time in alternating order (old-new, new-old): a drift of the host over the session weighs on
both sides and drops out of the change, and history's sessions are not compared with this one.  It costs as many
old repeats again.  Simulated with sessions 5 % CV apart (repeat CV 2 %, 2,000 cases each): confirmed false alarms
16.8 % against history, 0.0 % interleaved; a 5 % slowdown detected in 30.8 % and 97.0 % (`benchmarks/ab_power.py
--session-cv 0.05`, with and without `--interleaved`).  A driver, a GPU or a package upgraded in place leaves nothing
old to run; then history is the before, with the assumption below.

What the interval assumes with history as the before: repeats scatter independently around their session's level, and
sessions (the before runs, the after measurement) share one level. A session effect beyond the repeats' noise is not
in the interval: three before runs cannot estimate it (two degrees of freedom would leave no look able to decide).
Simulated with a session-to-session CV of 1 % on top of repeat noise of 2 % (20,000 cases each), confirmed false
alarms rise from 0.15 % to 1.7 % and detections of a 5 % slowdown fall from 96 % to 85 % (`benchmarks/ab_power.py
--session-cv 0.01`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from scipy import special

from trainbench import cases
from trainbench.cases import Spread
from trainbench.checks.regression import METRICS
from trainbench.comparison import CaseComparison
from trainbench.config import EnvironmentChangePolicy as Design

SLOWER, FASTER, NO_CHANGE, INCONCLUSIVE = "slower", "faster", "no change", "inconclusive"
VERDICTS = (SLOWER, FASTER, NO_CHANGE, INCONCLUSIVE)
DIRECTIONS = (SLOWER, FASTER)
DEFAULT_DESIGN = Design()  # [environment_change]'s defaults


@dataclass(frozen=True)
class ChangeVerdict:
    """One metric's change after / before - 1 with its interval [low, high], and what it allows us to say."""

    metric: str
    verdict: str
    change: float | None
    low: float | None
    high: float | None
    before: Spread
    after: Spread
    detail: str

    @property
    def figures(self) -> str:
        return change_text(self.change, self.low, self.high) or "not computed"

    @property
    def noise(self) -> str:
        def cv(s: Spread) -> str:
            return "unknown" if s.cv is None else f"{100 * s.cv:.1f} %"

        return f"repeats vary by CV {cv(self.before)} before ({self.before.n}), {cv(self.after)} after ({self.after.n})"


@dataclass(frozen=True)
class Measurement:
    """One sequential measurement: each metric's verdict, and the repeats it took."""

    verdicts: dict[str, ChangeVerdict]
    repeats: int


@dataclass(frozen=True)
class Decision:
    """What is announced per metric (confirmed where a direction was found) and the measurements it rests on."""

    verdicts: dict[str, ChangeVerdict]
    measurements: list[Measurement]

    @property
    def repeats(self) -> int:
        return sum(m.repeats for m in self.measurements)


def change_text(change: float | None, low: float | None, high: float | None) -> str:
    """ "-7.2 % [-9.4, -5.1]", as a person reads a change and its interval ("" when it was not computed)."""
    if change is None or low is None or high is None:
        return ""
    return f"{100 * change:+.1f} % [{100 * low:+.1f}, {100 * high:+.1f}]"


def judge(
    metric: str,
    before: Sequence[float],
    after: Sequence[float],
    threshold: float = 0.05,
    alpha: float = 0.05,
    looks: int = 1,
) -> ChangeVerdict:
    """One look at `metric` (a key of regression.METRICS): its interval at level 1 - alpha / looks and verdict."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")
    b, a = Spread(tuple(before)), Spread(tuple(after))
    if any(v <= 0 for v in b.values + a.values):
        raise ValueError(f"{metric}: figures must be positive")
    if min(b.n, a.n) < 2:
        why = f"too few repeats to know the noise: {b.n} before, {a.n} after (2 each needed)"
        return ChangeVerdict(metric, INCONCLUSIVE, None, None, None, b, a, why)
    (mb, vb), (ma, va) = _log_moments(b.values), _log_moments(a.values)
    sb, sa = vb / b.n, va / a.n
    half = 0.0
    if sa + sb > 0:
        df = (sa + sb) ** 2 / (sa**2 / (a.n - 1) + sb**2 / (b.n - 1))
        half = float(special.stdtrit(df, 1 - alpha / looks / 2)) * math.sqrt(sa + sb)
    d = ma - mb
    found = ChangeVerdict(metric, INCONCLUSIVE, math.expm1(d), math.expm1(d - half), math.expm1(d + half), b, a, "")
    assert found.low is not None and found.high is not None and found.change is not None
    level = f"{100 * (1 - alpha):g} % interval" + (f", simultaneous over {looks} looks" if looks > 1 else "")
    bar = f"{100 * threshold:g} %"
    if -threshold < found.low and found.high < threshold:
        verdict, why = NO_CHANGE, f"within +-{bar}"
    elif found.low > 0 or found.high < 0:
        verdict = SLOWER if METRICS[metric] * found.change > 0 else FASTER
        why = f"excludes 0 and reaches beyond +-{bar}"
    else:
        why = f"spans both 0 and +-{bar}: too noisy to decide"
        verdict = INCONCLUSIVE
    return replace(found, verdict=verdict, detail=f"{found.figures} ({level}) {why}; {found.noise}")


def _log_moments(values: Sequence[float]) -> tuple[float, float]:
    logs = [math.log(v) for v in values]
    mean = math.fsum(logs) / len(logs)
    return mean, math.fsum((v - mean) ** 2 for v in logs) / (len(logs) - 1)


def measure_sequentially(
    before: Mapping[str, Sequence[float]],
    measure: Callable[[], Mapping[str, float | None]],
    design: Design = DEFAULT_DESIGN,
    control: Callable[[], Mapping[str, float | None]] | None = None,
) -> Measurement:
    """Repeats `measure` (one after repeat: its figure per metric, None where the repeat failed, which still uses
    a repeat of the cap) until every metric of `before` is decided or the cap is reached.

    With `control` (one repeat of the old environment, run again now) a repeat is a pair: the before figures are
    the control's, not `before`'s, old first in odd pairs and new first in even ones, so a drift of the host during
    the measurement weighs on both sides alike and history's sessions are not compared with this one."""
    after: dict[str, list[float]] = {m: [] for m in before}
    old: dict[str, list[float]] = {m: [] if control else list(v) for m, v in before.items()}
    final = {} if control else {m: judge(m, v, []) for m, v in before.items() if len(v) < 2}
    last: dict[str, ChangeVerdict] = {}
    repeats = 0
    while len(final) < len(after) and repeats < design.cap:
        was: Mapping[str, float | None]
        if control is None:
            figures, was = measure(), {}
        elif repeats % 2 == 0:
            was, figures = control(), measure()
        else:
            figures, was = measure(), control()
        repeats += 1
        for m in after.keys() - final.keys():
            for side, value in ((after[m], figures.get(m)), (old[m], was.get(m))):
                if value is not None:
                    side.append(value)
            if repeats >= design.min_repeats:
                last[m] = judge(m, old[m], after[m], design.threshold, design.alpha, design.looks)
                if last[m].verdict != INCONCLUSIVE:
                    final[m] = last[m]
    for m in after.keys() - final.keys():
        final[m] = replace(last[m], detail=f"{last[m].detail}; undecided at the cap of {design.cap} repeats")
    return Measurement({m: final[m] for m in before}, repeats)


def confirm(first: ChangeVerdict, second: ChangeVerdict | None) -> ChangeVerdict:
    """A direction stands only when a second, independent measurement finds the same one."""
    if first.verdict not in DIRECTIONS:
        return first
    if second is not None and second.verdict == first.verdict:
        return replace(first, detail=f"{first.detail}; confirmed by a second measurement: {second.figures}")
    found = f"a second measurement found {second.verdict}, {second.figures}" if second else "no second measurement"
    detail = f"{first.verdict} {first.figures} not confirmed: {found}; {first.noise}"
    return replace(first, verdict=INCONCLUSIVE, detail=detail)


def decide(
    before: Mapping[str, Sequence[float]],
    measure: Callable[[int], Mapping[str, float | None]],
    design: Design = DEFAULT_DESIGN,
    control: Callable[[int], Mapping[str, float | None]] | None = None,
) -> Decision:
    """The whole design: a sequential measurement, and a second one of the metrics where it found a direction.
    `measure(n)` measures one repeat of measurement n (1, or 2 to confirm), so the caller can keep them apart;
    `control(n)`, where the old environment can run again, one repeat of it (`measure_sequentially`)."""

    def sequential(metrics: Mapping[str, Sequence[float]], n: int) -> Measurement:
        return measure_sequentially(metrics, lambda: measure(n), design, (lambda: control(n)) if control else None)

    first = sequential(before, 1)
    found = [m for m, v in first.verdicts.items() if v.verdict in DIRECTIONS]
    if not found:
        return Decision(first.verdicts, [first])
    second = sequential({m: before[m] for m in found}, 2)
    verdicts = {m: confirm(v, second.verdicts.get(m)) for m, v in first.verdicts.items()}
    return Decision(verdicts, [first, second])


@dataclass(frozen=True)
class Trigger:
    """What started a before/after run on a host: when the watch saw the new environment, its reading before that
    (the change happened in between: results before it are "before"), and what changed."""

    host: str
    changed_at: dt.datetime
    changed: dict
    since: dt.datetime | None = None

    @property
    def cutoff(self) -> dt.datetime:
        return self.since or self.changed_at

    @classmethod
    def from_event(cls, extra: dict) -> Trigger:
        """From the extra `events` makes: {"host", "observed_at", "previous_at", "changed"}."""
        since = extra.get("previous_at")
        return cls(
            extra["host"],
            dt.datetime.fromisoformat(extra["observed_at"]),
            extra.get("changed") or {},
            dt.datetime.fromisoformat(since) if since else None,
        )


def judge_remeasured(
    threshold: float, alpha: float, run_id: str, comparisons: Sequence[CaseComparison]
) -> tuple[list[tuple[CaseComparison, list[dict]]], list[Trigger]]:
    """A run that measured cases in a new environment (a backfill after an upgrade, or the first weekly run after
    it) is judged as a before/after run is: per such case and metric, its repeats against the case's repeats in
    the environment before (`environment_change.judge`, one look); a direction stands only when the case's other
    runs in the new environment (a second, later or earlier, measurement) find the same.  Returns each such case's
    verdict rows (to be stored under the run) and one trigger per host (for the report)."""
    verdicts: list[tuple[CaseComparison, list[dict]]] = []
    triggers: dict[str, Trigger] = {}
    for c in comparisons:
        now = next((i for i, e in enumerate(c.environments) if run_id in e.runs), 0)
        if now == 0:
            continue
        old, new = c.environments[now - 1], c.environments[now]
        mine = [r for r in new.summary.counted if r.run_id == run_id]
        others = [r for r in new.summary.counted if r.run_id != run_id]
        if not mine or not old.summary.counted:
            continue
        rows = []
        for metric in METRICS:
            before = [v for r in old.summary.counted if (v := getattr(r, metric))]
            after = [v for r in mine if (v := getattr(r, metric))]
            again = [v for r in others if (v := getattr(r, metric))]
            first = judge(metric, before, after, threshold, alpha)
            second = judge(metric, before, again, threshold, alpha) if again else None
            v = confirm(first, second)
            rows.append(
                {
                    "metric": metric,
                    "verdict": v.verdict,
                    "change": v.change,
                    "low": v.low,
                    "high": v.high,
                    "before": before,
                    "after": after,
                    "baseline_run": old.runs[-1],
                    "repeats": len(mine),
                    "changed": new.changed,
                    "changed_at": min(cases.started(r) for r in mine),
                    "detail": v.detail,
                }
            )
        verdicts.append((c, rows))
        since = max(cases.started(r) for r in old.summary.counted)
        at = min(cases.started(r) for r in mine)
        known = triggers.get(c.host)
        merged = {**(known.changed if known else {}), **new.changed}
        triggers[c.host] = Trigger(c.host, min(at, known.changed_at) if known else at, merged, since)
    return verdicts, list(triggers.values())
