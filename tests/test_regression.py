"""Regression detection on synthetic histories: quiet on noise, loud on a real step."""

import numpy as np
import pytest

from trainbench.checks.regression import judge
from trainbench.comparison import compare
from trainbench.config import RegressionPolicy as Policy
from trainbench.result import Result

ENV_OLD = {
    "framework": "pytorch",
    "driver_version": "570.86",
    "cuda_driver_version": "12.8",
    "gpu_names": ["H100"],
    "framework_packages": {"torch": "2.11.0"},
    "epochs": 10,
    "batch_size": 128,
    "data_kind": "real",
}
ENV_NEW = {**ENV_OLD, "driver_version": "580.65", "cuda_driver_version": "13.0"}


def rows(run_id, values, env_key="k1", env=ENV_OLD, status="ok", device_set="0"):
    return [
        {
            "run_id": run_id,
            "case_key": f"pytorch__{device_set}__r{i + 1}",
            "host": "gpu",
            "framework": "pytorch",
            "device_set": device_set,
            "env_key": env_key,
            "status": status,
            "wall_s": v,
            "images_per_s": 50_000 / v,
            "environment": env,
            "repeat": i + 1,
        }
        for i, v in enumerate(values)
    ]


def history(n_runs=6, level=10.0, noise=0.02, seed=0, **kw):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_runs):
        out += rows(f"run{i}", list(level * (1 + rng.uniform(-noise, noise, 3))), **kw)
    return out, [f"run{i}" for i in range(n_runs)]


def results(rows: list[dict]) -> list[Result]:
    return [Result.from_dict(r) for r in rows]


def one(current, hist, order, **kw):
    (v,) = judge(results(current), results(hist), order, **kw)
    return v


def test_noise_within_the_band_is_stable():
    hist, order = history()
    for seed in range(5):
        now = list(10.0 * (1 + np.random.default_rng(100 + seed).uniform(-0.02, 0.02, 3)))
        v = one(rows("now", now), hist, order)
        assert v.verdict == "stable", v.detail


def test_a_ten_percent_step_is_flagged_both_ways():
    hist, order = history()
    slow = one(rows("now", [11.0, 11.1, 10.95]), hist, order)
    assert slow.verdict == "regressed" and slow.change == pytest.approx(0.1, abs=0.02) and slow.p_value < 0.05
    fast = one(rows("now", [9.0, 8.95, 9.05]), hist, order)
    assert fast.verdict == "improved"
    assert one(rows("now", [11.0, 11.1, 10.95]), hist, order, metric="images_per_s").verdict == "regressed"


def test_a_significant_but_small_change_is_not_flagged():
    hist, order = history(noise=0.002)
    v = one(rows("now", [10.3, 10.31, 10.29]), hist, order)
    assert v.verdict == "stable" and v.p_value < 0.05 and abs(v.change) < 0.05


def test_a_step_inside_the_case_s_own_historical_spread_is_not_flagged():
    """Quiet repeats, but the history's run medians wander by ~14 %: a 10 % step is within the case's spread."""
    rng = np.random.default_rng(3)
    hist = []
    for i in range(6):
        level = 10.0 * (1 + rng.uniform(-0.25, 0.25))
        hist += rows(f"run{i}", [level, level * 1.005, level * 0.995])
    v = one(rows("now", [11.0, 11.05, 10.98]), hist, [f"run{i}" for i in range(6)])
    assert v.verdict == "stable" and "historical CV" in v.detail, v.detail


def test_noisy_repeats_are_inconclusive_never_a_change():
    hist, order = history(n_runs=6)
    v = one(rows("now", [11.5, 13.9, 12.2]), hist, order)
    assert v.verdict == "inconclusive" and "noisy" in v.detail and v.change > 0.15


def test_a_single_repeat_cannot_produce_certainty():
    """The deployment incident: one repeat, disturbed by other work, reported +55 % at p = 1.6e-22."""
    hist, order = history(n_runs=6, noise=0.001)
    v = one(rows("now", [15.5]), hist, order)
    assert v.verdict == "inconclusive" and "1 repeat" in v.detail and v.p_value is None


def test_warm_up_runs_never_count():
    hist, order = history(n_runs=6)
    now = rows("now", [10.0, 10.05, 9.98]) + [{**rows("now", [30.0])[0], "warmup": True, "repeat": 1}]
    v = one(now, hist, order)
    assert v.verdict == "stable" and v.current == pytest.approx(10.0, abs=0.05)


def test_images_per_s_is_judged_on_every_steady_epoch():
    hist, order = history(n_runs=4)
    for r in hist:
        r["epochs"] = [{"images_per_s": r["images_per_s"] * f} for f in (0.5, 1.0, 1.01, 0.99)]
    now = rows("now", [11.0, 11.1, 10.95])
    for r in now:
        r["epochs"] = [{"images_per_s": r["images_per_s"] * f} for f in (0.5, 1.0, 1.01, 0.99)]
    v = one(now, hist, order, metric="images_per_s")
    assert v.verdict == "regressed" and v.p_value < 1e-4  # 3 vs 12 repeats alone: p >= 2 / C(15, 3) = 0.0044


def test_driver_change_is_a_new_environment_and_is_compared_side_by_side():
    hist, order = history()
    now = rows("now", [9.5, 9.6, 9.4], env_key="k2", env=ENV_NEW)
    v = one(now, hist, order)
    assert v.verdict == "new environment" and v.change is None
    (case,) = compare(results(hist + now), {"k1": ENV_OLD, "k2": ENV_NEW}, [*order, "now"], max_cv=0.05)
    before, after = case.environments
    assert (before.env_key, after.env_key) == ("k1", "k2") and before.changed == {}
    assert after.changed == {"driver_version": ("570.86", "580.65"), "cuda_driver_version": ("12.8", "13.0")}
    assert after.wall.median == pytest.approx(9.5 / 10.0 - 1, abs=0.02)
    assert after.wall.low < after.wall.median < after.wall.high < 0
    assert after.reading == "faster" and after.ips.low > 0


def test_too_little_history():
    assert one(rows("now", [10.0, 10.1, 10.2]), [], []).verdict == "insufficient history"
    hist, order = history(n_runs=1)
    assert one(rows("now", [12.0, 12.1, 12.2]), hist, order).verdict == "insufficient history"


def test_a_case_with_nothing_measured_carries_no_verdict():
    """Issue 26, item 5 (this assertion was `insufficient history` before): a crashed, unavailable or quarantined
    case's rows say why it has no figure; a verdict about its history would only hide that."""
    hist, order = history()
    for status in ("crashed", "unavailable", "tainted"):
        assert judge(results(rows("now", [1.0, 1.1], status=status)), results(hist), order) == []
    mixed = rows("now", [1.0], status="crashed") + rows("now", [10.0, 10.1], device_set="1")
    (only,) = judge(results(mixed), results(hist), order)
    assert only.device_set == "1"


def test_lookback_window_only_uses_recent_runs():
    old, _ = history(n_runs=4, level=20.0)
    recent, _ = history(n_runs=4, level=10.0, seed=1)
    recent = [{**r, "run_id": "new" + r["run_id"]} for r in recent]
    order = [f"run{i}" for i in range(4)] + [f"newrun{i}" for i in range(4)]
    v = one(rows("now", [10.0, 10.05, 9.98]), old + recent, order, policy=Policy(lookback_runs=4))
    assert v.verdict == "stable" and v.baseline == pytest.approx(10.0, rel=0.03)
    v = one(rows("now", [10.0, 10.05, 9.98]), old + recent, order, policy=Policy(lookback_runs=8))
    assert v.baseline > 12


def test_a_big_step_without_statistical_power_is_insufficient_history_not_stable():
    hist, order = history(n_runs=2)
    small = [{**r} for r in hist if r["repeat"] <= 2]
    v = one(rows("now", [15.0, 15.1]), small, order)
    assert v.verdict == "insufficient history" and "cannot reach" in v.detail and v.change > 0.4
    v = one(rows("now", [15.0]), hist, order)
    assert v.verdict == "inconclusive" and "1 repeat" in v.detail


def test_one_slow_run_in_the_history_does_not_hide_the_next_regression():
    """History 2.0 s x3 then one 12 s run (a busy host), then 4.0 s: the SD-based bar was 216.6 % and said stable."""
    hist = [r for i, level in enumerate([2.0, 2.0, 2.0, 12.0]) for r in rows(f"run{i}", [level, level * 1.01])]
    order = [f"run{i}" for i in range(4)]
    v = one(rows("now", [4.0, 4.02, 3.98]), hist, order)
    assert v.verdict == "regressed" and "historical CV" in v.detail, v.detail
    assert "1 outlying run(s) set aside: run3" in v.detail and v.baseline == pytest.approx(2.01, abs=0.01)
    without = one(rows("now", [4.0, 4.02, 3.98]), hist[:-2], order[:-1])
    assert without.verdict == "regressed"


@pytest.mark.parametrize("levels", [[2.0, 12.0], [2.0, 2.0, 12.0, 12.0]])
def test_history_too_spread_to_set_an_outlier_aside_gives_no_confident_verdict(levels):
    """Runs of 2 s and 12 s, then 4 s: which history run is the odd one cannot be told, so neither can a change."""
    hist = [r for i, level in enumerate(levels) for r in rows(f"run{i}", [level, level * 1.01, level * 0.99])]
    order = [f"run{i}" for i in range(len(levels))]
    v = one(rows("now", [4.0, 4.02, 3.98]), hist, order)
    assert v.verdict == "inconclusive" and "earlier runs vary by CV" in v.detail, v.detail
