"""Read-only access to the results database for the Benchmarks pages.

The engine opens SQLite files in read-only mode and PostgreSQL sessions as read-only transactions, so
the web server can never change (or migrate) the results.  Queries select only the columns a page
shows; the per-run figures (medians, spread) are computed here, in one pass over the filtered rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import os
from collections import defaultdict
from collections.abc import Iterable
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from trainbench import cases, frameworks
from trainbench.cases import Spread
from trainbench.comparison import compare, environment_label
from trainbench.config import Measurement
from trainbench.reports import charts
from trainbench.reports.environment_change import headline
from trainbench.reports.rows import ONE_EPOCH
from trainbench.result import Result
from trainbench.store.results import (
    BENCHMARK,
    ENVIRONMENT_CHANGE,
    PUBLISHED,
    counted,
    device_memory,
    environment_verdicts,
    fingerprints_query,
    not_created_yet,
    results,
    run_date,
    runs,
    verdicts,
)
from trainbench_ui.cache import PerRun

FILTER_FIELDS = ("host", "framework", "variant", "device_set", "gpu")
SLIM_COLUMNS = (
    results.c.id,
    results.c.run_id,
    results.c.case_key,
    results.c.env_key,
    results.c.framework,
    results.c.device_set,
    results.c.device_names,
    results.c.host,
    results.c.repeat,
    results.c.warmup,
    results.c.status,
    results.c.wall_s,
    results.c.images_per_s,
    results.c.started_at,
)
LATEST_COLUMNS = (
    *SLIM_COLUMNS,
    results.c.user_s,
    results.c.sys_s,
    results.c.peak_mem_mib,
    results.c.peak_mem_method,
    results.c.error,
)


class NoDatabase(Exception):
    """The results database does not exist yet, or holds no schema."""


class BadFilter(ValueError):
    """A query parameter no page can answer (answered 400, naming the parameter and what is accepted)."""


MAX_CV = Measurement().max_cv  # the default; the app passes the configured one
MAX_VALUES = 50  # per filter: more would only build a query the database refuses (SQLite's expression depth)


@dataclasses.dataclass(frozen=True)
class Filters:
    """What the pages show: values of each field (empty: all) and a date range of the runs (inclusive)."""

    host: tuple[str, ...] = ()
    framework: tuple[str, ...] = ()
    variant: tuple[str, ...] = ()  # frameworks.execution: "default", "graph", "hybrid"
    device_set: tuple[str, ...] = ()
    gpu: tuple[str, ...] = ()
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    problems: tuple[str, ...] = ()

    @classmethod
    def from_query(cls, params) -> Filters:
        """From request query parameters (each field may repeat; empty values mean "all")."""
        values: dict = {f: tuple(dict.fromkeys(v for v in params.getlist(f) if v)) for f in FILTER_FIELDS}
        for name, chosen in values.items():
            if len(chosen) > MAX_VALUES:
                raise BadFilter(f"{name} is given {len(chosen)} different values; at most {MAX_VALUES} are accepted")
        problems = []
        for name in ("date_from", "date_to"):
            text = (params.get(name) or "").strip()
            if text:
                try:
                    values[name] = dt.date.fromisoformat(text)
                except ValueError:
                    problems.append(f"{name} {text!r} is not a date; accepted: YYYY-MM-DD")
        return cls(**values, problems=tuple(problems))

    def query_string(self) -> str:
        pairs = [(f, v) for f in FILTER_FIELDS for v in getattr(self, f)]
        pairs += [(n, getattr(self, n).isoformat()) for n in ("date_from", "date_to") if getattr(self, n)]
        return urlencode(pairs)

    def apply(self, query: sa.Select) -> sa.Select:
        for name in ("host", "framework", "device_set"):
            if getattr(self, name):
                query = query.where(results.c[name].in_(getattr(self, name)))
        if self.variant:
            names = [n for n in frameworks.NAMES if frameworks.execution(n) in self.variant]
            query = query.where(results.c.framework.in_(names))
        if self.gpu:
            query = query.where(sa.or_(*(results.c.device_names.contains(g, autoescape=True) for g in self.gpu)))
        return self.within_dates(query)

    def within_dates(self, query: sa.Select) -> sa.Select:
        """`query` (of the runs table) limited to the runs of the date range."""
        if self.date_from:
            query = query.where(run_date() >= dt.datetime.combine(self.date_from, dt.time(), dt.UTC))
        if self.date_to and self.date_to < dt.date.max:  # the last day there is bounds nothing
            query = query.where(
                run_date() < dt.datetime.combine(self.date_to + dt.timedelta(days=1), dt.time(), dt.UTC)
            )
        return query


@functools.lru_cache(maxsize=8)
def _engine(url: str) -> sa.Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = os.path.abspath(parsed.database or "")
        return sa.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(
            parsed, pool_pre_ping=True, connect_args={"options": "-c default_transaction_read_only=on"}
        )
    return sa.create_engine(parsed, pool_pre_ping=True)


def engine(url: str) -> sa.Engine:
    """A read-only engine for the results database at `url`; NoDatabase where no SQLite file exists yet."""
    if why := not_created_yet(url):
        raise NoDatabase(why)
    return _engine(url)


def _measured(query: sa.Select) -> sa.Select:
    return query.select_from(results.join(runs, runs.c.run_id == results.c.run_id)).where(runs.c.source == BENCHMARK)


def _tuples(conn: sa.Connection, query: sa.Select) -> list[sa.Row]:
    """Rows as tuples: the cheap way through thousands of them."""
    try:
        return list(conn.execute(query).all())
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
        if "no such column" in str(exc) or "column" in str(exc) and "does not exist" in str(exc):
            raise NoDatabase(
                "the results database predates this version of trainbench (the pages never change it); the next "
                "benchmark run upgrades it"
            ) from None
        if "no such table" in str(exc) or "does not exist" in str(exc):
            raise NoDatabase("the results database holds no results yet; run a benchmark first") from None
        raise


def _run(conn: sa.Connection, query: sa.Select) -> list[dict]:
    return [dict(r._mapping) for r in _tuples(conn, query)]


def run_dates(conn: sa.Connection) -> dict[str, dt.datetime]:
    """When each measured run happened (a few hundred rows at most: one per week)."""
    query = sa.select(runs.c.run_id, run_date()).where(runs.c.source == BENCHMARK)
    return {run_id: _aware(when) for run_id, when in _tuples(conn, query)}


def choices(conn: sa.Connection) -> dict[str, list[str]]:
    """The values each filter offers: every host, framework, device set and GPU model stored."""
    query = _measured(
        sa.select(results.c.host, results.c.framework, results.c.device_set, results.c.device_names).distinct()
    )
    found: dict[str, set[str]] = defaultdict(set)
    for host, fw, ds, names in _tuples(conn, query):
        found["host"].add(host)
        found["framework"].add(fw)
        found["variant"].add(frameworks.execution(fw))
        found["device_set"].add(ds)
        found["gpu"].update(g.strip() for g in (names or "").split(" + "))
    return {name: sorted((v for v in found[name] if v), key=_order_key(name)) for name in FILTER_FIELDS}


def _order_key(name: str):
    if name == "framework":
        return cases.framework_order
    if name == "device_set":
        return cases.device_set_order
    return str


# --- latest run per host ------------------------------------------------------------------------------------------


def latest_per_host(conn: sa.Connection, filters: Filters, max_cv: float = MAX_CV) -> list[dict]:
    """Per host, its newest published run among the filtered rows, with one summary per framework x device set,
    and the newer runs that are not published (still running, or invalid) with how many rows they hold so far:
    partial rows are never shown as the latest run."""
    dates = run_dates(conn)
    query = sa.select(
        results.c.host, results.c.run_id, runs.c.state, sa.func.count(results.c.id), sa.func.max(results.c.started_at)
    )
    query = filters.apply(_measured(query)).group_by(results.c.host, results.c.run_id, runs.c.state)
    newest: dict[str | None, tuple[dt.datetime, str]] = {}
    pending: dict[str | None, list[tuple[dt.datetime, str, str, int, dt.datetime | None]]] = defaultdict(list)
    for host, run_id, state, count, last in _tuples(conn, query):
        when = dates.get(run_id, _aware(None))
        if state != PUBLISHED:
            pending[host].append((when, run_id, state, count, last and _aware(last)))
        elif host not in newest or (when, run_id) > newest[host]:
            newest[host] = (when, run_id)
    hosts = []
    for host in sorted(set(newest) | set(pending), key=lambda h: h or ""):
        run_at, run_id = newest.get(host, (None, None))
        rows = []
        if run_id is not None:
            query = filters.apply(_measured(sa.select(*LATEST_COLUMNS))).where(results.c.run_id == run_id)
            query = query.where(results.c.host.is_(None) if host is None else results.c.host == host)
            rows = _run(conn, query)
        newer = sorted(p for p in pending[host] if run_at is None or (p[0], p[1]) > (run_at, run_id))
        hosts.append(
            {
                "host": host,
                "run_id": run_id,
                "run_at": run_at,
                "cases": _cases(conn, run_id, rows, max_cv) if run_id else [],
                "unpublished": [
                    {"run_id": r, "run_at": w, "state": s, "rows": n, "last_row_at": last} for w, r, s, n, last in newer
                ],
            }
        )
    return hosts


def _aware(when: dt.datetime | None) -> dt.datetime:
    return cases.utc(when or dt.datetime.min)


def _results(rows: list[dict], memory: dict[int, list[dict]] | None = None) -> list[Result]:
    """Query rows as the case layer's `Result`s (with their devices' memory where given)."""
    found = []
    for row in rows:
        r = Result.from_dict(row)
        r.devices = (memory or {}).get(row["id"], [])
        found.append(r)
    return found


def _cases(conn: sa.Connection, run_id: str, rows: list[dict], max_cv: float) -> list[dict]:
    """The latest run's cases on one host (`cases.summarize`), each with its verdicts."""
    memory: dict[int, list[dict]] = defaultdict(list)
    if rows:
        query = (
            sa.select(device_memory)
            .where(device_memory.c.result_id.in_([r["id"] for r in rows]))
            .order_by(device_memory.c.result_id, device_memory.c.position)
        )
        for d in _run(conn, query):
            memory[d["result_id"]].append(d)
    marks = charts.marks(_run(conn, sa.select(verdicts).where(verdicts.c.run_id == run_id)), every=True)
    out = []
    for s in cases.summarize(cases.newest(_results(rows, memory)), max_cv):
        k = s.key
        out.append(
            {
                "framework": k.framework,
                "device_set": k.device_set,
                "device_names": s.device_names,
                "repeats": s.measured,
                "ok": len(s.counted),
                "warmups": s.warmups,
                "statuses": sorted(s.statuses),
                "failures": [
                    {"repeat": r.repeat, "status": r.status, "error": r.error, "warmup": r.warmup} for r in s.failures
                ],
                "wall": s.wall.median,
                "wall_spread": (s.wall.min, s.wall.max),
                "user": s.user.median,
                "sys": s.sys.median,
                "peak_mem": s.peak_mem.median,
                "peak_mem_method": s.peak_mem_method,
                "devices": [
                    {"device": d.device, "name": d.name, "used": d.used_mib, "methods": list(d.methods)}
                    for d in s.devices
                ],
                "ips": s.ips.median,
                "ips_spread": (s.ips.min, s.ips.max),
                "ips_missing": ONE_EPOCH if s.wall.n and not s.ips.n else None,
                "verdicts": marks.get((run_id, k.framework, k.device_set, k.env_key), []),
            }
        )
    return out


def _verdicts(conn: sa.Connection, run_ids: list[str] | None = None) -> dict[tuple, list[dict]]:
    """Regressed / improved verdicts by (run, framework, device set, environment)."""
    query = sa.select(verdicts).where(verdicts.c.verdict.in_(charts.MARKED_VERDICTS))
    if run_ids is not None:
        query = query.where(verdicts.c.run_id.in_(run_ids))
    return charts.marks(_run(conn, query))


# --- environments -------------------------------------------------------------------------------------------------


def environments(conn: sa.Connection, env_keys: Iterable[str]) -> dict[str, dict]:
    """One stored fingerprint per environment key (the first row's)."""
    return {key: env if isinstance(env, dict) else {} for key, env in _tuples(conn, fingerprints_query(env_keys))}


# --- history ------------------------------------------------------------------------------------------------------


def _counted_ok(query: sa.Select, filters: Filters) -> sa.Select:
    """`query` over the filtered counted results (only those leave the database) with a wall time."""
    return filters.apply(_measured(query)).where(counted(), results.c.wall_s.is_not(None))


FIGURE_COLUMNS = (  # `cases.Figures`
    results.c.run_id,
    results.c.env_key,
    results.c.host,
    results.c.framework,
    results.c.device_set,
    results.c.wall_s,
    results.c.images_per_s,
)
IN_CHUNK = 500  # run ids per query: under every database's limit on bound parameters


class RunFigures:
    """A run's filtered counted results (`cases.Figures`), and what the views make of them, each made once: their
    spread per case (`cases.per_run_figures`, the history's) and the `Result`s a comparison reads."""

    def __init__(self, rows: list[cases.Figures]):
        self.rows = rows

    @functools.cached_property
    def figures(self) -> dict[tuple, tuple[Spread, Spread]]:
        return cases.per_run_figures(self.rows)

    @functools.cached_property
    def results(self) -> list[Result]:
        return [
            Result(run, "", env_key, fw, ds, 0, cases.OK, host=host, wall_s=wall, images_per_s=ips)
            for run, env_key, host, fw, ds, wall, ips in self.rows
        ]


def run_figures(conn: sa.Connection, filters: Filters, kept: PerRun) -> dict[str, RunFigures]:
    """Per filtered run holding counted results, its `RunFigures`: read from the database only for the runs `kept`
    holds none of at their current revision (new, re-measured, or not read under these filters yet)."""
    scope = (str(conn.engine.url), dataclasses.replace(filters, date_from=None, date_to=None, problems=()))
    revisions = filters.within_dates(sa.select(runs.c.run_id, runs.c.revision).where(runs.c.source == BENCHMARK))
    tokens = {(scope, run): revision for run, revision in _tuples(conn, revisions)}
    found, missing = kept.kept(tokens)
    if missing:
        query = _counted_ok(sa.select(*FIGURE_COLUMNS), filters)
        fresh: dict[str, list[cases.Figures]] = {run: [] for _, run in missing}
        every = len(missing) == len(tokens)
        for chunk in [None] if every else [sorted(fresh)[i : i + IN_CHUNK] for i in range(0, len(fresh), IN_CHUNK)]:
            for row in _tuples(conn, query if chunk is None else query.where(results.c.run_id.in_(chunk))):
                if row[0] in fresh:  # a run stored since its revision was read waits for the next view
                    fresh[row[0]].append(row)  # a Row is a tuple
        for key in missing:
            found[key] = RunFigures(fresh[key[1]])
            kept.keep(key, tokens[key], found[key])
    return {run: found[(scope, run)] for _, run in tokens if found[(scope, run)].rows}


def first_started(conn: sa.Connection, filters: Filters) -> dict[str, dt.datetime]:
    """When each environment of the filtered counted results was first measured (what orders a comparison): one
    aggregate the database computes, a row per environment."""
    query = _counted_ok(sa.select(results.c.env_key, sa.func.min(results.c.started_at)), filters)
    return {env_key: when for env_key, when in _tuples(conn, query.group_by(results.c.env_key)) if when is not None}


def history(conn: sa.Connection, filters: Filters, kept: PerRun) -> dict:
    """Per case (host x framework x device set), the median wall time of each run, one series per environment,
    on one axis of the filtered runs, oldest to newest (`charts.history_charts`)."""
    per_run = run_figures(conn, filters, kept)
    figures = {key: spreads for run in per_run.values() for key, spreads in run.figures.items()}
    dates = run_dates(conn)
    order = sorted(per_run, key=lambda run: (dates.get(run, _aware(None)), run))
    envs = environments(conn, {key[3] for key in figures})
    return charts.history_charts(
        figures,
        [(run, _date_text(dates.get(run))) for run in order],
        {key: environment_label(env) for key, env in envs.items()},
        _verdicts(conn) if figures else {},
        charts.case_order,
    )


def _date_text(when: dt.datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M") if when else ""


# --- driver / framework comparison --------------------------------------------------------------------------------


def comparison(conn: sa.Connection, filters: Filters, kept: PerRun, max_cv: float = MAX_CV) -> dict:
    """Per case (host x framework x device set), the environments it was measured in side by side, oldest first,
    with what changed and the change in wall time and images/s (`trainbench.comparison`)."""
    measured = [r for found in run_figures(conn, filters, kept).values() for r in found.results]
    first = first_started(conn, filters)
    dates = run_dates(conn)
    order = sorted({r.run_id for r in measured}, key=lambda run: (dates.get(run, _aware(None)), run))
    fingerprints = environments(conn, {r.env_key for r in measured})
    return {
        "cases": [
            {
                "host": c.host,
                "framework": c.framework,
                "device_set": c.device_set,
                "environments": [
                    {
                        "env_key": e.env_key,
                        "label": e.label,
                        "gpus": sorted(set(e.fingerprint.get("gpu_names") or [])),
                        "first_run": e.runs[0],
                        "first_date": _date_text(dates.get(e.runs[0])),
                        "runs": len(e.runs),
                        "changed": e.changed,
                        "wall": _figures(e.summary.wall),
                        "ips": _figures(e.summary.ips),
                        "wall_change": e.wall,
                        "ips_change": e.ips,
                        "reading": e.reading,
                    }
                    for e in c.environments
                ],
            }
            for c in compare(measured, fingerprints, order, max_cv, first_measured=first)
        ]
    }


def _figures(spread: Spread) -> dict:
    return {"median": spread.median, "min": spread.min, "max": spread.max, "n": spread.n, "cv": spread.cv}


# --- environment changes ------------------------------------------------------------------------------------------


def environment_changes(conn: sa.Connection, filters: Filters) -> list[dict]:
    """The before/after runs, newest first: per host that changed, what changed, the headline and every case's
    verdicts (`trainbench.workflows.before_after`; the headline as `trainbench.reports.environment_change` words
    it), filtered by host, framework, device set and date."""
    query = (
        sa.select(environment_verdicts, runs.c.created_at)
        .select_from(environment_verdicts.join(runs, runs.c.run_id == environment_verdicts.c.run_id))
        .where(runs.c.source == ENVIRONMENT_CHANGE)
    )
    for name in ("host", "framework", "device_set"):
        if getattr(filters, name):
            query = query.where(environment_verdicts.c[name].in_(getattr(filters, name)))
    found: dict[str, dict] = {}
    for v in _run(conn, query):
        when = _aware(v["created_at"])
        if (filters.date_from and when.date() < filters.date_from) or (
            filters.date_to and when.date() > filters.date_to
        ):
            continue
        run = found.setdefault(v["run_id"], {"run_id": v["run_id"], "created_at": when, "hosts": {}})
        host = run["hosts"].setdefault(
            v["host"], {"host": v["host"], "changed": v["changed"], "changed_at": v["changed_at"], "verdicts": []}
        )
        host["verdicts"].append(v)
    out = sorted(found.values(), key=lambda r: r["created_at"], reverse=True)
    for run in out:
        run["hosts"] = [run["hosts"][h] for h in sorted(run["hosts"])]
        for host in run["hosts"]:
            host["verdicts"] = cases.listed(host["verdicts"])
            host["headline"] = headline(host["verdicts"])
    return out


# --- runs ---------------------------------------------------------------------------------------------------------


def run_ids(conn: sa.Connection) -> set[str]:
    return {r["run_id"] for r in _run(conn, sa.select(runs.c.run_id))}
