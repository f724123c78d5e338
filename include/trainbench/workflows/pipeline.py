"""The benchmark pipeline's steps, as plain functions the DAG tasks and the CLI both call.

discover devices -> prepare the data set -> plan the matrix -> run every case -> collect
-> validate -> detect regressions -> publish.  Each step takes and returns small values
that travel as XCom (`CaseSpec`, `Result` and plain dicts).  Each case writes its raw
result to the run folder before touching the database, so a database outage loses
nothing: `collect` loads whatever the database is missing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path

from trainbench import cases
from trainbench.config import Config, ConfigError, RegressionPolicy, Settings, shown_url
from trainbench.devices import Inventory, discover
from trainbench.errors import NoRetry
from trainbench.measure import outcome
from trainbench.planning import DEFAULT_HOST, CaseSpec, TrainingJob, plan
from trainbench.result import Result
from trainbench.store import run_folder
from trainbench.store.results import (
    IMPORTED_LOG,
    INVALID,
    PUBLISHED,
    REFUSED,
    RUNNING,
    STOPPED,
    VALIDATED,
    ResultStore,
    long_lived,
)
from trainbench.trainers import cifar10
from trainbench.workflows.harness import store

Log = Callable[[str], None]
REAL_DATA_HELP = (
    "download the CIFAR-10 python version (cifar-10-python.tar.gz) and extract it there, "
    'set [paths] data_dir in the configuration, or run with dataset "synthetic"'
)


class ValidationFailed(NoRetry):
    """The run's rows broke expectations; nothing is published from them."""


class RegressionFound(NoRetry):
    """A case got slower than its history allows, and the run asked to fail on that."""


class RunIncomplete(NoRetry):
    """Cases' tasks failed or were stopped: the run published what it has, but must not look done."""


def discover_devices(quarantined: bool = False) -> dict:
    """This host's devices; a quarantined host whose NVML fails is taken to have none (it measures nothing)."""
    try:
        return discover().to_dict()
    except Exception as exc:
        if not quarantined:
            raise
        return discover(None, f"not read, the host is quarantined: {type(exc).__name__}: {exc}").to_dict()


class NoRealData(ConfigError):
    """The run must measure real CIFAR-10 and it is not there; `what` says so without the help."""

    def __init__(self, what: str):
        super().__init__(f"{what}: {REAL_DATA_HELP}")
        self.what = what


def choose_dataset(config: Config, settings: Settings, gpu_host: bool) -> dict:
    """Which data set the run measures, real CIFAR-10 or the synthetic stand-in, and where; nothing written.

    On a host with GPUs, "auto" never falls back to synthetic data: a GPU host whose data volume
    started empty would otherwise publish a week of synthetic figures beside real ones.
    """
    real = str(config.data_dir)
    if settings.dataset in ("auto", "real") and cifar10.is_present(real) and not cifar10.is_synthetic(real):
        return {"kind": "real", "data_dir": cifar10.batches_dir(real)}
    if settings.dataset == "real" or (settings.dataset == "auto" and gpu_host):
        why = "this host has GPUs, so it measures real data unless told otherwise" if gpu_host else ""
        raise NoRealData(
            f'dataset is "{settings.dataset}" but CIFAR-10 is not in {cifar10.batches_dir(real)} '
            f"(expected data_batch_1..5 and test_batch){'; ' + why if why else ''}"
        )
    synthetic = str(config.output_dir / "data" / cifar10.synthetic_name(settings.seed))
    return {"kind": "synthetic", "data_dir": cifar10.batches_dir(synthetic)}


def prepare_dataset(config: Config, settings: Settings, inventory: dict) -> dict:
    """The data set the run measures (`choose_dataset`), the synthetic one written if it is not there yet."""
    chosen = choose_dataset(config, settings, bool(Inventory.from_dict(inventory).gpus))
    if chosen["kind"] == "synthetic" and not cifar10.is_present(chosen["data_dir"]):
        cifar10.write_synthetic(chosen["data_dir"], seed=settings.seed)
    return chosen


def plan_matrix(
    settings: Settings, inventory: dict, dataset: dict, host: str = DEFAULT_HOST, quarantined: bool = False
) -> list[CaseSpec]:
    """One spec per case x repeat of one host: everything a training task needs, nothing it must look up.  A
    quarantined host whose GPUs the plan cannot find plans nothing: its quarantine (the report, the alert) says why."""
    job = TrainingJob(
        data_dir=dataset["data_dir"],
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        seed=settings.seed,
        train_images=settings.train_images,
    )
    try:
        cases = plan(
            settings.frameworks,
            settings.device_sets,
            settings.repeats,
            Inventory.from_dict(inventory),
            host,
            settings.warmup,
        )
    except ConfigError:
        if quarantined:
            return []
        raise
    return [CaseSpec(case=c, job=job, data_kind=dataset["kind"], timeout_s=settings.timeout_s) for c in cases]


def record_plan(config: Config, run_id: str, host: str, specs: Sequence[CaseSpec]) -> None:
    """The host's planned cases of the run: a run stopped part-way then says which never ran."""
    store(config).save_plan(run_id, host, [(s.case.key, s.case.label) for s in specs])


def never_ran(planned: Sequence[dict], results: Sequence[Result]) -> list[dict]:
    """The planned cases (`ResultStore.planned`) that hold none of the run's `results`."""
    measured = {(r.host, r.case_key) for r in results}
    return [p for p in planned if (p["host"], p["case_key"]) not in measured]


def start_run(config: Config, run_id: str, settings: Settings, logical_date: dt.datetime | None = None) -> None:
    """Record the run and its settings, in the database and beside its raw results."""
    run_folder.write_settings(config.output_dir, run_id, settings.as_dict())
    store(config).save_run(run_id, settings.as_dict(), logical_date=logical_date)


def check_unmeasured(config: Config, run_id: str, host: str) -> None:
    """A run this host measured and that was validated or published is never measured again under its id: the
    new rows would replace the published ones (the other hosts of a run measured from the CLI may still join)."""
    db = store(config)
    state = db.run_state(run_id)
    if state in (VALIDATED, PUBLISHED) and any(r["host"] == host for r in db.rows(run_id)):
        raise ConfigError(
            f"run {run_id!r} is already {state} with this host's ({host}) results; they are kept: choose another "
            "--run-id (or `report --run-id` to publish it again)"
        )


def original_settings(config: Config, logical_date: dt.datetime) -> dict | None:
    """What the first run of this logical date measured with: a backfill of that week re-uses it."""
    return store(config).settings_at(logical_date)


def refuse_run(config: Config, run_id: str, reason: str) -> None:
    """A run whose conf was refused is recorded as such, with why: nothing ran, and it must never look `running`."""
    db = store(config)
    db.save_run(run_id, {"refused": reason})
    db.set_state(run_id, REFUSED)


def refusal(config: Config, run_id: str) -> str | None:
    """Why the run was refused before measuring, or None for a run that was not."""
    db = store(config)
    if db.run_state(run_id) != REFUSED:
        return None
    return (db.settings_of(run_id) or {}).get("refused") or "its conf was refused"


def stop_run(config: Config, run_id: str) -> bool:
    """The DAG run was stopped while measuring: no later step will validate or publish it.  True for the one
    caller that stopped it (every host's stopped task calls this; one announces it)."""
    return store(config).change_state(run_id, RUNNING, STOPPED)


def collect(config: Config, run_id: str) -> dict:
    """Load every raw result the database does not hold yet (stored during an outage); count the run's rows.
    A run never started here (refused before planning) is not recorded by collecting it."""
    db = store(config)
    if settings := run_folder.read_settings(config.output_dir, run_id):
        db.save_run(run_id, settings)
    stored = {(r["case_key"], r["env_key"]) for r in db.rows(run_id)}
    loaded = [r for r in run_folder.raw_results(config.output_dir, run_id) if (r.case_key, r.env_key) not in stored]
    for result in loaded:
        db.save(result)
    rows = db.current_rows(run_id)
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {"rows": len(rows), "loaded_from_raw": len(loaded), "statuses": statuses}


def validate_results(config: Config, run_id: str, planned: list[CaseSpec]) -> dict:
    """Great Expectations suite over every row of the run against its plan; Data Docs kept in the run's folder.
    The DAG plans every host of the fleet; the CLI, run on each host under one run id, its own, and the rows the
    run's other hosts stored count as their plan: their values are checked again, so a host whose rows were
    invalid keeps the whole run from being published."""
    from trainbench.checks import validation

    db = store(config)
    hosts = {s.case.host for s in planned}
    rows = db.current_rows(run_id)
    elsewhere = [r["case_key"] for r in rows if r["host"] not in hosts]
    epochs = {s.job.epochs for s in planned}
    host_memory = [r["environment"].get("host_memory_mib") for r in rows if r.get("environment")]
    docs = run_folder.run_dir(config.output_dir, run_id) / "data_docs"
    result = validation.run_suite(
        rows,
        [s.case.key for s in planned] + elsewhere,
        docs,
        host_memory_mib=max((m for m in host_memory if m), default=None),
        epochs=epochs.pop() if len(epochs) == 1 else None,
    )
    if not result.success:
        db.set_state(run_id, INVALID)
        raise ValidationFailed(result.summary())
    db.set_state(run_id, VALIDATED)
    return {
        "rows": len(rows),
        "data_docs": str(result.docs_index) if result.docs_index else None,
        "statistics": result.statistics,
    }


def other_runs(db: ResultStore, run_id: str, epochs: bool = True) -> list[Result]:
    """Every result of trainbench's other runs: the history and comparisons a report shows (not imported logs)."""
    return db.history(except_run=run_id, epochs=epochs)


def earlier_runs(
    db: ResultStore, run_id: str, order: list[str], results: Sequence[Result], policy: RegressionPolicy
) -> list[Result]:
    """What the verdicts of `results` (the run's) are judged on: the results of the runs before `run_id` in `order`,
    never a later week (which a backfill of an old week would otherwise be judged against), of the runs the
    judgement reads (`regression.runs_read`)."""
    from trainbench.checks import regression

    earlier = order[: order.index(run_id)] if run_id in order else order
    read = regression.runs_read(results, db.case_runs(), earlier, policy)
    return db.history(except_run=run_id, only_runs=read)


def detect_regressions(config: Config, run_id: str, log: Log = print) -> list[dict]:
    """Measure each case's dispersion, then judge it against its history; store and log both."""
    from trainbench.checks import regression

    long_lived()
    db = store(config)
    results = db.current_results(run_id)
    max_cv = config.measurement.max_cv
    summaries = cases.summarize(results, max_cv)
    db.save_case_stats(run_id, [s.stats_row() for s in summaries if s.counted])
    for s in summaries:
        if s.noisy:
            log(
                f"{s.key.label}: noisy, wall CV {s.wall.cv or 0:.1%}, images/s CV {s.ips.cv or 0:.1%} "
                f"> max_cv {max_cv:.0%}"
            )
    order = db.run_ids()
    past = earlier_runs(db, run_id, order, results, config.regression)
    found = [
        v.to_dict()
        for metric in regression.METRICS
        for v in regression.judge(results, past, order, config.regression, metric=metric, max_cv=max_cv)
    ]
    db.save_verdicts(run_id, found)
    for v in found:
        log(f"{v['framework']} | {v['device_set']} on {v['host']} | {v['metric']}: {v['verdict']} ({v['detail']})")
    return found


class ReadingFailed(Exception):
    """The host's environment could not be read whole: nothing is stored, so a failed probe is never a change."""


def watch_environment(config: Config, host: str, nvml=None, run_id: str | None = None) -> dict:
    """Read the host's environment, store the reading, and say what changed since its last one (nothing on the
    first reading: there is nothing to compare it with).  A reading with a failed interpreter probe, or without
    the GPUs NVML showed before (right after a driver upgrade, before a reboot, NVML often fails), raises
    `ReadingFailed` and is not stored: it would announce packages or a driver going to none."""
    from trainbench.workflows import watch

    found = watch.read(config, host, nvml)
    db = store(config)
    last = db.environments(host)[-1:]
    problems = [f"{name}: {fw['error']}" for name, fw in found["frameworks"].items() if fw.get("error")]
    if last and last[0]["environment"].get("gpus") and not found["gpus"]:
        problems.append(
            f"NVML shows no GPU where it showed {len(last[0]['environment']['gpus'])}: {found['nvml_error']}"
        )
    if problems:
        raise ReadingFailed(f"{host}: the environment could not be read, nothing stored: " + "; ".join(problems))
    at = dt.datetime.now(dt.UTC)
    digest = watch.digest(found)
    previous = db.observe_environment(host, found, digest, at, run_id)
    if previous is None:
        return {"host": host, "observed_at": at.isoformat(), "previous_at": None, "changed": {}}
    return {
        "host": host,
        "observed_at": at.isoformat(),
        "previous_at": cases.utc(previous["observed_at"]).isoformat(),
        "changed": {} if previous["digest"] == digest else watch.changes(previous["environment"], found),
    }


def check_complete(config: Config, run_id: str, failed_tasks: int) -> dict:
    """The run's end: failed when `failed_tasks` of its cases' tasks failed or were stopped (named from their rows
    where Airflow stopped them), so a weekly run missing measurements never shows as a success."""
    if store(config).run_state(run_id) == REFUSED:
        raise RunIncomplete("the run was refused before measuring (check_conf says why): nothing measured or published")
    stopped = [
        f"{r['framework']} | {r['device_set']} | r{r['repeat']} on {r['host']}"
        for r in store(config).current_rows(run_id)
        if r["status"] == "killed" and (r["error"] or "").startswith(outcome.STOPPED_BY_AIRFLOW)
    ]
    if failed_tasks or stopped:
        detail = f"; stopped by Airflow: {', '.join(stopped)}" if stopped else ""
        raise RunIncomplete(
            f"{failed_tasks} case task(s) failed or were stopped{detail}; what the run measured is published"
        )
    return {"failed_tasks": 0}


def regression_gate(verdicts: list[dict], fail_on_regression: bool) -> list[str]:
    """The regressed cases; raises when the run asked to fail on any."""
    regressed = [
        f"{v['framework']} | {v['device_set']}: {v['detail']}" for v in verdicts if v["verdict"] == "regressed"
    ]
    if regressed and fail_on_regression:
        raise RegressionFound("regressions found:\n" + "\n".join(regressed))
    return regressed


def publish(config: Config, run_id: str, verdicts: list[dict] | None = None) -> dict:
    """Write the run's reports (Markdown, HTML, CSV, Parquet) into its folder; point output/latest at the newest.

    A validated run becomes published; a run still running or that failed validation gets its reports
    rewritten but stays what it is, so it never becomes "latest". "Newest" is the published run of the
    newest logical date with results, so publishing a backfill of old weeks leaves output/latest on the
    current week. `verdicts`: the run's, as `detect_regressions` returned them (else read back from the database).
    Publications of one run take turns, so the last written holds every row stored before it began.
    """
    long_lived()
    with run_folder.publishing(config.output_dir, run_id):
        return _publish(config, run_id, verdicts)


def _publish(config: Config, run_id: str, verdicts: list[dict] | None) -> dict:
    from trainbench import comparison, reports
    from trainbench.checks import environment_change
    from trainbench.reports import environment_change as environment_change_report
    from trainbench.reports.rows import Standing

    db = store(config)
    results = db.current_results(run_id)
    planned = db.planned(run_id)
    max_cv = config.measurement.max_cv
    past = other_runs(db, run_id, epochs=False)
    order = db.run_ids()
    shown = {(r.host, r.framework, r.device_set) for r in results}
    related = [r for r in [*past, *results] if (r.host, r.framework, r.device_set) in shown]
    fingerprints = db.fingerprints(r.env_key for r in related)
    upgraded = comparison.upgraded(
        comparison.compare(related, fingerprints, order, max_cv), {r.env_key for r in results}
    )
    paths: dict[str, Path] = reports.write_all(
        cases.summarize(results, max_cv),
        run_folder.run_dir(config.output_dir, run_id),
        run_id,
        history=past,
        verdicts=[v for v in db.verdicts() if verdicts is None or v["run_id"] != run_id]
        + [{**v, "run_id": run_id} for v in verdicts or ()],
        run_order=order,
        fingerprints=fingerprints,
        comparisons=upgraded,
        imported=db.results(source=IMPORTED_LOG),
        quarantines=db.quarantines(run_id),
        standing=Standing(db.run_state(run_id) == STOPPED, len(planned), tuple(never_ran(planned, results))),
    )
    policy = config.environment_change
    remeasured, triggers = environment_change.judge_remeasured(policy.threshold, policy.alpha, run_id, upgraded)
    for c, rows in remeasured:
        db.save_environment_verdicts(run_id, c.host, c.framework, c.device_set, rows)
    if triggers:
        found = environment_change_report.write_report(config, run_id, triggers)
        paths |= {
            "environment_change_markdown": Path(found["markdown"]),
            "environment_change_html": Path(found["html"]),
        }
    if db.run_state(run_id) == VALIDATED:  # only once every report is written: a full disk leaves it validated
        db.set_state(run_id, PUBLISHED)
    latest = db.latest_run_id()
    if latest is not None:
        run_folder.point_latest(config.output_dir, latest)
    return {
        "rows": len(results),
        **{k: str(v) for k, v in paths.items()},
        "database": shown_url(config.database_url),
        "latest": latest == run_id,
        "state": db.run_state(run_id),
    }
