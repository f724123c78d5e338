"""Charts as data for `static/chart.js`, which draws them as SVG in the browser, offline: the report inlines
script and data, the Benchmarks page in the Airflow UI serves the same script with `history` from its queries.
Scaling is against the same framework's single-device run, as DLBS and Lambda's tables show it."""

from __future__ import annotations

import html
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from markupsafe import Markup

from trainbench import cases
from trainbench.cases import CaseKey, CaseSummary, Spread
from trainbench.comparison import environment_label
from trainbench.measure.memory import HOST_RSS, PEAK_MINUS_IDLE
from trainbench.measure.phases import PHASES
from trainbench.planning import workers_of
from trainbench.reports.rows import combination, hosts, phase_title
from trainbench.result import Result

STATIC = Path(__file__).resolve().parent / "static"
MARKED_VERDICTS = ("regressed", "improved")
PHASE_COLOURS = ("#8172b3", "#937860", "#dd8452", "#4c72b0", "#55a868", "#c44e52")


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


def history_charts(
    figures: Mapping[tuple, tuple[Spread, Spread]],
    runs: Sequence[tuple[str, str]],
    labels: Mapping[str, str],
    marked: Mapping[tuple, list[dict]],
    case_order: Callable[[tuple], Any],
) -> dict:
    """Per case (host x framework x device set), the median wall time of each run, one series per environment, from
    `figures` (`cases.per_run_figures`).

    `runs` (run id, date), oldest first, is the axis every chart shares: `runs[x]` names a point's run.
    One series per environment key: a driver upgrade starts a new line instead of a step in the old one.
    """
    index = {run: i for i, (run, _) in enumerate(runs)}
    series: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for (host, fw, ds, env_key, run_id), (walls, rates) in figures.items():
        assert walls.median is not None and walls.min is not None and walls.max is not None
        point: dict[str, Any] = {
            "x": index[run_id],
            "y": round(walls.median, 4),
            "lo": round(walls.min, 4),
            "hi": round(walls.max, 4),
            "n": walls.n,
            "ips": None if rates.median is None else round(rates.median, 1),
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


STRIP_COLORS = {"before": "#4c72b0", "after": "#dd8452"}


def strip(before: Sequence[float], after: Sequence[float], label: str, width: int = 240) -> Markup:
    """Each repeat before and after a change on one axis shared by both, as an SVG `width` wide: the two
    distributions at a glance, the axis labelled with its least and most value (the scale a reader needs to weigh
    the gap between them)."""
    values = [*before, *after]
    if not values:
        return Markup("")
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    dots = Markup("").join(
        Markup('<circle class="{}" fill="{}" cx="{}" cy="{}" r="3"><title>{}: {}</title></circle>').format(
            side,
            STRIP_COLORS[side],
            round(8 + (width - 16) * (v - low) / span, 1),
            9 if side == "before" else 20,
            side,
            _scale(v),
        )
        for side, vs in (("before", before), ("after", after))
        for v in vs
    )
    axis = Markup(
        '<line x1="8" x2="{right}" y1="27" y2="27" stroke="#999"/><text x="8" y="39" font-size="10">{low}</text>'
        '<text x="{right}" y="39" font-size="10" text-anchor="end">{high}</text>'
    ).format(right=width - 8, low=_scale(low), high=_scale(high))
    return Markup('<svg width="{}" height="42" role="img" aria-label="{}">{}{}</svg>').format(width, label, dots, axis)


def _scale(value: float) -> str:
    """A strip's value as its axis shows it: seconds to the hundredth, rates whole."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def references(key: CaseKey, keys: Iterable[CaseKey]) -> list[CaseKey]:
    """The cases a set's scaling is measured against: the same host's single-device sets of the same framework
    and kind (CPU or GPU)."""
    kind = key.device_set.startswith("cpu")
    return [
        k
        for k in keys
        if (k.host, k.framework) == (key.host, key.framework)
        and workers_of(k.device_set) == 1
        and k.device_set.startswith("cpu") == kind
    ]


def scaling(summaries: Sequence[CaseSummary]) -> list[dict]:
    """Per host and framework: each multi-device set's images/s against the same framework's best single-device
    case on that host."""
    by_key = {s.key: s for s in summaries}
    out = []
    for s in summaries:
        n = workers_of(s.key.device_set)
        singles = [by_key[k].ips.median for k in references(s.key, by_key)]
        best = max((v for v in singles if v), default=None)
        if s.ips.median and best and n > 1:
            speedup = s.ips.median / best
            out.append({"key": s.key, "devices": n, "ips": s.ips.median, "speedup": speedup, "efficiency": speedup / n})
    return out


def labels(summaries: Sequence[CaseSummary]) -> list[str]:
    """A chart's category per case: framework and devices, and the host wherever a run has more than one."""
    several = len(hosts(summaries)) > 1
    return [
        f"{s.key.framework} | {combination(s.results[0])}" + (f" | {s.key.host}" if several else "") for s in summaries
    ]


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


def _spread(values: Spread, digits: int) -> str:
    if values.n < 2:
        return f"{values.n} repeat" + ("" if values.n == 1 else "s")
    return f"{values.n} repeats, min {values.min:,.{digits}f}, max {values.max:,.{digits}f}"


def _medians(
    spreads: list[Spread], labels: list[str], name: str, title: str, label: str, unit: str, digits: int
) -> dict:
    """One bar per case: the median over its counted repeats, their spread on hover."""
    series = {"label": label, "values": [s.median for s in spreads], "notes": [_spread(s, digits) for s in spreads]}
    return bars(name, title, f"median of repeats, {unit}", unit, digits, labels, [series])


def report(
    summaries: Sequence[CaseSummary],
    history: Sequence[Result],
    verdicts: Sequence[Mapping],
    run_order: Sequence[str],
    fingerprints: Mapping[str, Mapping] | None = None,
) -> dict:
    """Every chart of a run's report: wall time, images/s, memory per device, phases, scaling, history per case;
    one bar per case (host x framework x device set), never two hosts' repeats in one."""
    names = labels(summaries)
    charts = [_medians([s.wall for s in summaries], names, "wall_time", "Wall time per case", "wall time", "s", 2)]
    if any(s.ips.n for s in summaries):  # else every case trained one epoch: the report says why there is none
        charts.append(
            _medians(
                [s.ips for s in summaries], names, "images_per_s", "Steady-state throughput", "images/s", "images/s", 0
            )
        )
    charts.append(_memory(summaries, names))
    with_phases = [(label, s.phases) for label, s in zip(names, summaries) if s.phases is not None]
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
    scale = scaling(summaries)
    if scale:
        several = len(hosts(summaries)) > 1
        categories = [
            f"{r['key'].framework} | {r['key'].device_set}" + (f" | {r['key'].host}" if several else "") for r in scale
        ]
        charts.append(
            bars(
                "scaling",
                "Speed-up against a single device",
                "x images/s of one device",
                "x",
                2,
                categories,
                [
                    {
                        "label": "speed-up",
                        "values": [r["speedup"] for r in scale],
                        "notes": [f"{r['devices']} devices" for r in scale],
                    }
                ],
            )
        )
        charts.append(
            bars(
                "scaling",
                "Scaling efficiency (speed-up / devices)",
                "efficiency %",
                "%",
                0,
                categories,
                [{"label": "efficiency", "values": [100 * r["efficiency"] for r in scale]}],
                reference=100,
            )
        )
    return _with_history(charts, summaries, history, verdicts, run_order, fingerprints or {})


def _memory(summaries: Sequence[CaseSummary], labels: list[str]) -> dict:
    """Per case, the median peak of each device over the counted repeats, stacked (GPU: peak - idle; CPU: host
    RSS)."""
    shown = (*PEAK_MINUS_IDLE, HOST_RSS)
    per_case = [[d for d in s.devices if d.used_mib is not None and set(d.methods) & set(shown)] for s in summaries]
    count = max((len(d) for d in per_case), default=0)
    series = [
        {
            "label": f"device {position + 1}",
            "values": [d[position].used_mib if position < len(d) else None for d in per_case],
            "notes": [
                f"{d[position].name or d[position].device}, {', '.join(d[position].methods)}"
                if position < len(d)
                else ""
                for d in per_case
            ],
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
    charts: list[dict],
    summaries: Sequence[CaseSummary],
    history: Sequence[Result],
    verdicts: Sequence[Mapping],
    run_order: Sequence[str],
    fingerprints: Mapping[str, Mapping],
) -> dict:
    """The run's charts plus the history of each of its cases (every environment the case ran in), each environment
    labelled from its fingerprint (the result's own, else `fingerprints`')."""
    shown = {(s.key.host, s.key.framework, s.key.device_set) for s in summaries}
    ok = [
        r
        for r in cases.counted([*history, *(r for s in summaries for r in s.results)])
        if r.wall_s and (r.host or "", r.framework, r.device_set) in shown
    ]
    found: list[cases.Figures] = [
        (r.run_id, r.env_key, r.host or "", r.framework, r.device_set, r.wall_s, r.images_per_s)
        for r in ok
        if r.wall_s is not None
    ]
    rank = {run: i for i, run in enumerate(run_order)}
    started: dict[str, tuple] = {}  # the first start of each run, and that start as stored (its time zone)
    environments: dict[str, str] = {}
    for r in ok:
        if r.started_at and (r.run_id not in started or cases.started(r) < started[r.run_id][0]):
            started[r.run_id] = (cases.started(r), r.started_at)
        if r.env_key not in environments:
            environments[r.env_key] = environment_label(r.environment or fingerprints.get(r.env_key) or {})
    runs = sorted({m[0] for m in found}, key=lambda run: (rank.get(run, len(rank)), run))
    data = history_charts(
        cases.per_run_figures(found),
        [(run, started[run][1].strftime("%Y-%m-%d %H:%M") if run in started else "") for run in runs],
        environments,
        marks(verdicts),
        case_order,
    )
    return {"runs": data["runs"], "charts": charts + data["charts"]}


def case_order(case: tuple) -> tuple:
    """A history chart's (host, framework, device set) in `CaseKey.order`."""
    host, framework, device_set = case
    return CaseKey(host or "", framework, device_set, "").order()
