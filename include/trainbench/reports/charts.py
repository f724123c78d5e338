"""Charts as data for `static/chart.js`, which draws them as SVG in the browser, offline: the report inlines
script and data, the Benchmarks page in the Airflow UI serves the same script with `history` from its queries.
Scaling is against the same framework's single-device run, as DLBS and Lambda's tables show it."""

from __future__ import annotations

import html
import json
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trainbench.checks.dispersion import measured
from trainbench.measure.memory import HOST_RSS, PEAK_MINUS_IDLE
from trainbench.measure.phases import PHASES
from trainbench.planning import workers_of
from trainbench.reports.rows import (
    cases,
    combination,
    median_ok,
    median_phases,
    ok_values,
    phase_title,
    report_order,
)

STATIC = Path(__file__).resolve().parent / "static"
MARKED_VERDICTS = ("regressed", "improved")
PHASE_COLOURS = ("#8172b3", "#937860", "#dd8452", "#4c72b0", "#55a868", "#c44e52")

# One ok, measured result: run id, environment key, host, framework, device set, wall s, images/s.
Measurement = tuple[str, str, str | None, str, str, float, float | None]


def script() -> str:
    return (STATIC / "chart.js").read_text()


def stylesheet() -> str:
    return (STATIC / "chart.css").read_text()


def embed(data: dict) -> str:
    """The charts' JSON as the script reads it (`<` escaped: no text in it can close the element)."""
    payload = json.dumps(data, separators=(",", ":"), default=str).replace("<", "\\u003c")
    return f'<script type="application/json" id="chart-data">{payload}</script>'


def figures(data: dict, *names: str) -> str:
    """The figures the script draws the named charts into, in a grid."""
    found = [
        f'<figure class="chart" data-index="{i}"><figcaption>{html.escape(c["title"])}</figcaption>'
        f'<div class="plot"></div><div class="legend"></div></figure>'
        for i, c in enumerate(data["charts"])
        if c["name"] in names
    ]
    return f'<div class="charts">{"".join(found)}</div>' if found else ""


def marks(verdicts: Iterable[Mapping], every: bool = False) -> dict[tuple, list[dict]]:
    """Regressed and improved verdicts (or `every` verdict) by (run, framework, device set, environment)."""
    found: dict[tuple, list[dict]] = defaultdict(list)
    for v in verdicts:
        if every or v["verdict"] in MARKED_VERDICTS:
            found[(v["run_id"], v["framework"], v["device_set"], v["env_key"])].append(
                {k: v[k] for k in ("metric", "verdict", "change", "p_value", "detail")}
            )
    return found


def environment_label(driver: str | None, packages: Mapping[str, str]) -> str:
    versions = " ".join(f"{name} {version}" for name, version in sorted(packages.items())) or "no framework version"
    return f"driver {driver or 'none'} · {versions}"


def history(
    found: Iterable[Measurement],
    runs: Sequence[tuple[str, str]],
    labels: Mapping[str, str],
    marked: Mapping[tuple, list[dict]],
    case_order: Callable[[tuple], Any],
) -> dict:
    """Per case (host x framework x device set), the median wall time of each run, one series per environment.

    `runs` (run id, date), oldest first, is the axis every chart shares: `runs[x]` names a point's run.
    One series per environment key: a driver upgrade starts a new line instead of a step in the old one.
    """
    index = {run: i for i, (run, _) in enumerate(runs)}
    grouped: dict[tuple, list[tuple[float, float | None]]] = defaultdict(list)
    for run_id, env_key, host, fw, ds, wall, ips in found:
        grouped[(host, fw, ds, env_key, run_id)].append((wall, ips))
    series: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for (host, fw, ds, env_key, run_id), figures in grouped.items():
        walls = [w for w, _ in figures]
        rates = [i for _, i in figures if i is not None]
        point: dict[str, Any] = {
            "x": index[run_id],
            "y": round(statistics.median(walls), 4),
            "lo": round(min(walls), 4),
            "hi": round(max(walls), 4),
            "n": len(walls),
            "ips": round(statistics.median(rates), 1) if rates else None,
        }
        if verdicts := marked.get((run_id, fw, ds, env_key)):
            point["verdicts"] = verdicts
        series[(host, fw, ds)][env_key].append(point)
    charts = [
        {
            "name": "history",
            "kind": "history",
            "host": host,
            "framework": fw,
            "device_set": ds,
            "title": f"{fw} · {ds}" + (f" · {host}" if host else ""),
            "series": [
                {"env_key": key, "label": labels.get(key, key), "points": sorted(points, key=lambda p: p["x"])}
                for key, points in sorted(by_env.items(), key=lambda kv: min(p["x"] for p in kv[1]))
            ],
        }
        for (host, fw, ds), by_env in sorted(series.items(), key=lambda kv: case_order(kv[0]))
    ]
    return {"runs": [{"run": run, "date": date} for run, date in runs], "charts": charts}


def references(framework: str, device_set: str, keys: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (framework, device set) cases a set's scaling is measured against: the same framework's single-device
    sets of the same kind (CPU or GPU)."""
    kind = device_set.startswith("cpu")
    return [(f, d) for f, d in keys if f == framework and workers_of(d) == 1 and d.startswith("cpu") == kind]


def scaling(rows: list[dict]) -> list[list]:
    """Per framework: each set's images/s against the same framework's best single-device run."""
    groups = cases(rows)
    out = []
    for (fw, ds), rs in groups.items():
        n = workers_of(ds)
        rate = median_ok(rs, "images_per_s")
        singles = [median_ok(groups[key], "images_per_s") for key in references(fw, ds, groups)]
        best = max((s for s in singles if s), default=None)
        if rate and best and n > 1:
            speedup = rate / best
            out.append([fw, ds, n, rate, speedup, speedup / n])
    return out


def bars(
    name: str,
    title: str,
    axis: str,
    unit: str,
    digits: int,
    categories: list[str],
    series: list[dict],
    stacked: bool = False,
    reference: float | None = None,
) -> dict:
    return {
        "name": name,
        "kind": "bars",
        "title": title,
        "axis": axis,
        "unit": unit,
        "digits": digits,
        "categories": categories,
        "series": series,
        "stacked": stacked,
        "reference": reference,
    }


def _spread(rows: list[dict], field: str, digits: int) -> str:
    values = ok_values(rows, field)
    if len(values) < 2:
        return f"{len(values)} repeat" + ("" if len(values) == 1 else "s")
    return f"{len(values)} repeats, min {min(values):,.{digits}f}, max {max(values):,.{digits}f}"


def _medians(
    groups: dict, labels: list[str], name: str, title: str, field: str, label: str, unit: str, digits: int
) -> dict:
    """One bar per case: the median of `field` over its measured repeats, their spread on hover."""
    series = {
        "label": label,
        "values": [median_ok(rs, field) for rs in groups.values()],
        "notes": [_spread(rs, field, digits) for rs in groups.values()],
    }
    return bars(name, title, f"median of repeats, {unit}", unit, digits, labels, [series])


def report(rows: list[dict], history_rows: list[dict], verdicts: list[dict], run_order: list[str]) -> dict:
    """Every chart of a run's report: wall time, images/s, memory per device, phases, scaling, history per case."""
    groups = cases(rows)
    labels = [f"{fw} | {combination(rs[0])}" for (fw, _), rs in groups.items()]
    charts = [
        _medians(groups, labels, "wall_time", "Wall time per framework x device set", "wall_s", "wall time", "s", 2),
        _medians(groups, labels, "images_per_s", "Steady-state throughput", "images_per_s", "images/s", "images/s", 0),
        _memory(groups, labels),
    ]
    timelines = [(label, median_phases(rs)) for label, rs in zip(labels, groups.values())]
    with_phases = [(label, t) for label, t in timelines if t is not None]
    if with_phases:
        charts.append(
            bars(
                "phases",
                "Where the wall time goes (median of repeats)",
                "seconds",
                "s",
                2,
                [label for label, _ in with_phases],
                [
                    {"label": phase_title(p), "values": [t[p] for _, t in with_phases], "color": colour}
                    for p, colour in zip(PHASES, PHASE_COLOURS)
                ],
                stacked=True,
            )
        )
    scale = scaling(rows)
    if scale:
        names = [f"{fw} | {ds}" for fw, ds, *_ in scale]
        charts.append(
            bars(
                "scaling",
                "Speed-up against a single device",
                "x images/s of one device",
                "x",
                2,
                names,
                [{"label": "speed-up", "values": [r[4] for r in scale], "notes": [f"{r[2]} devices" for r in scale]}],
            )
        )
        charts.append(
            bars(
                "scaling",
                "Scaling efficiency (speed-up / devices)",
                "efficiency %",
                "%",
                0,
                names,
                [{"label": "efficiency", "values": [100 * r[5] for r in scale]}],
                reference=100,
            )
        )
    return _with_history(charts, rows, history_rows, verdicts, run_order)


def _memory(groups: dict[tuple[str, str], list[dict]], labels: list[str]) -> dict:
    """Per case, the median peak of each device over the ok repeats, stacked (GPU: peak - idle; CPU: host RSS)."""
    per_case: list[dict[int, tuple[str, list[float]]]] = []
    for rs in groups.values():
        devices: dict[int, tuple[str, list[float]]] = {}
        for r in measured(rs):
            if r["status"] != "ok":
                continue
            peaks = [
                d
                for d in r.get("devices") or []
                if d["method"] in (*PEAK_MINUS_IDLE, HOST_RSS) and d.get("used_mib") is not None
            ]
            for position, d in enumerate(peaks):
                name = f"{d.get('name') or d['device']}, {d['method']}"
                devices.setdefault(position, (name, []))[1].append(d["used_mib"])
        per_case.append(devices)
    count = max((len(d) for d in per_case), default=0)
    series = [
        {
            "label": f"device {position + 1}",
            "values": [statistics.median(d[position][1]) if position in d else None for d in per_case],
            "notes": [d[position][0] if position in d else "" for d in per_case],
        }
        for position in range(count)
    ]
    return bars(
        "memory",
        "Peak memory per device (GPU: peak - idle; CPU: host RSS)",
        "MiB per device, stacked",
        "MiB",
        0,
        labels,
        series,
        stacked=True,
    )


def _with_history(
    charts: list[dict], rows: list[dict], history_rows: list[dict], verdicts: list[dict], run_order: list[str]
) -> dict:
    """The run's charts plus the history of each of its cases (every environment the case ran in)."""
    ok = [r for r in measured(history_rows + rows) if r["status"] == "ok" and r.get("wall_s")]
    shown = {(r.get("host"), r["framework"], r["device_set"]) for r in rows}
    found: list[Measurement] = [
        (r["run_id"], r["env_key"], r.get("host"), r["framework"], r["device_set"], r["wall_s"], r.get("images_per_s"))
        for r in ok
        if (r.get("host"), r["framework"], r["device_set"]) in shown
    ]
    rank = {run: i for i, run in enumerate(run_order)}
    started: dict[str, list[str]] = defaultdict(list)
    environments: dict[str, str] = {}
    for r in ok:
        if r.get("started_at"):
            started[r["run_id"]].append(r["started_at"].strftime("%Y-%m-%d %H:%M"))
        env = r.get("environment") or {}
        environments.setdefault(
            r["env_key"], environment_label(env.get("driver_version"), env.get("framework_packages") or {})
        )
    runs = sorted({m[0] for m in found}, key=lambda run: (rank.get(run, len(rank)), run))
    data = history(
        found,
        [(run, min(started[run], default="")) for run in runs],
        environments,
        marks(verdicts),
        lambda case: (case[0] or "", *report_order({"framework": case[1], "device_set": case[2], "repeat": 0})),
    )
    return {"runs": data["runs"], "charts": charts + data["charts"]}
