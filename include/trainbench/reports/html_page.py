"""The self-contained HTML report: the summary per host, the results, dispersion, scaling, variants, verdicts,
each case's environments and the imported logs as tables, with the charts of `charts` drawn by its script, both
inlined: the file works offline and on its own.  Rendered from `templates/report.html.j2` with autoescape; each
column names its number format (`FORMATS`), none is guessed from a header."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path

import jinja2
from markupsafe import Markup

from trainbench import cases
from trainbench.cases import CaseSummary
from trainbench.comparison import CaseComparison
from trainbench.reports import charts, templating
from trainbench.reports.rows import ONE_EPOCH, ORDINARY, Standing, combination, hosts, variant_pairs
from trainbench.reports.templating import formatted
from trainbench.result import Result

TEMPLATES = Path(__file__).resolve().parent / "templates"
CHANGED = ("regressed", "improved")
CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
    "margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}"
    "th{background:#f0f0f0}.regressed{color:#b00}.improved{color:#080}"
)


FORMATS = {
    "seconds": formatted(",.2f"),
    "rate": formatted(",.0f"),
    "mib": formatted(",.0f"),
    "percent": formatted(".1%"),
    "change": formatted("+.1%"),
    "p": formatted(".2g"),
    "ratio": formatted(".2f", "x"),
}


@functools.cache
def environment() -> jinja2.Environment:
    return templating.environment(TEMPLATES, FORMATS)


def render(
    run_id: str,
    summaries: Sequence[CaseSummary],
    history: Sequence[Result],
    verdicts: Sequence[Mapping],
    comparisons: Sequence[CaseComparison],
    imported: Sequence[Result],
    run_order: Sequence[str],
    fingerprints: Mapping[str, dict] | None = None,
    quarantines: Sequence[Mapping] = (),
    standing: Standing = ORDINARY,
) -> str:
    """`fingerprints` (environment key -> fingerprint) labels the history's environments."""
    data = charts.report(summaries, history, verdicts, run_order, fingerprints or {})
    mine = cases.listed(v for v in verdicts if v["run_id"] == run_id)
    return (
        environment()
        .get_template("report.html.j2")
        .render(
            run_id=run_id,
            css=Markup(CSS + charts.stylesheet()),
            summary=summary(summaries, mine, standing.judged),
            summaries=summaries,
            combination=combination,
            figures=lambda *names: Markup(charts.figures(data, *names)),
            scaling=charts.scaling(summaries),
            pairs=variant_pairs(summaries),
            verdicts=mine,
            quarantines=quarantines,
            standing=standing,
            comparisons=comparisons,
            imported=sorted(imported, key=cases.order),
            chart_data=Markup(charts.embed(data)),
            chart_script=Markup(charts.script()),
        )
    )


def _fastest(device_set: str, found: list[CaseSummary]) -> Markup:
    """The fastest case of a device set (by median wall time), claimed outright only when its slowest repeat
    beats every repeat of every other case; otherwise the first case whose spread it overlaps is named."""
    first, *others = sorted((s for s in found if s.wall.n), key=lambda s: s.wall.median or 0.0)
    text = Markup("{}: fastest <b>{}</b>, {:,.2f} s (median wall time)").format(
        device_set, first.key.framework, first.wall.median
    )
    if others and min(s.wall.n for s in (first, *others)) < 2:
        return text + Markup("; 1 repeat: its lead over {} is within unknown noise").format(others[0].key.framework)
    overlapping = [s.key.framework for s in others if (s.wall.min or 0.0) <= (first.wall.max or 0.0)]
    if overlapping:
        text += Markup(", by median only: within the repeats' spread of {}").format(overlapping[0])
    return text


def summary(
    summaries: Sequence[CaseSummary], verdicts: Sequence[Mapping], judged: bool = True
) -> list[tuple[str, list[tuple]]]:
    """What a reader wants first, per host (never pooled): the fastest case per device set, how well it scales,
    what changed (`judged`: whether the run's verdicts were made at all); a scaling figure only where neither the set
    nor its single-device reference is noisy.  Each host's lines as (css class, text)."""
    out = []
    noisy = cases.noisy_keys(summaries)
    keys = [s.key for s in summaries]
    for host in hosts(summaries):
        mine = [s for s in summaries if s.key.host == host and s.wall.n]
        by_set: dict[str, list[CaseSummary]] = {}
        for s in mine:
            by_set.setdefault(s.key.device_set, []).append(s)
        items: list[tuple] = [("", _fastest(ds, found)) for ds, found in by_set.items()]
        if mine and not any(s.ips.n for s in mine):
            items.append(("", ONE_EPOCH))
        for r in charts.scaling(mine):
            key = r["key"]
            involved = {key, *charts.references(key, keys)} & noisy
            if involved:
                names = " and ".join(sorted(k.device_set for k in involved))
                items.append(
                    (
                        "",
                        Markup(
                            "{} on {}: {} devices; no scaling figure claimed, {} noisy (repeats vary more than max_cv)"
                        ).format(key.framework, key.device_set, r["devices"], names),
                    )
                )
            else:
                items.append(
                    (
                        "",
                        Markup(
                            "{} on {}: {} devices give {:.2f}x the images/s of one ({:.0%} scaling efficiency)"
                        ).format(key.framework, key.device_set, r["devices"], r["speedup"], r["efficiency"]),
                    )
                )
        changed = [v for v in verdicts if (v.get("host") or "") == host and v["verdict"] in CHANGED]
        items += [
            (
                v["verdict"],
                Markup("{} on {}: {} ({}, {:+.1%})").format(
                    v["framework"], v["device_set"], v["verdict"], v["metric"], v["change"]
                ),
            )
            for v in changed
        ]
        if not mine:
            items.append(("", Markup("Nothing measured on this host in this run (its rows say why): nothing judged.")))
        elif not judged:
            items.append(("", Markup("Not judged against history: the run was stopped before its verdicts.")))
        elif not changed:
            items.append(("", Markup("No change against history beyond its noise.")))
        out.append((host, items))
    return out
