import json

import pytest

from trainbench.measure.protocol import check_epochs, parse, parse_line

LINES = [
    "Warning: something the framework printed",
    '{"event": "start", "framework": "pytorch", "parameters": 420096}',
    *(
        json.dumps(
            {"event": "epoch", "epoch": n, "seconds": s, "images": 1000, "images_per_s": r, "loss": l, "accuracy": a}
        )
        for n, s, r, l, a in ((1, 2.0, 500.0, 2.1, 0.2), (2, 1.0, 1000.0, 1.5, 0.5), (3, 0.8, 1250.0, 1.0, 0.7))
    ),
    '{"event": "epoch", "epoch": 4, "trunc',
    '{"not": "an event"}',
    '{"event": "summary", "parameters": 420096, "test_accuracy": 0.6}',
]


def test_parse_keeps_events_and_ignores_the_rest():
    r = parse(LINES)
    assert r.start["framework"] == "pytorch"
    assert [e["epoch"] for e in r.epochs] == [1, 2, 3]
    assert r.summary == {"parameters": 420096, "test_accuracy": 0.6}
    assert r.losses == [2.1, 1.5, 1.0]


def test_steady_state_skips_the_first_epoch():
    assert parse(LINES).steady_images_per_s == 1125.0
    assert parse(LINES[:3]).steady_images_per_s is None  # one epoch: warm-up only, no steady figure
    assert parse([]).steady_images_per_s is None


def test_parse_line():
    assert parse_line("  " + LINES[1]) == {"event": "start", "framework": "pytorch", "parameters": 420096}
    assert parse_line("[1, 2]") is None and parse_line("") is None


def test_marks_cut_the_timeline_and_a_mark_without_its_time_is_an_error():
    good = parse(['{"event": "mark", "name": "ready", "t": 1700000000.5}', '{"event": "mark", "name": "data"}'])
    assert good.marks == {"ready": 1700000000.5}
    assert good.errors == ["stdout line 2: mark event lacks 't'"]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"seconds": -5}, "epoch event field 'seconds' must lie in (0, 1e+07], got -5"),
        ({"images_per_s": 1e12}, "epoch event field 'images_per_s' must lie in (0, 1e+08], got 1000000000000.0"),
        ({"accuracy": 7.5}, "epoch event field 'accuracy' must lie in [0, 1], got 7.5"),
        ({"loss": float("nan")}, "epoch event field 'loss' must be finite, got nan"),
        ({"images_per_s": float("inf")}, "epoch event field 'images_per_s' must be finite, got inf"),
    ],
)
def test_impossible_figures_are_protocol_errors(fields, message):
    epoch = {"event": "epoch", "epoch": 1, "seconds": 1.0, "images_per_s": 5000.0, "loss": 1.5, **fields}
    report = parse([json.dumps(epoch)])  # json writes NaN and Infinity, as a forged trainer may
    assert report.errors == [f"stdout line 1: {message}"] and report.epochs == []


def test_a_summary_with_impossible_memory_or_accuracy_is_an_error():
    for fields in ({"allocator_peak_mib": -5}, {"test_accuracy": 7.5}):
        assert parse([json.dumps({"event": "summary", **fields})]).errors


def test_more_epochs_than_planned_are_an_error_and_dropped():
    epoch = {"event": "epoch", "epoch": 1, "seconds": 1.0, "images_per_s": 5000.0, "loss": 1.5}
    report = parse([json.dumps(epoch)] * 200_000)
    check_epochs(report, 2)
    assert report.errors == ["200000 epoch events for a run of 2 epochs"] and len(report.epochs) == 2
