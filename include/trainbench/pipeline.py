"""The benchmark pipeline's steps, as plain functions the DAG tasks and the CLI both call.

discover devices -> prepare the data set -> plan the matrix -> run every case -> collect
-> validate -> detect regressions -> publish.  Each step takes and returns small values
that travel as XCom (`CaseSpec`, `Result` and plain dicts).  Each case writes its raw
result to the run folder before touching the database, so a database outage loses
nothing: `collect` loads whatever the database is missing.
"""

from __future__ import annotations

import datetime as dt
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainbench import cases, fingerprint, frameworks
from trainbench.config import Config, ConfigError, Settings, shown_url
from trainbench.devices import Inventory, discover, load_nvml
from trainbench.errors import NoRetry
from trainbench.frameworks import interpreters
from trainbench.measure import clocks, environ, health, idle, memory, outcome, phases, protocol, runner, sampling
from trainbench.planning import DEFAULT_HOST, CaseSpec, TrainingJob, plan
from trainbench.result import Result
from trainbench.store import run_folder
from trainbench.store.results import (
    BENCHMARK,
    IMPORTED_LOG,
    INVALID,
    PUBLISHED,
    VALIDATED,
    ResultStore,
    open_store,
)
from trainbench.trainers import cifar10

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


def store(config: Config) -> ResultStore:
    return open_store(config.database_url)


def discover_devices(quarantined: bool = False) -> dict:
    """This host's devices; a quarantined host whose NVML fails is taken to have none (it measures nothing)."""
    try:
        return discover().to_dict()
    except Exception as exc:
        if not quarantined:
            raise
        return discover(None, f"not read, the host is quarantined: {type(exc).__name__}: {exc}").to_dict()


def prepare_dataset(config: Config, settings: Settings, inventory: dict) -> dict:
    """Where the data is, and whether it is real CIFAR-10 or the synthetic stand-in.

    On a host with GPUs, "auto" never falls back to synthetic data: a GPU host whose data volume
    started empty would otherwise publish a week of synthetic figures beside real ones.
    """
    real = str(config.data_dir)
    if settings.dataset in ("auto", "real") and cifar10.is_present(real) and not cifar10.is_synthetic(real):
        return {"kind": "real", "data_dir": cifar10.batches_dir(real)}
    gpu_host = bool(Inventory.from_dict(inventory).gpus)
    if settings.dataset == "real" or (settings.dataset == "auto" and gpu_host):
        why = "this host has GPUs, so it measures real data unless told otherwise" if gpu_host else ""
        raise ConfigError(
            f'dataset is "{settings.dataset}" but CIFAR-10 is not in {cifar10.batches_dir(real)} '
            f"(expected data_batch_1..5 and test_batch){'; ' + why if why else ''}: {REAL_DATA_HELP}"
        )
    synthetic = str(config.output_dir / "data" / cifar10.synthetic_name(settings.seed))
    if not cifar10.is_present(synthetic):
        cifar10.write_synthetic(synthetic, seed=settings.seed)
    return {"kind": "synthetic", "data_dir": cifar10.batches_dir(synthetic)}


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


def start_run(config: Config, run_id: str, settings: Settings, logical_date: dt.datetime | None = None) -> None:
    """Record the run and its settings, in the database and beside its raw results."""
    run_folder.write_settings(config.output_dir, run_id, settings.as_dict())
    store(config).save_run(run_id, settings.as_dict(), logical_date=logical_date)


def original_settings(config: Config, logical_date: dt.datetime) -> dict | None:
    """What the first run of this logical date measured with: a backfill of that week re-uses it."""
    return store(config).settings_at(logical_date)


@dataclass
class _Measuring:
    """One case on its way through `run_case`: what each step needs from the ones before."""

    config: Config
    spec: CaseSpec
    result: Result
    inventory: Inventory
    nvml: object | None
    nvml_error: str | None
    log: Log
    clock_lock: dict | None = None


def run_case(
    config: Config,
    run_id: str,
    spec: CaseSpec,
    log: Log = print,
    on_launch: Callable[[runner.Launch], None] | None = None,
    final_attempt: bool = True,
    nvml=None,
) -> Result:
    """Train one case in its framework's interpreter, measure it, and store the result.

    A busy GPU raises `DeviceBusy` so the caller can retry later; on the final attempt the
    case is stored as `busy` instead.  A host quarantined in this run (by the doctor, or by a
    GPU that turned unhealthy) measures nothing more: each of its cases is `unavailable`.
    `nvml` replaces the NVML library (tests without GPUs).
    """
    m = _begin(config, run_id, spec, log, nvml)
    replayed = _replay_raw(m)
    if replayed is not None:
        return replayed
    reason = _quarantined(m)
    if reason is not None:
        return _finish(m, "unavailable", f"host {spec.case.host} quarantined in this run: {reason}")
    try:
        launch_spec = frameworks.launch_spec(config.interpreter(spec.case.framework), spec.case, spec.job)
    except frameworks.Unavailable as exc:
        return _finish(m, "unavailable", str(exc))
    except frameworks.Unsupported as exc:
        return _finish(m, "unsupported", str(exc))
    m.result.command = shlex.join(launch_spec.argv)
    try:
        monitors = _monitors(m, final_attempt)
    except _NotRun as exc:
        return _finish(m, exc.status, exc.error)
    return _launch(m, launch_spec, monitors, on_launch)


def env_key(config: Config, spec: CaseSpec, nvml=None) -> str:
    """The environment key `spec` would be measured under with `config` here, found without training."""
    return _begin(config, "", spec, lambda m: None, nvml).result.env_key


def _begin(config: Config, run_id: str, spec: CaseSpec, log: Log, nvml) -> _Measuring:
    """The case's fingerprint on this host (not the planning host): it decides which results compare."""
    case = spec.case
    nvml_error = None if case.device_set.kind == "gpu" else "not queried for a CPU case"
    if case.device_set.kind == "gpu" and nvml is None:
        nvml, nvml_error = load_nvml()
    inventory = discover(nvml, nvml_error)
    fw = frameworks.REGISTRY[case.framework]
    interpreter = config.interpreter(case.framework)
    probe = interpreters.probe(interpreter.python, fw.distributions, environ.trainer_environ(interpreter.environ))
    fp = fingerprint.fingerprint(inventory, case, probe, spec.workload)
    result = Result.for_case(run_id, case, fingerprint.env_key(fp), fp)
    return _Measuring(config, spec, result, inventory, nvml, nvml_error, log)


def _replay_raw(m: _Measuring) -> Result | None:
    """A retry after a database outage stores what the earlier try measured instead of training again."""
    r = m.result
    raw = run_folder.raw_path(m.config.output_dir, r.run_id, r.case_key, r.env_key)
    if not raw.is_file() or store(m.config).has(r.run_id, r.case_key, r.env_key):
        return None
    m.log(f"{m.spec.case.label}: storing the result an earlier try measured (the database was unreachable then)")
    return _quarantine_on_faults(m, _save(m.config, Result.from_json(raw.read_text()), m.log))


class _NotRun(Exception):
    """The case must not run here; its row says why."""

    def __init__(self, status: str, error: str):
        super().__init__(error)
        self.status, self.error = status, error


def _monitors(m: _Measuring, final_attempt: bool) -> list:
    """The samplers for the case, after the GPU pre-checks (raising `_NotRun` when it must not run)."""
    monitors: list = [sampling.HostRssMonitor()]
    ds = m.spec.case.device_set
    worker = m.result.environment["worker_host"]
    if worker is not None and worker != m.spec.case.host:
        raise _NotRun(
            "unavailable",
            f"planned on host {m.spec.case.host!r}, ran on {worker!r}: check the worker's "
            f"queue (`airflow celery worker -q {m.spec.case.host}`) and its ${fingerprint.HOST_VAR}",
        )
    if ds.kind != "gpu":
        return monitors
    if m.nvml is None:
        raise _NotRun("unavailable", f"NVML is needed to measure GPUs: {m.nvml_error}")
    try:
        for uuid in ds.gpu_uuids:
            m.inventory.gpu(uuid)
    except LookupError as exc:
        raise _NotRun("unavailable", f"planned on another host: {exc}") from None
    problems, warnings = health.gpu_health(m.nvml, ds.gpu_uuids)
    for warning in warnings:
        m.log(f"{m.spec.case.label}: GPU health warning (measured anyway): {warning}")
    if problems:
        raise _NotRun("unavailable", "GPU health: " + _quarantine(m, problems))
    cfg = m.config.measurement
    reasons = idle.wait_until_idle(
        m.nvml,
        ds.gpu_uuids,
        m.config.output_dir / "idle_levels.json",
        cfg.idle_threshold_mib,
        cfg.idle_wait_s,
        driver=m.inventory.driver_version,
        log=m.log,
    )
    if reasons and not final_attempt:
        raise idle.DeviceBusy(f"{m.spec.case.label}: not measured, devices busy: " + "; ".join(reasons))
    if reasons:
        raise _NotRun("busy", "; ".join(reasons))
    return [*monitors, sampling.GpuMonitor(m.nvml, ds.gpu_uuids, interval_s=cfg.memory_sample_ms / 1000)]


def _launch(
    m: _Measuring, launch_spec: frameworks.LaunchSpec, monitors: list, on_launch: Callable[[runner.Launch], None] | None
) -> Result:
    label = m.spec.case.label
    reader = launch_spec.reader()

    def on_line(stream: str, line: str) -> None:
        event = reader.feed(stream, line, time.time())
        if event is not None:
            m.log(
                f"{label}: epoch {event['epoch']} {event['seconds']:.2f} s, "
                f"{event['images_per_s']:.0f} images/s, loss {event['loss']:.4f}"
            )

    launch = runner.Launch(
        launch_spec.argv,
        env=environ.trainer_environ(launch_spec.environ),
        timeout_s=m.spec.timeout_s,
        on_line=on_line,
        monitors=monitors,
    )
    if launch_spec.prepare is not None:
        try:
            launch_spec.prepare(m.log)
        except Exception as exc:
            why = f"preparing the launch failed: {type(exc).__name__}: {exc}"
            modules = frameworks.REGISTRY[m.spec.case.framework].modules
            return _finish(m, "unavailable" if outcome.missing_module(modules).search(why) else "crashed", why)
    m.log(f"{label}: {m.result.command}")
    ds = m.spec.case.device_set
    if m.config.measurement.lock_clocks and ds.kind == "gpu" and m.nvml is not None:
        m.clock_lock = clocks.lock(m.nvml, ds.gpu_uuids)
        m.log(f"{label}: clocks {m.clock_lock}")
    try:
        try:
            launch.start()
        except OSError as exc:
            fw = m.spec.case.framework
            return _finish(
                m,
                "unavailable",
                f"cannot start {m.config.interpreter(fw).python!r} for {fw}: {exc}; "
                f"create it with `make envs` or set [frameworks.{frameworks.REGISTRY[fw].base}] python in "
                f"{m.config.path}",
            )
        if on_launch:
            on_launch(launch)
        proc = launch.wait()
    finally:
        if m.clock_lock is not None:
            m.clock_lock = clocks.restore(m.nvml, m.clock_lock)
    _record(m.result, proc, reader.report(proc.stdout_lines), m.spec, m.clock_lock)
    r = m.result
    faults, throttled = health.judge(proc.monitors.get("gpus", []), m.config.health)
    r.status, r.error = outcome.taint(r.status, r.error, faults + throttled)
    m.log(
        f"{label}: {r.status} in {proc.wall_s:.2f} s (user {proc.user_s:.2f} s, sys {proc.sys_s:.2f} s)"
        + (f", peak memory {r.peak_mem_mib:.0f} MiB ({r.peak_mem_method})" if r.peak_mem_mib is not None else "")
        + (f"\n{r.error}" if r.error else "")
    )
    return _quarantine_on_faults(m, _save(m.config, r, m.log), faults)


def _record(
    r: Result, proc: runner.ProcessResult, report: protocol.TrainerReport, spec: CaseSpec, clock_lock: dict | None
) -> None:
    """Fill the result from how the trainer ended, what it printed and what the monitors saw."""
    protocol.check_epochs(report, spec.job.epochs)
    if proc.stdout_dropped:
        report.errors.append(
            f"{proc.stdout_dropped} event lines beyond the first {runner.MAX_EVENT_LINES} were dropped unread"
        )
    r.status, r.error = outcome.classify(proc, report, frameworks.REGISTRY[spec.case.framework].modules)
    summary = report.summary or {}
    r.environment["framework_reported"] = {
        k: summary.get(k)
        for k in ("framework_version", "cuda_version", "cudnn_version", "nccl_version")
        if summary.get(k) is not None
    }
    r.wall_s, r.user_s, r.sys_s = proc.wall_s, proc.user_s, proc.sys_s
    r.images_per_s, r.epochs, r.summary = report.steady_images_per_s, report.epochs, summary
    r.parameters, r.test_accuracy = summary.get("parameters"), summary.get("test_accuracy")
    r.final_loss = report.losses[-1] if report.losses else None
    r.phases = phases.timeline(report, proc.launched_at, proc.exited_at)
    r.telemetry = proc.monitors | {
        "clock_lock": clock_lock,
        "returncode": proc.returncode,
        "orphans_reaped": proc.orphans_reaped,
        "allocator_peak_mib": summary.get("allocator_peak_mib"),
    }
    figures = memory.figures(spec.case.device_set, proc.monitors)
    r.peak_mem_mib, r.peak_mem_method, r.devices = (
        figures["peak_mem_mib"],
        figures["peak_mem_method"],
        figures["devices"],
    )


def _quarantined(m: _Measuring) -> str | None:
    """Why the case's host stopped measuring in this run; unknown while the database is down, when the case
    is measured and its raw result kept like any other."""
    import sqlalchemy.exc

    try:
        return store(m.config).quarantined(m.result.run_id, m.spec.case.host)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        m.log(f"{m.spec.case.label}: quarantine unknown, the database is unreachable: {exc}")
        return None


def _quarantine_on_faults(m: _Measuring, result: Result, faults: list[str] | None = None) -> Result:
    """After the result is stored (its raw JSON first, so a database outage loses neither: the retry stores the
    raw result and quarantines then).  `faults` as `_launch` judged them; None: judged from a replayed result's
    telemetry."""
    if faults is None:
        faults, _ = health.judge((result.telemetry or {}).get("gpus", []), m.config.health)
    if faults:
        _quarantine(m, faults)
    return result


def _quarantine(m: _Measuring, reasons: list[str]) -> str:
    """Stop the case's host measuring for the rest of the run; returns the reasons."""
    text = "; ".join(reasons)
    host = m.spec.case.host
    kept = store(m.config).quarantine(m.result.run_id, host, text)
    m.log(f"{m.spec.case.label}: host {host} quarantined for this run: {kept}")
    return text


def _finish(m: _Measuring, status: str, error: str) -> Result:
    """A case that never launched still becomes a row: why it could not run is the result."""
    m.result.status, m.result.error = status, error
    return _save(m.config, m.result, m.log)


def _save(config: Config, result: Result, log: Log) -> Result:
    """Write the raw JSON first (it survives a database outage), then the row."""
    raw = run_folder.write_raw(config.output_dir, result)
    db = store(config)
    source = db.source_of(result.run_id) or BENCHMARK  # a before/after run's rows stay in its run
    db.save_run(result.run_id, run_folder.read_settings(config.output_dir, result.run_id), source=source)
    db.save(result)
    log(f"{result.case_key}: stored ({raw})")
    return result


def collect(config: Config, run_id: str) -> dict:
    """Load every raw result the database does not hold yet (stored during an outage); count the run's rows."""
    db = store(config)
    db.save_run(run_id, run_folder.read_settings(config.output_dir, run_id))
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


def earlier_runs(db: ResultStore, run_id: str, order: list[str]) -> list[Result]:
    """The results of the runs before `run_id` in `order`: what its verdicts are judged on, never a later week
    (which a backfill of an old week would otherwise be judged against)."""
    earlier = set(order[: order.index(run_id)]) if run_id in order else set(order)
    return [r for r in other_runs(db, run_id) if r.run_id in earlier]


def detect_regressions(config: Config, run_id: str, log: Log = print) -> list[dict]:
    """Measure each case's dispersion, then judge it against its history; store and log both."""
    from trainbench.checks import regression

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
    past = earlier_runs(db, run_id, order)
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
    from trainbench import watch

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
    """
    from trainbench import before_after, comparison, reports

    db = store(config)
    if db.run_state(run_id) == VALIDATED:
        db.set_state(run_id, PUBLISHED)
    results = db.current_results(run_id)
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
    )
    if triggers := before_after.judge_remeasured(config, run_id, upgraded):
        found = before_after.write_report(config, run_id, triggers)
        paths |= {
            "environment_change_markdown": Path(found["markdown"]),
            "environment_change_html": Path(found["html"]),
        }
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
