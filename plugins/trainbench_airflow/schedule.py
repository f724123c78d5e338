"""When a scheduled run should measure: not when it starts long after its slot.

Airflow's trigger timetable, with catchup off, creates the most recent missed run as soon
as a DAG is unpaused; for a benchmark that is a 40-minute run nobody asked for, holding the
queue against manual triggers.  Manual runs and backfills are always on time.
"""

from __future__ import annotations

import datetime as dt


def on_time(dag_run, late_after: dt.timedelta, now: dt.datetime | None = None) -> bool:
    run_type = str(getattr(dag_run.run_type, "value", dag_run.run_type))
    slot = dag_run.logical_date or dag_run.run_after
    if run_type != "scheduled" or slot is None:
        return True
    late = (now or dt.datetime.now(dt.UTC)) - slot
    if late > late_after:
        print(f"scheduled for {slot:%Y-%m-%d %H:%M} UTC, starting {late} late: skipped; the next slot measures")
        return False
    return True
