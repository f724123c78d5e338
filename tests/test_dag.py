"""The DAG file: imports cleanly, parses fast, and its Params reject bad trigger input."""

import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def bag():
    from airflow.dag_processing.dagbag import DagBag

    found = DagBag(dag_folder=str(ROOT / "dags"))
    assert found.import_errors == {}
    assert sorted(found.dags) == ["cifar10_benchmark", "environment_change", "environment_watch"]
    for stat in found.dagbag_stats:
        print(f"parse time of {stat.file}: {stat.duration.total_seconds():.3f} s")
        assert stat.duration.total_seconds() < 0.5
    return found


@pytest.fixture(scope="module")
def dag(bag):
    return bag.dags["cifar10_benchmark"]


@pytest.mark.parametrize("dag_id", ["cifar10_benchmark", "environment_change", "environment_watch"])
def test_dag_integrity_conventions(bag, dag_id):
    """Astronomer's template's checks: tags, a doc, and at least 2 retries by default; a task that must not retry
    says so itself."""
    found = bag.dags[dag_id]
    assert found.tags and found.doc_md and found.default_args.get("retries", 0) >= 2
    single = {t.task_id.rsplit(".", 1)[-1] for t in found.tasks if t.retries < 2}
    assert single <= {"measure"}, single  # a before/after measurement: see its docstring


def test_the_before_after_dag_runs_on_every_host_s_environment_and_measures_on_that_host_s_queue(bag):
    change = bag.dags["environment_change"]
    assert [a.name for a in change.timetable.asset_condition.objects] == ["trainbench_environment_gpu"]
    tasks = {t.task_id: t for t in change.tasks}
    assert {tasks[t].queue for t in ("gpu.discover_devices", "gpu.plan", "gpu.measure")} == {"gpu"}
    assert tasks["gpu.measure"].max_active_tis_per_dagrun == 1
    assert [a.name for a in tasks["publish"].outlets] == ["trainbench_environment_verdicts"]
    assert change.doc_md and change.tags


def test_the_environment_watch_reads_each_host_on_its_queue_and_announces_it_on_its_asset(bag):
    watch = bag.dags["environment_watch"]
    tasks = {t.task_id: t for t in watch.tasks}
    assert sorted(tasks) == ["watch_gpu"]  # the default configuration's one host
    (task,) = tasks.values()
    assert task.queue == "gpu" and [a.name for a in task.outlets] == ["trainbench_environment_gpu"]
    assert watch.doc_md and watch.tags and watch.timetable.summary == "0 */6 * * *"


def test_dag_shape(dag):
    assert dag.tags and dag.doc_md and dag.schedule is not None
    assert {t.task_id for t in dag.tasks} == {
        "check_conf",
        "on_time",
        "resolve_settings",
        "gpu.preflight",
        "gpu.discover_devices",
        "gpu.prepare_dataset",
        "gpu.plan_matrix",
        "gpu.train",
        "collect",
        "validate",
        "detect_regressions",
        "publish",
        "regression_gate",
        "check_complete",
        "send_alerts",
    }
    assert dag.get_task("publish").upstream_task_ids == {"detect_regressions"}
    assert dag.get_task("regression_gate").upstream_task_ids == {"detect_regressions", "publish"}
    assert dag.get_task("detect_regressions").upstream_task_ids == {"validate"}
    train = dag.get_task("gpu.train")
    assert train.queue == "gpu" and train.max_active_tis_per_dagrun == 1
    assert {
        dag.get_task(f"gpu.{t}").queue for t in ("preflight", "discover_devices", "prepare_dataset", "plan_matrix")
    } == {"gpu"}
    assert dag.get_task("gpu.discover_devices").upstream_task_ids == {"gpu.preflight"}  # the host's first task
    assert dag.get_task("send_alerts").upstream_task_ids == {"publish"}
    assert dag.get_task("send_alerts").trigger_rule == "all_done"
    assert dag.on_failure_callback and dag.deadline
    assert dag.get_task("collect").trigger_rule == "all_done"
    assert dag.get_task("collect").upstream_task_ids == {"gpu.train"}
    assert [a.name for a in dag.get_task("publish").outlets] == ["trainbench_results"]


def test_the_runs_settings_are_resolved_once_and_handed_to_every_host(dag):
    """Only resolve_settings reads the trigger form's settings (and, for a backfill, the database); a host's
    tasks take what it resolved."""
    assert dag.get_task("resolve_settings").upstream_task_ids == {"on_time"}
    for task_id in ("gpu.prepare_dataset", "gpu.plan_matrix"):
        assert "resolve_settings" in dag.get_task(task_id).upstream_task_ids
    reading = {t.task_id for t in dag.tasks if "params" in arguments(t)}
    assert reading == {"resolve_settings", "regression_gate"}  # the gate reads fail_on_regression


def arguments(task) -> set[str]:
    """What a @task's function takes (an operator of its own takes none)."""
    import inspect

    if not hasattr(task, "python_callable"):
        return set()
    return set(inspect.signature(inspect.unwrap(task.python_callable)).parameters)


def test_every_task_reads_every_argument_it_takes(dag):
    """An argument is passed because the task needs it; tasks that only follow one another are ordered with >>.
    So publish reports the verdicts detect_regressions returned, rather than reading them back."""
    import dis
    import inspect

    for task in dag.tasks:
        if not arguments(task):
            continue
        code = inspect.unwrap(task.python_callable)
        read = {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_FAST", "LOAD_DEREF")}
        assert arguments(task) <= read, f"{task.task_id} takes {sorted(arguments(task) - read)} and never reads it"


def test_publish_reports_the_verdicts_it_is_handed(tmp_path):
    from trainbench import config
    from trainbench.workflows import harness, pipeline

    from conftest import write_config
    from test_results import result

    cfg = config.load(write_config(tmp_path))
    pipeline.start_run(cfg, "cli__handed", cfg.settings)
    stored = harness._save(cfg, result(run_id="cli__handed"), log=lambda m: None)
    verdict = {
        "host": stored.host,
        "framework": stored.framework,
        "device_set": stored.device_set,
        "env_key": stored.env_key,
        "metric": "wall_s",
        "verdict": "regressed",
        "current": 12.5,
        "baseline": 10.0,
        "change": 0.25,
        "p_value": 0.01,
        "history_runs": 3,
        "detail": "handed over by detect_regressions",
    }
    published = pipeline.publish(cfg, "cli__handed", [verdict])
    assert (
        "handed over by detect_regressions" in (tmp_path / "output" / "runs" / "cli__handed" / "report.md").read_text()
    )
    assert published["rows"] == 1


def test_a_run_that_starts_long_after_its_slot_skips_itself():
    import datetime as dt
    from types import SimpleNamespace

    from trainbench_airflow.schedule import on_time

    slot = dt.datetime(2026, 11, 23, 3, tzinfo=dt.UTC)
    late = dt.timedelta(hours=6)
    scheduled = SimpleNamespace(run_type="scheduled", logical_date=slot, run_after=slot)
    assert on_time(scheduled, late, now=slot + dt.timedelta(minutes=2))
    assert not on_time(scheduled, late, now=slot + dt.timedelta(days=3))
    for run_type in ("manual", "backfill"):
        assert on_time(SimpleNamespace(run_type=run_type, logical_date=slot, run_after=slot), late, now=slot + late * 9)


@pytest.mark.parametrize("name", ["cifar10_benchmark", "environment_watch", "environment_change"])
def test_dag_file_imports_no_framework_or_data_library(name):
    code = (
        f"import sys; sys.path[:0] = ['plugins', 'include']; import runpy; runpy.run_path('dags/{name}.py');"
        "print(sorted(m for m in ('torch', 'pandas', 'numpy', 'mxnet', 'jax', 'great_expectations')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("frameworks", ["tensorflow"], "'tensorflow' is not one of ['neon', 'mxnet', 'pytorch'"),
        ("device_sets", ["0;1"], "'0;1' does not match"),
        ("epochs", 0, "0 is less than the minimum of 1"),
        ("batch_size", "128", "'128' is not of type 'integer'"),
        ("repeats", 0, "less than the minimum of 1"),
        ("dataset", "imagenet", "'imagenet' is not one of ['auto', 'real', 'synthetic']"),
        ("train_images", -5, "less than the minimum of 1"),
    ],
)
def test_params_reject_bad_values(dag, name, value, message):
    from airflow.sdk.definitions.param import ParamValidationError

    with pytest.raises(ParamValidationError) as err:
        dag.params.get_param(name).resolve(value)
    assert message in str(err.value)


def test_params_accept_good_values(dag):
    good = {
        "frameworks": ["pytorch"],
        "device_sets": ["0", "0,1", "cpu", "cpu:4", "GPU-8f0c1a2b-0000"],
        "epochs": 1,
        "batch_size": 64,
        "repeats": 5,
        "train_images": None,
        "dataset": "synthetic",
    }
    for name, value in good.items():
        assert dag.params.get_param(name).resolve(value) == value
