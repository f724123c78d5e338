"""The original hand-made log, parsed into result rows and stored beside live ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainbench import fingerprint
from trainbench.store.imported_logs import import_log, parse_log
from trainbench.store.results import RESULT_FIELDS, ResultStore

REFERENCE = Path(__file__).parents[1] / "include" / "reference" / "000_8ad6f2660727c232.txt"  # the original log

RUNS = [
    ("neon", "0,1,2", "crashed", 1),
    ("neon", "0,1", "ok", 1),
    ("neon", "0", "ok", 1),
    ("neon", "2", "ok", 1),
    ("mxnet", "0,1,2", "ok", 1),
    ("mxnet", "0,1", "ok", 1),
    ("mxnet", "0", "ok", 1),
    ("mxnet", "2", "ok", 1),
    ("neon", "0", "ok", 2),
]

SMALL = """## Devices
* Device 0: Titan X (idle memory 138MiB at test)
* Tested on `max4`

### Titan X
```
$ time python cifar10_conv.py -b gpu -e 10 -z 128 -i 0
real    0m20.616s
user    0m17.219s
sys     0m3.303s
peak memory    (1041 - 138)MiB
```
"""


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return [r.to_dict() for r in parse_log(REFERENCE.read_text(), REFERENCE.name)]


def test_every_run_in_the_log(rows):
    assert [(r["framework"], r["device_set"], r["status"], r["repeat"]) for r in rows] == RUNS
    assert all(set(RESULT_FIELDS) | {"devices"} <= set(r) for r in rows)
    assert len({r["case_key"] for r in rows}) == 9
    assert rows[-1]["summary"]["heading"] == "MXNet" and rows[-1]["case_key"] == "neon__0__r2"
    assert rows[-1]["env_key"] == rows[2]["env_key"]


def test_crash_keeps_the_error(rows):
    crash = rows[0]
    assert crash["device_names"] == "Titan X + Titan X + GTX 980"
    assert crash["error"].startswith("Boost.Python.ArgumentError: Python argument types in\n")
    assert crash["error"].endswith("n::api::object stream=None)")
    assert crash["wall_s"] is crash["user_s"] is crash["sys_s"] is crash["peak_mem_mib"] is None
    assert crash["devices"] == []


def test_exact_figures(rows):
    neon = rows[1]
    assert (neon["wall_s"], neon["user_s"], neon["sys_s"]) == (43.526, 40.118, 3.797)
    assert neon["command"] == "python cifar10_conv.py -b mgpu -m 3 -e 10 -z 128"
    assert neon["devices"] == [
        {
            "device": "log:0",
            "name": "Titan X",
            "idle_mib": 138,
            "peak_mib": 1038,
            "used_mib": 900,
            "method": "log_peak_minus_idle",
        },
        {
            "device": "log:1",
            "name": "Titan X",
            "idle_mib": 29,
            "peak_mib": 201,
            "used_mib": 172,
            "method": "log_peak_minus_idle",
        },
    ]
    assert neon["peak_mem_mib"] == 1072
    assert neon["environment"] == {
        "source": "historical",
        "hostname": "max4",
        "gpu_names": ["Titan X", "Titan X"],
        "framework": "neon",
        "data_kind": "real",
        "epochs": 10,
        "batch_size": 128,
    }
    mxnet = rows[4]
    assert mxnet["user_s"] == pytest.approx(147.192) and mxnet["peak_mem_mib"] == 522
    assert [d["device"] for d in mxnet["devices"]] == ["log:0", "log:1", "log:2"]
    assert rows[3]["device_names"] == "GTX 980" and rows[3]["peak_mem_mib"] == 869


def test_import_round_trip_is_idempotent(tmp_path):
    store = ResultStore(f"sqlite:///{tmp_path}/r.db")
    run_id = import_log(store, REFERENCE)
    assert import_log(store, REFERENCE) == run_id and run_id.startswith(f"imported:{REFERENCE.name}:")
    stored = store.rows(run_id)
    assert [(r["framework"], r["device_set"], r["status"], r["repeat"]) for r in stored] == RUNS
    assert stored[5]["user_s"] == pytest.approx(131.367)
    assert [d["used_mib"] for d in stored[1]["devices"]] == [900, 172]
    assert store.run_ids() == [run_id]


def test_small_log_and_its_key():
    [row] = [r.to_dict() for r in parse_log(SMALL, "small.txt")]
    assert (row["case_key"], row["status"], row["peak_mem_mib"]) == ("neon__0__r1", "ok", 903)
    assert row["env_key"] != fingerprint.env_key(row["environment"])


@pytest.mark.parametrize(
    "edits, message",
    [
        ({"real    0m20.616s\n": ""}, "bad.txt:7: the run's block lacks real"),
        ({"0m20.616s": "forty seconds"}, "bad.txt:8: expected 'real"),
        ({"(1041 - 138)MiB": "(1041 - 138)MiB + (5 - 1)MiB"}, "bad.txt:11: 2 memory figures for 1 GPUs"),
        ({"cifar10_conv.py": "train.py"}, "bad.txt:7: expected a command running one of"),
        ({"-e 10": "-e ten"}, "bad.txt:7: -e and -z must be whole numbers"),
        ({"-i 0": "-i 1"}, "bad.txt:7: GPU 1 is not in the '## Devices' list"),
        ({"### Titan X": "### GTX 980"}, r"bad.txt:7: the command's GPUs \[0\] \(Titan X\) differ from the title"),
        (
            {"-b gpu": "-b mgpu", " -i 0": "", "### Titan X": "### Titan X + Titan X"},
            "bad.txt:7: title device 'Titan X'",
        ),
        ({"MiB\n```": "MiB"}, "bad.txt:6: the ``` block opened here is never closed"),
        ({"0m20.616s": "0m0.000s"}, "bad.txt:8: a run that trained took more than 0 s of real time"),
        ({"(1041 - 138)MiB": "(10 - 500)MiB"}, r"bad.txt:11: a peak below its idle memory: \(10 - 500\)MiB"),
    ],
)
def test_malformed_log_names_the_line(edits, message):
    text = SMALL
    for old, new in edits.items():
        text = text.replace(old, new)
    with pytest.raises(ValueError, match=message):
        parse_log(text, "bad.txt")
