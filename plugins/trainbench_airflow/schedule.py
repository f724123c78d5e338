"""When a scheduled run should measure: not when it starts long after its slot.

Airflow's trigger timetable, with catchup off, creates the most recent missed run as soon
as a DAG is unpaused; for a benchmark that is a 40-minute run nobody asked for, holding the
queue against manual triggers.  Manual runs and backfills are always on time.
"""

from __future__ import annotations

import datetime as dt

LATE_AFTER = dt.timedelta(hours=6)  # a scheduled run starting later than this after its slot skips itself


def skips(run_type: str, slot: dt.datetime | None, started: dt.datetime, late_after: dt.timedelta) -> bool:
    """Whether a run of `run_type` for `slot` that started at `started` skips itself (`on_time`)."""
    return run_type == "scheduled" and slot is not None and started - slot > late_after


def on_time(dag_run, late_after: dt.timedelta, now: dt.datetime | None = None) -> bool:
    run_type = str(getattr(dag_run.run_type, "value", dag_run.run_type))
    slot = dag_run.logical_date or dag_run.run_after
    now = now or dt.datetime.now(dt.UTC)
    if skips(run_type, slot, now, late_after):
        print(f"scheduled for {slot:%Y-%m-%d %H:%M} UTC, starting {now - slot} late: skipped; the next slot measures")
        return False
    return True
