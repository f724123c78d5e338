"""HTML of the Benchmarks pages: server-rendered tables from Jinja2 templates (`templates/`, autoescaped), charts
drawn by the core's chart.js (the script the HTML reports inline) from embedded JSON.  Each figure's format is
named where it is shown (`FORMATS`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import jinja2
from markupsafe import Markup

from trainbench.checks import regression
from trainbench.reports import charts, templating
from trainbench.reports.templating import formatted
from trainbench.store import run_folder
from trainbench_ui.queries import Filters

TEMPLATES = Path(__file__).resolve().parent / "templates"
DAG_ID = "cifar10_benchmark"
TABS = (
    ("", "Latest run per host"),
    ("history", "History per case"),
    ("compare", "Environments per case"),
    ("changes", "Environment changes"),
)
METRICS = regression.METRIC_NAMES
FILTER_LABELS = (
    ("host", "Host"),
    ("framework", "Framework"),
    ("variant", "Variant"),
    ("device_set", "Device set"),
    ("gpu", "GPU model"),
)


FORMATS = {
    "seconds": formatted(".2f", missing="–"),
    "rate": formatted(",.0f", missing="–"),
    "mib": formatted(",.0f", " MiB", missing="–"),
    "change": lambda v: "" if v is None else f"{v * 100:+.1f} %",
}


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

    def report(self, run_id: str, page: str = run_folder.REPORT_PAGE) -> str:
        return f"{self.plugin_root}/runs/{quote(run_id, safe='')}/{page}"

    def environment_change(self, run_id: str) -> str:
        return self.report(run_id, run_folder.ENVIRONMENT_CHANGE_PAGE)

    def dag_run(self, run_id: str) -> str | None:
        """The run's page in the Airflow UI (None for the CLI's runs, which have no DAG run)."""
        return (
            None if run_id.startswith("cli__") else f"{self.airflow_root}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}"
        )


@functools.cache
def environment() -> jinja2.Environment:
    env = templating.environment(TEMPLATES, FORMATS)
    env.globals.update(tabs=TABS, filter_labels=FILTER_LABELS, metrics=METRICS, strip=charts.strip)
    return env


def page(links: Links, tab: str, filters: Filters, choices: dict, data=None, message: str | None = None) -> str:
    """One tab of the pages: its data through its template, or `message` where there is nothing to show."""
    extra = (
        {"chart_data": Markup(charts.embed(data)), "figures": Markup(charts.figures(data, "history"))}
        if (tab == "history" and data and data["charts"])
        else {}
    )
    return (
        environment()
        .get_template(f"{tab or 'latest'}.html.j2")
        .render(
            tab=tab,
            title=dict(TABS)[tab],
            links=links,
            filters=filters,
            choices=choices,
            data=data,
            message=message,
            scripts=tab == "history",
            **extra,
        )
    )
