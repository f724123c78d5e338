"""HTML of the Benchmarks pages: plain server-rendered tables, charts drawn by the core's chart.js (the script
the HTML reports inline) from embedded JSON."""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from urllib.parse import quote

from trainbench.reports import charts
from trainbench_ui.queries import Filters

DAG_ID = "cifar10_benchmark"
TABS = (("", "Latest run per host"), ("history", "History per case"), ("compare", "Driver / framework comparison"))
METRICS = {"wall_s": "wall time", "images_per_s": "images/s"}
FILTER_LABELS = (
    ("host", "Host"),
    ("framework", "Framework"),
    ("variant", "Variant"),
    ("device_set", "Device set"),
    ("gpu", "GPU model"),
)


class Links:
    """Where the pages point: the plugin's own routes and the Airflow UI around it."""

    def __init__(self, plugin_root: str, airflow_root: str, has_report: Callable[[str], bool]):
        self.plugin_root, self.airflow_root, self.has_report = plugin_root, airflow_root, has_report

    def page(self, tab: str, filters: Filters | None = None) -> str:
        query = filters.query_string() if filters else ""
        return f"{self.plugin_root}/{tab}" + (f"?{query}" if query else "")

    def static(self, name: str) -> str:
        return f"{self.plugin_root}/static/{name}"

    def chart(self, name: str) -> str:
        return f"{self.plugin_root}/charts/{name}"

    def report(self, run_id: str) -> str:
        return f"{self.plugin_root}/runs/{quote(run_id, safe='')}/report.html"

    def dag_run(self, run_id: str) -> str:
        return f"{self.airflow_root}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}"

    def run_links(self, run_id: str) -> str:
        parts = []
        if self.has_report(run_id):
            parts.append(f'<a class="report" href="{escape(self.report(run_id))}" target="_blank">HTML report</a>')
        if not run_id.startswith("cli__"):  # the CLI's runs have no DAG run
            parts.append(f'<a class="dagrun" href="{escape(self.dag_run(run_id))}" target="_top">Airflow DAG run</a>')
        return " · ".join(parts)


def layout(links: Links, tab: str, filters: Filters, choices: dict, body: str, scripts: bool = False) -> str:
    title = dict(TABS)[tab]
    nav = " ".join(
        f'<a href="{escape(links.page(t, filters))}"{" class=current" if t == tab else ""}>{escape(label)}</a>'
        for t, label in TABS
    )
    problems = "".join(f'<p class="problem">{escape(p)}</p>' for p in filters.problems)
    script = f'<script src="{escape(links.chart("chart.js"))}"></script>' if scripts else ""
    chart_style = f'<link rel="stylesheet" href="{escape(links.chart("chart.css"))}">' if scripts else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Benchmarks · {escape(title)}</title>
<link rel="stylesheet" href="{escape(links.static("style.css"))}">{chart_style}</head>
<body><header><h1>Benchmarks</h1><nav>{nav}</nav></header>
{filter_form(links, tab, filters, choices)}{problems}
<main id="{tab or "latest"}">{body}</main>{script}</body></html>"""


def filter_form(links: Links, tab: str, filters: Filters, choices: dict) -> str:
    fields = []
    for name, label in FILTER_LABELS:
        chosen = set(getattr(filters, name))
        offered = list(choices.get(name, []))
        values = offered + sorted(chosen - set(offered))
        options = ['<option value="">all</option>'] + [
            f'<option value="{escape(v)}"{" selected" if v in chosen else ""}>{escape(v)}</option>' for v in values
        ]
        multiple = " multiple" if len(chosen) > 1 else ""
        fields.append(f'<label>{label} <select name="{name}"{multiple}>{"".join(options)}</select></label>')
    for name, label in (("date_from", "From"), ("date_to", "To")):
        value = getattr(filters, name)
        fields.append(
            f'<label>{label} <input type="date" name="{name}" value="{value.isoformat() if value else ""}"></label>'
        )
    return (
        f'<form class="filters" method="get" action="{escape(links.page(tab))}">{"".join(fields)}'
        f'<button type="submit">Apply</button> <a href="{escape(links.page(tab))}">Clear</a></form>'
    )


def message(text: str) -> str:
    return f'<p class="empty">{escape(text)}</p>'


# --- figures --------------------------------------------------------------------------------------------------------


def seconds(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def rate(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f}"


def mib(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f} MiB"


def with_spread(value: str, lo: str, hi: str, show: bool) -> str:
    return f'{value}<span class="spread">{lo} – {hi}</span>' if show else value


def percent(change: float | None) -> str:
    return "" if change is None else f"{change * 100:+.1f} %"


# --- latest run per host --------------------------------------------------------------------------------------------


def latest_page(hosts: list[dict], links: Links) -> str:
    if not hosts:
        return message("No results match these filters.")
    return "".join(_host_section(h, links) for h in hosts)


def _host_section(host: dict, links: Links) -> str:
    when = host["run_at"].strftime("%Y-%m-%d %H:%M UTC") if host["run_at"] else ""
    name, run_id = host["host"] or "", host["run_id"]
    head = f'<section class="host" data-host="{escape(name)}"><h2>Host {escape(name or "(none)")}</h2>'
    for run in host["unpublished"]:
        doing = "still running" if run["state"] in ("running", "validated") else "failed validation: not published"
        last = run["last_row_at"]
        since = f", the last started {last:%Y-%m-%d %H:%M} UTC" if last else ""
        head += (
            f'<p class="run unpublished {escape(run["state"])}">Newer run <code>{escape(run["run_id"])}</code> '
            f"{doing} ({run['rows']} row{'s' if run['rows'] != 1 else ''} so far{since}) · "
            f"{links.run_links(run['run_id'])}</p>"
        )
    if run_id is None:
        return head + message("No published run on this host yet.") + "</section>"
    head += f'<p class="run">Latest run <code>{escape(run_id)}</code> · {when} · {links.run_links(run_id)}</p>'

    columns = (
        "Framework",
        "Device set",
        "Status",
        "Repeats",
        "Wall s (median, min – max)",
        "User s",
        "Sys s",
        "Peak memory per device (method)",
        "Images/s (median, min – max)",
        "Verdict",
    )
    rows = "".join(_case_row(c) for c in host["cases"])
    header = "".join(f"<th>{escape(c)}</th>" for c in columns)
    return f'{head}<table class="latest"><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table></section>'


def _case_row(case: dict) -> str:
    failed = [f for f in case["failures"] if not f["warmup"]]
    if not failed and case["ok"]:
        state = '<span class="status ok">ok</span>'
    else:
        kinds = sorted({f["status"] for f in failed}) or case["statuses"]
        state = " ".join(f'<span class="status bad">{escape(k)}</span>' for k in kinds)
        state += f' <span class="count">{len(failed)} of {case["repeats"]}</span>'
    errors = [f for f in case["failures"] if f["error"]]
    if errors:
        state += "".join(
            f'<details class="error"><summary>r{f["repeat"]}{" (warm-up)" if f["warmup"] else ""}: '
            f"{escape(f['status'])}</summary><pre>{escape(f['error'][-4000:])}</pre></details>"
            for f in errors
        )
    if case["devices"]:
        memory = "<br>".join(
            f"{escape(d['device'])}{' ' + escape(d['name']) if d['name'] and d['name'] != d['device'] else ''}: "
            f"{mib(d['used'])} <span class=method>{escape(', '.join(d['methods']))}</span>"
            for d in case["devices"]
        )
    else:
        method = f" <span class=method>{escape(case['peak_mem_method'])}</span>" if case["peak_mem_method"] else ""
        memory = mib(case["peak_mem"]) + method
    many = case["ok"] > 1
    wall_lo, wall_hi = case["wall_spread"]
    ips_lo, ips_hi = case["ips_spread"]
    repeats = f"{case['ok']}/{case['repeats']}" + (
        f" <span class=count>+{case['warmups']} warm-up</span>" if case["warmups"] else ""
    )
    verdicts = " ".join(
        f'<span class="verdict {escape(v["verdict"].replace(" ", "-"))}" title="{escape(v["detail"] or "")}">'
        f"{escape(METRICS.get(v['metric'], v['metric']))} {escape(v['verdict'])} {percent(v['change'])}</span>"
        for v in case["verdicts"]
    )
    device_set = escape(case["device_set"]) + (
        f'<span class="devices">{escape(case["device_names"])}</span>' if case["device_names"] else ""
    )
    cells = (
        escape(case["framework"]),
        device_set,
        state,
        repeats,
        with_spread(seconds(case["wall"]), seconds(wall_lo), seconds(wall_hi), many),
        seconds(case["user"]),
        seconds(case["sys"]),
        memory,
        with_spread(rate(case["ips"]), rate(ips_lo), rate(ips_hi), many),
        verdicts,
    )
    attrs = f'data-framework="{escape(case["framework"])}" data-device-set="{escape(case["device_set"])}"'
    return f'<tr class="case" {attrs}>' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


# --- history --------------------------------------------------------------------------------------------------------


def history_page(data: dict) -> str:
    if not data["charts"]:
        return message("No measured results match these filters.")
    return (
        '<p class="hint">Median wall time of each run (bars: min – max over its repeats), oldest to newest, one line '
        "per environment. ▲ regressed, ▼ improved. Hover for values; drag across a chart to zoom, "
        "double-click to reset.</p>"
        f"{charts.embed(data)}{charts.figures(data, 'history')}"
    )


# --- comparison -----------------------------------------------------------------------------------------------------


def compare_page(data: dict) -> str:
    if not data["rows"]:
        return message("No measured results match these filters.")
    groups = data["groups"]
    legend = "".join(
        f"<li><b>{escape(g['label'])}</b> · first run {escape(g['first_seen'])}"
        + (f" · {escape(', '.join(sorted(g['gpus'])))}" if g.get("gpus") else "")
        + "</li>"
        for g in groups
    )
    header = "<th>Host</th><th>Framework</th><th>Device set</th>" + "".join(
        f'<th class="env">{escape(g["label"])}</th>' for g in groups
    )
    body = []
    for row in data["rows"]:
        cells = [escape(row["host"] or ""), escape(row["framework"]), escape(row["device_set"])]
        for g in groups:
            v = row["values"].get(g["label"])
            if v is None:
                cells.append("")
                continue
            change = percent(v["change"]) if v["change"] else ""
            cls = "worse" if (v["change"] or 0) > 0.05 else "better" if (v["change"] or 0) < -0.05 else ""
            cells.append(
                f'{seconds(v["wall"])} s <span class="change {cls}">{change}</span>'
                f'<span class="spread">{rate(v["ips"])} img/s · {v["n"]} repeats, {v["runs"]} runs</span>'
            )
        body.append('<tr class="case">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (
        '<p class="hint">Median wall time and images/s over every measured repeat, grouped by driver version and '
        "framework packages (oldest group first; the change is against it).</p>"
        f'<ul class="groups">{legend}</ul><table class="compare"><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )
