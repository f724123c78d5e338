"""Before and after an environment change, measured for real on the CPU: the last run before the change is the
baseline, each of its cases is measured again until decided, and the verdict holds what was injected."""

import datetime as dt
import os
import statistics
from pathlib import Path

from trainbench import before_after, config, devices, pipeline
from trainbench.store.results import ENVIRONMENT_CHANGE

from conftest import ENVS, dags_test, write_config
from test_watch import events

SLEEP_S = 6
SETTINGS = {"epochs": 1, "train_images": 256, "repeats": 5, "warmup": 0, "dataset": "synthetic"}
DESIGN = {"min_repeats": 3, "cap": 6}


def baseline_week(tmp_path: Path, hosts: list[str] | None = None) -> tuple[config.Config, dt.datetime]:
    cfg = config.load(write_config(tmp_path, environment_change=DESIGN, hosts=hosts, **SETTINGS))
    inventory = pipeline.discover_devices()
    dataset = pipeline.prepare_dataset(cfg, cfg.settings, inventory)
    specs = pipeline.plan_matrix(cfg.settings, inventory, dataset)
    pipeline.start_run(cfg, "week1", cfg.settings)
    for spec in specs:
        pipeline.run_case(cfg, "week1", spec, log=lambda m: None)
    pipeline.collect(cfg, "week1")
    pipeline.validate_results(cfg, "week1", specs)
    pipeline.publish(cfg, "week1")
    return cfg, dt.datetime.now(dt.UTC)


def after(tmp_path: Path, cfg: config.Config, changed_at: dt.datetime, run_id: str, **interpreters) -> list[dict]:
    changed = {"frameworks.pytorch.packages.torch": ["2.13.0", "2.13.1"]}
    now = config.load(write_config(tmp_path, environment_change=DESIGN, interpreters=interpreters, **SETTINGS))
    before_after.start(now, run_id)
    planned = before_after.plan(now, "gpu", changed_at, devices.discover().to_dict(), log=lambda m: None)
    assert [(c["framework"], c["device_set"], c["baseline_run"]) for c in planned] == [("pytorch", "cpu", "week1")]
    (case,) = planned
    before_after.measure(now, run_id, case, changed, changed_at, log=lambda m: None)
    out = before_after.write_report(now, run_id, [before_after.Trigger("gpu", changed_at, changed)])
    assert "torch 2.13.0 → 2.13.1" in Path(out["markdown"]).read_text()
    return pipeline.store(now).environment_verdicts(run_id)


def test_a_slowed_interpreter_is_found_slower_and_an_unchanged_one_never_is(tmp_path):
    cfg, changed_at = baseline_week(tmp_path)
    walls = [r.wall_s for r in pipeline.store(cfg).current_results("week1")]
    slow = tmp_path / "slow-python"
    slow.write_text(
        f'#!/bin/sh\ncase "$*" in *pytorch_train.py*) sleep {SLEEP_S};; esac\nexec {ENVS / "pytorch/bin/python"} "$@"\n'
    )
    slow.chmod(0o755)
    found = {v["metric"]: v for v in after(tmp_path, cfg, changed_at, "slowed", pytorch={"python": str(slow)})}
    wall = found["wall_s"]
    injected = 1 + SLEEP_S / statistics.median(walls)
    assert wall["verdict"] == "slower", wall["detail"]
    assert 1 + wall["low"] <= injected <= 1 + wall["high"], (injected, wall["detail"])
    assert "confirmed by a second measurement" in wall["detail"] and wall["repeats"] >= 6
    report = (cfg.output_dir / "runs" / "slowed" / "environment_change.md").read_text()
    assert "1 of 1 case slower (pytorch | cpu: wall time +" in report

    unchanged = after(tmp_path, cfg, changed_at, "unchanged")
    assert {v["verdict"] for v in unchanged} <= {"no change", "inconclusive"}, [v["detail"] for v in unchanged]


def test_the_before_after_dag_measures_the_named_host_only_and_announces_its_verdicts(airflow_db, tmp_path):
    cfg, _ = baseline_week(tmp_path, hosts=["gpu", "other"])
    env = {**airflow_db, "TRAINBENCH_CONFIG": str(cfg.path)}
    proc = dags_test(env, {"host": "gpu"}, dag_id="environment_change")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    store = pipeline.store(cfg)
    (run,) = store.run_ids(ENVIRONMENT_CHANGE)
    assert {(v["host"], v["framework"], v["device_set"], v["metric"]) for v in store.environment_verdicts(run)} == {
        ("gpu", "pytorch", "cpu", "images_per_s"),
        ("gpu", "pytorch", "cpu", "wall_s"),
    }
    assert {r.host for r in store.results(run)} == {"gpu"} and store.run_ids(ENVIRONMENT_CHANGE) == [run]
    assert "week1" in store.run_ids() and store.latest_run_id() == "week1"  # never latest, never history
    page = (cfg.output_dir / "runs" / run / "environment_change.html").read_text()
    assert '<section class="host" data-host="gpu">\n<h2>gpu, ' in page and page.count("<circle") >= 2 * (3 + 3)
    assert events(env, "trainbench_environment_verdicts")
    page_of_changes = changes_page(cfg)
    assert f'<section class="change" data-run="{run}" data-host="gpu">' in page_of_changes
    assert page_of_changes.count('<tr class="case"') == 2 and "<circle" in page_of_changes


def changes_page(cfg: config.Config) -> str:
    """The Benchmarks page's Environment changes tab, as the api-server's app serves it (login stood in for)."""
    from fastapi.testclient import TestClient

    from trainbench_ui.access import require_user
    from trainbench_ui.app import create_app

    app = create_app()
    app.dependency_overrides[require_user] = lambda: "test"
    os.environ["TRAINBENCH_CONFIG"], old = str(cfg.path), os.environ.get("TRAINBENCH_CONFIG", "")
    try:
        response = TestClient(app, root_path="/trainbench").get("/changes")
    finally:
        os.environ["TRAINBENCH_CONFIG"] = old
    assert response.status_code == 200, response.text[:500]
    return response.text
