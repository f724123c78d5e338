import json

from trainbench.measure.protocol import parse, parse_line

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
    assert parse(LINES[:3]).steady_images_per_s == 500.0
    assert parse([]).steady_images_per_s is None


def test_parse_line():
    assert parse_line("  " + LINES[1]) == {"event": "start", "framework": "pytorch", "parameters": 420096}
    assert parse_line("[1, 2]") is None and parse_line("") is None


def test_marks_cut_the_timeline_and_a_mark_without_its_time_is_an_error():
    good = parse(['{"event": "mark", "name": "ready", "t": 1700000000.5}', '{"event": "mark", "name": "data"}'])
    assert good.marks == {"ready": 1700000000.5}
    assert good.errors == ["stdout line 2: mark event lacks 't'"]
