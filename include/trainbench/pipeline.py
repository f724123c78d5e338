"""The benchmark pipeline's steps, as plain functions the DAG tasks and the CLI both call.

discover devices -> prepare the data set -> plan the matrix -> run every case -> collect
-> publish.  Every step takes and returns small JSON-able values (they travel as XCom).
Each case writes its raw result to the run folder before touching the database, so a
database outage loses nothing: `collect` loads whatever the database is missing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
from pathlib import Path
from typing import Callable

from trainbench import environment, frameworks, idle, outcome, report, runner, sampling, trainer_output
from trainbench.config import Config, ConfigError, Settings
from trainbench.devices import Inventory, discover, load_nvml
from trainbench.errors import NoRetry
from trainbench.planning import Case, plan
from trainbench.results import ResultStore, to_json
from trainbench.trainers import cifar10

REAL_DATA_HELP = ("download the CIFAR-10 python version (cifar-10-python.tar.gz) and extract it there, "
                  "set [paths] data_dir in the configuration, or run with dataset \"synthetic\"")


def run_dir(config: Config, run_id: str) -> Path:
    return config.output_dir / "runs" / re.sub(r"[^A-Za-z0-9_.+-]", "_", run_id)


def discover_devices() -> dict:
    return discover().to_dict()


def prepare_dataset(config: Config, settings: Settings) -> dict:
    """Where the data is, and whether it is real CIFAR-10 or the synthetic stand-in."""
    real = config.data_dir
    if settings.dataset in ("auto", "real") and cifar10.is_present(str(real)) and not cifar10.is_synthetic(str(real)):
        return {"kind": "real", "data_dir": cifar10.batches_dir(str(real))}
    if settings.dataset == "real":
        raise ConfigError(f"dataset is \"real\" but CIFAR-10 is not in {cifar10.batches_dir(str(real))} "
                          f"(expected data_batch_1..5 and test_batch): {REAL_DATA_HELP}")
    synthetic = config.output_dir / "data" / f"synthetic-seed{settings.seed}"
    if not cifar10.is_present(str(synthetic)):
        cifar10.write_synthetic(str(synthetic), seed=settings.seed)
    return {"kind": "synthetic", "data_dir": cifar10.batches_dir(str(synthetic))}


def plan_matrix(settings: Settings, inventory: dict, dataset: dict) -> list[dict]:
    """One spec per case x repeat: everything a training task needs, nothing it must look up."""
    job = frameworks.TrainingJob(data_dir=dataset["data_dir"], epochs=settings.epochs, batch_size=settings.batch_size,
                                 seed=settings.seed, train_images=settings.train_images)
    return [{"case": c.to_dict(), "job": vars(job), "data_kind": dataset["kind"], "timeout_s": settings.timeout_s}
            for c in plan(settings, Inventory.from_dict(inventory))]


def run_case(config: Config, run_id: str, spec: dict, log: Callable[[str], None] = print,
             on_launch: Callable[[runner.Launch], None] | None = None, final_attempt: bool = True,
             nvml=None) -> dict:
    """Train one case in its framework's interpreter, measure it, and store the result.

    A busy GPU raises `DeviceBusy` so the caller can retry later; on the final attempt the
    case is stored as `busy` instead.  `nvml` replaces the NVML library (tests without GPUs).
    """
    case = Case.from_dict(spec["case"])
    job = frameworks.TrainingJob(**spec["job"])
    fw = config.framework(case.framework)
    gpu = case.device_set.kind == "gpu"
    nvml_error = None if gpu else "not queried for a CPU case"
    if gpu and nvml is None:
        nvml, nvml_error = load_nvml()
    inv = discover(nvml, nvml_error)  # this host's devices and driver, not the planning host's
    workload = {"data_kind": spec["data_kind"], "epochs": job.epochs, "batch_size": job.batch_size,
                "train_images": job.train_images}
    fp = environment.fingerprint(inv, case, environment.probe_framework(fw.python, case.framework), workload)
    base = {"run_id": run_id, "case_key": case.key, "env_key": environment.env_key(fp), "framework": case.framework,
            "device_set": case.device_set.text, "device_names": " + ".join(case.device_set.gpu_names) or None,
            "repeat": case.repeat, "environment": fp, "started_at": dt.datetime.now(dt.timezone.utc)}
    raw = raw_path(config, run_id, case.key, base["env_key"])
    if raw.is_file() and not ResultStore(config.database_url).has(run_id, case.key, base["env_key"]):
        log(f"{case.label}: storing the result an earlier try measured (the database was unreachable then)")
        return _store(config, run_id, load_raw(raw), log)
    try:
        launch_spec = frameworks.launch_spec(fw, case, job)
    except frameworks.Unavailable as exc:
        return _store(config, run_id, {**base, "status": "unavailable", "error": str(exc)}, log)
    base["command"] = shlex.join(launch_spec.argv)

    monitors: list = [sampling.HostRssMonitor()]
    if gpu:
        if nvml is None:
            return _store(config, run_id, {**base, "status": "unavailable",
                                           "error": f"NVML is needed to measure GPUs: {nvml_error}"}, log)
        try:
            for uuid in case.device_set.gpu_uuids:
                inv.gpu(uuid)
        except LookupError as exc:
            return _store(config, run_id, {**base, "status": "unavailable",
                                           "error": f"planned on another host: {exc}"}, log)
        m = config.measurement
        reasons = idle.wait_until_idle(nvml, case.device_set.gpu_uuids, config.output_dir / "idle_levels.json",
                                       m.idle_threshold_mib, m.idle_wait_s, driver=inv.driver_version, log=log)
        if reasons and not final_attempt:
            raise idle.DeviceBusy(f"{case.label}: not measured, devices busy: " + "; ".join(reasons))
        if reasons:
            return _store(config, run_id, {**base, "status": "busy", "error": "; ".join(reasons)}, log)
        monitors.append(sampling.GpuMonitor(nvml, case.device_set.gpu_uuids, interval_s=m.memory_sample_ms / 1000))

    def on_line(stream: str, line: str) -> None:
        event = trainer_output.parse_line(line)
        if event and event["event"] == "epoch":
            log(f"{case.label}: epoch {event['epoch']} {event['seconds']:.2f} s, "
                f"{event['images_per_s']:.0f} images/s, loss {event['loss']:.4f}")

    launch = runner.Launch(launch_spec.argv, env={**os.environ, **launch_spec.env}, timeout_s=spec["timeout_s"],
                           on_line=on_line, monitors=monitors)
    log(f"{case.label}: {base['command']}")
    try:
        launch.start()
    except OSError as exc:
        result = {**base, "status": "unavailable",
                  "error": f"cannot start {fw.python!r} for {case.framework}: {exc}; create it with `make envs` "
                           f"or set [frameworks.{case.framework}] python in {config.path}"}
        return _store(config, run_id, result, log)
    if on_launch:
        on_launch(launch)
    proc = launch.wait()
    parsed = launch_spec.parse(proc.stdout_lines)
    status, error = outcome.classify(proc, parsed)
    summary = parsed.summary or {}
    fp["framework_reported"] = {k: summary.get(k) for k in ("framework_version", "cuda_version", "cudnn_version",
                                                            "nccl_version") if summary.get(k) is not None}
    result = {**base, "status": status, "error": error, "wall_s": proc.wall_s, "user_s": proc.user_s,
              "sys_s": proc.sys_s, "images_per_s": parsed.steady_images_per_s, "epochs": parsed.epochs,
              "summary": summary, "parameters": summary.get("parameters"),
              "final_loss": parsed.losses[-1] if parsed.losses else None,
              "test_accuracy": summary.get("test_accuracy"),
              "telemetry": proc.monitors | {
                  "returncode": proc.returncode, "orphans_reaped": proc.orphans_reaped,
                  "allocator_peak_mib": summary.get("allocator_peak_mib")}}
    result.update(memory_figures(case, proc.monitors))
    log(f"{case.label}: {status} in {proc.wall_s:.2f} s (user {proc.user_s:.2f} s, sys {proc.sys_s:.2f} s)"
        + (f", peak memory {result['peak_mem_mib']:.0f} MiB ({result['peak_mem_method']})"
           if result["peak_mem_mib"] is not None else "") + (f"\n{error}" if error else ""))
    return _store(config, run_id, result, log)


HOST_RSS = "host RSS of the process tree, sampled"
GPU_SAMPLED = "NVML device memory used, peak minus idle, sampled"


def memory_figures(case: Case, monitors: dict) -> dict:
    """The result's peak memory: per GPU peak minus idle (the log's figure), or the tree's host RSS on the CPU.

    Device rows carry their method; accounting-mode figures, where NVML kept them, are extra rows.
    """
    if case.device_set.kind == "gpu" and monitors.get("gpus"):
        gpus = monitors["gpus"]
        names = dict(zip(case.device_set.gpu_uuids, case.device_set.gpu_names))
        rows = [{"device": g["uuid"], "name": names.get(g["uuid"]), "idle_mib": g["idle_mib"], "peak_mib": g["peak_mib"],
                 "used_mib": g["used_mib"], "method": sampling.SAMPLED_METHOD} for g in gpus]
        rows += [{"device": g["uuid"], "name": names.get(g["uuid"]), "idle_mib": None, "peak_mib": None,
                  "used_mib": g["accounting_max_mib"], "method": sampling.ACCOUNTING_METHOD}
                 for g in gpus if g.get("accounting_max_mib") is not None]
        return {"peak_mem_mib": sum(g["used_mib"] for g in gpus), "devices": rows,
                "peak_mem_method": f"{GPU_SAMPLED} every {monitors['gpu_sample_interval_s'] * 1000:g} ms"}
    if "host_peak_rss_mib" in monitors:
        rss = monitors["host_peak_rss_mib"]
        return {"peak_mem_mib": rss, "peak_mem_method": HOST_RSS,
                "devices": [{"device": "host", "name": "CPU", "idle_mib": None, "peak_mib": rss, "used_mib": rss,
                             "method": "host_rss"}]}
    return {"peak_mem_mib": None, "peak_mem_method": None, "devices": []}


def raw_path(config: Config, run_id: str, case_key: str, env_key: str) -> Path:
    return run_dir(config, run_id) / "raw" / f"{case_key}__{env_key}.json"


def load_raw(path: Path) -> dict:
    result = json.loads(path.read_text())
    result["started_at"] = dt.datetime.fromisoformat(result["started_at"]) if result.get("started_at") else None
    return result


def _store(config: Config, run_id: str, result: dict, log: Callable[[str], None]) -> dict:
    """Write the raw JSON first (it survives a database outage), then the row."""
    raw = raw_path(config, run_id, result["case_key"], result["env_key"])
    raw.parent.mkdir(parents=True, exist_ok=True)
    tmp = raw.with_suffix(".tmp")
    tmp.write_text(to_json(result))
    os.replace(tmp, raw)
    store = ResultStore(config.database_url)
    ensure_run(config, store, run_id)
    store.save(result)
    log(f"{result['case_key']}: stored ({raw})")
    return {"case_key": result["case_key"], "env_key": result["env_key"], "status": result["status"],
            "wall_s": result.get("wall_s"), "raw": str(raw)}


def start_run(config: Config, run_id: str, settings: Settings) -> None:
    """Record the run and its settings, in the database and beside its raw results."""
    folder = run_dir(config, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps({"run_id": run_id, "settings": settings.as_dict()}, indent=1))
    ResultStore(config.database_url).save_run(run_id, settings.as_dict())


def ensure_run(config: Config, store: ResultStore, run_id: str) -> None:
    """The run's row, from the settings kept beside its raw results (start_run may have met an outage)."""
    saved = run_dir(config, run_id) / "run.json"
    store.save_run(run_id, json.loads(saved.read_text())["settings"] if saved.is_file() else {})


def collect(config: Config, run_id: str) -> list[dict]:
    """The run's current rows, after loading any raw result the database does not hold yet.

    "Current": per case the newest result, so a re-run after a driver upgrade is judged on
    its new rows while the old ones stay stored.
    """
    store = ResultStore(config.database_url)
    folder = run_dir(config, run_id)
    ensure_run(config, store, run_id)
    stored = {(r["case_key"], r["env_key"]) for r in store.rows(run_id)}
    newest: dict[str, tuple[str, str]] = {}
    for raw in sorted((folder / "raw").glob("*.json"), key=lambda p: p.stat().st_mtime):
        result = load_raw(raw)
        identity = (result["case_key"], result["env_key"])
        newest[result["case_key"]] = identity
        if identity not in stored:
            store.save(result)
    rows = store.rows(run_id)
    return [r for r in rows if newest.get(r["case_key"], (r["case_key"], r["env_key"])) == (r["case_key"], r["env_key"])]


class ValidationFailed(NoRetry):
    """The run's rows broke expectations; nothing is published from them."""


def validate(config: Config, run_id: str, planned: list[dict]) -> dict:
    """Great Expectations suite over the run's rows against its plan; Data Docs kept in the run's folder."""
    from trainbench import validation

    rows = collect(config, run_id)
    epochs = {s["job"]["epochs"] for s in planned}
    memory = [r["environment"].get("host_memory_mib") for r in rows if r.get("environment")]
    result = validation.validate(rows, [s["case"]["key"] for s in planned], run_dir(config, run_id) / "data_docs",
                                 host_memory_mib=max((m for m in memory if m), default=None),
                                 epochs=epochs.pop() if len(epochs) == 1 else None)
    if not result.success:
        raise ValidationFailed(result.summary())
    return {"rows": len(rows), "data_docs": str(result.docs_index) if result.docs_index else None,
            "statistics": result.statistics}


def live_history(store: ResultStore, run_id: str) -> list[dict]:
    """Every benchmark row of the other runs; imported historical logs are shown, never judged against."""
    return [r for r in store.rows(source="trainbench") if r["run_id"] != run_id]


def detect_regressions(config: Config, run_id: str, log: Callable[[str], None] = print) -> list[dict]:
    """Judge every case of the run against its history; store and log the verdicts."""
    from trainbench import regression

    store = ResultStore(config.database_url)
    current = collect(config, run_id)
    history = live_history(store, run_id)
    found = [v.to_dict() for v in regression.judge(current, history, store.run_ids(), config.regression)]
    store.save_verdicts(run_id, found)
    for v in found:
        log(f"{v['framework']} | {v['device_set']}: {v['verdict']} ({v['detail']})")
    return found


class RegressionFound(NoRetry):
    """A case got slower than its history allows, and the run asked to fail on that."""


def regression_gate(verdicts: list[dict], fail_on_regression: bool) -> list[str]:
    """The regressed cases; raises when the run asked to fail on any."""
    regressed = [f"{v['framework']} | {v['device_set']}: {v['detail']}" for v in verdicts if v["verdict"] == "regressed"]
    if regressed and fail_on_regression:
        raise RegressionFound("regressions found:\n" + "\n".join(regressed))
    return regressed


def publish(config: Config, run_id: str) -> dict:
    """Write the run's reports (Markdown, HTML, CSV, Parquet) into its folder and into output/latest."""
    from trainbench import regression

    store = ResultStore(config.database_url)
    rows = collect(config, run_id)
    history = live_history(store, run_id)
    paths = report.write_all(
        rows, run_dir(config, run_id), config.output_dir / "latest", run_id,
        history=history, verdicts=store.verdicts(), run_order=store.run_ids(),
        comparisons=regression.driver_comparisons(rows, history),
        historical=store.rows(source="historical"))
    return {"rows": len(rows), **{k: str(v) for k, v in paths.items()}, "database": config.database_url}
