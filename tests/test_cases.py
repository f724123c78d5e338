"""The case layer: one summary per host x framework x device set x environment, its spread over the counted
repeats, one order; and a real run with a warm-up: shown and stored, never counted."""

import datetime as dt

import pytest

from trainbench import cases, config, devices
from trainbench.cases import CaseKey, Spread
from trainbench.result import Result
from trainbench.store import run_folder
from trainbench.workflows import harness, pipeline

from conftest import write_config


def result(wall, ips, repeat, warmup=False, status="ok", host="gpu", env_key="k", device_set="0", **extra):
    return Result(
        run_id="r",
        case_key=f"pytorch__{device_set}__{host}__r{repeat}{'w' if warmup else ''}",
        env_key=env_key,
        framework="pytorch",
        device_set=device_set,
        repeat=repeat,
        status=status,
        host=host,
        warmup=warmup,
        wall_s=wall,
        images_per_s=ips,
        **extra,
    )


def test_median_min_max_cv_of_the_counted_repeats():
    results = [
        result(30.0, 1000, 1, warmup=True),
        result(10.0, 5000, 1),
        result(11.0, 4800, 2),
        result(10.5, 4900, 3),
        result(None, None, 4, status="crashed"),
    ]
    (s,) = cases.summarize(results, max_cv=0.05)
    assert (s.wall.n, s.wall.median, s.wall.min, s.wall.max) == (3, 10.5, 10.0, 11.0)
    assert s.wall.cv == pytest.approx(0.0476, abs=1e-3) and s.ips.median == 4900 and s.noisy is False
    assert (s.measured, s.warmups, s.statuses, [r.repeat for r in s.failures]) == (4, 1, {"ok": 3, "crashed": 1}, [4])
    assert s.stats_row()["repeats"] == 3 and s.stats_row()["wall_median"] == 10.5
    (noisy,) = cases.summarize(results, max_cv=0.04)
    assert noisy.noisy is True
    (single,) = cases.summarize([result(10.0, 5000, 1)], max_cv=0.05)
    assert single.wall.cv is None and single.noisy is None


def test_a_case_is_host_framework_device_set_and_environment_never_pooled():
    results = [
        result(10.0, 5000, 1, host="hosta"),
        result(10.2, 4900, 2, host="hosta"),
        result(20.0, 2500, 1, host="hostb"),
        result(20.4, 2450, 2, host="hostb"),
        result(15.0, 3300, 1, host="hostb", env_key="k2"),
    ]
    summaries = cases.summarize(results, max_cv=0.05)
    assert [(s.key.host, s.key.env_key, s.wall.median) for s in summaries] == [
        ("hosta", "k", 10.1),
        ("hostb", "k", 20.2),
        ("hostb", "k2", 15.0),
    ]
    assert summaries[0].key == CaseKey("hosta", "pytorch", "0", "k")


def test_one_order_of_cases_gpu_sets_before_cpu_most_devices_first():
    keys = [CaseKey("h", fw, ds, "k") for fw in ("jax", "pytorch") for ds in ("cpu", "0", "cpu:2", "0,1")]
    ordered = sorted(keys, key=CaseKey.order)
    assert [(k.framework, k.device_set) for k in ordered] == [
        ("pytorch", "0,1"),
        ("pytorch", "0"),
        ("pytorch", "cpu:2"),
        ("pytorch", "cpu"),
        ("jax", "0,1"),
        ("jax", "0"),
        ("jax", "cpu:2"),
        ("jax", "cpu"),
    ]


def test_memory_per_device_and_phases_are_medians_over_the_counted_repeats():
    def devices(used):
        return [{"device": "GPU-0", "name": "H100", "used_mib": used, "method": "nvml_sampled"}]

    results = [
        result(10.0, 5000, 1, devices=devices(900.0), phases={"startup": 4.0}),
        result(10.0, 5000, 2, devices=devices(1000.0), phases={"startup": 5.0}),
        result(10.0, 5000, 3, devices=devices(1100.0), phases={"startup": 9.0}),
        result(30.0, 1000, 1, warmup=True, devices=devices(5000.0), phases={"startup": 60.0}),
    ]
    (s,) = cases.summarize(results, max_cv=0.05)
    (device,) = s.devices
    assert (device.used_mib, device.methods) == (1000.0, ("nvml_sampled",))
    assert s.phases is not None and s.phases["startup"] == 5.0


def test_the_newest_result_of_each_case_counts():
    old = result(10.0, 5000, 1, started_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    new = result(12.0, 4000, 1, started_at=dt.datetime(2026, 11, 2))  # naive: read as UTC, as SQLite returns it
    old.id, new.id = 2, 1
    assert cases.newest([old, new]) == [new]


def test_spread_of_nothing_and_robust_cv():
    assert (Spread().median, Spread().cv, Spread().n) == (None, None, 0)
    assert Spread.of([1.0, 1.0, 1.0, 10.0]).robust_cv == 0.0 and Spread.of([1.0, 1.0, 1.0, 10.0]).cv > 1


def test_a_run_with_a_warm_up_stores_it_and_leaves_it_out_of_the_statistics(tmp_path, synthetic_data):
    cfg = config.load(write_config(tmp_path, epochs=2, train_images=256, repeats=2, warmup=1))
    settings = cfg.settings
    specs = pipeline.plan_matrix(
        settings, devices.discover().to_dict(), {"kind": "synthetic", "data_dir": synthetic_data}
    )
    assert [s.case.warmup for s in specs] == [True, False, False]
    pipeline.start_run(cfg, "warm", settings)
    for spec in specs:
        harness.run_case(cfg, "warm", spec, log=lambda m: None)
    pipeline.collect(cfg, "warm")
    pipeline.validate_results(cfg, "warm", specs)
    pipeline.detect_regressions(cfg, "warm", log=lambda m: None)
    pipeline.publish(cfg, "warm")
    found = pipeline.store(cfg).current_results("warm")
    assert sorted((r.warmup, r.repeat, r.status) for r in found) == [
        (False, 1, "ok"),
        (False, 2, "ok"),
        (True, 1, "ok"),
    ]
    (stats,) = pipeline.store(cfg).case_stats("warm")
    assert stats["repeats"] == 2 and stats["wall_min"] <= stats["wall_median"] <= stats["wall_max"]
    md = (folder := run_folder.run_dir(cfg.output_dir, "warm")).joinpath("report.md").read_text()
    assert "(warm-up 1: shown, never in statistics or verdicts)" in md and "## Dispersion over the repeats" in md
    assert (folder / "cases.csv").read_text().splitlines()[0].startswith("run_id,framework,device_set,host")
    assert (folder / "cases.parquet").is_file()
