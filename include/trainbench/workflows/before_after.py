"""Before and after an environment change on one host: the cases to measure again, measuring each until its change
is decided, the verdicts and the report a person reads.

Only the cases the change can move are measured: all of them after a driver, GPU or CPU change (or one triggered
by hand, naming nothing), a framework's own after a change of its interpreter, packages or trainer.  "Before" is
the old interpreter measured again alongside, alternating with the new, where the change only pointed the host at
another interpreter that is still there (`reverted`); otherwise the case's history in the environment it had:
every counted repeat of the case (host x framework x device set) in the environment key it was measured in by the
last run on that host before the change.  "After"
is a new, sequential measurement of the case on that host, with that run's stored settings
(`checks.environment_change.decide`: repeats are added until each metric is decided or the cap is reached, and a
direction found is measured a second time to be confirmed).  The new rows form a run of their own
(`runs.source` "environment_change"): shown in its report, never pooled into the weekly history.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from collections.abc import Callable, Mapping, Sequence

from trainbench import cases, frameworks
from trainbench.checks import environment_change
from trainbench.config import Config
from trainbench.planning import CaseSpec
from trainbench.result import Result
from trainbench.store.results import BENCHMARK, ENVIRONMENT_CHANGE, PUBLISHED
from trainbench.workflows import harness, pipeline

Log = Callable[[str], None]


def baseline(config: Config, host: str, cutoff: dt.datetime) -> tuple[str, dict, list[dict]] | None:
    """The published run measured on `host` last before `cutoff` (the watch's last reading of the old environment):
    its id, stored settings, and per case the before figures, only from results started before `cutoff`, since a
    change the environment key does not see (a VBIOS, a cuDNN wheel) would otherwise pool new results with old
    (None when the host has no such run)."""
    db = pipeline.store(config)
    published = {run for run in db.run_ids(BENCHMARK) if db.run_state(run) == PUBLISHED}
    earlier = [
        r for r in db.history(epochs=False) if r.host == host and r.run_id in published and cases.started(r) < cutoff
    ]
    if not earlier:
        return None
    run = max(earlier, key=cases.started).run_id
    measured = cases.summarize([r for r in earlier if r.run_id == run], config.measurement.max_cv)
    keys = {s.key for s in measured if s.counted}
    before = {s.key: s for s in cases.summarize([r for r in earlier if cases.CaseKey.of(r) in keys], 1.0)}
    found = [
        {
            "framework": k.framework,
            "device_set": k.device_set,
            "env_key": k.env_key,
            # only the metrics measured: one-epoch runs have no steady images/s to wait for a decision on
            "before": {
                m: list(v.values) for m, v in (("images_per_s", before[k].ips), ("wall_s", before[k].wall)) if v.n
            },
        }
        for k in sorted(keys, key=cases.CaseKey.order)
    ]
    return run, db.settings_of(run) or {}, found


def reverted(changed: Mapping[str, Sequence]) -> dict[str, str] | None:
    """The old interpreters per framework, when the old environment can run again: the change was only the host
    pointing frameworks at other interpreters (with the Python and packages those hold), and each old one is still
    there.  None when anything else changed (a driver, a GPU, a trainer, a package upgraded in place): its old state
    is gone, and history is the only before."""
    old: dict[str, str] = {}
    touched = set()
    for path, (was, _) in changed.items():
        parts = path.split(".")
        if parts[0] != "frameworks" or len(parts) < 3 or parts[2] not in ("interpreter", "python", "packages"):
            return None
        touched.add(parts[1])
        if parts[2] == "interpreter":
            if not was or shutil.which(was) is None:
                return None
            old[parts[1]] = was
    return old if old and touched <= old.keys() else None


def touches(changed: Mapping[str, Sequence], framework: str) -> bool:
    """Whether the change can move `framework`'s cases: anything outside the frameworks (a driver, a GPU, the CPU)
    or in its own interpreter, packages or trainer does; a change naming nothing (triggered by hand) may."""
    own = f"frameworks.{frameworks.REGISTRY[framework].base}"
    return not changed or any(not p.startswith("frameworks.") or p == own or p.startswith(f"{own}.") for p in changed)


def plan(
    config: Config, host: str, cutoff: dt.datetime, inventory: dict, log: Log = print, changed: Mapping | None = None
) -> list[dict]:
    """What to measure on `host`: per case of its baseline run (`baseline`) that the change (`changed`, the
    watch's) `touches`, the specs of enough repeats for two sequential measurements (and the run's warm-ups), the
    before figures, and its old interpreter to measure again alongside where the change left it runnable
    (`reverted`)."""
    found = baseline(config, host, cutoff)
    if found is None:
        log(f"{host}: no published run measured here before {cutoff:%Y-%m-%d %H:%M} UTC: nothing to compare")
        return []
    run, stored, chosen = found
    settings = config.settings.overridden(**{k: v for k, v in stored.items() if k in config.settings.as_dict()})
    dataset = pipeline.prepare_dataset(config, settings, inventory)
    cap = config.environment_change.cap
    changed = changed or {}
    old = reverted(changed) or {}
    out = []
    for case in chosen:
        label = f"{host}: {case['framework']} | {case['device_set']}"
        if not touches(changed, case["framework"]):
            log(f"{label}: not measured, nothing it depends on changed")
            continue
        one = settings.overridden(frameworks=[case["framework"]], device_sets=[case["device_set"]], repeats=2 * cap)
        specs = pipeline.plan_matrix(one, inventory, dataset, host)
        base = frameworks.REGISTRY[case["framework"]].base
        control = {base: old[base]} if base in old else None
        out.append(
            {**case, "host": host, "baseline_run": run, "specs": [s.to_dict() for s in specs], "control": control}
        )
        against = (
            f"its old interpreter {old[base]} measured again alongside"
            if control
            else f"{len(case['before']['wall_s'])} earlier repeats (last run {run})"
        )
        log(f"{label} against {against}")
    return out


def measure(config: Config, run_id: str, case: dict, changed: dict, changed_at: dt.datetime, log: Log = print) -> dict:
    """Measure one case until its change is decided; store and return its verdicts.  Where `plan` named the old
    interpreter and it still gives the case's old environment key, each repeat is a pair with one of the old
    environment, stored under repeat numbers after the new ones' (`environment_change.measure_sequentially`)."""
    specs = [CaseSpec.from_dict(s) for s in case["specs"]]
    runs = [s for s in specs if not s.case.warmup]
    old = old_environment(config, case, runs[0], log) if case.get("control") else None
    for spec in specs:
        if spec.case.warmup:
            harness.run_case(config, run_id, spec, log=log)
            if old is not None:
                harness.run_case(old, run_id, _renumbered(spec, len(specs) - len(runs)), log=log)
    queue = iter(runs)
    controls = iter(_renumbered(s, len(runs)) for s in runs)

    def figures(r: Result) -> dict[str, float | None]:
        """A repeat's figures if it counts (`cases.counted`), else none: a failed repeat adds nothing to a verdict."""
        counts = bool(cases.counted([r]))
        return {"images_per_s": r.images_per_s if counts else None, "wall_s": r.wall_s if counts else None}

    def one(measurement: int) -> dict[str, float | None]:
        return figures(harness.run_case(config, run_id, next(queue), log=log))

    def again(measurement: int) -> dict[str, float | None]:
        assert old is not None
        return figures(harness.run_case(old, run_id, next(controls), log=log))

    decision = environment_change.decide(
        case["before"], one, config.environment_change, again if old is not None else None
    )
    source = (
        "before: the old interpreter measured again in this session, alternating with the new"
        if old is not None
        else f"before: the case's repeats in its old environment (last run {case['baseline_run']})"
    )
    rows = [
        {
            "metric": metric,
            "verdict": v.verdict,
            "change": v.change,
            "low": v.low,
            "high": v.high,
            "before": list(v.before.values),
            "after": list(v.after.values),
            "baseline_run": case["baseline_run"],
            "repeats": decision.repeats,
            "changed": changed,
            "changed_at": changed_at,
            "detail": f"{v.detail}; {source}",
        }
        for metric, v in decision.verdicts.items()
    ]
    pipeline.store(config).save_environment_verdicts(run_id, case["host"], case["framework"], case["device_set"], rows)
    for row in rows:
        log(f"{case['framework']} | {case['device_set']} | {row['metric']}: {row['verdict']} ({row['detail']})")
    return {"framework": case["framework"], "device_set": case["device_set"], "verdicts": rows}


def old_environment(config: Config, case: dict, spec: CaseSpec, log: Log) -> Config | None:
    """`config` with the case's old interpreter (`plan`), when it gives the old environment key here."""
    interpreters = {n: dataclasses.replace(config.interpreter(n), python=p) for n, p in case["control"].items()}
    old = dataclasses.replace(config, interpreters={**config.interpreters, **interpreters})
    if harness.env_key(old, spec) == case["env_key"]:
        return old
    log(f"{case['framework']} | {case['device_set']}: the old interpreter no longer gives its old environment")
    return None


def _renumbered(spec: CaseSpec, offset: int) -> CaseSpec:
    """A control repeat's spec: the same case under a repeat number past the new environment's."""
    return dataclasses.replace(spec, case=dataclasses.replace(spec.case, repeat=spec.case.repeat + offset))


def start(config: Config, run_id: str) -> None:
    """Record the before/after run: published at once (its verdicts are its result), never latest or history."""
    pipeline.store(config).save_run(run_id, {}, source=ENVIRONMENT_CHANGE)


def events(found: list[tuple[str, dict, dt.datetime]]) -> dict[str, dict]:
    """Per host, what its asset events say together, from (host of the asset, extra, event time) each: events
    queued while a run was busy merge, the first old value to the last new one, the change dated between the
    earliest previous reading and the latest new one.  An event made by hand (no extra) names its host by its
    asset and the change by its time."""
    merged: dict[str, dict] = {}
    for host, extra, at in sorted(found, key=lambda e: e[2]):
        observed = extra.get("observed_at") or at.isoformat()
        entry = merged.setdefault(
            host, {"host": host, "observed_at": observed, "previous_at": extra.get("previous_at"), "changed": {}}
        )
        entry["observed_at"] = observed
        for path, (old, new) in (extra.get("changed") or {}).items():
            entry["changed"][path] = [entry["changed"].get(path, [old])[0], new]
    return merged
