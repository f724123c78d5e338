"""The before/after report: per host whose environment changed, what changed, the headline ("1 of 3 cases
slower ...") and every case and metric with its interval, as environment_change.md and .html in the run's folder;
the headline also heads the Benchmarks page's Environment changes tab."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from trainbench import cases
from trainbench.checks import environment_change, regression
from trainbench.checks.environment_change import Trigger
from trainbench.config import Config
from trainbench.reports import charts, html_page, markdown
from trainbench.store import run_folder
from trainbench.store.results import open_store

REPORT = "the environment change report"


def headline(verdicts: Sequence[Mapping]) -> str:
    """ "2 of 12 cases slower (pytorch | 0,1: images/s -7.2 % [-9.4, -5.1]); 10 no change"."""
    by_case: dict[tuple, list[Mapping]] = {}
    for v in verdicts:
        by_case.setdefault((v["framework"], v["device_set"]), []).append(v)
    total = len(by_case)
    parts = []
    for word in environment_change.VERDICTS:
        hit = [(case, [v for v in vs if v["verdict"] == word]) for case, vs in by_case.items()]
        hit = [(case, vs) for case, vs in hit if vs]
        if not hit:
            continue
        shown = ""
        if word in environment_change.DIRECTIONS:
            shown = " (" + "; ".join(f"{fw} | {ds}: " + ", ".join(_figure(v) for v in vs) for (fw, ds), vs in hit) + ")"
        parts.append(f"{len(hit)} of {total} case{'s' if total != 1 else ''} {word}{shown}")
    return "; ".join(parts) or "no case measured"


def _figure(v: Mapping) -> str:
    return f"{regression.METRIC_NAMES[v['metric']]} {_change(v)}".rstrip()


def _change(v: Mapping) -> str:
    return environment_change.change_text(v["change"], v["low"], v["high"])


def write_report(config: Config, run_id: str, triggers: list[Trigger]) -> dict:
    """environment_change.md and .html in the run's folder: per host that changed, what changed, the headline and
    every case and metric."""
    verdicts = open_store(config.database_url).environment_verdicts(run_id)
    hosts: list[dict[str, Any]] = []
    for t in sorted(triggers, key=lambda t: t.host):
        found = cases.listed(v for v in verdicts if v["host"] == t.host)
        title = f"{t.host}, {t.changed_at:%Y-%m-%d %H:%M} UTC: {markdown.changed_text(t.changed) or 'nothing named'}"
        hosts.append({"host": t.host, "title": title, "headline": headline(found), "verdicts": found})
    lines = [f"# Environment change (`{markdown.cell(run_id)}`)"]
    for h in hosts:
        lines += ["", f"## {markdown.cell(h['title'])}", "", html.escape(h["headline"], quote=False)]
        lines += markdown.table(
            f"{h['host']}: per case and metric (after / before - 1, 95 % interval)",
            (
                "host",
                "framework",
                "device set",
                "metric",
                "verdict",
                "change [95 % interval]",
                "before",
                "after",
                "detail",
            ),
            [
                (
                    h["host"],
                    v["framework"],
                    v["device_set"],
                    regression.METRIC_NAMES[v["metric"]],
                    v["verdict"],
                    _change(v),
                    _sample(v["before"]),
                    _sample(v["after"]),
                    v["detail"],
                )
                for v in h["verdicts"]
            ],
        )
    page = (
        html_page.environment()
        .get_template("environment_change.html.j2")
        .render(run_id=run_id, hosts=hosts, names=regression.METRIC_NAMES, strip=charts.strip)
    )
    folder = run_folder.run_dir(config.output_dir, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"markdown": folder / "environment_change.md", "html": folder / run_folder.ENVIRONMENT_CHANGE_PAGE}
    run_folder.replace_file(files["markdown"], ("\n".join(lines).rstrip() + "\n").encode(), REPORT)
    run_folder.replace_file(files["html"], page.encode(), REPORT)
    return {k: str(v) for k, v in files.items()} | {"headlines": {h["host"]: h["headline"] for h in hosts}}


def _sample(values: list[float]) -> str:
    spread = cases.Spread.of(values)
    cv = "" if spread.cv is None else f", CV {100 * spread.cv:.1f} %"
    return f"{spread.n} repeats, median {spread.median or 0:,.2f}{cv}"
