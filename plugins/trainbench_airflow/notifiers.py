"""Airflow's side of trainbench.workflows.alerts: channels from Airflow connections, and the three ways alerts leave
a DAG.

- `send_run_alerts`, called by the DAG's alert task: the run's findings (a failed delivery fails the task, whose
  retry sends only what was not delivered).
- `RunFailed`, the DAG's `on_failure_callback` (run by the Dag processor).
- `deadline(config)`, the DAG's `deadline=`: Airflow's deadline alert, `late_after_hours` after the run's logical
  date (a weekly run's slot); its callback `late_run_alert` is an AsyncCallback, run by the triggerer (this
  deployment runs one; a SyncCallback would go to the default Celery queue).  A run that succeeds before the
  deadline has it removed; one that failed already had its failure alert.

Secrets stay in the connections: SMTP in `[alerts] smtp_conn_id` (host, port, login, password, extra
{"starttls": true}), the webhook URL in `webhook_conn_id` (as the URI, or as `host` of a JSON connection).  A
connection that does not exist turns its channel off, with a log line; so does an empty `email_to`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import sys
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook, BaseNotifier, Connection
from airflow.sdk.definitions.deadline import AsyncCallback, DeadlineAlert, DeadlineReference
from airflow.sdk.exceptions import AirflowNotFoundException

from trainbench.config import Config
from trainbench_airflow.schedule import LATE_AFTER, skips

if TYPE_CHECKING:  # the DAG files import this module: the core's heavier modules load when an alert is sent
    from trainbench.workflows.alerts import Alert, Channel, Links

log = logging.getLogger(__name__)
Log = Callable[[str], object]
TRUE = ("true", "1", "yes", "on")


def _connection(conn_id: str, log: Log) -> Connection | None:
    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        log(f"alerts: no Airflow connection {conn_id!r}: that channel is off")
        return None


def _flag(value: Any) -> bool:
    """A connection's extra from a URI holds strings ("true"), from JSON booleans."""
    return value is True or str(value).strip().lower() in TRUE


def webhook_url(conn: Connection) -> str:
    """The URL as the connection holds it: the whole URI (https://hooks.slack.com/services/...), with the login,
    password and query Airflow parsed out of it put back, or `host` of a JSON connection when that is a whole URL."""
    host = conn.host or ""
    if "://" in host:
        return host
    userinfo = ""
    if conn.login or conn.password:
        password = f":{urllib.parse.quote(conn.password, safe='')}" if conn.password else ""
        userinfo = f"{urllib.parse.quote(conn.login or '', safe='')}{password}@"
    port = f":{conn.port}" if conn.port else ""
    query = urllib.parse.urlencode(
        {k: v if isinstance(v, str) else json.dumps(v) for k, v in conn.extra_dejson.items()}
    )
    return f"{conn.conn_type}://{userinfo}{host}{port}/{conn.schema or ''}" + (f"?{query}" if query else "")


def channels(config: Config, log: Log) -> list[Channel]:
    """The channels configured: email when `[alerts] email_to` names someone and its connection exists, the
    webhook when its connection exists."""
    from trainbench.workflows import alerts

    settings = config.alerts
    found: list[Channel] = []
    if not settings.email_to:
        log("alerts: [alerts] email_to is empty: email is off")
    elif (smtp := _connection(settings.smtp_conn_id, log)) is not None:
        found.append(
            alerts.Smtp(
                host=smtp.host or "localhost",
                port=smtp.port or 25,
                login=smtp.login or "",
                password=smtp.password or "",
                starttls=_flag(smtp.extra_dejson.get("starttls", False)),
                sender=settings.email_from,
                to=settings.email_to,
            )
        )
    if (hook := _connection(settings.webhook_conn_id, log)) is not None:
        found.append(alerts.Webhook(webhook_url(hook)))
    return found


def links(config: Config, dag_id: str, run_id: str) -> Links:
    """Links from `[alerts] base_url`, else Airflow's `[api] base_url`; a before/after run's report is its
    environment change page (the DAG is named after the source of its runs)."""
    from airflow.sdk.configuration import conf

    from trainbench.store import run_folder
    from trainbench.store.results import ENVIRONMENT_CHANGE
    from trainbench.workflows.alerts import Links

    page = run_folder.ENVIRONMENT_CHANGE_PAGE if dag_id == ENVIRONMENT_CHANGE else run_folder.REPORT_PAGE
    return Links.of(config.alerts.base_url or conf.get("api", "base_url", fallback=""), dag_id, run_id, page)


def _deliver(config: Config, run_id: str, found: list[Alert], log: Log) -> dict[str, int]:
    from trainbench.store.results import open_store
    from trainbench.workflows import alerts

    try:
        store = open_store(config.database_url)
    except Exception as exc:  # the database down or refusing: often why a run failed or is late
        log(f"alerts: results database unreachable ({exc}); sending without the record of what was sent")
        store = None
    sent = alerts.deliver(store, run_id, found, channels(config, log))
    log(f"alerts: {len(found)} for run {run_id}; sent now per channel: {sent}")
    return sent


def send_run_alerts(config: Config, run_id: str, dag_id: str, log: Log) -> dict[str, int]:
    """The run's findings to every channel (what each already delivered is skipped); raises DeliveryFailed."""
    from trainbench.workflows import alerts

    return _deliver(config, run_id, alerts.for_run(config, run_id, links(config, dag_id, run_id)), log)


def announce_quarantine(config: Config, run_id: str, dag_id: str, host: str, log: Log) -> dict[str, int]:
    """A host quarantined mid-run is announced when it happens, not hours later at the run's end (its quarantine
    alert only; each channel sends it once).  Nothing here ever fails the host's task (an unreachable database or
    channel is logged): the run's alert task sends what did not arrive."""
    from trainbench.store.results import open_store
    from trainbench.workflows import alerts

    try:
        found = [
            alerts.quarantined(run_id, q, links(config, dag_id, run_id))
            for q in open_store(config.database_url).quarantines(run_id)
            if q["host"] == host
        ]
        return _deliver(config, run_id, found, log) if found else {}
    except Exception as exc:
        log(f"alerts: the quarantine of {host} could not be announced now ({exc}); the run's alert task retries")
        return {}


def announce_stopped(config: Config, run_id: str, dag_id: str, task: str, log: Log) -> dict[str, int]:
    """A DAG run stopped by hand runs no later task and, failed through the API, no failure callback: its stopped
    case task says so (the same alert as a failed run's, so each channel sends it once).  Never fails the task."""
    from trainbench.workflows import alerts

    reason = "stopped while measuring; what it measured is in its report, not published"
    try:
        return _deliver(config, run_id, [alerts.failed_run(run_id, reason, links(config, dag_id, run_id), task)], log)
    except Exception as exc:
        log(f"alerts: the stopped run could not be announced ({exc})")
        return {}


class RunFailed(BaseNotifier):
    """The DAG's on_failure_callback: a failed-run alert naming the reason and the last failed task."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config

    def notify(self, context) -> None:
        from trainbench.workflows import alerts

        dag_id, run_id = context["dag"].dag_id, context["run_id"]
        if refused := self._refusal(run_id):
            _deliver(
                self.config,
                run_id,
                [alerts.refused_run(run_id, refused, links(self.config, dag_id, run_id))],
                self.log.info,
            )
            return
        ti = context.get("ti")
        task = "" if ti is None else f"{ti.task_id}" + (f"[{ti.map_index}]" if ti.map_index >= 0 else "")
        cleared = getattr(context.get("dag_run"), "clear_number", 0) or 0
        reason = context.get("reason") or "failed"
        found = [alerts.failed_run(run_id, reason, links(self.config, dag_id, run_id), task, cleared)]
        _deliver(self.config, run_id, found, self.log.info)

    def _refusal(self, run_id: str) -> str | None:
        """Why the run was refused before measuring (its last failed task is then only the one that said so);
        None when it was not, or the database cannot say (the run's failure is announced all the same)."""
        from trainbench.workflows import pipeline

        try:
            return pipeline.refusal(self.config, run_id)
        except Exception as exc:
            self.log.info("alerts: could not read whether run %s was refused (%s)", run_id, exc)
            return None


async def late_run_alert(late_after_hours: float, context: dict) -> None:
    """The deadline's callback, awaited by the triggerer with the run as `context["dag_run"]` (the API's form of
    a DAG run).  Blocking work (connections, the database, SMTP) runs on a thread: the triggerer's loop serves
    every other trigger."""
    await asyncio.to_thread(_late_run, late_after_hours, context["dag_run"])


def _late_run(late_after_hours: float, run: dict) -> None:
    from trainbench import config as configuration
    from trainbench.store.results import open_store
    from trainbench.workflows import alerts

    cfg = configuration.load()
    run_id, dag_id = run["dag_run_id"], run["dag_id"]
    if run.get("state") in ("success", "failed"):
        log.info("run %s already %s: not late", run_id, run["state"])
        return
    if run.get("run_type") != "scheduled":
        log.info("run %s is %s, not a week's slot: never late", run_id, run.get("run_type"))
        return
    slot = dt.datetime.fromisoformat(run["logical_date"])
    started = next((dt.datetime.fromisoformat(str(run[k])) for k in ("start_date", "queued_at") if run.get(k)), None)
    if started is not None and skips("scheduled", slot, started, LATE_AFTER):
        log.info("run %s started %s after its slot: it skips itself (on_time), never late", run_id, started - slot)
        return
    rows = open_store(cfg.database_url).current_rows(run_id)
    found = [alerts.late_run(run_id, slot, late_after_hours, rows, links(cfg, dag_id, run_id))]
    _deliver(cfg, run_id, found, log.info)


def deadline(config: Config, argv: list[str] = sys.argv) -> DeadlineAlert | None:
    """What the DAG passes as `deadline=`: late `[alerts] late_after_hours` after the run's logical date.

    None under `airflow dags test`: Airflow 3.3.2's `dag.test()` deserializes the DAG without storing its deadline
    alerts and then fails finishing a successful run ("'dict' object has no attribute 'hex'"); the scheduler
    stores them, so every deployed run has its deadline."""
    if argv[1:3] == ["dags", "test"]:
        return None
    hours = config.alerts.late_after_hours
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=dt.timedelta(hours=hours),
        callback=AsyncCallback(late_run_alert, kwargs={"late_after_hours": hours}),
        name="trainbench late run",
    )
