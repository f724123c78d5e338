"""The comparison as a user means it after an upgrade: per case (host x framework x device set), the
environments it was measured in side by side, oldest first, each with what changed from the one
before (driver, CUDA, framework packages, trainer, ...) and the change in wall time and images/s.

A change is of the medians over every counted repeat measured in each environment (all its runs
pooled: the environment is what is compared, not a week), with the range its repeats allow: from
min(after) / max(before) - 1 to max(after) / min(before) - 1.  A direction (of images/s, else of wall
time) is read only where that whole range lies on one side of zero and neither environment's repeats
are noisy; one repeat on either side leaves the spread unknown.  No test statistic is claimed here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trainbench import cases
from trainbench.cases import NOISY, UNKNOWN_SPREAD, WITHIN, CaseSummary, Spread
from trainbench.fingerprint import KEY_FIELDS
from trainbench.result import Result

CHANGE_FIELDS = tuple(f for f in KEY_FIELDS if f not in ("host", "framework", "framework_packages"))


@dataclass(frozen=True)
class Change:
    """after / before - 1 of the medians, and the range every pairing of repeats allows."""

    median: float
    low: float
    high: float

    @classmethod
    def between(cls, before: Spread, after: Spread) -> Change | None:
        if not (before.n and after.n and before.median and before.min and before.max and after.median):
            return None
        assert after.min is not None and after.max is not None
        return cls(after.median / before.median - 1, after.min / before.max - 1, after.max / before.min - 1)


@dataclass
class Environment:
    """One environment a case was measured in: its fingerprint, runs (oldest first) and pooled figures."""

    env_key: str
    fingerprint: dict
    runs: list[str]
    summary: CaseSummary
    changed: dict[str, tuple[Any, Any]]  # against the environment before it: field -> (before, after)
    wall: Change | None = None
    ips: Change | None = None
    reading: str = ""  # faster / slower (images/s), or why no direction is read

    @property
    def label(self) -> str:
        return environment_label(self.fingerprint)


@dataclass
class CaseComparison:
    host: str
    framework: str
    device_set: str
    environments: list[Environment]


def environment_label(fingerprint: Mapping) -> str:
    """ "driver 580.65 · torch 2.11.0": what a person tells environments apart by (a CPU host has no driver to
    name: "torch 2.11.0")."""
    packages = fingerprint.get("framework_packages") or {}
    versions = " ".join(f"{n} {v}" for n, v in sorted(packages.items())) if isinstance(packages, dict) else ""
    driver = fingerprint.get("driver_version")
    return " · ".join([*([f"driver {driver}"] if driver else []), versions or "no framework version"])


def changes(before: Mapping, after: Mapping) -> dict[str, tuple[Any, Any]]:
    """The fields that tell two environments' results apart, each package of the framework on its own."""
    found = {f: (before.get(f), after.get(f)) for f in CHANGE_FIELDS if before.get(f) != after.get(f)}
    old, new = before.get("framework_packages") or {}, after.get("framework_packages") or {}
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            found[name] = (old.get(name), new.get(name))
    return found


def compare(
    results: Iterable[Result],
    fingerprints: Mapping[str, dict],
    run_order: Sequence[str],
    max_cv: float,
    first_measured: Mapping[str, dt.datetime] | None = None,
) -> list[CaseComparison]:
    """Every case of `results` with the environments it was measured in, oldest first: by when each was first
    measured (`first_measured` by environment key, else read off `results`), else by its first run in `run_order`
    (a backfill re-measures old weeks' run ids in the new environment: their rank would put the new environment
    first); `fingerprints` gives each environment key's fingerprint."""
    rank = {run: i for i, run in enumerate(run_order)}
    earliest: dict[str, dt.datetime] = dict(first_measured or {})
    if first_measured is None:
        for r in results:  # one source of results is all naive (SQLite) or all aware: compared as they are
            if r.started_at is not None and (r.env_key not in earliest or r.started_at < earliest[r.env_key]):
                earliest[r.env_key] = r.started_at
    first = {key: cases.utc(when) for key, when in earliest.items()}
    latest = dt.datetime.max.replace(tzinfo=dt.UTC)
    by_case: dict[tuple[str, str, str], list[CaseSummary]] = {}
    runs: dict[str, set[str]] = {}
    for r in results:
        runs.setdefault(r.env_key, set()).add(r.run_id)
    for s in cases.summarize(results, max_cv):
        by_case.setdefault((s.key.host, s.key.framework, s.key.device_set), []).append(s)
    out = []
    for (host, fw, ds), summaries in by_case.items():
        steps: list[Environment] = []
        for s in sorted(
            summaries,
            key=lambda s: (
                first.get(s.key.env_key, latest),
                min(rank.get(run, len(rank)) for run in runs[s.key.env_key]),
            ),
        ):
            env = fingerprints.get(s.key.env_key) or {}
            step = Environment(
                env_key=s.key.env_key,
                fingerprint=env,
                runs=sorted(runs[s.key.env_key], key=lambda run: (rank.get(run, len(rank)), run)),
                summary=s,
                changed={},
            )
            if steps:
                before = steps[-1]
                step.changed = changes(before.fingerprint, env)
                step.wall = Change.between(before.summary.wall, s.wall)
                step.ips = Change.between(before.summary.ips, s.ips)
                step.reading = reading(before.summary, s, step.ips, step.wall)
            steps.append(step)
        out.append(CaseComparison(host, fw, ds, steps))
    return out


def reading(before: CaseSummary, after: CaseSummary, ips: Change | None, wall: Change | None) -> str:
    """Read on images/s (steady training), else on wall time (a run of one epoch has no steady images/s)."""
    if ips is not None:
        n, faster, slower = min(before.ips.n, after.ips.n), ips.low > 0, ips.high < 0
    elif wall is not None:
        n, faster, slower = min(before.wall.n, after.wall.n), wall.high < 0, wall.low > 0
    else:
        return "no figure on one side"
    if n < 2:
        return UNKNOWN_SPREAD
    if before.noisy or after.noisy:
        return NOISY
    return "faster" if faster else "slower" if slower else WITHIN


def upgraded(comparisons: Sequence[CaseComparison], env_keys: Iterable[str]) -> list[CaseComparison]:
    """The cases measured (in `env_keys`, a run's) in more than one environment: what a run's report shows."""
    keys = set(env_keys)
    return [c for c in comparisons if len(c.environments) > 1 and keys & {e.env_key for e in c.environments}]
