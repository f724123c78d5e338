"""Dispersion per case, and a real run with a warm-up: shown and stored, never counted."""

import pytest

from trainbench import config, devices, pipeline
from trainbench.checks.dispersion import case_stats
from trainbench.store import run_folder

from conftest import write_config


def row(wall, ips, repeat, warmup=False, status="ok"):
    return {
        "framework": "pytorch",
        "device_set": "0",
        "host": "gpu",
        "env_key": "k",
        "status": status,
        "wall_s": wall,
        "images_per_s": ips,
        "repeat": repeat,
        "warmup": warmup,
    }


def test_median_min_max_cv_of_the_measured_repeats():
    rows = [
        row(30.0, 1000, 1, warmup=True),
        row(10.0, 5000, 1),
        row(11.0, 4800, 2),
        row(10.5, 4900, 3),
        row(None, None, 4, status="crashed"),
    ]
    (s,) = case_stats(rows, max_cv=0.05)
    assert (s["repeats"], s["wall_median"], s["wall_min"], s["wall_max"]) == (3, 10.5, 10.0, 11.0)
    assert s["wall_cv"] == pytest.approx(0.0476, abs=1e-3) and s["ips_median"] == 4900 and s["noisy"] is False
    (noisy,) = case_stats(rows, max_cv=0.04)
    assert noisy["noisy"] is True
    (single,) = case_stats([row(10.0, 5000, 1)], max_cv=0.05)
    assert single["wall_cv"] is None and single["noisy"] is None


def test_a_run_with_a_warm_up_stores_it_and_leaves_it_out_of_the_statistics(tmp_path, synthetic_data):
    cfg = config.load(write_config(tmp_path, epochs=2, train_images=256, repeats=2, warmup=1))
    settings = cfg.settings
    specs = pipeline.plan_matrix(
        settings, devices.discover().to_dict(), {"kind": "synthetic", "data_dir": synthetic_data}
    )
    assert [s.case.warmup for s in specs] == [True, False, False]
    pipeline.start_run(cfg, "warm", settings)
    for spec in specs:
        pipeline.run_case(cfg, "warm", spec, log=lambda m: None)
    pipeline.collect(cfg, "warm")
    pipeline.validate_results(cfg, "warm", specs)
    pipeline.detect_regressions(cfg, "warm", log=lambda m: None)
    pipeline.publish(cfg, "warm")
    rows = pipeline.store(cfg).current_rows("warm")
    assert sorted((r["warmup"], r["repeat"], r["status"]) for r in rows) == [
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
