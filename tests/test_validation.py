"""The result validation: good rows pass, each kind of planted defect fails with a readable reason."""

from __future__ import annotations

import copy
from html.parser import HTMLParser

import pytest

from trainbench.checks.validation import run_suite as validate

GPU = "GPU-0000"


def ok_row(case_key: str, gpu: bool = False, env_key: str = "env1") -> dict:
    """A plausible ok result: two epochs, falling loss, memory within its device."""
    device = (
        {
            "device": GPU,
            "name": "H100",
            "idle_mib": 500.0,
            "peak_mib": 2500.0,
            "used_mib": 2000.0,
            "method": "nvml_sampled",
        }
        if gpu
        else {
            "device": "host",
            "name": "CPU",
            "idle_mib": None,
            "peak_mib": 900.0,
            "used_mib": 900.0,
            "method": "host_rss",
        }
    )
    return {
        "run_id": "r1",
        "case_key": case_key,
        "framework": case_key.split("-")[0],
        "env_key": env_key,
        "status": "ok",
        "wall_s": 30.0,
        "user_s": 50.0,
        "sys_s": 2.0,
        "parameters": 420096,
        "epochs": [{"epoch": 1, "seconds": 12.0, "loss": 2.1}, {"epoch": 2, "seconds": 11.0, "loss": 1.6}],
        "phases": {
            "startup": 5.0,
            "data": 1.0,
            "first_epoch": 12.0,
            "steady_training": 11.0,
            "evaluation": 0.8,
            "teardown": 0.2,
        },
        "devices": [device],
        "environment": {
            "device_kind": "gpu" if gpu else "cpu",
            "gpu_uuids": [GPU] if gpu else [],
            "gpu_memory_total_mib": [81559] if gpu else [],
        },
    }


def crashed_row(case_key: str) -> dict:
    return {
        "run_id": "r1",
        "case_key": case_key,
        "framework": case_key.split("-")[0],
        "env_key": "env1",
        "status": "crashed",
        "wall_s": None,
        "user_s": None,
        "sys_s": None,
        "parameters": None,
        "epochs": None,
        "devices": [],
        "environment": {"device_kind": "gpu", "gpu_uuids": [GPU], "gpu_memory_total_mib": [81559]},
    }


def good_rows() -> list[dict]:
    neon = ok_row("neon-gpu0-r1", gpu=True)
    neon["parameters"] = None
    return [ok_row("pytorch-cpu-r1"), ok_row("pytorch-gpu0-r1", gpu=True), neon, crashed_row("mxnet-gpu0-r1")]


PLANNED = [r["case_key"] for r in good_rows()]


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)


def test_good_rows_pass_and_write_data_docs(tmp_path):
    result = validate(good_rows(), PLANNED, tmp_path / "docs", host_memory_mib=16000)
    assert result.success, result.summary()
    assert result.failures == []
    assert result.statistics["unsuccessful_expectations"] == 0 and result.statistics["rows"] == 4
    assert result.docs_index == tmp_path / "docs" / "index.html"
    html = result.docs_index.read_text()
    parser = _Tags()
    parser.feed(html)
    assert "<html" in html and {"html", "body", "table"} <= parser.tags


def _set(index: int, **changes):
    def plant(rows):
        rows[index].update(changes)
        return rows

    return plant


def _rising_loss(rows):
    rows[0]["epochs"][1]["loss"] = 2.5
    return rows


def _duplicate(rows):
    return rows + [copy.deepcopy(rows[1])]


def _extra_case(rows):
    return rows + [ok_row("jax-cpu-r1")]


def _over_capacity(rows):
    rows[1]["devices"][0]["used_mib"] = 90000.0
    return rows


def _epoch(**fields):
    def plant(rows):
        rows[0]["epochs"][0].update(fields)
        return rows

    return plant


def _nan_loss(rows):
    rows[0]["epochs"][0]["loss"] = float("nan")
    return rows


@pytest.mark.parametrize(
    "plant, expected",
    [
        (_set(0, wall_s=-1.0), ["wall time is positive", "wall_s", "-1.0", "pytorch-cpu-r1"]),
        (lambda rows: rows[:-1], ["every planned case has a row", "in cases [mxnet-gpu0-r1]"]),
        (_extra_case, ["every row is a planned case", "in cases [jax-cpu-r1]"]),
        (_duplicate, ["no case has more than one row", "[pytorch-gpu0-r1, pytorch-gpu0-r1]"]),
        (_set(1, parameters=420095), ["spec's parameters", "420095", "pytorch-gpu0-r1"]),
        (
            _set(0, wall_s=20.0),
            ["wall time covers the sum of epoch times", "wall_s, epoch_seconds_total", "pytorch-cpu-r1"],
        ),
        (_rising_loss, ["the loss falls", "first_loss, last_loss", "(2.1, 2.5)", "pytorch-cpu-r1"]),
        (_nan_loss, ["loss is finite", "pytorch-cpu-r1"]),
        (_over_capacity, ["fits the device", "memory_fraction", "pytorch-gpu0-r1"]),
        (_set(0, status="exploded"), ["status is known", "exploded", "pytorch-cpu-r1"]),
        (_set(0, wall_s=36.0), ["phases add up to the wall time within 2%", "phases_gap", "pytorch-cpu-r1"]),
        (_set(0, images_per_s=1e12), ["images/s is positive and at most 1e+08", "pytorch-cpu-r1"]),
        (_set(0, test_accuracy=7.5), ["accuracy in 0..1", "7.5", "pytorch-cpu-r1"]),
        (_set(0, peak_mem_mib=-5.0), ["peak memory is not negative", "-5.0", "pytorch-cpu-r1"]),
        (_epoch(seconds=-5.0), ["figures are finite and possible", "pytorch-cpu-r1"]),
        (_epoch(images_per_s=float("inf")), ["figures are finite and possible", "pytorch-cpu-r1"]),
    ],
    ids=[
        "negative-wall",
        "missing-case",
        "extra-case",
        "duplicate",
        "parameters",
        "wall-below-epochs",
        "rising-loss",
        "nan-loss",
        "over-capacity",
        "unknown-status",
        "phases-do-not-add-up",
        "impossible-rate",
        "impossible-accuracy",
        "negative-memory",
        "negative-epoch-seconds",
        "infinite-epoch-rate",
    ],
)
def test_planted_defect_fails_with_readable_summary(tmp_path, plant, expected):
    result = validate(plant(good_rows()), PLANNED, tmp_path / "docs", host_memory_mib=16000)
    summary = result.summary()
    assert not result.success
    assert result.statistics["unsuccessful_expectations"] == len(result.failures) >= 1
    for text in expected:
        assert text in summary, summary
    assert result.docs_index.exists()


def test_a_project_trainer_must_report_its_parameters_and_every_planned_epoch(tmp_path):
    assert validate(good_rows(), PLANNED, tmp_path / "a", epochs=2).success
    result = validate(good_rows(), PLANNED, tmp_path / "b", epochs=3)
    assert not result.success and "every one of the 3 planned epochs reported" in result.summary()
    silent = good_rows()
    silent[0]["parameters"] = None
    result = validate(silent, PLANNED, tmp_path / "c")
    assert not result.success and "report their parameter count" in result.summary()
    assert "pytorch-cpu-r1" in result.summary()


def test_host_memory_is_checked_only_when_known(tmp_path):
    rows = good_rows()
    rows[0]["devices"][0]["used_mib"] = 20000.0
    assert validate(rows, PLANNED, tmp_path / "a").success
    result = validate(rows, PLANNED, tmp_path / "b", host_memory_mib=16000)
    assert not result.success and "memory_fraction" in result.summary()
