"""Before and after an environment change, measured for real on the CPU: the last run before the change is the
baseline, each of its cases is measured again until decided, and the verdict holds what was injected."""

import datetime as dt
import os
import statistics
import urllib.parse
from pathlib import Path

import pytest

from trainbench import config, devices
from trainbench.checks.environment_change import Trigger
from trainbench.planning import CaseSpec
from trainbench.reports import environment_change as environment_change_report
from trainbench.reports import markdown
from trainbench.store.results import ENVIRONMENT_CHANGE
from trainbench.workflows import before_after, harness, pipeline

from conftest import ENVS, dags_test, slow_python, write_config
from test_results import result
from test_watch import events

SLEEP_S = 6
OLD = ENVS / "pytorch" / "bin" / "python"  # the interpreter every slow_python wraps
SETTINGS = {"epochs": 2, "train_images": 256, "repeats": 5, "warmup": 0, "dataset": "synthetic"}  # 2: steady images/s
DESIGN = {"min_repeats": 3, "cap": 6}


def baseline_week(tmp_path: Path, hosts: list[str] | None = None) -> tuple[config.Config, dt.datetime]:
    cfg = config.load(write_config(tmp_path, environment_change=DESIGN, hosts=hosts, **SETTINGS))
    inventory = pipeline.discover_devices()
    dataset = pipeline.prepare_dataset(cfg, cfg.settings, inventory)
    specs = pipeline.plan_matrix(cfg.settings, inventory, dataset)
    pipeline.start_run(cfg, "week1", cfg.settings)
    for spec in specs:
        harness.run_case(cfg, "week1", spec, log=lambda m: None)
    pipeline.collect(cfg, "week1")
    pipeline.validate_results(cfg, "week1", specs)
    pipeline.publish(cfg, "week1")
    return cfg, dt.datetime.now(dt.UTC)


def after(tmp_path: Path, run_id: str, changed: dict, **interpreters) -> list[dict]:
    now = config.load(write_config(tmp_path, environment_change=DESIGN, interpreters=interpreters, **SETTINGS))
    before_after.start(now, run_id)
    changed_at = dt.datetime.now(dt.UTC)
    inventory = devices.discover().to_dict()
    planned = before_after.plan(now, "gpu", changed_at, inventory, log=lambda m: None, changed=changed)
    assert [(c["framework"], c["device_set"], c["baseline_run"]) for c in planned] == [("pytorch", "cpu", "week1")]
    (case,) = planned
    before_after.measure(now, run_id, case, changed, changed_at, log=lambda m: None)
    out = environment_change_report.write_report(now, run_id, [Trigger("gpu", changed_at, changed)])
    assert markdown.changed_text(changed) in Path(out["markdown"]).read_text()
    return pipeline.store(now).environment_verdicts(run_id)


@pytest.mark.integration
def test_a_slowed_interpreter_is_found_slower_and_an_unchanged_one_never_is(tmp_path):
    """Each interpreter is measured alternately with the old one, still there, so the host's drift since the
    baseline week (python's start-up here has run 50 % slower a minute later) weighs on both sides."""
    cfg, _ = baseline_week(tmp_path)
    slow = slow_python(tmp_path / "slow-python", SLEEP_S)
    changed = {"frameworks.pytorch.interpreter": [str(OLD), str(slow)]}
    found = {v["metric"]: v for v in after(tmp_path, "slowed", changed, pytorch={"python": str(slow)})}
    wall = found["wall_s"]
    injected = 1 + SLEEP_S / statistics.median(wall["before"])
    assert wall["verdict"] == "slower", wall["detail"]
    assert 1 + wall["low"] <= injected <= 1 + wall["high"], (injected, wall["detail"])
    assert "confirmed by a second measurement" in wall["detail"] and wall["repeats"] >= 6
    assert "the old interpreter measured again in this session, alternating with the new" in wall["detail"]
    measured = pipeline.store(cfg).results("slowed")
    by_python = {p: sorted(r.repeat for r in measured if r.command.startswith(f"{p} ")) for p in (OLD, slow)}
    assert len(by_python[OLD]) == len(by_python[slow]) == wall["repeats"]  # pairs, over both measurements
    assert max(by_python[slow]) < min(by_python[OLD])  # the old environment's repeats are numbered after the new
    report = (cfg.output_dir / "runs" / "slowed" / "environment_change.md").read_text()
    assert "1 of 1 case slower (pytorch | cpu: wall time +" in report

    same = slow_python(tmp_path / "same-python")
    changed = {"frameworks.pytorch.interpreter": [str(OLD), str(same)]}
    unchanged = after(tmp_path, "unchanged", changed, pytorch={"python": str(same)})
    assert {v["verdict"] for v in unchanged} <= {"no change", "inconclusive"}, [v["detail"] for v in unchanged]


@pytest.mark.integration
def test_old_interpreters_are_measured_again_only_when_the_change_left_them_as_they_were(tmp_path):
    """Only a host pointed at other interpreters keeps its old environment runnable; and an old interpreter that no
    longer gives the old environment key (upgraded in place since) is not the old environment: history is."""
    moved = {"frameworks.pytorch.interpreter": [str(OLD), "/opt/new/bin/python"]}
    assert before_after.reverted(moved) == {"pytorch": str(OLD)}
    assert before_after.reverted({**moved, "frameworks.pytorch.packages.torch": ["2.13.0", "2.14.0"]}) == {
        "pytorch": str(OLD)
    }
    assert before_after.reverted({"frameworks.pytorch.packages.torch": ["2.13.0", "2.14.0"]}) is None
    assert before_after.reverted({**moved, "driver_version": ["550.54", "560.28"]}) is None
    assert before_after.reverted({**moved, "frameworks.pytorch.trainer_revision": ["a", "b"]}) is None
    assert before_after.reverted({**moved, "frameworks.jax.packages.jax": ["0.4", "0.5"]}) is None
    gone = {"frameworks.pytorch.interpreter": [str(tmp_path / "gone" / "python"), str(OLD)]}
    assert before_after.reverted(gone) is None and before_after.reverted({}) is None
    jax = {"frameworks.jax.interpreter": [str(ENVS / "jax" / "bin" / "python"), "/opt/jax/bin/python"]}
    assert before_after.touches(moved, "pytorch") and before_after.touches(moved, "pytorch-graph")
    assert not before_after.touches(jax, "pytorch") and before_after.touches(jax, "jax")
    assert before_after.touches({"driver_version": ["550.54", "560.28"]}, "pytorch") and before_after.touches({}, "jax")

    cfg, _ = baseline_week(tmp_path)
    (week1,) = {r.env_key for r in pipeline.store(cfg).results("week1")}
    inventory = devices.discover().to_dict()
    now = dt.datetime.now(dt.UTC)
    said: list[str] = []
    assert before_after.plan(cfg, "gpu", now, inventory, log=said.append, changed=jax) == []
    assert said == ["gpu: pytorch | cpu: not measured, nothing it depends on changed"]
    (case,) = before_after.plan(cfg, "gpu", now, inventory, log=lambda m: None, changed={**moved, **jax})
    assert case["control"] == {"pytorch": str(OLD)} and case["env_key"] == week1
    spec = CaseSpec.from_dict(case["specs"][0])
    old = before_after.old_environment(cfg, case, spec, log=lambda m: None)
    assert old is not None and old.interpreter("pytorch").python == str(OLD)
    upgraded = {**case, "control": {"pytorch": str(ENVS / "jax" / "bin" / "python")}}
    said.clear()
    assert before_after.old_environment(cfg, upgraded, spec, log=said.append) is None
    assert said == ["pytorch | cpu: the old interpreter no longer gives its old environment"]


@pytest.mark.integration
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
    page_of_changes = served(cfg, "/changes")
    assert f'<section class="change" data-run="{run}" data-host="gpu">' in page_of_changes
    assert page_of_changes.count('<tr class="case"') == 2 and "<circle" in page_of_changes
    link = f"/trainbench/runs/{urllib.parse.quote(run, safe='')}/environment_change.html"
    assert f'href="{link}"' in page_of_changes  # what an alert about the run links to, too
    assert served(cfg, link.removeprefix("/trainbench")) == page


def served(cfg: config.Config, path: str) -> str:
    """A Benchmarks page (`/changes`: the Environment changes tab) as the api-server's app serves it (login stood
    in for)."""
    from fastapi.testclient import TestClient

    from trainbench_ui.access import require_user
    from trainbench_ui.app import create_app

    app = create_app()
    app.dependency_overrides[require_user] = lambda: "test"
    os.environ["TRAINBENCH_CONFIG"], old = str(cfg.path), os.environ.get("TRAINBENCH_CONFIG", "")
    try:
        response = TestClient(app, root_path="/trainbench").get(path)
    finally:
        os.environ["TRAINBENCH_CONFIG"] = old
    assert response.status_code == 200, response.text[:500]
    return response.text


def test_events_arriving_together_merge_per_host_from_the_first_old_value_to_the_last_new():
    t = [dt.datetime(2026, 11, 25, h, tzinfo=dt.UTC) for h in (1, 7, 13)]
    found = before_after.events(
        [
            (
                "hostb",
                {
                    "host": "hostb",
                    "observed_at": t[1].isoformat(),
                    "previous_at": t[0].isoformat(),
                    "changed": {"driver_version": ["550", "560"]},
                },
                t[1],
            ),
            (
                "hostb",
                {
                    "host": "hostb",
                    "observed_at": t[2].isoformat(),
                    "previous_at": t[1].isoformat(),
                    "changed": {"driver_version": ["560", "565"], "cpu_model": ["a", "b"]},
                },
                t[2],
            ),
            ("hosta", {}, t[2]),  # an event made by hand: its asset names the host, its time the change
        ]
    )
    hostb = Trigger.from_event(found["hostb"])
    assert hostb.changed == {"driver_version": ["550", "565"], "cpu_model": ["a", "b"]}
    assert (hostb.since, hostb.changed_at, hostb.cutoff) == (t[0], t[2], t[0])
    hosta = Trigger.from_event(found["hosta"])
    assert (hosta.changed, hosta.cutoff) == ({}, t[2])


def test_before_is_what_ran_before_the_watch_s_last_old_reading(tmp_path):
    """A weekly run between the last old reading and the reading that saw the change ran on the new driver: it is
    neither the baseline nor among the before figures."""
    cfg = config.load(write_config(tmp_path))
    store = pipeline.store(cfg)
    for run, day, wall in (("old", 1, 10.0), ("new", 3, 20.0)):
        pipeline.start_run(cfg, run, cfg.settings)
        for rep in (1, 2, 3):
            r = result(run_id=run, case_key=f"gpu__pytorch__0__r{rep}", wall=wall + 0.1 * rep)
            r.host, r.repeat, r.started_at = "gpu", rep, dt.datetime(2026, 11, day, tzinfo=dt.UTC)
            harness._save(cfg, r, log=lambda m: None)
        store.set_state(run, "published")
    cutoff = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)  # the watch's last reading of the old environment
    run, _, (case,) = before_after.baseline(cfg, "gpu", cutoff)
    assert run == "old" and case["before"]["wall_s"] == [10.1, 10.2, 10.3]


def test_a_retried_case_replaces_its_verdicts(tmp_path):
    cfg = config.load(write_config(tmp_path))
    store = pipeline.store(cfg)
    before_after.start(cfg, "change")
    verdict = {
        "metric": "wall_s",
        "verdict": "no change",
        "change": 0.0,
        "low": -0.01,
        "high": 0.01,
        "before": [1.0],
        "after": [1.0],
        "baseline_run": "old",
        "repeats": 3,
        "changed": {},
        "changed_at": None,
        "detail": "",
    }
    for _ in range(2):
        store.save_environment_verdicts("change", "gpu", "pytorch", "0", [verdict])
    assert len(store.environment_verdicts("change")) == 1
