"""The self-contained HTML report: the results, scaling, verdicts, upgrades and imported logs as tables, with
the charts of `charts` drawn by its script, both inlined: the file works offline and on its own."""

from __future__ import annotations

import html
import statistics
from collections.abc import Sequence

from trainbench.checks.dispersion import measured
from trainbench.reports import charts
from trainbench.reports.rows import cases, combination, noisy_cases, ok_values, report_order, variant_pairs


def figure(header: str, value: float) -> str:
    """A number as a person reads it: seconds to 2 decimals, MiB and images/s whole, ratios to 2 decimals."""
    if header.endswith((" s", "median", "before median", "after median")) and "images/s" not in header:
        return f"{value:,.2f}"
    if "MiB" in header or "images/s" in header:
        return f"{value:,.0f}"
    if header in ("change",):
        return f"{value:+.1%}"
    if header == "p":
        return f"{value:.2g}"
    return f"{value:,.2f}"


def _table(headers: list[str], rows: list[list]) -> str:
    def cell(header: str, v) -> str:
        if isinstance(v, float):
            return figure(header, v)
        return html.escape("" if v is None else str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(h, v)}</td>" for h, v in zip(headers, r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
    "margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}"
    "th{background:#f0f0f0}.regressed{color:#b00}.improved{color:#080}"
)


def render(
    run_id: str,
    rows: list[dict],
    history: list[dict],
    verdicts: list[dict],
    comparisons: list[dict],
    imported: list[dict],
    run_order: list[str],
    stats: list[dict],
) -> str:
    data = charts.report(rows, history, verdicts, run_order)
    results = [
        [
            r["framework"],
            r["device_set"],
            combination(r),
            f"warm-up {r['repeat']}" if r.get("warmup") else r["repeat"],
            r["status"],
            r.get("wall_s"),
            r.get("user_s"),
            r.get("sys_s"),
            r.get("peak_mem_mib"),
            r.get("images_per_s"),
            (r.get("error") or "").strip().rpartition("\n")[2],
        ]
        for r in sorted(rows, key=report_order)
    ]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>trainbench {html.escape(run_id)}</title>",
        f"<style>{CSS}{charts.stylesheet()}</style></head><body>",
        f"<h1>trainbench run <code>{html.escape(run_id)}</code></h1>",
    ]
    parts += summary(run_id, rows, verdicts, stats)
    parts.append("<h2>Results</h2>")
    parts.append(
        _table(
            [
                "framework",
                "device set",
                "devices",
                "repeat",
                "status",
                "wall s",
                "user s",
                "sys s",
                "peak MiB",
                "images/s",
                "error",
            ],
            results,
        )
    )
    parts.append(charts.figures(data, "wall_time", "images_per_s", "memory"))
    if stats:
        parts.append("<h2>Dispersion over the repeats</h2>")
        parts.append(
            _table(
                [
                    "framework",
                    "device set",
                    "host",
                    "repeats",
                    "wall median s",
                    "wall min s",
                    "wall max s",
                    "wall CV",
                    "images/s median",
                    "images/s min",
                    "images/s max",
                    "images/s CV",
                    "noisy",
                ],
                [
                    [
                        s["framework"],
                        s["device_set"],
                        s["host"],
                        s["repeats"],
                        s["wall_median"],
                        s["wall_min"],
                        s["wall_max"],
                        _percent(s["wall_cv"]),
                        s["ips_median"],
                        s["ips_min"],
                        s["ips_max"],
                        _percent(s["ips_cv"]),
                        "unknown" if s["noisy"] is None else "yes" if s["noisy"] else "no",
                    ]
                    for s in stats
                ],
            )
        )
    if phases := charts.figures(data, "phases"):
        parts += ["<h2>Phases</h2>", phases]
    if scale := charts.scaling(rows):
        parts.append("<h2>Scaling</h2>")
        parts.append(_table(["framework", "device set", "devices", "images/s", "speed-up", "efficiency"], scale))
        parts.append(charts.figures(data, "scaling"))
    if pairs := variant_pairs(rows, noisy_cases(stats)):
        parts.append("<h2>Variants beside their eager sibling</h2>")
        parts.append(
            _table(
                [
                    "variant",
                    "device set",
                    "host",
                    "repeats",
                    "eager images/s",
                    "variant images/s",
                    "speed-up",
                    "speed-up range",
                    "verdict",
                    "eager first epoch s",
                    "variant first epoch s",
                ],
                [
                    [
                        p["variant"],
                        p["device_set"],
                        p["host"],
                        p["repeats"],
                        p["base_ips"],
                        p["variant_ips"],
                        f"{p['speedup']:.2f}x",
                        f"{p['speedup_low']:.2f}-{p['speedup_high']:.2f}",
                        p["verdict"],
                        p["base_first_epoch_s"],
                        p["variant_first_epoch_s"],
                    ]
                    for p in pairs
                ],
            )
        )
    parts.append("<h2>Regressions</h2>")
    parts.append(
        _table(
            [
                "framework",
                "device set",
                "metric",
                "verdict",
                "current",
                "baseline",
                "change",
                "p",
                "history runs",
                "detail",
            ],
            [
                [
                    v["framework"],
                    v["device_set"],
                    v["metric"],
                    v["verdict"],
                    v["current"],
                    v["baseline"],
                    v["change"],
                    v["p_value"],
                    v["history_runs"],
                    v["detail"],
                ]
                for v in verdicts
                if v["run_id"] == run_id
            ],
        )
    )
    parts.append("<h2>History per case</h2>")
    parts.append(
        "<p>Median wall time of each run (bars: min - max over its repeats), oldest to newest, one line per "
        "environment. ▲ regressed, ▼ improved. Hover for values; drag across a chart to zoom, double-click to "
        "reset.</p>"
    )
    parts.append(charts.figures(data, "history"))
    if comparisons:
        parts.append("<h2>Driver and framework upgrades</h2>")
        parts.append(
            _table(
                ["framework", "device set", "before", "after", "before median", "after median", "after / before"],
                [
                    [
                        c["framework"],
                        c["device_set"],
                        c["before"],
                        c["after"],
                        c["before_median"],
                        c["after_median"],
                        c["ratio"],
                    ]
                    for c in comparisons
                ],
            )
        )
    if imported:
        parts.append("<h2>Imported logs (the original log)</h2>")
        parts.append(
            _table(
                ["framework", "devices", "repeat", "status", "wall s", "user s", "sys s", "peak MiB"],
                [
                    [
                        r["framework"],
                        r.get("device_names") or r["device_set"],
                        r["repeat"],
                        r["status"],
                        r.get("wall_s"),
                        r.get("user_s"),
                        r.get("sys_s"),
                        r.get("peak_mem_mib"),
                    ]
                    for r in sorted(imported, key=report_order)
                ],
            )
        )
    parts += [charts.embed(data), f"<script>{charts.script()}</script>", "</body></html>"]
    return "\n".join(parts)


def _fastest(device_set: str, entries: list[tuple[float, float, float, str, int]]) -> str:
    """The fastest case of a device set (by median wall time), claimed outright only when its slowest repeat
    beats every repeat of every other case; otherwise the first case whose spread it overlaps is named."""
    wall, _, slowest, framework, repeats = entries[0]
    text = f"{html.escape(device_set)}: fastest <b>{html.escape(framework)}</b>, {wall:,.2f} s (median wall time)"
    others = entries[1:]
    if others and min(repeats, *(e[4] for e in others)) < 2:
        text += f"; 1 repeat: its lead over {html.escape(others[0][3])} is within unknown noise"
    elif overlapping := [e[3] for e in others if e[1] <= slowest]:
        text += f", by median only: within the repeats' spread of {html.escape(overlapping[0])}"
    return f"<li>{text}</li>"


def summary(run_id: str, rows: list[dict], verdicts: list[dict], stats: Sequence[dict] = ()) -> list[str]:
    """What a reader wants first: the fastest case per device set, how well it scales, what changed; a scaling
    figure only where neither the set nor its single-device reference is noisy."""
    walls: dict[str, list[tuple[float, float, float, str, int]]] = {}
    for (framework, device_set), rs in cases(measured(rows)).items():
        values = ok_values(rs, "wall_s")
        if values:
            entry = (statistics.median(values), min(values), max(values), framework, len(values))
            walls.setdefault(device_set, []).append(entry)
    items = [_fastest(ds, sorted(entries)) for ds, entries in walls.items()]
    noisy = noisy_cases(stats)
    for fw, ds, n, _, speedup, efficiency in charts.scaling(rows):
        involved = {(fw, ds), *charts.references(fw, ds, cases(rows))}
        if involved & noisy:
            items.append(
                f"<li>{html.escape(fw)} on {html.escape(ds)}: {n} devices; no scaling figure claimed, "
                f"{' and '.join(html.escape(d) for _, d in sorted(involved & noisy))} noisy (repeats vary more than "
                "max_cv)</li>"
            )
        else:
            items.append(
                f"<li>{html.escape(fw)} on {html.escape(ds)}: {n} devices give {speedup:.2f}x the images/s of one "
                f"({efficiency:.0%} scaling efficiency)</li>"
            )
    changed = [v for v in verdicts if v["run_id"] == run_id and v["verdict"] in ("regressed", "improved")]
    items += [
        f"<li class='{v['verdict']}'>{html.escape(v['framework'])} on {html.escape(v['device_set'])}: "
        f"{v['verdict']} ({v['metric']}, {v['change']:+.1%})</li>"
        for v in changed
    ]
    if not changed:
        items.append("<li>No change against history beyond its noise.</li>")
    return ["<h2>Summary</h2>", f"<ul>{''.join(items)}</ul>"]
