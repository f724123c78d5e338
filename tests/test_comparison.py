"""Each case's environments side by side: oldest first, what changed, the change with the range its repeats allow;
per host, never pooled; in the report and its tables."""

import datetime as dt
from pathlib import Path

import pytest

from trainbench import config
from trainbench.cases import NOISY, UNKNOWN_SPREAD, WITHIN
from trainbench.comparison import changes, compare
from trainbench.result import Result
from trainbench.store.results import PUBLISHED
from trainbench.workflows import harness, pipeline

from conftest import write_config

OLD = {"driver_version": "570.86", "cuda_driver_version": "12.8", "framework_packages": {"torch": "2.11.0"}}
NEW = {**OLD, "driver_version": "580.65", "framework_packages": {"torch": "2.13.0"}}


def measured(run_id, env_key, walls, host="hosta", environment=None, started=None):
    return [
        Result(
            run_id=run_id,
            case_key=f"{host}__pytorch__0__r{rep}",
            env_key=env_key,
            framework="pytorch",
            device_set="0",
            repeat=rep,
            status="ok",
            host=host,
            wall_s=wall,
            images_per_s=50_000 / wall,
            environment=environment or {},
            started_at=started,
        )
        for rep, wall in enumerate(walls, 1)
    ]


def test_environments_oldest_first_with_what_changed_and_the_range_of_the_change():
    found = measured("w2", "new", [9.0, 9.1, 8.9]) + measured("w1", "old", [10.0, 10.1, 9.9])
    (case,) = compare(found, {"old": OLD, "new": NEW}, ["w1", "w2"], max_cv=0.05)
    before, after = case.environments
    assert (before.env_key, after.env_key, before.runs, after.runs) == ("old", "new", ["w1"], ["w2"])
    assert after.changed == {"driver_version": ("570.86", "580.65"), "torch": ("2.11.0", "2.13.0")}
    assert after.wall.median == pytest.approx(-0.1) and after.wall.low == pytest.approx(8.9 / 10.1 - 1)
    assert after.wall.high == pytest.approx(9.1 / 9.9 - 1) and after.reading == "faster"
    assert after.label == "driver 580.65 · torch 2.13.0" and before.wall is None and before.reading == ""


def test_a_direction_is_read_only_when_the_repeats_allow_it():
    def reading(old, new):
        found = measured("w1", "old", old) + measured("w2", "new", new)
        return compare(found, {"old": OLD, "new": NEW}, ["w1", "w2"], max_cv=0.05)[0].environments[1].reading

    assert reading([10.0, 10.2], [10.1, 10.3]) == WITHIN
    assert reading([10.0, 10.1], [12.0]) == UNKNOWN_SPREAD
    assert reading([10.0, 10.1], [11.0, 13.0]) == NOISY
    assert reading([10.0, 10.1], [11.0, 11.1]) == "slower"


def test_without_images_per_s_the_reading_is_on_wall_time():
    found = measured("w1", "old", [10.0, 10.1]) + measured("w2", "new", [12.0, 12.1])
    for r in found:
        r.images_per_s = None  # one epoch: no steady images/s
    (case,) = compare(found, {"old": OLD, "new": NEW}, ["w1", "w2"], max_cv=0.05)
    assert case.environments[1].reading == "slower" and case.environments[1].ips is None


def test_two_hosts_are_two_cases_never_one():
    found = measured("w1", "a1", [10.0, 10.1]) + measured("w1", "b1", [20.0, 20.2], host="hostb")
    found += measured("w2", "b2", [18.0, 18.1], host="hostb")
    by_host = {c.host: c for c in compare(found, {}, ["w1", "w2"], max_cv=0.05)}
    assert [e.env_key for e in by_host["hosta"].environments] == ["a1"]
    assert [e.env_key for e in by_host["hostb"].environments] == ["b1", "b2"]
    assert by_host["hostb"].environments[1].wall.median == pytest.approx(18.05 / 20.1 - 1)


def test_package_changes_are_named_one_by_one():
    assert changes({"framework_packages": {"jax": "0.4", "jaxlib": "0.4"}}, {"framework_packages": {"jax": "0.5"}}) == {
        "jax": ("0.4", "0.5"),
        "jaxlib": ("0.4", None),
    }


def test_the_report_sets_a_driver_upgrade_side_by_side_per_host(tmp_path):
    cfg = config.load(write_config(tmp_path))
    store = pipeline.store(cfg)
    weeks = [("w1", "old", OLD, 10.0), ("w2", "new", NEW, 9.0)]
    for i, (run, key, env, wall) in enumerate(weeks):
        day = dt.datetime(2026, 11, 2 + 7 * i, 3, tzinfo=dt.UTC)
        pipeline.start_run(cfg, run, cfg.settings, logical_date=day)
        for r in measured(run, key, [wall, wall * 1.01, wall * 0.99], environment=env, started=day):
            harness._save(cfg, r, log=lambda m: None)
        for r in measured(run, "b", [20.0, 20.2, 19.8], host="hostb", environment=OLD, started=day):
            harness._save(cfg, r, log=lambda m: None)
        store.set_state(run, PUBLISHED)
    out = pipeline.publish(cfg, "w2")
    md = Path(out["markdown"]).read_text()
    table = md[md.index("## Environments of each case (oldest first)") :]
    old, new = [line for line in table.splitlines() if line.startswith("| hosta |")]
    assert "| hostb |" not in table  # hostb was measured in one environment only: nothing to set beside it
    assert old.startswith("| hosta | pytorch | 0 | driver 570.86 · torch 2.11.0 | 1 |  | 10.00 |")
    assert "driver_version 570.86 → 580.65, torch 2.11.0 → 2.13.0 | 9.00 | -10.0% (" in new and "| faster |" in new
    html = Path(out["html"]).read_text()
    assert "<h2>Environments of each case</h2>" in html and "driver_version 570.86 → 580.65" in html


def test_a_run_in_a_new_environment_is_judged_and_confirmed_by_the_next_one(tmp_path):
    """A backfill (or the first weekly run) after an upgrade gets the before/after report for the cases it
    measured: its own repeats against the old environment's; a direction is announced only once another run in
    the new environment finds the same."""
    cfg = config.load(write_config(tmp_path))
    store = pipeline.store(cfg)
    weeks = [("w1", "old", OLD, 10.0), ("w2", "new", NEW, 9.0), ("w3", "new", NEW, 9.0)]
    for i, (run, key, env, wall) in enumerate(weeks):
        day = dt.datetime(2026, 11, 2 + 7 * i, 3, tzinfo=dt.UTC)
        pipeline.start_run(cfg, run, cfg.settings, logical_date=day)
        for r in measured(run, key, [wall, wall * 1.01, wall * 0.99], environment=env, started=day):
            harness._save(cfg, r, log=lambda m: None)
        store.set_state(run, PUBLISHED)
        out = pipeline.publish(cfg, run)
        if run == "w1":
            assert "environment_change_markdown" not in out  # nothing to compare with yet
    first = {v["metric"]: v for v in store.environment_verdicts("w2")}
    assert (
        first["wall_s"]["verdict"] == "inconclusive"
        and "not confirmed: no second measurement" in first["wall_s"]["detail"]
    )
    confirmed = {v["metric"]: v for v in store.environment_verdicts("w3")}
    assert confirmed["wall_s"]["verdict"] == "faster" and confirmed["images_per_s"]["verdict"] == "faster"
    report = Path(out["environment_change_markdown"]).read_text()
    assert "## hosta, 2026-11-16 03:00 UTC: driver_version 570.86 → 580.65" in report
    assert "1 of 1 case faster (pytorch | 0: images/s +11.1 % [" in report


def test_an_environment_is_labelled_by_what_it_has_never_a_driver_of_none():
    from trainbench.comparison import environment_label

    assert environment_label({"driver_version": "580.65", "framework_packages": {"torch": "2.11.0"}}) == (
        "driver 580.65 · torch 2.11.0"
    )
    assert environment_label({"driver_version": None, "framework_packages": {"torch": "2.11.0"}}) == "torch 2.11.0"
