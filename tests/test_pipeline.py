"""The pipeline's steps on their own: what a host refuses to measure before anything runs."""

from __future__ import annotations

import pytest

from trainbench import config, devices
from trainbench.config import ConfigError
from trainbench.workflows import pipeline

import cifar10
from conftest import write_config
from nvml_standin import log_host


@pytest.fixture
def gpu_host() -> dict:
    return devices.discover(log_host()).to_dict()


def test_a_gpu_host_without_cifar10_refuses_auto_instead_of_measuring_synthetic_data(tmp_path, gpu_host):
    cfg = config.load(write_config(tmp_path))
    with pytest.raises(ConfigError) as err:
        pipeline.prepare_dataset(cfg, cfg.settings.overridden(dataset="auto"), gpu_host)
    message = str(err.value)
    assert message.startswith(f'dataset is "auto" but CIFAR-10 is not in {tmp_path / "data"}')
    assert "this host has GPUs" in message and 'run with dataset "synthetic"' in message
    assert not (tmp_path / "output" / "data").exists()


def test_synthetic_data_on_a_gpu_host_only_when_asked_for(tmp_path, gpu_host):
    cfg = config.load(write_config(tmp_path, train_images=256))
    chosen = pipeline.prepare_dataset(cfg, cfg.settings.overridden(dataset="synthetic"), gpu_host)
    assert chosen["kind"] == "synthetic" and cifar10.is_synthetic(chosen["data_dir"])


def test_a_cpu_host_still_falls_back_to_synthetic_data(tmp_path):
    cfg = config.load(write_config(tmp_path))
    cpu_only = devices.Inventory(gpus=(), cpu_model="t", cpu_count=2).to_dict()
    assert pipeline.prepare_dataset(cfg, cfg.settings.overridden(dataset="auto"), cpu_only)["kind"] == "synthetic"


class _FailingNvml:
    """NVML that loads but fails (a GPU fallen off the bus, a driver mid-upgrade)."""

    def nvmlDeviceGetCount(self):
        raise RuntimeError("NVMLError_Unknown: Unknown Error")


def test_a_quarantined_host_whose_gpus_are_gone_plans_nothing_instead_of_failing_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(devices, "load_nvml", lambda: (_FailingNvml(), None))
    with pytest.raises(RuntimeError, match="NVMLError_Unknown"):
        pipeline.discover_devices()
    inventory = pipeline.discover_devices(quarantined=True)
    assert (
        not inventory["gpus"] and "the host is quarantined: RuntimeError: NVMLError_Unknown" in inventory["nvml_error"]
    )
    cfg = config.load(write_config(tmp_path))
    settings = cfg.settings.overridden(device_sets=["0", "cpu"])
    dataset = {"kind": "none", "data_dir": ""}
    with pytest.raises(ConfigError):
        pipeline.plan_matrix(settings, inventory, dataset)
    assert pipeline.plan_matrix(settings, inventory, dataset, quarantined=True) == []


def test_publications_of_one_run_take_turns_so_the_last_holds_every_row_stored_before_it(tmp_path):
    """Two tasks stopped at once each publish; without turns, the one that read one row could write last."""
    import threading

    from trainbench.store import run_folder
    from trainbench.workflows import harness

    from test_results import result

    cfg = config.load(write_config(tmp_path))
    pipeline.start_run(cfg, "two_stopped", cfg.settings)
    harness._save(cfg, result(run_id="two_stopped", case_key="pytorch__0__r1", status="killed"), log=lambda m: None)
    with run_folder.publishing(cfg.output_dir, "two_stopped"):  # the first stopped task, publishing
        second = threading.Thread(target=pipeline.publish, args=(cfg, "two_stopped"))
        second.start()
        harness._save(cfg, result(run_id="two_stopped", case_key="pytorch__0__r2", status="killed"), log=lambda m: None)
    second.join(timeout=120)
    assert not second.is_alive()
    assert (run_folder.run_dir(cfg.output_dir, "two_stopped") / "report.md").read_text().count("(killed)") == 2


def test_verdicts_read_only_the_runs_their_window_holds_and_judge_as_on_the_whole_history(tmp_path):
    """A year of weekly runs costs what the lookback does (issue 29): per case and environment the last runs that
    hold each metric, yet every verdict is the one the whole history gives, crashed weeks, a driver upgrade, runs
    without images/s and a case new to this run included."""
    import datetime as dt
    import random

    from trainbench.checks import regression
    from trainbench.result import Result
    from trainbench.store.results import ResultStore

    cfg = config.load(write_config(tmp_path))
    db = ResultStore(cfg.database_url)
    rng = random.Random(7)
    start = dt.datetime(2026, 1, 5, 3, tzinfo=dt.UTC)

    def week(run_id: str, n: int, env_key: str, sets: tuple[str, ...]) -> None:
        db.save_run(run_id, {}, logical_date=start + dt.timedelta(weeks=n))
        for ds in sets:
            crashed = ds == "0,1" and n % 5 == 3
            for rep in (0, 1, 2, 3):
                wall = 10.0 * (1 + rng.uniform(-0.02, 0.02)) * (1.2 if n == 40 and ds == "0" else 1)
                row = {
                    "run_id": run_id,
                    "case_key": f"gpu__pytorch__{ds}__r{rep}",
                    "env_key": env_key,
                    "framework": "pytorch",
                    "device_set": ds,
                    "host": "gpu",
                    "repeat": rep,
                    "warmup": rep == 0,
                    "status": "crashed" if crashed else "ok",
                    "wall_s": wall,
                    "images_per_s": None if n % 7 == 2 else 50_000 / wall,
                    "epochs": [{"epoch": e, "seconds": wall / 2, "images_per_s": 25_000 / wall} for e in (1, 2)],
                    "started_at": start + dt.timedelta(weeks=n, minutes=rep),
                }
                db.save(Result.from_dict(row))

    for n in range(40):
        week(f"w{n:02d}", n, "driver-550" if n < 25 else "driver-570", ("0", "0,1") if n % 9 else ("0",))
    week("now", 40, "driver-570", ("0", "0,1", "cpu"))
    verdicts = pipeline.detect_regressions(cfg, "now", log=lambda m: None)

    order = db.run_ids()
    everything = [r for r in db.history(except_run="now") if r.run_id in order[: order.index("now")]]
    current = db.current_results("now")
    expected = [
        v.to_dict()
        for metric in regression.METRICS
        for v in regression.judge(current, everything, order, cfg.regression, metric, cfg.measurement.max_cv)
    ]
    assert verdicts == expected
    assert {v["verdict"] for v in verdicts} >= {"regressed", "insufficient history"}
    read = {r.run_id for r in pipeline.earlier_runs(db, "now", order, current, cfg.regression)}
    assert len(read) <= 2 * 2 * cfg.regression.lookback_runs < len({r.run_id for r in everything}) == 40


def test_a_stopped_run_s_reports_say_so_and_name_each_planned_case_that_never_ran(tmp_path, gpu_host):
    """Issue 27, item 2: not "no change against history" for a run whose verdicts were never made."""
    from trainbench.reports import markdown
    from trainbench.store import run_folder
    from trainbench.workflows import harness

    from test_results import result

    cfg = config.load(write_config(tmp_path))
    settings = cfg.settings.overridden(frameworks=["pytorch"], device_sets=["0", "1"], repeats=2, warmup=0)
    dataset = {"kind": "synthetic", "data_dir": str(tmp_path)}
    pipeline.start_run(cfg, "stopped", settings)
    specs = pipeline.plan_matrix(settings, gpu_host, dataset, "gpu")
    pipeline.record_plan(cfg, "stopped", "gpu", specs)
    for spec, status in zip(specs[:2], ("ok", "killed")):
        measured = result(run_id="stopped", case_key=spec.case.key, status=status)
        measured.host, measured.device_set, measured.repeat = "gpu", spec.case.device_set.text, spec.case.repeat
        harness._save(cfg, measured, log=lambda m: None)
    assert pipeline.stop_run(cfg, "stopped")
    pipeline.publish(cfg, "stopped")
    folder = run_folder.run_dir(cfg.output_dir, "stopped")
    text = (folder / "report.md").read_text()
    assert "## Run stopped" in text and "never judged against history; 2 of 4 planned cases hold results" in text
    assert [line for line in text.splitlines() if line.startswith("- never ran")] == [
        f"- never ran on `gpu`: {markdown.cell(s.case.label)}" for s in specs[2:]
    ]
    page = (folder / "report.html").read_text()
    assert "Not judged against history: the run was stopped" in page and "No change against history" not in page
    assert page.count("never ran on <b>gpu</b>") == 2
