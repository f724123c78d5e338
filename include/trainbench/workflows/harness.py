"""The per-case harness: one case trained in its framework's interpreter, measured, and stored.

A case's fingerprint is taken on the host that runs it; its GPUs are checked (health, idle) before it starts;
the trainer runs under the monitors (`measure`); what it printed and how it ended become its `Result`, written as
raw JSON before the database (a database outage loses nothing: a retry stores the raw result instead of training
again). A GPU that turned unhealthy quarantines its host for the rest of the run.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass

from trainbench import fingerprint, frameworks
from trainbench.config import Config
from trainbench.devices import Inventory, discover, load_nvml
from trainbench.frameworks import interpreters
from trainbench.measure import clocks, environ, health, idle, memory, outcome, phases, protocol, runner, sampling
from trainbench.planning import CaseSpec
from trainbench.result import Result
from trainbench.store import run_folder
from trainbench.store.results import BENCHMARK, ResultStore, open_store

Log = Callable[[str], None]


def store(config: Config) -> ResultStore:
    return open_store(config.database_url)


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
    resume: bool = False,
) -> Result:
    """Train one case in its framework's interpreter, measure it, and store the result.

    A busy GPU raises `DeviceBusy` so the caller can retry later; on the final attempt the
    case is stored as `busy` instead.  A host quarantined in this run (by the doctor, or by a
    GPU that turned unhealthy) measures nothing more: each of its cases is `unavailable`.
    `nvml` replaces the NVML library (tests without GPUs).  `resume`: a case this run already stored in this
    environment is kept, not measured again (an interrupted run, run again).
    """
    m = _begin(config, run_id, spec, log, nvml)
    if resume and (kept := _stored(m)) is not None:
        return kept
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


def _stored(m: _Measuring) -> Result | None:
    """The result this run already stored for the case in this environment, if any."""
    r = m.result
    found = [s for s in store(m.config).results(r.run_id) if (s.case_key, s.env_key) == (r.case_key, r.env_key)]
    if found:
        m.log(f"{m.spec.case.label}: already stored in this run, kept")
    return found[0] if found else None


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
            return _finish(m, "crashed", f"preparing the launch failed: {type(exc).__name__}: {exc}")
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
    limits = m.config.health
    faults, throttled = health.judge(proc.monitors.get("gpus", []), limits.max_throttle_share, limits.taint_reasons)
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
    protocol.check_figures(report, proc.wall_s)
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
        limits = m.config.health
        faults, _ = health.judge(
            (result.telemetry or {}).get("gpus", []), limits.max_throttle_share, limits.taint_reasons
        )
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
