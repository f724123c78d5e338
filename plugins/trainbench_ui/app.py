"""The Benchmarks pages: a FastAPI app that Airflow's api-server mounts under /trainbench.

    /trainbench/                        latest run per host (framework x device set)
    /trainbench/history                 median wall time per run and case, one line per environment
    /trainbench/compare                 per case, the environments it was measured in side by side
    /trainbench/runs/<run>/report.html  a run's HTML report from output/runs/ (environment_change.html: its
                                        before/after page)
    /trainbench/changes                 environment changes: each host's before/after verdicts per case
    /trainbench/api/{latest,history,compare,changes}   the same data as JSON

Every page accepts the filters host, framework, variant, device_set, gpu (repeatable), date_from, date_to
(YYYY-MM-DD, inclusive) and requires an Airflow login (see `access`); only static/ (stylesheet, icon) and
charts/ (the core's chart script and its stylesheet, which the HTML reports inline) are public: code, no data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from trainbench import config
from trainbench.errors import ConfigError
from trainbench.reports import charts
from trainbench.store import results, run_folder
from trainbench_ui import cache, pages, queries
from trainbench_ui.access import LoginRequired, UserDep

PREFIX = "/trainbench"
STATIC = Path(__file__).resolve().parent / "static"


def create_app() -> FastAPI:
    """The pages' app; what the server made to start (Airflow's, ours) is long-lived (`results.long_lived`)."""
    results.long_lived()
    app = FastAPI(title="trainbench benchmarks", docs_url=None, redoc_url=None, openapi_url=None)
    loaders = _loaders(cache.PerRun())
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/charts", StaticFiles(directory=charts.STATIC), name="charts")

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired):
        return RedirectResponse(exc.url, status_code=303)

    @app.get("/", response_class=HTMLResponse)
    def latest(request: Request, user: UserDep):
        return _page(request, "", loaders["latest"])

    @app.get("/history", response_class=HTMLResponse)
    def history(request: Request, user: UserDep):
        return _page(request, "history", loaders["history"])

    @app.get("/compare", response_class=HTMLResponse)
    def compare(request: Request, user: UserDep):
        return _page(request, "compare", loaders["compare"])

    @app.get("/changes", response_class=HTMLResponse)
    def changes(request: Request, user: UserDep):
        return _page(request, "changes", loaders["changes"])

    @app.get("/api/{view}")
    def api(view: str, request: Request, user: UserDep):
        if view not in loaders:
            raise HTTPException(404, f"no such view {view!r}; one of {sorted(loaders)}")
        cfg = _config()
        filters = _filters(request)
        if filters.problems:  # a program asked: unfiltered data would pass for the filtered data it wanted
            raise HTTPException(400, "; ".join(filters.problems))
        try:
            with queries.engine(cfg.database_url).connect() as conn:
                data = loaders[view](conn, filters, cfg.measurement.max_cv)
        except queries.NoDatabase as exc:
            raise HTTPException(404, str(exc)) from None
        return JSONResponse(jsonable_encoder(data, custom_encoder={set: sorted}))

    @app.get("/runs/{run_id}/{page}")
    def report(run_id: str, page: str, user: UserDep):
        return FileResponse(report_path(_config().output_dir, run_id, page), media_type="text/html")

    return app


Loader = Callable[[sa.Connection, queries.Filters, float], Any]


def _loaders(kept: cache.PerRun) -> dict[str, Loader]:
    """Each view's data from a connection, the filters and the noise threshold; history and compare keep each run's
    figures in `kept` between views. History and environment changes need no noise threshold: the one charts every
    run's median and spread, the other carries its own verdicts."""
    return {
        "latest": queries.latest_per_host,
        "history": lambda conn, filters, max_cv: queries.history(conn, filters, kept),
        "compare": lambda conn, filters, max_cv: queries.comparison(conn, filters, kept, max_cv),
        "changes": lambda conn, filters, max_cv: queries.environment_changes(conn, filters),
    }


def report_path(output_dir: Path, run_id: str, page: str = run_folder.REPORT_PAGE) -> Path:
    """output/runs/<run_id>/<page>, one of `run_folder.PAGES`, refusing any run id that would lead out of
    output/runs/."""
    runs = (Path(output_dir) / "runs").resolve()
    try:
        run_folder.check_run_id(run_id)
    except ConfigError:
        raise HTTPException(404, f"no such run: {run_folder.RUN_ID_HELP}") from None
    if page not in run_folder.PAGES:
        raise HTTPException(404, f"no page {page!r} in a run's folder; accepted: {', '.join(run_folder.PAGES)}")
    path = (runs / run_id / page).resolve()
    if not path.is_relative_to(runs) or path.parent.parent != runs or not path.is_file():
        raise HTTPException(404, f"no report for run {run_id!r}")
    return path


def _filters(request: Request) -> queries.Filters:
    try:
        return queries.Filters.from_query(request.query_params)
    except queries.BadFilter as exc:
        raise HTTPException(400, str(exc)) from None


def _config() -> config.Config:
    try:
        return config.load()
    except ConfigError as exc:
        raise HTTPException(500, f"trainbench configuration: {exc}") from None


def _page(request: Request, tab: str, load: Loader) -> HTMLResponse:
    cfg = _config()
    root = request.scope.get("root_path", "").rstrip("/")
    airflow_root = root[: -len(PREFIX)] if root.endswith(PREFIX) else ""
    links = pages.Links(
        root, airflow_root, lambda run_id: (cfg.output_dir / "runs" / run_id / run_folder.REPORT_PAGE).is_file()
    )
    filters = _filters(request)
    try:
        with queries.engine(cfg.database_url).connect() as conn:
            choices = queries.choices(conn)
            data = load(conn, filters, cfg.measurement.max_cv)
    except queries.NoDatabase as exc:
        return HTMLResponse(pages.page(links, tab, filters, {}, message=str(exc)))
    return HTMLResponse(pages.page(links, tab, filters, choices, data))
