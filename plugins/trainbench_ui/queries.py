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
import statistics
from collections import defaultdict
from collections.abc import Iterable
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from trainbench import frameworks
from trainbench.reports import charts
from trainbench.store.results import BENCHMARK, PUBLISHED, device_memory, results, runs, verdicts

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


def run_date() -> sa.ColumnElement:
    """When a run happened: its logical date (Airflow's), else when it was recorded (the CLI's runs)."""
    return sa.type_coerce(sa.func.coalesce(runs.c.logical_date, runs.c.created_at), sa.DateTime(timezone=True))


class NoDatabase(Exception):
    """The results database does not exist yet, or holds no schema."""


class BadFilter(ValueError):
    """A query parameter no page can answer (answered 400, naming the parameter and what is accepted)."""


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
                    problems.append(f"{name} {text!r} is not a date (YYYY-MM-DD); ignored")
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
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not os.path.isfile(os.path.abspath(parsed.database or "")):
        raise NoDatabase(f"no results database at {parsed.database} yet; run a benchmark first")
    return _engine(url)


def _measured(query: sa.Select) -> sa.Select:
    return query.select_from(results.join(runs, runs.c.run_id == results.c.run_id)).where(runs.c.source == BENCHMARK)


def _tuples(conn: sa.Connection, query: sa.Select) -> list[sa.Row]:
    """Rows as tuples: the cheap way through thousands of them."""
    try:
        return list(conn.execute(query))
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
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
        return framework_order
    if name == "device_set":
        return device_set_order
    return str


def framework_order(name: str) -> tuple:
    return (frameworks.NAMES.index(name) if name in frameworks.NAMES else len(frameworks.NAMES), name)


def device_set_order(text: str) -> tuple:
    """More devices first (as the log lists them), CPU sets after GPU sets."""
    if text.startswith("cpu"):
        workers = int(text.split(":")[1]) if ":" in text else 1
        return (1, -workers, text)
    return (0, -len(text.split(",")), text)


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def spread(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    present = [v for v in values if v is not None]
    return (min(present), max(present)) if present else (None, None)


# --- latest run per host ------------------------------------------------------------------------------------------


def latest_per_host(conn: sa.Connection, filters: Filters) -> list[dict]:
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
            rows = _current(_run(conn, query))
        newer = sorted(p for p in pending[host] if run_at is None or (p[0], p[1]) > (run_at, run_id))
        hosts.append(
            {
                "host": host,
                "run_id": run_id,
                "run_at": run_at,
                "cases": _cases(conn, run_id, rows) if run_id else [],
                "unpublished": [
                    {"run_id": r, "run_at": w, "state": s, "rows": n, "last_row_at": last} for w, r, s, n, last in newer
                ],
            }
        )
    return hosts


def _aware(when: dt.datetime | None) -> dt.datetime:
    if when is None:
        return dt.datetime.min.replace(tzinfo=dt.UTC)
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _current(rows: list[dict]) -> list[dict]:
    """Per case (and environment) the newest row, as ResultStore.current_rows chooses."""
    newest: dict[str, dict] = {}
    for r in rows:
        old = newest.get(r["case_key"])
        if old is None or (_aware(r["started_at"]), r["id"]) > (_aware(old["started_at"]), old["id"]):
            newest[r["case_key"]] = r
    return sorted(newest.values(), key=lambda r: r["id"])


def _cases(conn: sa.Connection, run_id: str, rows: list[dict]) -> list[dict]:
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
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["framework"], r["device_set"])].append(r)
    cases = []
    for (fw, ds), group in sorted(
        groups.items(), key=lambda kv: (framework_order(kv[0][0]), device_set_order(kv[0][1]))
    ):
        measured = [r for r in group if not r["warmup"]]
        ok = [r for r in measured if r["status"] == "ok"]
        failed = [r for r in group if r["status"] != "ok"]
        devices: dict[int, dict] = {}
        for r in ok:
            for d in memory.get(r["id"], []):
                entry = devices.setdefault(
                    d["position"], {"device": d["device"], "name": d["name"], "methods": set(), "used": []}
                )
                entry["used"].append(d["used_mib"])
                entry["methods"].add(d["method"])
        wall_lo, wall_hi = spread(r["wall_s"] for r in ok)
        ips_lo, ips_hi = spread(r["images_per_s"] for r in ok)
        env_keys = {r["env_key"] for r in group}
        cases.append(
            {
                "framework": fw,
                "device_set": ds,
                "device_names": next((r["device_names"] for r in group if r["device_names"]), None),
                "repeats": len(measured),
                "ok": len(ok),
                "warmups": len(group) - len(measured),
                "statuses": sorted({r["status"] for r in group}),
                "failures": [
                    {"repeat": r["repeat"], "status": r["status"], "error": r["error"], "warmup": r["warmup"]}
                    for r in failed
                ],
                "wall": median(r["wall_s"] for r in ok),
                "wall_spread": (wall_lo, wall_hi),
                "user": median(r["user_s"] for r in ok),
                "sys": median(r["sys_s"] for r in ok),
                "peak_mem": median(r["peak_mem_mib"] for r in ok),
                "peak_mem_method": next((r["peak_mem_method"] for r in ok if r["peak_mem_method"]), None),
                "devices": [
                    {**d, "used": median(d["used"]), "methods": sorted(m for m in d["methods"] if m)}
                    for _, d in sorted(devices.items())
                ],
                "ips": median(r["images_per_s"] for r in ok),
                "ips_spread": (ips_lo, ips_hi),
                "verdicts": [v for k in env_keys for v in marks.get((run_id, fw, ds, k), [])],
            }
        )
    return cases


def _verdicts(conn: sa.Connection, run_ids: list[str] | None = None) -> dict[tuple, list[dict]]:
    """Regressed / improved verdicts by (run, framework, device set, environment)."""
    query = sa.select(verdicts).where(verdicts.c.verdict.in_(charts.MARKED_VERDICTS))
    if run_ids is not None:
        query = query.where(verdicts.c.run_id.in_(run_ids))
    return charts.marks(_run(conn, query))


# --- environments -------------------------------------------------------------------------------------------------


def environments(conn: sa.Connection, env_keys: Iterable[str]) -> dict[str, dict]:
    """One stored fingerprint per environment key (the first row's), with a short label."""
    keys = sorted(set(env_keys))
    if not keys:
        return {}
    first = sa.select(sa.func.min(results.c.id)).where(results.c.env_key.in_(keys)).group_by(results.c.env_key)
    query = sa.select(results.c.env_key, results.c.environment).where(results.c.id.in_(first))
    out = {}
    for r in _run(conn, query):
        env = r["environment"] or {}
        packages = env.get("framework_packages") or {}
        if not isinstance(packages, dict):
            packages = {}
        driver = env.get("driver_version")
        gpus = env.get("gpu_names") or []
        out[r["env_key"]] = {
            "env_key": r["env_key"],
            "driver": driver,
            "packages": packages,
            "gpus": sorted(set(gpus)),
            "hostname": env.get("hostname") or env.get("worker_host"),
            "label": charts.environment_label(driver, packages),
        }
    return out


# --- history ------------------------------------------------------------------------------------------------------


def _measured_ok(filters: Filters) -> sa.Select:
    """Per ok, measured (not warm-up) result: run, environment, case and its figures."""
    query = sa.select(
        results.c.run_id,
        results.c.env_key,
        results.c.host,
        results.c.framework,
        results.c.device_set,
        results.c.wall_s,
        results.c.images_per_s,
    )
    return filters.apply(_measured(query)).where(
        results.c.status == "ok", results.c.warmup == sa.false(), results.c.wall_s.is_not(None)
    )


def _case_order(case: tuple) -> tuple:
    host, fw, ds = case
    return (host or "", framework_order(fw), device_set_order(ds))


def history(conn: sa.Connection, filters: Filters) -> dict:
    """Per case (host x framework x device set), the median wall time of each run, one series per environment,
    on one axis of the filtered runs, oldest to newest (`charts.history`)."""
    found = _tuples(conn, _measured_ok(filters))
    dates = run_dates(conn)
    order = sorted({r[0] for r in found}, key=lambda run: (dates.get(run, _aware(None)), run))
    envs = environments(conn, {r[1] for r in found})
    return charts.history(
        found,
        [(run, _date_text(dates.get(run))) for run in order],
        {key: env["label"] for key, env in envs.items()},
        _verdicts(conn) if found else {},
        _case_order,
    )


def _date_text(when: dt.datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M") if when else ""


# --- driver / framework comparison --------------------------------------------------------------------------------


def comparison(conn: sa.Connection, filters: Filters) -> dict:
    """Medians per case side by side, one column per environment group (driver version x framework packages)."""
    by_env: dict[tuple, dict[str, list]] = defaultdict(lambda: {"wall": [], "ips": [], "runs": set()})
    for run_id, env_key, host, fw, ds, wall, ips in _tuples(conn, _measured_ok(filters)):
        cell = by_env[(host, fw, ds, env_key)]
        cell["wall"].append(wall)
        cell["ips"].append(ips)
        cell["runs"].add(run_id)
    dates = run_dates(conn)
    envs = environments(conn, {k[3] for k in by_env})
    first_seen: dict[str, dt.datetime] = {}
    cells: dict[tuple, dict[str, dict]] = defaultdict(
        lambda: defaultdict(lambda: {"wall": [], "ips": [], "runs": set()})
    )
    for (host, fw, ds, env_key), found in by_env.items():
        group = envs.get(env_key, {}).get("label", env_key)
        when = min(dates.get(run, _aware(None)) for run in found["runs"])
        first_seen[group] = min(first_seen.get(group, when), when)
        cell = cells[(host, fw, ds)][group]
        cell["wall"] += found["wall"]
        cell["ips"] += found["ips"]
        cell["runs"] |= found["runs"]
    groups = sorted(first_seen, key=lambda g: (first_seen[g], g))
    details: dict[str, dict] = {}
    for env in envs.values():
        entry = details.setdefault(env["label"], {"driver": env["driver"], "packages": env["packages"], "gpus": set()})
        entry["gpus"].update(env["gpus"])
    table = []
    for (host, fw, ds), by_group in sorted(cells.items(), key=lambda kv: _case_order(kv[0])):
        values = {
            g: {"wall": median(c["wall"]), "ips": median(c["ips"]), "n": len(c["wall"]), "runs": len(c["runs"])}
            for g, c in by_group.items()
        }
        base = next((values[g]["wall"] for g in groups if g in values and values[g]["wall"]), None)
        for v in values.values():
            v["change"] = (v["wall"] / base - 1) if base and v["wall"] is not None else None
        table.append({"host": host, "framework": fw, "device_set": ds, "values": values})
    return {
        "groups": [
            {"label": g, "first_seen": _date_text(first_seen[g]), **details.get(g, {"gpus": set()})} for g in groups
        ],
        "rows": table,
    }


# --- runs ---------------------------------------------------------------------------------------------------------


def run_ids(conn: sa.Connection) -> set[str]:
    return {r["run_id"] for r in _run(conn, sa.select(runs.c.run_id))}
