"""Cases, not rows: what every report, verdict and page reads.

A case is host x framework x device set x environment (`CaseKey`): nothing is pooled across
hosts or environments.  `summarize` groups a run's `Result`s into one `CaseSummary` per case,
once: its repeats (warm-ups shown, never counted), their statuses, and the spread of wall
time, images/s, user/sys time, memory per device and phases over the repeats that count
(measured and ok).  `Spread` is the one place a median, range or coefficient of variation
(CV) is computed.  A case whose CV of wall time or images/s exceeds `[measurement] max_cv`
is noisy: no verdict or comparison claims a direction from it; with one repeat its spread
is unknown (CV None) and it cannot be judged either.  `order` is the one order cases are
listed in.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from trainbench import frameworks
from trainbench.measure.phases import PHASES
from trainbench.planning import workers_of
from trainbench.result import Result

OK = "ok"
UNKNOWN_SPREAD = "spread unknown (1 repeat)"
NOISY = "noisy: no direction claimed (repeats vary more than max_cv)"
WITHIN = "within the repeats' spread"


class _once:
    """A property computed on first read and kept in the instance: `functools.cached_property` without the lock it
    takes on every first read in Python 3.11, which cost a third of a 10,000-row page (summaries are built and read
    in one thread)."""

    def __init__(self, compute):
        self.compute, self.name = compute, compute.__name__

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.compute(instance)
        return value


@dataclass(frozen=True)
class Spread:
    """Figures of one quantity over a case's counted repeats, in the order they were measured."""

    values: tuple[float, ...] = ()

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Spread:
        return cls(tuple(v for v in values if v is not None))

    @property
    def n(self) -> int:
        return len(self.values)

    @_once
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @_once
    def min(self) -> float | None:
        return min(self.values, default=None)

    @_once
    def max(self) -> float | None:
        return max(self.values, default=None)

    @_once
    def cv(self) -> float | None:
        """Sample standard deviation over the mean; None from fewer than two values (in floats: `statistics.stdev`
        works in exact fractions, a hundred times slower)."""
        n = len(self.values)
        mean = math.fsum(self.values) / n if n else 0.0
        if n < 2 or not mean:
            return None
        return math.sqrt(math.fsum((v - mean) ** 2 for v in self.values) / (n - 1)) / mean

    @_once
    def robust_cv(self) -> float | None:
        """1.4826 x the median absolute deviation over the median: the CV for normally spread values, but one
        outlier (a run on a busy host) cannot inflate it as it inflates the standard deviation."""
        middle = self.median
        if len(self.values) < 2 or not middle:
            return None
        return 1.4826 * statistics.median(abs(v - middle) for v in self.values) / middle


def framework_order(name: str) -> tuple:
    """Frameworks in the log's order (the registry's), unknown ones after."""
    return (frameworks.NAMES.index(name) if name in frameworks.NAMES else len(frameworks.NAMES), name)


def device_set_order(text: str) -> tuple:
    """GPU sets before CPU sets, each with the most devices first, as the log lists them."""
    return (text.startswith("cpu"), -workers_of(text), text)


class CaseKey(NamedTuple):
    """host x framework x device set x environment key: what is never pooled."""

    host: str
    framework: str
    device_set: str
    env_key: str

    @classmethod
    def of(cls, result: Result) -> CaseKey:
        return cls(result.host or "", result.framework, result.device_set, result.env_key)

    @property
    def label(self) -> str:
        return f"{self.framework} | {self.device_set} on {self.host or '(no host)'}"

    def order(self) -> tuple:
        return (self.host, framework_order(self.framework), device_set_order(self.device_set), self.env_key)


class CaseRun(NamedTuple):
    """A case in one run, by how many counted results hold each metric (wall_s, images_per_s): what chooses a
    case's history without loading it."""

    run_id: str
    key: CaseKey
    counts: Mapping[str, int]


def repeat_order(result: Result) -> tuple:
    """Within a case: warm-ups first, then the repeats in their order."""
    return (not result.warmup, result.repeat)


def order(result: Result) -> tuple:
    """Results in the order their cases are listed."""
    return (CaseKey.of(result).order(), repeat_order(result))


def listed(verdicts: Iterable[Mapping]) -> list[Mapping]:
    """Verdicts (or any rows naming a case by host, framework, device set, perhaps env_key) in case order, then
    metric."""
    return sorted(
        verdicts,
        key=lambda v: (
            CaseKey(v.get("host") or "", v["framework"], v["device_set"], v.get("env_key") or "").order(),
            v["metric"],
        ),
    )


# One counted result as readers that keep the rest in the database select it: run id, environment key, host,
# framework, device set, wall s, images/s.
Figures = tuple[str, str, str | None, str, str, float, float | None]


def per_run_figures(found: Iterable[Figures]) -> dict[tuple, tuple[Spread, Spread]]:
    """Per host x framework x device set x environment x run: the spread of its wall times and of its images/s."""
    grouped: dict[tuple, list[tuple[float, float | None]]] = {}
    for run_id, env_key, host, fw, ds, wall, ips in found:
        grouped.setdefault((host, fw, ds, env_key, run_id), []).append((wall, ips))
    return {key: (Spread.of(w for w, _ in f), Spread.of(i for _, i in f)) for key, f in grouped.items()}


def counted(results: Iterable[Result]) -> list[Result]:
    """The results statistics and verdicts are made of: measured (not warm-up) and ok."""
    return [r for r in results if not r.warmup and r.status == OK]


@dataclass(frozen=True)
class DeviceMemory:
    """One device of the set: the median over the counted repeats of its memory, and how it was measured."""

    position: int
    device: str
    name: str | None
    used_mib: float | None
    methods: tuple[str, ...]


class CaseSummary:
    """One case's results (every one: warm-ups and failures too, in repeat order) and their figures over the counted
    repeats, each computed once, when first read."""

    def __init__(self, key: CaseKey, results: Iterable[Result], max_cv: float):
        self.key, self.max_cv = key, max_cv
        self.results = sorted(results, key=repeat_order)

    def __repr__(self) -> str:
        return f"CaseSummary({self.key.label}, {len(self.results)} results)"

    @_once
    def counted(self) -> list[Result]:
        return counted(self.results)

    @_once
    def wall(self) -> Spread:
        return Spread.of(r.wall_s for r in self.counted)

    @_once
    def ips(self) -> Spread:
        return Spread.of(r.images_per_s for r in self.counted)

    @_once
    def user(self) -> Spread:
        return Spread.of(r.user_s for r in self.counted)

    @_once
    def sys(self) -> Spread:
        return Spread.of(r.sys_s for r in self.counted)

    @_once
    def peak_mem(self) -> Spread:
        return Spread.of(r.peak_mem_mib for r in self.counted)

    @_once
    def noisy(self) -> bool | None:
        """Repeats varying more than max_cv in wall time or images/s; None when the spread is unknown."""
        cvs = [c for c in (self.wall.cv, self.ips.cv) if c is not None]
        return any(c > self.max_cv for c in cvs) if cvs else None

    @property
    def device_names(self) -> str | None:
        return next((r.device_names for r in self.results if r.device_names), None)

    @property
    def peak_mem_method(self) -> str | None:
        return next((r.peak_mem_method for r in self.counted if r.peak_mem_method), None)

    @_once
    def devices(self) -> list[DeviceMemory]:
        found: dict[int, tuple[dict, list[float | None], set[str]]] = {}
        for r in self.counted:
            for position, d in enumerate(r.devices or []):
                first, used, methods = found.setdefault(position, (d, [], set()))
                used.append(d.get("used_mib"))
                if d.get("method"):
                    methods.add(d["method"])
        return [
            DeviceMemory(position, first["device"], first.get("name"), Spread.of(used).median, tuple(sorted(methods)))
            for position, (first, used, methods) in sorted(found.items())
        ]

    @_once
    def phases(self) -> dict[str, float] | None:
        timelines = [r.phases for r in self.counted if r.phases]
        if not timelines:
            return None
        return {p: Spread.of(t.get(p, 0.0) for t in timelines).median or 0.0 for p in PHASES}

    @property
    def measured(self) -> int:
        return sum(not r.warmup for r in self.results)

    @property
    def warmups(self) -> int:
        return sum(r.warmup for r in self.results)

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if r.status != OK]

    @property
    def statuses(self) -> dict[str, int]:
        """How many measured repeats ended in each status."""
        found: dict[str, int] = {}
        for r in self.results:
            if not r.warmup:
                found[r.status] = found.get(r.status, 0) + 1
        return found

    def stats_row(self) -> dict:
        """The case's dispersion as the `case_stats` table and cases.csv hold it."""
        k = self.key
        row: dict[str, object] = {
            "framework": k.framework,
            "device_set": k.device_set,
            "host": k.host,
            "env_key": k.env_key,
            "repeats": self.wall.n,
        }
        for prefix, spread in (("wall", self.wall), ("ips", self.ips)):
            row |= {
                f"{prefix}_median": spread.median,
                f"{prefix}_min": spread.min,
                f"{prefix}_max": spread.max,
                f"{prefix}_cv": spread.cv,
            }
        return row | {"noisy": self.noisy}


def summarize(results: Iterable[Result], max_cv: float) -> list[CaseSummary]:
    """One summary per case of `results`, in `CaseKey.order`."""
    groups: dict[CaseKey, list[Result]] = {}
    for r in results:
        groups.setdefault(CaseKey.of(r), []).append(r)
    return [CaseSummary(key, groups[key], max_cv) for key in sorted(groups, key=CaseKey.order)]


def per_run(results: Iterable[Result], max_cv: float) -> dict[CaseKey, dict[str, CaseSummary]]:
    """Per case, its summary in each run of `results`: a case's history, run by run."""
    runs: dict[str, list[Result]] = {}
    for r in results:
        runs.setdefault(r.run_id, []).append(r)
    out: dict[CaseKey, dict[str, CaseSummary]] = {}
    for run_id, found in runs.items():
        for s in summarize(found, max_cv):
            out.setdefault(s.key, {})[run_id] = s
    return out


def newest(results: Iterable[Result]) -> list[Result]:
    """Per case x repeat (case key) the newest result, in the order stored: a re-run after a driver upgrade is
    judged on its new results while the old ones stay stored."""
    chosen: dict[str, Result] = {}
    for r in results:
        old = chosen.get(r.case_key)
        if old is None or _when(r) > _when(old):
            chosen[r.case_key] = r
    return sorted(chosen.values(), key=lambda r: r.id or 0)


def _when(r: Result) -> tuple:
    return (started(r), r.id or 0)


def started(r: Result) -> dt.datetime:
    """When a result started, in UTC (results without a start sort first)."""
    return utc(r.started_at or dt.datetime.min)


def utc(when: dt.datetime) -> dt.datetime:
    """A stored time in UTC: SQLite returns them naive (stored as UTC), PostgreSQL in the session's time zone."""
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def noisy_keys(summaries: Sequence[CaseSummary]) -> set[CaseKey]:
    return {s.key for s in summaries if s.noisy}
