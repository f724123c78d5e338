"""The results database: one row per case x repeat x environment, per-device memory beside it.

SQLAlchemy Core, so the same code runs on the embedded SQLite file and on PostgreSQL; the
schema is created and upgraded by Alembic migrations (store/migrations), once per process
and database (`open_store`).  Writes are idempotent: saving a result again for the same run,
case and environment replaces it (a retried task never duplicates a row); a new
environment adds rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import gc
import os
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path

import sqlalchemy as sa

from trainbench import cases
from trainbench.errors import ConfigError
from trainbench.result import Result, finite
from trainbench.store import run_folder

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "trainbench_schema_version"
MIGRATION_LOCK = 0x7472_6169_6E62  # pg_advisory_xact_lock key: "trainb"
BENCHMARK = "trainbench"  # runs.source of the runs trainbench measured: the history verdicts are judged on
IMPORTED_LOG = "imported_log"  # runs.source of hand-made logs loaded with `import-log`: shown, never judged on
ENVIRONMENT_CHANGE = "environment_change"  # runs.source of before/after measurements: judged as such, never history
metadata = sa.MetaData()

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("settings", sa.JSON, nullable=False),
    sa.Column("logical_date", sa.DateTime(timezone=True)),
    sa.Column("state", sa.String(16), nullable=False, server_default="published"),
    sa.Column("revision", sa.Integer, nullable=False, server_default="0"),  # writes of its results (0011)
)
RUNNING, VALIDATED, PUBLISHED, INVALID = "running", "validated", "published", "invalid"
REFUSED = "refused"  # its conf was refused before anything ran: nothing measured
STOPPED = "stopped"  # the DAG run was stopped (failed by hand) while measuring: what it measured is published

results = sa.Table(
    "results",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(250), sa.ForeignKey("runs.run_id"), nullable=False),
    sa.Column("case_key", sa.Text, nullable=False),
    sa.Column("env_key", sa.String(64), nullable=False),
    sa.Column("framework", sa.String(32), nullable=False),
    sa.Column("device_set", sa.Text, nullable=False),
    sa.Column("device_names", sa.String(500)),
    sa.Column("repeat", sa.Integer, nullable=False),
    sa.Column("host", sa.String(64)),
    sa.Column("warmup", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("wall_s", sa.Float),
    sa.Column("user_s", sa.Float),
    sa.Column("sys_s", sa.Float),
    sa.Column("peak_mem_mib", sa.Float),
    sa.Column("peak_mem_method", sa.String(120)),
    sa.Column("images_per_s", sa.Float),
    sa.Column("parameters", sa.Integer),
    sa.Column("final_loss", sa.Float),
    sa.Column("test_accuracy", sa.Float),
    sa.Column("error", sa.Text),
    sa.Column("command", sa.Text),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("epochs", sa.JSON),
    sa.Column("summary", sa.JSON),
    sa.Column("environment", sa.JSON),
    sa.Column("telemetry", sa.JSON),
    sa.Column("phases", sa.JSON),
    sa.UniqueConstraint("run_id", "case_key", "env_key", name="uq_result_identity"),
)

device_memory = sa.Table(
    "device_memory",
    metadata,
    sa.Column("result_id", sa.Integer, sa.ForeignKey("results.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("device", sa.String(100), nullable=False),
    sa.Column("name", sa.String(100)),
    sa.Column("idle_mib", sa.Float),
    sa.Column("peak_mib", sa.Float),
    sa.Column("used_mib", sa.Float),
    sa.Column("method", sa.String(64), nullable=False),
)

verdicts = sa.Table(
    "verdicts",
    metadata,
    sa.Column("run_id", sa.String(250), sa.ForeignKey("runs.run_id"), primary_key=True),
    sa.Column("framework", sa.String(32), primary_key=True),
    sa.Column("device_set", sa.Text, primary_key=True),
    sa.Column("env_key", sa.String(64), primary_key=True),
    sa.Column("metric", sa.String(32), primary_key=True),
    sa.Column("host", sa.String(64)),
    sa.Column("verdict", sa.String(32), nullable=False),
    sa.Column("current", sa.Float),
    sa.Column("baseline", sa.Float),
    sa.Column("change", sa.Float),
    sa.Column("p_value", sa.Float),
    sa.Column("history_runs", sa.Integer, nullable=False),
    sa.Column("detail", sa.Text),
)
case_stats = sa.Table(
    "case_stats",
    metadata,
    sa.Column("run_id", sa.String(250), sa.ForeignKey("runs.run_id"), primary_key=True),
    sa.Column("framework", sa.String(32), primary_key=True),
    sa.Column("device_set", sa.Text, primary_key=True),
    sa.Column("host", sa.String(64), primary_key=True),
    sa.Column("env_key", sa.String(64), primary_key=True),
    sa.Column("repeats", sa.Integer, nullable=False),
    sa.Column("wall_median", sa.Float),
    sa.Column("wall_min", sa.Float),
    sa.Column("wall_max", sa.Float),
    sa.Column("wall_cv", sa.Float),
    sa.Column("ips_median", sa.Float),
    sa.Column("ips_min", sa.Float),
    sa.Column("ips_max", sa.Float),
    sa.Column("ips_cv", sa.Float),
    sa.Column("noisy", sa.Boolean),
)
host_environments = sa.Table(
    "host_environments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("host", sa.String(64), nullable=False),
    sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("environment", sa.JSON, nullable=False),
    sa.Column("run_id", sa.String(250)),  # the watch run that read it
)
environment_verdicts = sa.Table(
    "environment_verdicts",
    metadata,
    sa.Column("run_id", sa.String(250), sa.ForeignKey("runs.run_id"), primary_key=True),
    sa.Column("host", sa.String(64), primary_key=True),
    sa.Column("framework", sa.String(32), primary_key=True),
    sa.Column("device_set", sa.Text, primary_key=True),
    sa.Column("metric", sa.String(32), primary_key=True),
    sa.Column("verdict", sa.String(32), nullable=False),
    sa.Column("change", sa.Float),
    sa.Column("low", sa.Float),
    sa.Column("high", sa.Float),
    sa.Column("before", sa.JSON, nullable=False),  # the before repeats' figures
    sa.Column("after", sa.JSON, nullable=False),
    sa.Column("baseline_run", sa.String(250)),
    sa.Column("repeats", sa.Integer, nullable=False),
    sa.Column("changed", sa.JSON, nullable=False),  # what the watch saw change: path -> [old, new]
    sa.Column("changed_at", sa.DateTime(timezone=True)),
    sa.Column("detail", sa.Text),
)
quarantines = sa.Table(
    "quarantines",
    metadata,
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("host", sa.String(64), primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)
planned_cases = sa.Table(  # each host's planned cases of a run (0011): what a run stopped part-way never ran
    "planned_cases",
    metadata,
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("host", sa.String(64), primary_key=True),
    sa.Column("case_key", sa.Text, primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),  # in the order planned (the order the host runs them)
    sa.Column("label", sa.Text, nullable=False),
)
ALERT_KEY_LENGTH = 500  # an alert's key is at most this long (alerts.Alert hashes the tail of a longer one)
alerts_sent = sa.Table(
    "alerts_sent",
    metadata,
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("alert_key", sa.String(ALERT_KEY_LENGTH), primary_key=True),
    sa.Column("channel", sa.String(32), primary_key=True),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
)
sa.Index("ix_results_case", results.c.framework, results.c.device_set, results.c.env_key)
sa.Index("ix_host_environments_host", host_environments.c.host, host_environments.c.observed_at)

RESULT_FIELDS = tuple(c.name for c in results.columns if c.name != "id")
HISTORY_FIELDS = (
    "id",
    "run_id",
    "case_key",
    "env_key",
    "framework",
    "device_set",
    "host",
    "repeat",
    "warmup",
    "status",
    "wall_s",
    "images_per_s",
    "epochs",
    "started_at",
)


def migrate(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (Alembic; its own version table, so it can share a database)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # SQLite runs DDL outside a transaction: processes opening a new file at once would each create its tables
    # (`table runs already exists`), so they migrate one after another
    with _sqlite_file_lock(engine, "migrating"), engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # hosts' first tasks start together: one migrates, the rest wait
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


@contextlib.contextmanager
def _sqlite_file_lock(engine: sa.Engine, purpose: str) -> Iterator[None]:
    """Held while this process does `purpose` on a SQLite database, under the lock file `<database>.<purpose>`
    beside it: processes take turns (nothing for another database, or one in memory)."""
    database = engine.url.database or ""
    if engine.dialect.name != "sqlite" or database in ("", ":memory:"):
        yield
        return
    with run_folder.locked(f"{os.path.abspath(database)}.{purpose}"):
        yield


def _insert_new(engine: sa.Engine, table: sa.Table):
    """INSERT that skips rows whose key is taken (ON CONFLICT DO NOTHING, on SQLite and PostgreSQL alike)."""
    from sqlalchemy.dialects import postgresql, sqlite

    if engine.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


@functools.cache
def open_store(url: str) -> ResultStore:
    """The process's store for `url`: one engine, migrated once."""
    return ResultStore(url)


def not_created_yet(url: str) -> str | None:
    """Why a reader finds no results database at `url` (a SQLite file not written yet), or None: readers never
    create one."""
    parsed = sa.engine.make_url(url)
    path = os.path.abspath(parsed.database or "")
    if parsed.get_backend_name() == "sqlite" and not os.path.isfile(path):
        return f"no results database at {path} yet; run a benchmark first"
    return None


def long_lived() -> None:
    """What this process holds before it reads thousands of rows (its imports, its configuration) lives until it
    ends: frozen out of the garbage collector's reach, it is not traversed again by each full collection those rows
    trigger (at 10,000 rows a third of the time of verdicts and reports, half of a page's first view:
    benchmarks/report_generation.py, benchmarks/ui_page_load.py)."""
    gc.freeze()


def _revised(conn: sa.Connection, run_id: str) -> None:
    """One more write of the run's results, in the transaction that makes it: what readers keeping a run's figures
    check (`runs.revision`)."""
    conn.execute(runs.update().where(runs.c.run_id == run_id).values(revision=runs.c.revision + 1))


def counted() -> sa.ColumnElement:
    """`cases.counted` as a condition on the results table, for readers that keep the rest in the database."""
    return sa.and_(results.c.status == cases.OK, results.c.warmup == sa.false())


def run_date() -> sa.ColumnElement:
    """When a run happened, the order of runs: its logical date (Airflow's; a backfill takes its week's place),
    else when it was recorded (the CLI's runs)."""
    return sa.type_coerce(sa.func.coalesce(runs.c.logical_date, runs.c.created_at), sa.DateTime(timezone=True))


def open_existing(url: str) -> ResultStore:
    """The store for read-only commands (`results`, `report`): where no database exists yet, nothing is created."""
    if why := not_created_yet(url):
        raise ConfigError(why)
    return open_store(url)


class ResultStore:
    def __init__(self, url: str):
        if url.startswith("sqlite:///"):
            os.makedirs(os.path.dirname(os.path.abspath(url[len("sqlite:///") :])), exist_ok=True)
        # A pooled connection the server dropped (a restart, a failover) is replaced on checkout, not raised
        self.engine = sa.create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", lambda conn, _: conn.execute("PRAGMA foreign_keys=ON"))
        migrate(self.engine)

    def save_run(
        self, run_id: str, settings: dict, source: str = BENCHMARK, logical_date: dt.datetime | None = None
    ) -> None:
        """Record the run once; every host's tasks call this, possibly at the same moment.

        A benchmark run starts (again, when a backfill re-runs it) as "running"; an id already taken by a run
        of the other source (an imported log's, say) is refused, naming it.
        """
        state = RUNNING if source == BENCHMARK else PUBLISHED
        if self.source_of(run_id) is None:
            row = {
                "run_id": run_id,
                "source": source,
                "settings": settings,
                "created_at": dt.datetime.now(dt.UTC),
                "logical_date": logical_date,
                "state": state,
            }
            try:
                with self.engine.begin() as conn:
                    conn.execute(runs.insert().values(**row))
                return
            except sa.exc.IntegrityError:
                pass  # another host (or importer) recorded it first
        taken = self.source_of(run_id)
        if taken != source:
            what = {IMPORTED_LOG: "an imported log", ENVIRONMENT_CHANGE: "a before/after run"}.get(
                taken or "", "a benchmark run"
            )
            raise ConfigError(f"run id {run_id!r} is already {what}'s; choose another run id")
        self.set_state(run_id, state)

    def source_of(self, run_id: str) -> str | None:
        """Who recorded the run: BENCHMARK, IMPORTED_LOG or ENVIRONMENT_CHANGE (None: no such run)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(runs.c.source).where(runs.c.run_id == run_id)).scalar()

    def set_state(self, run_id: str, state: str) -> None:
        """Where the run is: RUNNING, VALIDATED, PUBLISHED, INVALID, REFUSED or STOPPED (only a published run can be
        latest)."""
        with self.engine.begin() as conn:
            conn.execute(runs.update().where(runs.c.run_id == run_id).values(state=state))

    def change_state(self, run_id: str, was: str, to: str) -> bool:
        """`was` -> `to` in one statement: of two hosts' tasks changing it at once, exactly one gets True."""
        with self.engine.begin() as conn:
            query = runs.update().where(runs.c.run_id == run_id, runs.c.state == was).values(state=to)
            return conn.execute(query).rowcount == 1

    def run_state(self, run_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(runs.c.state).where(runs.c.run_id == run_id)).scalar()

    def replace_rows(self, run_id: str, rows: list[Result]) -> None:
        """Replace every row of a run in one transaction (an imported log, imported again): two imports at once
        queue behind each other instead of interleaving."""
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": hash_key(run_id)})
            old = sa.select(results.c.id).where(results.c.run_id == run_id)
            conn.execute(device_memory.delete().where(device_memory.c.result_id.in_(old)))
            conn.execute(results.delete().where(results.c.run_id == run_id))
            for result in rows:
                self._insert(conn, result)
            _revised(conn, run_id)

    def save(self, result: Result) -> int:
        """Insert a result, replacing any earlier one with the same run, case and environment."""
        values = dataclasses.asdict(result)
        row = {k: finite(values.get(k)) for k in RESULT_FIELDS}
        identity = sa.and_(
            results.c.run_id == row["run_id"],
            results.c.case_key == row["case_key"],
            results.c.env_key == row["env_key"],
        )
        with self.engine.begin() as conn:
            old = conn.execute(sa.select(results.c.id).where(identity)).scalars().all()
            if old:
                conn.execute(device_memory.delete().where(device_memory.c.result_id.in_(old)))
                conn.execute(results.delete().where(identity))
            _revised(conn, result.run_id)
            return self._insert(conn, result)

    @staticmethod
    def _insert(conn: sa.Connection, result: Result) -> int:
        values = dataclasses.asdict(result)
        inserted = conn.execute(results.insert().values(**{k: finite(values.get(k)) for k in RESULT_FIELDS}))
        assert inserted.inserted_primary_key is not None
        result_id = inserted.inserted_primary_key[0]
        devices = [{**finite(d), "result_id": result_id, "position": i} for i, d in enumerate(result.devices or [])]
        if devices:
            conn.execute(device_memory.insert(), devices)
        return result_id

    def has(self, run_id: str, case_key: str, env_key: str) -> bool:
        query = sa.select(results.c.id).where(
            results.c.run_id == run_id, results.c.case_key == case_key, results.c.env_key == env_key
        )
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def rows(self, run_id: str | None = None, source: str | None = None) -> list[dict]:
        """Stored results (of one run, or of one source's runs, if given), oldest first, each with its `devices`."""
        chosen = sa.select(results.c.id)
        if run_id is not None:
            chosen = chosen.where(results.c.run_id == run_id)
        if source is not None:
            chosen = chosen.where(results.c.run_id.in_(sa.select(runs.c.run_id).where(runs.c.source == source)))
        with self.engine.connect() as conn:
            rows = [
                dict(r._mapping)
                for r in conn.execute(sa.select(results).where(results.c.id.in_(chosen)).order_by(results.c.id))
            ]
            devices: dict[int, list[dict]] = {}
            for d in conn.execute(
                sa.select(device_memory)
                .where(device_memory.c.result_id.in_(chosen))
                .order_by(device_memory.c.result_id, device_memory.c.position)
            ):
                devices.setdefault(d.result_id, []).append(
                    {k: v for k, v in d._mapping.items() if k not in ("result_id", "position")}
                )
        for r in rows:
            r["devices"] = devices.get(r["id"], [])
        return rows

    def results(self, run_id: str | None = None, source: str | None = None) -> list[Result]:
        """`rows` as `Result`s: what the case layer (`trainbench.cases`) and every reader of it take."""
        return [Result.from_dict(r) for r in self.rows(run_id, source)]

    def history(
        self,
        except_run: str | None = None,
        source: str = BENCHMARK,
        epochs: bool = True,
        only_runs: Collection[str] | None = None,
    ) -> list[Result]:
        """Every result of `source`'s runs but `except_run` (of `only_runs` if given), with what verdicts and charts
        read of it (figures, and the epochs if asked): no environment, telemetry, phases or devices, which cost more
        to load than the rest."""
        fields = HISTORY_FIELDS if epochs else tuple(f for f in HISTORY_FIELDS if f != "epochs")
        query = (
            sa.select(*(results.c[name] for name in fields))
            .where(results.c.run_id.in_(sa.select(runs.c.run_id).where(runs.c.source == source)))
            .order_by(results.c.id)
        )
        if except_run is not None:
            query = query.where(results.c.run_id != except_run)
        if only_runs is not None:
            query = query.where(results.c.run_id.in_(sorted(only_runs)))
        with self.engine.connect() as conn:
            return [Result(**row._mapping) for row in conn.execute(query)]

    def case_runs(self, source: str = BENCHMARK) -> list[cases.CaseRun]:
        """Per run of `source` and case in it, how many counted results hold a wall time and how many images/s:
        which runs a case's history can take, read without loading them."""
        query = (
            sa.select(
                results.c.run_id,
                results.c.host,
                results.c.framework,
                results.c.device_set,
                results.c.env_key,
                sa.func.count(results.c.wall_s),
                sa.func.count(results.c.images_per_s),
            )
            .where(counted(), results.c.run_id.in_(sa.select(runs.c.run_id).where(runs.c.source == source)))
            .group_by(results.c.run_id, results.c.host, results.c.framework, results.c.device_set, results.c.env_key)
        )
        with self.engine.connect() as conn:
            return [
                cases.CaseRun(run, cases.CaseKey(host or "", fw, ds, env), {"wall_s": walls, "images_per_s": rates})
                for run, host, fw, ds, env, walls, rates in conn.execute(query)
            ]

    def fingerprints(self, env_keys: Iterable[str]) -> dict[str, dict]:
        """One stored fingerprint per environment key (its first result's)."""
        with self.engine.connect() as conn:
            return {key: env or {} for key, env in conn.execute(fingerprints_query(env_keys))}

    def current_results(self, run_id: str) -> list[Result]:
        """The run's results that count: per case x repeat the newest (`cases.newest`)."""
        return cases.newest(self.results(run_id))

    def current_rows(self, run_id: str) -> list[dict]:
        """`current_results` as table rows (what Great Expectations and `results --format` read)."""
        return [r.to_dict() for r in self.current_results(run_id)]

    def run_ids(self, source: str | None = None) -> list[str]:
        """Run ids, oldest first by the week they measure (logical date, else when recorded), so a backfill
        takes its week's place, not the newest (of one source if given: BENCHMARK or IMPORTED_LOG)."""
        query = sa.select(runs.c.run_id).order_by(run_date(), runs.c.created_at, runs.c.run_id)
        if source:
            query = query.where(runs.c.source == source)
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def save_case_stats(self, run_id: str, stats: list[dict]) -> None:
        """Replace the run's dispersion per case (`CaseSummary.stats_row` of `trainbench.cases`)."""
        with self.engine.begin() as conn:
            conn.execute(case_stats.delete().where(case_stats.c.run_id == run_id))
            if stats:
                conn.execute(case_stats.insert(), [{**finite(s), "run_id": run_id} for s in stats])

    def case_stats(self, run_id: str | None = None) -> list[dict]:
        query = sa.select(case_stats)
        if run_id is not None:
            query = query.where(case_stats.c.run_id == run_id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def latest_run_id(self) -> str | None:
        """The published benchmark run of the newest logical date (else the newest run) that has results: "latest".

        A backfill of old weeks, a run that failed before measuring anything, failed validation or is still
        running never takes it.
        """
        query = (
            sa.select(runs.c.run_id)
            .where(
                runs.c.source == BENCHMARK,
                runs.c.state == PUBLISHED,
                runs.c.run_id.in_(sa.select(results.c.run_id)),
            )
            .order_by(run_date().desc(), runs.c.created_at.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def settings_of(self, run_id: str) -> dict | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(runs.c.settings).where(runs.c.run_id == run_id)).scalar()

    def settings_at(self, logical_date: dt.datetime) -> dict | None:
        """The settings the first benchmark run of a logical date stored (what a backfill of it re-uses).

        Airflow's backfill clears and re-runs that very run (same run id, conf replaced), and the
        runs row keeps the settings it was first stored with.
        """
        query = (
            sa.select(runs.c.settings)
            .where(runs.c.source == BENCHMARK, runs.c.logical_date == logical_date)
            .order_by(runs.c.created_at)
            .limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def save_verdicts(self, run_id: str, found: list[dict]) -> None:
        """Replace the run's regression verdicts."""
        with self.engine.begin() as conn:
            conn.execute(verdicts.delete().where(verdicts.c.run_id == run_id))
            if found:
                conn.execute(verdicts.insert(), [{**v, "run_id": run_id} for v in found])

    def observe_environment(
        self, host: str, environment: dict, digest: str, at: dt.datetime, run_id: str | None = None
    ) -> dict | None:
        """Store one reading of a host's environment, replacing the reading of the same watch run (its retry
        compares with the reading before, or it would find nothing changed and the change would go unannounced);
        return the host's reading before it (None for the first)."""
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":  # two watches of one host queue behind each other
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": hash_key(f"watch {host}")})
            mine = host_environments.c.host == host
            if run_id is not None:
                conn.execute(host_environments.delete().where(mine, host_environments.c.run_id == run_id))
            previous = conn.execute(
                sa.select(host_environments)
                .where(mine)
                .order_by(host_environments.c.observed_at.desc(), host_environments.c.id.desc())
                .limit(1)
            ).first()
            conn.execute(
                host_environments.insert().values(
                    host=host, observed_at=at, digest=digest, environment=finite(environment), run_id=run_id
                )
            )
        return dict(previous._mapping) if previous else None

    def environments(self, host: str) -> list[dict]:
        """A host's readings, oldest first."""
        query = (
            sa.select(host_environments)
            .where(host_environments.c.host == host)
            .order_by(host_environments.c.observed_at, host_environments.c.id)
        )
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def save_environment_verdicts(self, run_id: str, host: str, framework: str, device_set: str, found: list[dict]):
        """Replace one case's environment-change verdicts of a before/after run (a retried task never doubles them)."""
        case = sa.and_(
            environment_verdicts.c.run_id == run_id,
            environment_verdicts.c.host == host,
            environment_verdicts.c.framework == framework,
            environment_verdicts.c.device_set == device_set,
        )
        with self.engine.begin() as conn:
            conn.execute(environment_verdicts.delete().where(case))
            if found:
                conn.execute(
                    environment_verdicts.insert(),
                    [
                        {**finite(v), "run_id": run_id, "host": host, "framework": framework, "device_set": device_set}
                        for v in found
                    ],
                )

    def environment_verdicts(self, run_id: str | None = None) -> list[dict]:
        query = sa.select(environment_verdicts)
        if run_id is not None:
            query = query.where(environment_verdicts.c.run_id == run_id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def verdicts(self, run_id: str | None = None) -> list[dict]:
        """Every run's regression verdicts, or one run's."""
        query = sa.select(verdicts)
        if run_id is not None:
            query = query.where(verdicts.c.run_id == run_id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def quarantine(self, run_id: str, host: str, reason: str) -> str:
        """Stop `host` measuring for the rest of the run; the first reason stays (a retry never rewrites it).
        Returns the reason in force."""
        with self.engine.begin() as conn:
            found = self._quarantine_reason(conn, run_id, host)
            if found is not None:
                return found
            conn.execute(
                quarantines.insert().values(run_id=run_id, host=host, reason=reason, at=dt.datetime.now(dt.UTC))
            )
        return reason

    def quarantined(self, run_id: str, host: str | None) -> str | None:
        """Why `host` stopped measuring in this run, or None."""
        with self.engine.connect() as conn:
            return self._quarantine_reason(conn, run_id, host)

    @staticmethod
    def _quarantine_reason(conn: sa.Connection, run_id: str, host: str | None) -> str | None:
        query = sa.select(quarantines.c.reason).where(quarantines.c.run_id == run_id, quarantines.c.host == host)
        return conn.execute(query).scalar()

    def save_plan(self, run_id: str, host: str, planned: Iterable[tuple[str, str]]) -> None:
        """The host's planned cases of the run (case key, label), replacing what it planned before (a retry)."""
        rows = [
            {"run_id": run_id, "host": host, "case_key": key, "position": i, "label": label}
            for i, (key, label) in enumerate(planned)
        ]
        with self.engine.begin() as conn:
            conn.execute(planned_cases.delete().where(planned_cases.c.run_id == run_id, planned_cases.c.host == host))
            if rows:
                conn.execute(planned_cases.insert(), rows)

    def planned(self, run_id: str) -> list[dict]:
        """Every host's planned cases of the run (host, case key, label), by host, in the order planned."""
        query = (
            sa.select(planned_cases.c.host, planned_cases.c.case_key, planned_cases.c.label)
            .where(planned_cases.c.run_id == run_id)
            .order_by(planned_cases.c.host, planned_cases.c.position)
        )
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def quarantines(self, run_id: str | None = None) -> list[dict]:
        query = sa.select(quarantines).order_by(quarantines.c.at)
        if run_id is not None:
            query = query.where(quarantines.c.run_id == run_id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def alerts_already_sent(self, run_id: str, channel: str) -> set[str]:
        """The keys of this run's alerts `channel` has delivered."""
        query = sa.select(alerts_sent.c.alert_key).where(
            alerts_sent.c.run_id == run_id, alerts_sent.c.channel == channel
        )
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    @contextlib.contextmanager
    def delivering(self, run_id: str) -> Iterator[None]:
        """Held while a process checks, sends and records the run's alerts: two hosts' stopped tasks, or a stopped
        task and the DAG's failure callback, announcing the same alert at once take turns, and the second finds it
        recorded instead of sending it again (PostgreSQL: an advisory lock; SQLite: a lock file beside it)."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as conn:
                key = hash_key(f"alerts:{run_id}")
                conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
                conn.commit()
                try:
                    yield
                finally:
                    with contextlib.suppress(sa.exc.SQLAlchemyError):  # a lost connection released it already
                        conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                        conn.commit()
            return
        with _sqlite_file_lock(self.engine, "alerts"):
            yield

    def mark_alerts_sent(self, run_id: str, channel: str, keys: Iterable[str]) -> None:
        """Record delivered alerts (after delivery: a failed send is retried, a delivered one never repeated).  Two
        hosts' tasks announcing at once may both deliver; the second record is dropped, never an error."""
        rows = [
            {"run_id": run_id, "alert_key": k, "channel": channel, "sent_at": dt.datetime.now(dt.UTC)} for k in keys
        ]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(_insert_new(self.engine, alerts_sent), rows)

    def lift_quarantine(self, run_id: str, host: str) -> None:
        """A host that passed its pre-flight again (its tasks cleared after a repair) measures again in the run."""
        with self.engine.begin() as conn:
            conn.execute(quarantines.delete().where(quarantines.c.run_id == run_id, quarantines.c.host == host))


def fingerprints_query(env_keys: Iterable[str]) -> sa.Select:
    """Each environment key's fingerprint: its first result's (the store's and the read-only pages' one query)."""
    keys = sorted(set(env_keys))
    first = sa.select(sa.func.min(results.c.id)).where(results.c.env_key.in_(keys)).group_by(results.c.env_key)
    return sa.select(results.c.env_key, results.c.environment).where(results.c.id.in_(first))


def hash_key(text: str) -> int:
    """A stable signed 64-bit key for PostgreSQL's advisory locks."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)
