"""GPU acceptance in one command (`make gpu-check`): doctor, then pytorch, pytorch-graph and jax on one GPU at full
size, judged against issue 19's goals, printed as a table and written as JSON.

Core only (no Airflow, no Great Expectations), so it runs on a GPU host that has the frameworks and little else
(README: GPU acceptance).  Its rows go to a run of its own in a folder and SQLite database of their own
(`<output_dir>/gpu_check/`): an acceptance run never enters the fleet's history or verdicts.  By the runs
measured on an H200 before (PyTorch eager 21-26 s, JAX 12-16 s, the CUDA-graph step ~0.2 s an epoch) a round of
the three takes about a minute, so a warm-up and four repeats leave room in the eight minutes allowed (and four
repeats give a CV); the table's last line is the time it took.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from trainbench import cases, frameworks
from trainbench.config import Config, Settings
from trainbench.devices import discover, load_nvml, optional
from trainbench.measure import protocol
from trainbench.measure.memory import NVML_ACCOUNTING, NVML_SAMPLED
from trainbench.result import Result
from trainbench.store import run_folder
from trainbench.workflows import doctor, harness, pipeline

FRAMEWORKS = ("pytorch", "pytorch-graph", "jax")
REPEATS, WARMUP = 4, 1
BUDGET_S = 480.0
GOAL_GPUS = ("H100", "H200")  # the per-epoch goals were set for these; elsewhere they are shown, not judged
PASS, FAIL, NOT_MEASURED, NOT_APPLICABLE = "pass", "fail", "not measured", "n/a"


@dataclass(frozen=True)
class Goal:
    """One row of the table: `status` pass, fail, not measured (with why in `measured`) or n/a (not this GPU's goal)."""

    figure: str
    goal: str
    measured: str
    status: str
    value: float | None = None


def settings_for(config: Config, gpu_host: bool, repeats: int = REPEATS, warmup: int = WARMUP) -> Settings:
    """Full size on the first GPU (the CPU on a host without one, for the doctor), synthetic data: the work per
    image is the real set's."""
    return config.settings.overridden(
        frameworks=FRAMEWORKS,
        device_sets=("0",) if gpu_host else ("cpu",),
        epochs=10,
        batch_size=128,
        train_images=None,
        repeats=repeats,
        warmup=warmup,
        dataset="synthetic",
    )


def main(config: Config, host: str, nvml=None, repeats: int = REPEATS, warmup: int = WARMUP, out=print) -> int:
    """Exit status 0 when every goal passed, or when the host has no GPU and the doctor passed."""
    started = time.perf_counter()
    error = None
    if nvml is None:
        nvml, error = load_nvml()
    try:
        gpus = discover(nvml, error).gpus
    except Exception:  # NVML fails: the doctor says how
        gpus = ()
    settings = settings_for(config, bool(gpus), repeats, warmup)
    checks = doctor.run(own_folder(config), host, nvml if gpus else None, settings)
    for check in checks:
        out(check.line())
    if not doctor.can_measure(checks):
        failed = ", ".join(c.name for c in checks if c.status == doctor.FAIL)
        out(f"gpu-check: the doctor failed ({failed}): GPU acceptance not measured")
        return 1
    if not gpus:
        out("gpu-check: no GPU on this host: GPU acceptance not measured")
        return 0
    report = acceptance(config, host, nvml, settings, checks, started, out)
    return 0 if all(g["status"] in (PASS, NOT_APPLICABLE) for g in report["goals"]) else 1


def own_folder(config: Config) -> Config:
    """The configuration with the check's own output folder and database (the doctor checks these too)."""
    folder = config.output_dir / "gpu_check"
    return dataclasses.replace(config, output_dir=folder, database_url=f"sqlite:///{folder / 'results.db'}")


def acceptance(
    config: Config,
    host: str,
    nvml,
    settings: Settings,
    checks: Iterable[doctor.Check] = (),
    started: float | None = None,
    out: Callable[[str], None] = print,
) -> dict:
    """Measure every planned repeat through the core pipeline (a line per repeat as it ends), judge the goals, print
    the table and write it with the figures to `gpu_check.json` in the run's folder; returns what was written."""
    started = time.perf_counter() if started is None else started
    cfg = own_folder(config)
    run_id = f"gpu_check__{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"
    inventory = discover(nvml).to_dict()
    specs = pipeline.plan_matrix(settings, inventory, pipeline.prepare_dataset(cfg, settings, inventory), host)
    uuids = sorted({u for s in specs for u in s.case.device_set.gpu_uuids})
    before = gpu_state(nvml, uuids)
    folder = run_folder.run_dir(cfg.output_dir, run_id)
    rows = []
    with run_folder.measuring(cfg.output_dir, run_id), open(folder / "gpu_check.log", "a") as log:
        pipeline.start_run(cfg, run_id, settings)
        for spec in specs:
            r = harness.run_case(cfg, run_id, spec, log=lambda m: print(m, file=log, flush=True), nvml=nvml)
            rows.append(r)
            out(f"[{time.perf_counter() - started:5.0f} s] {progress(r)}")
    found = [*goals(rows), state_goal(before, gpu_state(nvml, uuids), rows)]
    elapsed = time.perf_counter() - started
    found.append(_judged("gpu-check time", f"<= {BUDGET_S:.0f} s", elapsed, BUDGET_S, f"{elapsed:.0f} s"))
    report = {
        "run_id": run_id,
        "host": host,
        "gpu": next((r.device_names for r in rows if r.device_names), None),
        "elapsed_s": elapsed,
        "doctor": [c.to_dict() for c in checks],
        "goals": [dataclasses.asdict(g) for g in found],
        "repeats": [figures(r) for r in rows],
    }
    path = folder / "gpu_check.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    for line in table(found):
        out(line)
    out(f"gpu-check: {elapsed:.0f} s; figures in {path}")
    return report


def progress(r: Result) -> str:
    label = f"{r.framework} | {r.device_set} | {'warm-up' if r.warmup else f'r{r.repeat}'}"
    if r.status != cases.OK:
        return f"{label}: {r.status}: {_last_line(r.error)}"
    f = figures(r)
    return (
        f"{label}: ok, wall {r.wall_s:.1f} s, {r.images_per_s or 0:.0f} images/s, steady epoch "
        f"{_num(f['steady_epoch_s'], 's')}, launch to first step {_num(f['launch_to_first_step_s'], 's')}"
    )


def figures(r: Result) -> dict:
    """A repeat's figures the goals are judged on."""
    seconds = [e["seconds"] for e in protocol.steady(r.epochs) if e.get("seconds") is not None]
    phases = r.phases or {}
    sampled, accounted = (
        sum(d["used_mib"] for d in r.devices if d["method"] == m and d["used_mib"] is not None) or None
        for m in (NVML_SAMPLED, NVML_ACCOUNTING)
    )
    return {
        "framework": r.framework,
        "repeat": r.repeat,
        "warmup": r.warmup,
        "status": r.status,
        "error": r.error,
        "wall_s": r.wall_s,
        "images_per_s": r.images_per_s,
        "steady_epoch_s": statistics.median(seconds) if seconds else None,
        # launch until the first step starts: interpreter, framework import, device and data on the device; the
        # first step's own compilation (jit, CUDA graph capture) is the "first epoch" phase's
        "launch_to_first_step_s": phases["startup"] + phases["data"] if "data" in phases else None,
        "sampled_mib": sampled,
        "accounting_mib": accounted,
        "memory_gap": abs(sampled / accounted - 1) if sampled and accounted else None,
    }


def goals(rows: list[Result]) -> list[Goal]:
    """Issue 19's goals over the run's rows (warm-ups and failed repeats never count): per-epoch times on an
    H100/H200, then per framework launch to first step, the repeats' CVs and sampled memory against accounting."""
    gpu = next((r.device_names for r in rows if r.device_names), "")
    judged = any(name in gpu for name in GOAL_GPUS)
    found = []
    for fw, limit in (("pytorch-graph", 0.22), ("pytorch", 0.8)):
        found.append(
            _median_goal(f"{frameworks.title(fw)}: steady epoch", limit, "s", rows, fw, "steady_epoch_s", judged, gpu)
        )
    for fw in FRAMEWORKS:
        found.append(_median_goal(f"{fw}: launch to first step", 6.0, "s", rows, fw, "launch_to_first_step_s"))
    for fw in FRAMEWORKS:
        found += [_cv_goal(rows, fw, "images_per_s", "images/s", 0.02), _cv_goal(rows, fw, "wall_s", "wall time", 0.03)]
    return found + [_memory_goal(rows, fw) for fw in FRAMEWORKS]


def _counted(rows: list[Result], fw: str) -> tuple[list[dict], str]:
    """The framework's counted repeats' figures, and why none counted when so."""
    mine = [r for r in rows if r.framework == fw]
    counted = [figures(r) for r in cases.counted(mine)]
    if counted:
        return counted, ""
    if not mine:
        return [], "not run"
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(Counter(r.status for r in mine).items()))
    return [], f"{statuses}: {_last_line(mine[0].error)}"


def _median_goal(
    figure: str, limit: float, unit: str, rows: list[Result], fw: str, key: str, judged: bool = True, gpu: str = ""
) -> Goal:
    goal = f"<= {limit:g} {unit}" + ("" if key != "steady_epoch_s" else " on H100/H200")
    counted, why = _counted(rows, fw)
    spread = cases.Spread.of(f[key] for f in counted)
    if spread.median is None:
        return Goal(figure, goal, why or f"no {key} in the rows", NOT_MEASURED)
    value = spread.median
    measured = f"{value:.3g} {unit} (median of {spread.n}, {spread.min:.3g}-{spread.max:.3g})"
    if not judged:
        return Goal(figure, goal, f"{measured} on {gpu}", NOT_APPLICABLE, value)
    return _judged(figure, goal, value, limit, measured)


def _cv_goal(rows: list[Result], fw: str, key: str, name: str, limit: float) -> Goal:
    figure, goal = f"{fw}: repeat CV of {name}", f"<= {limit * 100:g} %"
    counted, why = _counted(rows, fw)
    spread = cases.Spread.of(f[key] for f in counted)
    if spread.cv is None:
        return Goal(figure, goal, why or f"{spread.n} counted repeat(s): a CV needs 2", NOT_MEASURED)
    return _judged(figure, goal, spread.cv, limit, f"{spread.cv * 100:.2f} % over {spread.n} repeats")


def _memory_goal(rows: list[Result], fw: str) -> Goal:
    figure, goal = f"{fw}: sampled memory vs accounting", "within 1 %"
    counted, why = _counted(rows, fw)
    both = [f for f in counted if f["memory_gap"] is not None]
    if not both:
        why = why or "no accounting figure in the rows: run as root, or turn accounting on (`nvidia-smi -am 1`)"
        return Goal(figure, goal, why, NOT_MEASURED)
    worst = max(both, key=lambda f: f["memory_gap"])
    measured = (
        f"{worst['memory_gap'] * 100:.2f} % at worst ({worst['sampled_mib']:.1f} vs {worst['accounting_mib']:.1f} MiB)"
    )
    return _judged(figure, goal, worst["memory_gap"], 0.01, measured)


def _judged(figure: str, goal: str, value: float, limit: float, measured: str) -> Goal:
    return Goal(figure, goal, measured, PASS if value <= limit else FAIL, value)


def gpu_state(nvml, uuids: Iterable[str]) -> dict[str, dict]:
    """What a run must leave as it found it, per GPU: accounting mode and the applications clocks."""
    state = {}
    for uuid in uuids:
        h = nvml.nvmlDeviceGetHandleByUUID(uuid)
        clock = getattr(nvml, "nvmlDeviceGetApplicationsClock", None)
        state[uuid] = {
            "accounting_mode": optional(nvml.nvmlDeviceGetAccountingMode, h),
            "graphics_clock_mhz": clock and optional(clock, h, nvml.NVML_CLOCK_GRAPHICS),
            "memory_clock_mhz": clock and optional(clock, h, getattr(nvml, "NVML_CLOCK_MEM", 2)),
        }
    return state


def state_goal(before: dict[str, dict], after: dict[str, dict], rows: list[Result]) -> Goal:
    changed = [
        f"{uuid} {key} {value} -> {after.get(uuid, {}).get(key)}"
        for uuid, found in before.items()
        for key, value in found.items()
        if after.get(uuid, {}).get(key) != value
    ]
    changed += [
        f"{uuid} clock lock not reset: {why}"
        for r in rows
        for uuid, why in (((r.telemetry or {}).get("clock_lock") or {}).get("restore_failed") or {}).items()
    ]
    figure, goal = "GPU state after the run", "clocks and accounting mode as found"
    return Goal(figure, goal, "; ".join(changed), FAIL) if changed else Goal(figure, goal, "as found", PASS)


def table(found: list[Goal]) -> list[str]:
    head = ("figure", "goal", "measured", "result")
    cells = [head, *((g.figure, g.goal, g.measured, g.status) for g in found)]
    widths = [max(len(c[i]) for c in cells) for i in range(3)]
    return [" | ".join([*(c[i].ljust(widths[i]) for i in range(3)), c[3]]) for c in cells]


def _num(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:.3g} {unit}"


def _last_line(error: str | None) -> str:
    """A failed repeat's error, by its last line (a traceback's ends with the exception)."""
    return (error or "").strip().splitlines()[-1] if (error or "").strip() else "no error recorded"
