"""
### CIFAR-10 training benchmark

Trains the same CIFAR-10 convnet (420,096 parameters, see `shared/notes/model-spec.md`)
with every configured framework on every device set, times each run as `time` does
(real/user/sys) and records peak memory per device, then collects and publishes the
results: one row per framework x device set x repeat in the results database, and a
report laid out like the original hand-made log.

Pipeline: discover devices -> prepare dataset -> plan the matrix -> one `train` task per
case x repeat (queue `gpu`, pool `trainbench_devices` with one slot, so two runs never
share a device) -> collect -> validate (Great Expectations) -> detect regressions against
history -> publish (Markdown like the log, HTML with charts, CSV, Parquet; updates the
`trainbench_results` asset, so other DAGs can run on new results) -> regression gate (fails
the run on a regression when `fail_on_regression` is set).

Defaults come from `trainbench.toml`; the trigger form overrides them per run.
Runs weekly (Monday 03:00 UTC); backfill after a driver upgrade to compare drivers.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, Param, dag, task
from airflow.timetables.trigger import CronTriggerTimetable

from trainbench import config
from trainbench_airflow.errors import fail_without_retry
from trainbench_airflow.operators import TrainCaseOperator

CONFIG = config.load()
POOL = "trainbench_devices"
RESULTS = Asset(name="trainbench_results", uri="trainbench://results")


def run_settings(params: dict) -> config.Settings:
    """This run's settings: the configuration file overridden by the trigger form."""
    return CONFIG.settings.overridden(**{k: params[k] for k in config.settings_schema()})


@dag(
    dag_id="cifar10_benchmark",
    schedule=CronTriggerTimetable("0 3 * * 1", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 5, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["benchmark", "cifar10", "gpu"],
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=2)},
    params={
        **{name: Param(CONFIG.settings.as_dict()[name], **schema) for name, schema in config.settings_schema().items()},
        "fail_on_regression": Param(
            CONFIG.regression.fail_on_regression,
            type="boolean",
            description="Fail the run when a case regressed against its history.",
        ),
    },
)
def cifar10_benchmark():
    @task(queue="gpu")  # the GPU host's devices, not the scheduler's
    def discover_devices() -> dict:
        from trainbench import pipeline

        return pipeline.discover_devices()

    @task(queue="gpu")  # the data must be where the trainers run
    @fail_without_retry
    def prepare_dataset(params: dict | None = None) -> dict:
        from trainbench import pipeline

        return pipeline.prepare_dataset(CONFIG, run_settings(params))

    @task
    @fail_without_retry
    def plan_matrix(
        inventory: dict, dataset: dict, params: dict | None = None, run_id: str | None = None
    ) -> list[dict]:
        from trainbench import pipeline

        settings = run_settings(params)
        pipeline.start_run(CONFIG, run_id, settings)
        return [spec.to_dict() for spec in pipeline.plan_matrix(settings, inventory, dataset)]

    @task(trigger_rule="all_done")
    def collect(run_id: str | None = None) -> dict:
        from trainbench import pipeline

        return pipeline.collect(CONFIG, run_id)

    @task
    @fail_without_retry
    def validate(specs: list[dict], collected: dict, run_id: str | None = None) -> dict:
        from trainbench import pipeline
        from trainbench.planning import CaseSpec

        print(f"collected: {collected}")
        return pipeline.validate_results(CONFIG, run_id, [CaseSpec.from_dict(s) for s in specs])

    @task
    def detect_regressions(validated: dict, run_id: str | None = None) -> list[dict]:
        from trainbench import pipeline

        return pipeline.detect_regressions(CONFIG, run_id, log=print)

    @task(outlets=[RESULTS])
    def publish(verdicts: list[dict], run_id: str | None = None) -> dict:
        from trainbench import pipeline

        return pipeline.publish(CONFIG, run_id)

    @task
    @fail_without_retry
    def regression_gate(verdicts: list[dict], published: dict, params: dict | None = None) -> list[str]:
        from trainbench import pipeline

        return pipeline.regression_gate(verdicts, params["fail_on_regression"])

    specs = plan_matrix(discover_devices(), prepare_dataset())
    trained = TrainCaseOperator.partial(
        task_id="train",
        queue="gpu",
        pool=POOL,
        map_index_template="{{ case_label }}",
        execution_timeout=dt.timedelta(seconds=CONFIG.settings.timeout_s + 600),
        retries=3,
        retry_delay=dt.timedelta(minutes=5),
    ).expand(spec=specs)
    collected = collect()
    trained >> collected
    verdicts = detect_regressions(validate(specs, collected))
    regression_gate(verdicts, publish(verdicts))


cifar10_benchmark()
