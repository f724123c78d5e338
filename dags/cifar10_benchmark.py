"""
### CIFAR-10 training benchmark

Trains the same CIFAR-10 convnet (420,096 parameters, see `docs/model-spec.md`)
with every configured framework on every device set, times each run as `time` does
(real/user/sys) and records peak memory per device, then collects and publishes the
results: one row per framework x device set x repeat in the results database, and a
report laid out like the original hand-made log.

Pipeline: the run's settings, resolved once; per fleet host (`[fleet] hosts`, one Celery queue
and one single-slot worker each): pre-flight (the host doctor's checks: a host that cannot measure
is quarantined for the run, its cases become `unavailable` naming the failed check, the other hosts
go on) -> discover devices -> prepare dataset -> plan the matrix (both
with the resolved settings) -> one `train` task per case
x repeat, one at a time, on that host's queue, so two runs never share a device while
hosts work in parallel -> collect -> validate (Great Expectations) -> detect regressions against
history -> publish (Markdown like the log, HTML with charts, CSV, Parquet; updates the
`trainbench_results` asset, so other DAGs can run on new results) -> regression gate (fails
the run on a regression when `fail_on_regression` is set) -> check complete (fails the run
when a case's task failed or was stopped, after everything it measured is published); after
publishing, alerts: regressions, tainted repeats and quarantined hosts go out by email and
Slack-compatible webhook (`[alerts]`, secrets in Airflow connections), and so does a failed run
(the DAG's failure callback) and a run not finished `[alerts] late_after_hours` after its slot
(a deadline alert).

Defaults come from `trainbench.toml`; the trigger form overrides them per run.
Runs weekly (Monday 03:00 UTC). A scheduled run that starts more than 6 hours late (the
DAG was just unpaused, say) skips itself instead of starting a long run by surprise;
manual runs and backfills always run. Backfill after a driver upgrade to compare drivers.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, TaskGroup, dag, task
from airflow.timetables.trigger import CronTriggerTimetable

from trainbench import config
from trainbench_airflow import assets
from trainbench_airflow.errors import fail_without_retry
from trainbench_airflow.notifiers import RunFailed, deadline
from trainbench_airflow.operators import TrainCaseOperator
from trainbench_airflow.schedule import LATE_AFTER

CONFIG = config.load()
PARAMS = {
    **{name: Param(CONFIG.settings.as_dict()[name], **schema) for name, schema in config.settings_schema().items()},
    "fail_on_regression": Param(
        CONFIG.regression.fail_on_regression,
        type="boolean",
        description="Fail the run when a case regressed against its history.",
    ),
}


def run_settings(params: dict, dag_run) -> config.Settings:
    """This run's settings: the configuration file overridden by the trigger form.

    A backfill without a conf of its own re-measures a week as that week's first run did
    (after a driver upgrade, old and new rows then differ only in the environment).
    """
    chosen = {k: params[k] for k in config.settings_schema()}
    if str(getattr(dag_run.run_type, "value", dag_run.run_type)) == "backfill" and not dag_run.conf:
        from trainbench.workflows import pipeline

        stored = pipeline.original_settings(CONFIG, logical_date(dag_run)) or {}
        chosen |= {k: v for k, v in stored.items() if k in chosen}
    return CONFIG.settings.overridden(**chosen)


def logical_date(dag_run) -> dt.datetime:
    """The week the run measures: its logical date, or when it was triggered (manual runs may have none)."""
    return dag_run.logical_date or dag_run.run_after


@dag(
    dag_id="cifar10_benchmark",
    schedule=CronTriggerTimetable("0 3 * * 1", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 5, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["benchmark", "cifar10", "gpu"],
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=2)},
    params=PARAMS,
    on_failure_callback=RunFailed(CONFIG),
    deadline=deadline(CONFIG),
)
def cifar10_benchmark():
    @task
    @fail_without_retry
    def check_conf(dag_run=None) -> None:
        """Airflow merges unknown conf keys into the params silently; refuse them before anything runs."""
        try:
            config.check_run_conf(dag_run.conf or {}, PARAMS)
        except config.ConfigError as exc:
            from trainbench.workflows import pipeline

            pipeline.refuse_run(CONFIG, dag_run.run_id, str(exc))
            raise

    @task.short_circuit(ignore_downstream_trigger_rules=True)
    def on_time(dag_run=None) -> bool:
        """A scheduled run starting long after its slot (just unpaused) skips; the next Monday measures."""
        from trainbench_airflow.schedule import on_time

        return on_time(dag_run, LATE_AFTER)

    @task
    @fail_without_retry
    def resolve_settings(params: dict | None = None, dag_run=None) -> dict:
        """Once per run (a backfill's may come from the database), for every host's tasks."""
        return run_settings(params, dag_run).as_dict()

    @task
    @fail_without_retry
    def preflight(settings: dict, host: str, dag_run=None) -> dict:
        """The host doctor on the host itself: a host that cannot measure is quarantined; a run asking it for GPUs
        it lacks fails here, naming them."""
        from trainbench.workflows import doctor
        from trainbench_airflow.notifiers import announce_quarantine

        cfg = config.load()
        checked = doctor.preflight(cfg, dag_run.run_id, host, config.Settings(**settings))
        for check in checked["checks"]:
            print(f"{check['status']:4} {check['name']}: {check['detail']}")
        announce_quarantine(cfg, dag_run.run_id, dag_run.dag_id, host, log=print)
        return checked

    @task
    def discover_devices(checked: dict) -> dict:
        """A quarantined host's NVML may be what failed: its cases are then planned without its GPUs."""
        from trainbench.workflows import pipeline

        return pipeline.discover_devices(quarantined=not checked["can_measure"])

    @task
    @fail_without_retry
    def prepare_dataset(inventory: dict, settings: dict, checked: dict) -> dict:
        """Not on a quarantined host (its data may be what failed): its cases are `unavailable` without it."""
        from trainbench.workflows import pipeline

        if not checked["can_measure"]:
            return {"kind": "none", "data_dir": ""}
        return pipeline.prepare_dataset(CONFIG, config.Settings(**settings), inventory)

    @task
    @fail_without_retry
    def plan_matrix(
        inventory: dict, dataset: dict, settings: dict, host: str, checked: dict, dag_run=None
    ) -> list[dict]:
        from trainbench.workflows import pipeline

        chosen = config.Settings(**settings)
        pipeline.start_run(CONFIG, dag_run.run_id, chosen, logical_date(dag_run))
        planned = pipeline.plan_matrix(chosen, inventory, dataset, host, quarantined=not checked["can_measure"])
        pipeline.record_plan(CONFIG, dag_run.run_id, host, planned)
        return [spec.to_dict() for spec in planned]

    @task(trigger_rule="all_done")
    def collect(run_id: str | None = None) -> dict:
        from trainbench.workflows import pipeline

        return pipeline.collect(CONFIG, run_id)

    @task
    @fail_without_retry
    def validate(specs_per_host: list[list[dict]], run_id: str | None = None) -> dict:
        from trainbench.planning import CaseSpec
        from trainbench.workflows import pipeline

        planned = [CaseSpec.from_dict(s) for specs in specs_per_host for s in specs]
        return pipeline.validate_results(CONFIG, run_id, planned)

    @task
    def detect_regressions(run_id: str | None = None) -> list[dict]:
        from trainbench.workflows import pipeline

        return pipeline.detect_regressions(CONFIG, run_id, log=print)

    @task(outlets=[assets.RESULTS])
    def publish(verdicts: list[dict], run_id: str | None = None) -> dict:
        from trainbench.workflows import pipeline

        return pipeline.publish(CONFIG, run_id, verdicts)

    @task
    @fail_without_retry
    def regression_gate(verdicts: list[dict], params: dict | None = None) -> list[str]:
        from trainbench.workflows import pipeline

        return pipeline.regression_gate(verdicts, params["fail_on_regression"])

    @task(trigger_rule="all_done")
    def send_alerts(dag_run=None) -> dict:
        """After publishing, so links open; a failed delivery retries and sends only what did not arrive."""
        from trainbench_airflow.notifiers import send_run_alerts

        return send_run_alerts(CONFIG, dag_run.run_id, dag_run.dag_id, log=print)

    @task(trigger_rule="all_done")
    @fail_without_retry
    def check_complete(ti=None, run_id: str | None = None) -> dict:
        """Last: the run fails when a case's task failed or was stopped, after all it measured is published."""
        from trainbench.workflows import pipeline

        failed = ti.get_ti_count(
            dag_id=ti.dag_id,
            task_ids=[f"{host}.train" for host in CONFIG.hosts],
            run_ids=[run_id],
            states=["failed", "upstream_failed"],
        )
        return pipeline.check_complete(CONFIG, run_id, failed)

    start = on_time()
    check_conf() >> start
    settings = resolve_settings()
    start >> settings
    collected = collect()
    specs_per_host = []
    for host in CONFIG.hosts:  # everything that touches a host runs on its queue, one task at a time
        with TaskGroup(group_id=host):
            checked = preflight.override(queue=host)(settings, host)
            devices = discover_devices.override(queue=host)(checked)
            dataset = prepare_dataset.override(queue=host)(devices, settings, checked)
            specs = plan_matrix.override(queue=host)(devices, dataset, settings, host, checked)
            trained = TrainCaseOperator.partial(
                task_id="train",
                queue=host,
                max_active_tis_per_dagrun=1,
                map_index_template="{{ case_label }}",
                execution_timeout=dt.timedelta(seconds=CONFIG.settings.timeout_s + 600),
                retries=3,
                retry_delay=dt.timedelta(seconds=CONFIG.retry_delay_s),
            ).expand(spec=specs)
        trained >> collected
        specs_per_host.append(specs)
    validated = validate(specs_per_host)
    verdicts = detect_regressions()
    published = publish(verdicts)
    gate = regression_gate(verdicts)
    collected >> validated >> verdicts
    published >> gate >> check_complete()
    published >> send_alerts()


cifar10_benchmark()
