"""
### Before and after an environment change

Runs when the environment watch announces that a host's environment changed (an event on
`trainbench_environment_<host>`), or when triggered by hand with `{"host": "<host>"}` after an upgrade the watch
has not seen yet.  On that host only, on its queue, the cases of the last published run measured there before the
change, those it can move (`before_after.touches`), are measured again with that run's stored settings, one case
at a time, each until its change is decided (`trainbench.checks.environment_change`: repeats are added up to
`[environment_change] cap`; a direction found is measured a second time and announced only if confirmed).  "Before"
is the old interpreter measured again alongside, alternating with the new, where the change only pointed the host
at another interpreter that is still there; otherwise each case's history in the environment it had.  Per case and
metric (steady images/s, wall time): the change with its 95 % interval and a verdict, `slower`, `faster`, `no
change` or `inconclusive`.

Publishes `environment_change.md` and `.html` in the run's folder and updates `trainbench_environment_verdicts`
for downstream DAGs; a verdict other than `no change`, a tainted repeat or a quarantined host is sent as an alert
(`[alerts]`), and so is a failed run.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import AssetAny, Param, TaskGroup, dag, task

from trainbench import config
from trainbench.store.results import ENVIRONMENT_CHANGE
from trainbench_airflow import assets
from trainbench_airflow.errors import fail_without_retry
from trainbench_airflow.notifiers import RunFailed

CONFIG = config.load()


@dag(
    dag_id=ENVIRONMENT_CHANGE,  # named after its runs' source: alerts link their page by it
    schedule=AssetAny(*(assets.environment(host) for host in CONFIG.hosts)),
    start_date=dt.datetime(2026, 1, 5, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["benchmark", "environment"],
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=2)},
    on_failure_callback=RunFailed(CONFIG),
    params={
        "host": Param(
            None,
            type=["null", "string"],
            enum=[None, *CONFIG.hosts],
            description="For a manual run: the host whose environment changed (an asset event names its own).",
        )
    },
)
def environment_change():
    @task
    @fail_without_retry
    def what_changed(params: dict, triggering_asset_events=None) -> dict:
        """Per host that changed, when and what: the events' (each host's newest), or the form's host, now."""
        from trainbench.workflows import before_after

        found = [
            (asset.name.removeprefix("trainbench_environment_"), dict(e.extra or {}), e.timestamp)
            for asset, events in (triggering_asset_events or {}).items()
            for e in events
        ]
        if found:
            return before_after.events(found)
        if not params.get("host"):
            raise ValueError(f"a manual run names the host whose environment changed; one of {list(CONFIG.hosts)}")
        now = dt.datetime.now(dt.UTC).isoformat()
        return {params["host"]: {"host": params["host"], "observed_at": now, "previous_at": None, "changed": {}}}

    @task
    def start(dag_run=None) -> None:
        from trainbench.workflows import before_after

        before_after.start(CONFIG, dag_run.run_id)

    @task
    def changed_here(changes: dict, host: str) -> None:
        """On the default queue: a host that did not change is skipped here, so its worker (down, or busy with a long
        weekly run) never holds up the hosts that did."""
        from airflow.sdk.exceptions import AirflowSkipException

        if host not in changes:
            raise AirflowSkipException(f"{host}: its environment did not change")

    @task
    def discover_devices() -> dict:
        from trainbench.workflows import pipeline

        return pipeline.discover_devices()

    @task
    @fail_without_retry
    def plan(changes: dict, inventory: dict, host: str) -> list[dict]:
        from trainbench.checks.environment_change import Trigger
        from trainbench.workflows import before_after

        if host not in changes:
            return []
        found = Trigger.from_event(changes[host])
        return before_after.plan(CONFIG, host, found.cutoff, inventory, changed=found.changed)

    @task(map_index_template="{{ case_label }}", retries=0)
    def measure(case: dict, changes: dict, dag_run=None) -> dict:
        """Never retried: a retry would start the case's sequential measurement again, looking at its data anew
        with the alpha already spent."""
        from airflow.sdk import get_current_context

        from trainbench.checks.environment_change import Trigger
        from trainbench.workflows import before_after

        get_current_context()["case_label"] = f"{case['framework']} | {case['device_set']}"  # type: ignore[typeddict-unknown-key]
        found = Trigger.from_event(changes[case["host"]])
        return before_after.measure(CONFIG, dag_run.run_id, case, found.changed, found.changed_at)

    @task(trigger_rule="all_done", outlets=[assets.ENVIRONMENT_VERDICTS])
    def publish(changes: dict, dag_run=None, outlet_events=None) -> dict:
        from trainbench.checks.environment_change import Trigger
        from trainbench.reports.environment_change import write_report

        found = write_report(CONFIG, dag_run.run_id, [Trigger.from_event(extra) for extra in changes.values()])
        outlet_events[assets.ENVIRONMENT_VERDICTS].extra = {"run_id": dag_run.run_id, **found}
        return found

    @task(trigger_rule="all_done", retries=2)
    def send_alerts(dag_run=None) -> dict:
        """A failed delivery retries and sends only what did not arrive."""
        from trainbench_airflow.notifiers import send_run_alerts

        return send_run_alerts(CONFIG, dag_run.run_id, dag_run.dag_id, log=print)

    changes = what_changed()
    started = start()
    changes >> started
    report = publish(changes)
    for host in CONFIG.hosts:  # the changed host's cases run on its queue, one at a time
        with TaskGroup(group_id=host):
            gate = changed_here(changes, host)
            inventory = discover_devices.override(queue=host)()
            gate >> inventory
            cases = plan.override(queue=host)(changes, inventory, host)
            measured = (
                measure.override(queue=host, max_active_tis_per_dagrun=1).partial(changes=changes).expand(case=cases)
            )
        started >> gate
        measured >> report
    report >> send_alerts()


environment_change()
