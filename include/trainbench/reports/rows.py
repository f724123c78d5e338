"""What every report shares: the log's formats (`time`'s clock, the memory line, device titles), the order
rows appear in, and per-case grouping and medians."""

from __future__ import annotations

import os
import shlex
import statistics
from collections.abc import Collection, Mapping, Sequence

from trainbench import frameworks
from trainbench.checks.dispersion import measured
from trainbench.measure.memory import PEAK_MINUS_IDLE
from trainbench.measure.phases import PHASES
from trainbench.planning import workers_of


def clock(seconds: float | None) -> str:
    """`time`'s format: 0m43.526s."""
    if seconds is None:
        return "-"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.3f}s"


def short_command(command: str) -> str:
    """The command as a person would type it: interpreter and scripts by their base names."""
    if not command:
        return ""
    argv = shlex.split(command)
    return shlex.join([os.path.basename(a) if os.path.isabs(a) and not os.path.isdir(a) else a for a in argv])


def combination(row: dict) -> str:
    """The devices as the log titles them: "Titan X + Titan X", "CPU", "CPU x 2 workers"."""
    if row.get("device_names"):
        return row["device_names"]
    workers = workers_of(row["device_set"])
    return "CPU" if workers == 1 else f"CPU x {workers} workers"


def report_order(row: dict) -> tuple:
    """Frameworks in the log's order; per framework the largest GPU set first (as the log), then CPU sets;
    warm-ups before the measured repeats."""
    order = list(frameworks.NAMES)
    fw = order.index(row["framework"]) if row["framework"] in order else len(order)
    ds = row["device_set"]
    device = (1, workers_of(ds)) if ds.startswith("cpu") else (0, -workers_of(ds), ds)
    return fw, row["framework"], device, not row.get("warmup"), row["repeat"]


def memory_line(row: dict) -> str | None:
    """The log's "peak memory    (peak - idle)MiB + ..." line, or the host RSS on the CPU."""
    devices = row.get("devices") or []
    sampled = [d for d in devices if d["method"] in PEAK_MINUS_IDLE]
    if sampled:
        return "peak memory    " + " + ".join(f"({d['peak_mib']:.0f} - {d['idle_mib']:.0f})MiB" for d in sampled)
    if devices:
        return (
            "peak memory    "
            + " + ".join(f"{d['used_mib']:.0f}MiB" for d in devices)
            + f" ({row.get('peak_mem_method')})"
        )
    return None


def cases(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Rows grouped by framework x device set, in report order."""
    out: dict[tuple[str, str], list[dict]] = {}
    for r in sorted(rows, key=report_order):
        out.setdefault((r["framework"], r["device_set"]), []).append(r)
    return out


def ok_values(rows: list[dict], field: str) -> list:
    """`field` of each measured row (warm-ups never count) that finished ok and has it."""
    return [r[field] for r in measured(rows) if r["status"] == "ok" and r.get(field) is not None]


def median_ok(rows: list[dict], field: str) -> float | None:
    """The median of `field` over the measured rows that finished ok (None when none did)."""
    values = ok_values(rows, field)
    return statistics.median(values) if values else None


def phase_title(name: str) -> str:
    return name.replace("_", " ")


def phases_line(row: dict) -> str | None:
    """Where the wall time went: "phases  startup 4.31 s | data 0.52 s | first epoch 1.20 s | ..."."""
    timeline = row.get("phases")
    if not timeline:
        return None
    return "phases         " + " | ".join(f"{phase_title(p)} {timeline[p]:.2f} s" for p in PHASES if p in timeline)


def median_phases(rows: list[dict]) -> dict[str, float] | None:
    """Per phase, the median over the case's ok repeats that have a timeline."""
    timelines = [r["phases"] for r in measured(rows) if r["status"] == "ok" and r.get("phases")]
    if not timelines:
        return None
    return {p: statistics.median(t.get(p, 0.0) for t in timelines) for p in PHASES}


NOISY = "noisy: no direction claimed (repeats vary more than max_cv)"


def noisy_cases(stats: Sequence[Mapping]) -> set[tuple[str, str]]:
    """(framework, device set) whose repeats vary more than `[measurement] max_cv` (the dispersion check's flag,
    the one the regression verdicts honour): no figure comparing them with another case is claimed."""
    return {(s["framework"], s["device_set"]) for s in stats if s.get("noisy")}


def variant_pairs(rows: list[dict], noisy: Collection[tuple[str, str]] = ()) -> list[dict]:
    """Each execution variant beside its eager sibling on the same host and device set, from this run's measured
    ok repeats: steady images/s of both, the speed-up of the medians, and the range every pairing of repeats
    allows (min/max and max/min). A direction is claimed only when that whole range is on one side of 1, and
    neither case is noisy."""
    groups: dict[tuple, list[dict]] = {}
    for r in sorted(rows, key=report_order):
        groups.setdefault((r.get("host"), r["framework"], r["device_set"]), []).append(r)
    out = []
    for (host, fw, ds), rs in groups.items():
        entry = frameworks.REGISTRY.get(fw)
        if entry is None or entry.interpreter_of is None or not (eager_rows := groups.get((host, entry.base, ds))):
            continue
        fast, eager = _steady_rates(rs), _steady_rates(eager_rows)
        if not fast or not eager:
            continue
        low, high = min(fast) / max(eager), max(fast) / min(eager)
        if min(len(fast), len(eager)) < 2:
            verdict = "spread unknown (1 repeat)"
        elif (fw, ds) in noisy or (entry.base, ds) in noisy:
            verdict = NOISY
        else:
            verdict = "faster" if low > 1 else "slower" if high < 1 else "within the repeats' spread"
        out.append(
            {
                "host": host,
                "variant": fw,
                "base": entry.base,
                "device_set": ds,
                "repeats": min(len(fast), len(eager)),
                "base_ips": statistics.median(eager),
                "variant_ips": statistics.median(fast),
                "speedup": statistics.median(fast) / statistics.median(eager),
                "speedup_low": low,
                "speedup_high": high,
                "verdict": verdict,
                "base_first_epoch_s": _median_first_epoch(eager_rows),
                "variant_first_epoch_s": _median_first_epoch(rs),
            }
        )
    return out


def _steady_rates(rows: list[dict]) -> list[float]:
    return [v for v in ok_values(rows, "images_per_s") if v > 0]


def _median_first_epoch(rows: list[dict]) -> float | None:
    """The timeline's first-epoch phase holds a variant's compilation (torch.compile, hybridize, graph capture)."""
    firsts = [p["first_epoch"] for p in ok_values(rows, "phases") if p.get("first_epoch") is not None]
    return statistics.median(firsts) if firsts else None
