"""
### Environment watch

Every six hours, one light task per fleet host, on that host's queue (so it never runs beside a measurement
there: each host's worker has one slot), reads what the host's measurements depend on without training
anything (driver and CUDA versions, GPU models and VBIOS, each framework interpreter's packages and CUDA
libraries, the trainers' revisions; see `trainbench.workflows.watch`) and stores it with its time.

When the reading differs from the host's previous one, the task emits an event on that host's asset
(`trainbench_environment_<host>`) whose extra names the host and every changed value (old and new); when
nothing changed (or on a host's first reading) the task is skipped and no event is emitted.  Downstream DAGs
schedule on these assets to measure the host before and after the change.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, dag, task
from airflow.sdk.exceptions import AirflowSkipException
from airflow.timetables.trigger import CronTriggerTimetable

from trainbench import config
from trainbench_airflow import assets

CONFIG = config.load()
ENVIRONMENTS = {host: assets.environment(host) for host in CONFIG.hosts}


@dag(
    dag_id="environment_watch",
    schedule=CronTriggerTimetable("0 */6 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 5, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["benchmark", "environment"],
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=5)},
)
def environment_watch():
    for host, asset in ENVIRONMENTS.items():

        @task(task_id=f"watch_{host}", queue=host, outlets=[asset])
        def watch(host: str = host, asset: Asset = asset, outlet_events=None, dag_run=None) -> dict:
            from trainbench.workflows import pipeline

            found = pipeline.watch_environment(CONFIG, host, run_id=dag_run.run_id)
            if not found["changed"]:
                why = "its first reading" if found["previous_at"] is None else f"unchanged since {found['previous_at']}"
                raise AirflowSkipException(f"{host}: {why}")
            for path, (old, new) in found["changed"].items():
                print(f"{host}: {path} {old} -> {new}")
            outlet_events[asset].extra = found
            return found

        watch()


environment_watch()
