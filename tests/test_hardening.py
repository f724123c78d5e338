"""The "Hardening" issue: hostile or broken inputs become one clear line, never a traceback or a wrong `ok`."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from trainbench import cli, config, devices, planning
from trainbench.config import ConfigError
from trainbench.frameworks import interpreters
from trainbench.measure import environ, outcome, protocol, runner
from trainbench.measure.protocol import parse
from trainbench.store import imported_logs, run_folder
from trainbench.store.results import ResultStore

import cifar10
from conftest import ROOT, TRAINERS, write_config

PY = sys.executable
REFERENCE = ROOT / "include" / "reference" / "000_8ad6f2660727c232.txt"


def child(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def copy_data(synthetic_data: str, tmp_path: Path) -> Path:
    d = tmp_path / cifar10.DIRNAME
    shutil.copytree(synthetic_data, d)
    return d


# 1. data files are data, never code; trainers get a minimal environment


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_pickle_that_runs_code_is_refused_naming_the_file(synthetic_data, tmp_path, monkeypatch):
    d = copy_data(synthetic_data, tmp_path)
    monkeypatch.chdir(tmp_path)
    with open(d / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": _Evil()}, f, protocol=2)
    with pytest.raises(cifar10.DataError, match=r"data_batch_1: .*refused.*posix.system|data_batch_1: .*system"):
        cifar10.load(str(d))
    assert not (tmp_path / "PWNED").exists()


def test_object_arrays_are_refused(synthetic_data, tmp_path):
    d = copy_data(synthetic_data, tmp_path)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), object), b"labels": [0, 1]}, f, protocol=2)
    with pytest.raises(cifar10.DataError, match="test_batch"):
        cifar10.load(str(d))


def test_trainer_environment_is_minimal():
    base = {
        "PATH": "/usr/bin",
        "HOME": "/home/u",
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "CUDA_VISIBLE_DEVICES": "0",
        "LD_LIBRARY_PATH": "/usr/local/cuda/lib64",
        "OMP_NUM_THREADS": "4",
        "PYTHONHASHSEED": "0",
        "PYTHONPATH": "/opt/airflow/dags",
        "AIRFLOW_HOME": "/opt/airflow",
        "AIRFLOW_CONN_RESULTS": "postgresql://u:pw@db/x",
        "AIRFLOW__CORE__FERNET_KEY": "k",
        "TRAINBENCH_DATABASE_URL": "postgresql://u:pw@db/x",
        "AWS_SECRET_ACCESS_KEY": "s",
        "DB_PASSWORD": "p",
        "GITHUB_TOKEN": "t",
        "RANDOM_THING": "x",
    }
    env = environ.trainer_environ({"MXNET_ENGINE_TYPE": "NaiveEngine", "MY_TOKEN": "t"}, base)
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/home/u",
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "CUDA_VISIBLE_DEVICES": "0",
        "LD_LIBRARY_PATH": "/usr/local/cuda/lib64",
        "OMP_NUM_THREADS": "4",
        "PYTHONHASHSEED": "0",
        "MXNET_ENGINE_TYPE": "NaiveEngine",
    }


def test_the_harness_launches_trainers_with_the_minimal_environment():
    source = (ROOT / "include" / "trainbench" / "workflows" / "harness.py").read_text()
    assert "env=environ.trainer_environ(launch_spec.environ)" in source
    assert "**os.environ, **launch_spec.environ" not in source


# 2. bad labels, shapes, truncated or empty files: one line naming the file


@pytest.mark.parametrize(
    "batch, message",
    [
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, r"data_batch_1: labels must lie in 0\.\.9"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, -1]}, r"data_batch_1: labels must lie in 0\.\.9"),
        ({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, r"data_batch_1: expected N x 3072 uint8"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, r"data_batch_1: expected N x 3072 uint8"),
        ({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]}, r"data_batch_1: 3 images but 2 labels"),
        ({b"labels": [0, 1]}, r"data_batch_1: .*b'data'"),
    ],
)
def test_bad_batches_name_the_file(synthetic_data, tmp_path, batch, message):
    d = copy_data(synthetic_data, tmp_path)
    with open(d / "data_batch_1", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    with pytest.raises(cifar10.DataError, match=message) as err:
        cifar10.load(str(d))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("size", [0, 1000])
def test_empty_or_truncated_batch_names_the_file(synthetic_data, tmp_path, size):
    d = copy_data(synthetic_data, tmp_path)
    path = d / "data_batch_2"
    path.write_bytes(path.read_bytes()[:size])
    with pytest.raises(cifar10.DataError, match=r"data_batch_2: not a CIFAR-10 batch"):
        cifar10.load(str(d))


def test_a_trainer_on_bad_data_exits_with_one_line_naming_the_file(synthetic_data, tmp_path):
    d = copy_data(synthetic_data, tmp_path)
    (d / "test_batch").write_bytes(b"")
    code = f"import sys; sys.path.insert(0, {str(TRAINERS)!r}); import cifar10; cifar10.load_or_exit({str(d)!r})"
    r = runner.run([PY, "-c", code])
    status, error = outcome.classify(r, parse(r.stdout_lines), ("torch",))
    assert status == "crashed" and r.returncode == 1
    assert error.splitlines()[-1].startswith(f"{d / 'test_batch'}: not a CIFAR-10 batch")
    assert "Traceback" not in error


def test_asking_for_more_images_than_the_files_hold_is_an_error(synthetic_data):
    with pytest.raises(cifar10.DataError, match="asked for 5000 training images; .* hold 2048"):
        cifar10.load(synthetic_data, train_images=5000)


# 3. concurrent synthetic writers; run ids


def test_two_processes_writing_the_synthetic_set_at_once(tmp_path):
    code = (
        f"import sys; sys.path.insert(0, {str(TRAINERS)!r}); import cifar10; "
        f"cifar10.write_synthetic({str(tmp_path)!r}, seed=0, train_images=3000, test_images=500)"
    )
    procs = [subprocess.Popen([PY, "-c", code]) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    assert sorted(os.listdir(tmp_path)) == [cifar10.DIRNAME]
    train, test = cifar10.load(str(tmp_path))
    assert len(train.labels) == 3000 and len(test.labels) == 500


@pytest.mark.parametrize(
    "run_id",
    ["manual__2026-11-26T23:35:25.702386+00:00", "scheduled__2026-11-23T03:00:00+00:00", "cli__20261126T233525"],
)
def test_airflow_and_cli_run_ids_keep_their_folder_name(tmp_path, run_id):
    assert run_folder.run_dir(tmp_path, run_id) == tmp_path / "runs" / run_id


@pytest.mark.parametrize("run_id", ["a b", "..", ".", ".hidden", "a/b", "x" * 201, "", "a\nb"])
def test_bad_run_ids_are_refused_with_what_is_accepted(tmp_path, run_id):
    with pytest.raises(ConfigError, match=r"run id .* accepted: 1 to 200 of A-Z a-z 0-9 _ \. : \+ -") as err:
        run_folder.write_settings(tmp_path, run_id, {})
    assert "\n" not in str(err.value)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_distinct_run_ids_get_distinct_folders(tmp_path):
    assert run_folder.run_dir(tmp_path, "a_b") != run_folder.run_dir(tmp_path, "a:b")


def test_cli_refuses_a_bad_run_id_before_running(tmp_path, capsys):
    cfg = write_config(tmp_path)
    assert cli.main(["--config", str(cfg), "run", "--run-id", "x" * 300]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainbench: run id 'xxx") and len(err.splitlines()) == 1
    assert not (tmp_path / "output").exists()


# 5. imported logs keyed by content; empty logs are errors


def test_a_different_log_under_the_same_name_is_a_different_import(tmp_path):
    store = ResultStore(f"sqlite:///{tmp_path}/r.db")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "log.txt", tmp_path / "b" / "log.txt"
    first.write_text(REFERENCE.read_text())
    second.write_text(REFERENCE.read_text().replace("real    0m43.526s", "real    0m44.000s"))
    assert first.read_text() != second.read_text()
    one, again = imported_logs.import_log(store, first), imported_logs.import_log(store, first)
    two = imported_logs.import_log(store, second)
    assert one == again != two and one.startswith("imported:log.txt:") and two.startswith("imported:log.txt:")
    assert sorted(store.run_ids()) == sorted([one, two])
    assert len(store.rows(one)) == len(store.rows(two)) == len(imported_logs.parse_log(REFERENCE.read_text(), "x"))


@pytest.mark.parametrize("text", ["", "# just a title\n\nno blocks here\n"])
def test_an_empty_log_is_an_error(tmp_path, capsys, text):
    log = tmp_path / "empty.txt"
    log.write_text(text)
    with pytest.raises(ValueError, match="empty.txt: no run blocks"):
        imported_logs.parse_log(text, "empty.txt")
    assert cli.main(["--config", str(write_config(tmp_path)), "import-log", str(log)]) != 0
    err = capsys.readouterr().err
    assert err.startswith("trainbench: empty.txt: no run blocks") and len(err.splitlines()) == 1


# 6. `oom` only with evidence; a SIGKILL without it is `killed`


def test_sigkill_without_evidence_is_killed_by_an_external_sender():
    r = runner.run(child("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"))
    status, error = outcome.classify(r, parse([]), ("torch",))
    assert status == "killed" and error.startswith("killed by SIGKILL from outside the harness")


def test_sigkill_with_the_cgroup_oom_kill_counter_raised_is_oom(tmp_path, monkeypatch):
    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n")
    monkeypatch.setattr(runner, "memory_events_path", lambda: events)
    r = runner.run(
        child(f"""
        import os, signal
        open({str(events)!r}, "w").write("low 0\\nhigh 0\\nmax 4\\noom 2\\noom_kill 2\\noom_group_kill 0\\n")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    )
    status, error = outcome.classify(r, parse([]), ("torch",))
    assert (status, r.oom_kills) == ("oom", 1)
    assert "oom_kill counter rose by 1" in error


def test_a_stop_from_airflow_is_killed_naming_the_sender():
    launch = runner.Launch(child("import time; time.sleep(60)"), kill_grace_s=1.0)
    launch.start()
    launch.kill("killed by Airflow (task stopped or execution_timeout)")
    r = launch.wait()
    status, error = outcome.classify(r, parse([]), ("torch",))
    assert status == "killed" and error.startswith("killed by Airflow")


@pytest.mark.parametrize(
    "text",
    [
        "MemoryError",
        "RuntimeError: [enforce fail at alloc_cpu.cpp:114] . DefaultCPUAllocator: can't allocate memory: "
        "you tried to allocate 1073741824 bytes.",
        "terminate called after throwing an instance of 'std::bad_alloc'",
    ],
)
def test_allocation_failures_are_oom(text):
    r = runner.run(child(f"import sys; sys.stderr.write({text!r} + '\\n'); sys.exit(1)"))
    assert outcome.classify(r, parse(r.stdout_lines), ("torch",))[0] == "oom"


def test_killed_is_a_known_and_documented_status():
    assert "killed" in outcome.STATUSES
    docs = (ROOT / "docs" / "measurement.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for status in outcome.STATUSES:
        assert f"| `{status}` |" in docs, status
        assert f"`{status}`" in readme, status


# 7. trainer output cannot abort or poison a run


def test_probe_ignores_a_banner(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\necho 'Welcome to the cluster'\necho '{{not json'\nexec {PY} \"$@\"\n")
    fake.chmod(0o755)
    found = interpreters.probe(str(fake), ("numpy",), environ.trainer_environ({}))
    assert found["python"] and "numpy" in found["packages"]


def test_probe_without_any_json_says_so(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho banner only\n")
    fake.chmod(0o755)
    found = interpreters.probe(str(fake), ("numpy",), environ.trainer_environ({}))
    assert found["python"] is None and "no JSON line" in found["error"]


@pytest.mark.parametrize(
    "line, reason",
    [
        ('{"event": "epoch", "epoch": 1, "seconds": "abc", "images_per_s": 1.0, "loss": 1.0}', "seconds"),
        ('{"event": "epoch", "epoch": 1, "images_per_s": 1.0, "loss": 1.0}', "seconds"),
        ('{"event": "epoch", "epoch": true, "seconds": 1.0, "images_per_s": 1.0, "loss": 1.0}', "epoch"),
        ('{"event": "summary", "test_accuracy": "high"}', "test_accuracy"),
        ('{"event": "epoch", "epoch": 1, "seconds": 1.0, "images_per_s": 1.0, "loss": null}', "loss"),
        ('{"event": "summary", "test_accuracy": 0.5, "parameters": "many"}', "parameters"),
        ('{"event": "start", "framework": 3}', "framework"),
    ],
)
def test_a_malformed_event_makes_the_row_crashed(line, reason):
    summary = '{"event": "summary", "test_accuracy": 0.5, "parameters": 10}'
    r = runner.run(child(f"print({line!r}); print({summary!r})"))
    report = parse(r.stdout_lines)
    assert report.errors and reason in report.errors[0]
    status, error = outcome.classify(r, report, ("torch",))
    assert status == "crashed" and "malformed trainer output" in error and reason in error
    assert protocol.parse_line(line) is None


def test_huge_lines_are_capped_when_captured_and_stored():
    r = runner.run(child("import sys; sys.stderr.write('E' * 10_000_000 + 'END\\n'); sys.exit(1)"))
    [line] = r.stderr_tail
    assert len(line) < 20_000 and line.endswith("END") and "characters omitted" in line
    status, error = outcome.classify(r, parse([]), ("torch",))
    assert status == "crashed" and len(error.encode()) < 9_000 and "omitted" in error


def test_error_excerpt_keeps_head_and_tail():
    text = "H" * 5000 + "M" * 20000 + "T" * 5000
    clipped = runner.clip(text, 4096, 4096)
    assert clipped.startswith("H" * 4096) and clipped.endswith("T" * 4096)
    assert "[... 21808 characters omitted ...]" in clipped
    assert runner.clip("short", 4096, 4096) == "short"


# 8. configuration mistakes are one clear line


def write(tmp_path: Path, text: str) -> Path:
    base = write_config(tmp_path).read_text()
    path = tmp_path / "trainbench.toml"
    path.write_text(base + text)
    return path


@pytest.mark.parametrize(
    "extra, message",
    [
        ('[pathz]\nx = "y"\n', r"unknown section\(s\) \['pathz'\]; accepted: \['benchmark', 'measurement'"),
        ("", None),
    ],
)
def test_unknown_sections(tmp_path, extra, message):
    path = write(tmp_path, extra)
    if message is None:
        config.load(path)
        return
    with pytest.raises(ConfigError, match=message):
        config.load(path)


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("output_dir =", "outptu_dir =", r"\[paths\]: unknown key\(s\) \['outptu_dir'\]; accepted: \['data_dir'"),
        (
            "[frameworks.jax]\npython =",
            "[frameworks.jax]\npyhton =",
            r"\[frameworks.jax\]: unknown key\(s\) \['pyhton'\]; accepted: \['base_python', 'env', 'python'",
        ),
        (
            "timeout_s = 600",
            'timeout_s = "5"',
            r"\[benchmark\] timeout_s must be a number of seconds > 0 and <= 604800 \(a week\), got '5'",
        ),
        ("epochs = 2", "epochs = true", r"epochs must be an integer >= 1, got True"),
        (
            "repeats = 1",
            'repeats = 1\nseed = "x"',
            r"seed must be an integer from 0 to 2\*\*32 - 1 \(numpy's seeds\), got 'x'",
        ),
        ('frameworks = ["pytorch"]', 'frameworks = "pytorch"', r"frameworks must be a list, got 'pytorch'"),
        ('device_sets = ["cpu"]', 'device_sets = "cpu"', r"device_sets must be a list, got 'cpu'"),
        ('frameworks = ["pytorch"]', 'frameworks = ["pytorch", "pytorch"]', r"frameworks lists 'pytorch' twice"),
        (
            "[fleet]",
            '[measurement]\nidle_wait_s = "5"\n[fleet]',
            r"\[measurement\] idle_wait_s must be a finite number",
        ),
        ("[paths]", '[regression]\nlookback_runs = "8"\n[paths]', r"\[regression\] lookback_runs must be an int"),
        ("[paths]", "[regression]\nfail_on_regression = 1\n[paths]", r"fail_on_regression must be true or false"),
        ("[paths]", "[paths]\n[paths]", r"malformed TOML: .*line \d+"),
        ('database_url = ""', 'database_url = "not a url"', r"database_url .* is not a SQLAlchemy URL"),
        ('database_url = ""', "database_url = 5", r"\[paths\] database_url must be a string"),
        ("[frameworks.jax]", "[frameworks.jax]\nenv = 3", r"\[frameworks.jax\] env must be a table"),
        ("[fleet]", "frameworks = 3\n[fleet]", r"\[paths\]: unknown key\(s\) \['frameworks'\]"),
    ],
)
def test_configuration_mistakes_are_one_line(tmp_path, old, new, message):
    path = write_config(tmp_path)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=message) as err:
        config.load(path)
    assert "\n" not in str(err.value)


def test_cpu_workers_are_bounded_by_the_hosts_cores():
    inv = devices.Inventory(gpus=(), cpu_model="t", cpu_count=2)
    assert planning.resolve_device_set("cpu:2", inv).workers == 2
    with pytest.raises(ConfigError, match=r"device set 'cpu:999' asks for 999 CPU workers; this host has 2 cores"):
        planning.resolve_device_set("cpu:999", inv)


@pytest.mark.parametrize("command", [["results"], ["report", "--run-id", "latest"]])
def test_read_only_commands_create_no_database(tmp_path, capsys, command):
    cfg = write_config(tmp_path)
    assert cli.main(["--config", str(cfg), *command]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainbench: no results database at ") and "run a benchmark first" in err
    assert not (tmp_path / "output").exists()


def test_cli_database_and_filesystem_errors_are_one_line(tmp_path, capsys):
    cfg = write_config(tmp_path, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert cli.main(["--config", str(cfg), "results"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainbench: ") and len(err.strip().splitlines()) == 1
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder should be")
    cfg = write_config(tmp_path, database_url=f"sqlite:///{blocked}/sub/r.db")
    assert cli.main(["--config", str(cfg), "import-log", str(REFERENCE)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainbench: ") and len(err.strip().splitlines()) == 1


def test_malformed_toml_in_the_cli(tmp_path, capsys):
    path = tmp_path / "trainbench.toml"
    path.write_text("[benchmark]\nepochs = = 2\n")
    assert cli.main(["--config", str(path), "plan"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"trainbench: {path}: malformed TOML") and "line 2" in err


LYING_TRAINER = """
import json, time
def emit(kind, **fields):
    print(json.dumps({"event": kind, "t": time.time(), **fields}), flush=True)
emit("start", framework="pytorch")
for epoch in (1, 2):
    emit("epoch", epoch=epoch, seconds=%(seconds)s, images=256, images_per_s=%(rate)s, loss=1.0)
emit("summary", parameters=1000, train_images=256)
"""


@pytest.mark.parametrize(
    ("seconds", "rate", "error"),
    [
        (0.3, 5e7, "epoch 1 claims 5e+07 images/s for 256 images in 0.3 s (853.333 images/s)"),
        (300, 256 / 300, "its epochs took 600 s in all, longer than the whole trainer ran"),
    ],
)
def test_a_trainer_whose_figures_contradict_themselves_or_the_clock_is_crashed_not_ok(tmp_path, seconds, rate, error):
    from trainbench.workflows import harness, pipeline

    script = tmp_path / "lying_train.py"
    script.write_text(LYING_TRAINER % {"seconds": seconds, "rate": rate})
    python = tmp_path / "python"  # an interpreter that runs the lying trainer whatever it is asked to run
    python.write_text(f"#!/bin/sh\nexec {ROOT / '.envs' / 'pytorch' / 'bin' / 'python'} {script}\n")
    python.chmod(0o755)
    cfg = config.load(write_config(tmp_path, interpreters={"pytorch": {"python": str(python)}}))
    inventory = pipeline.discover_devices()
    [spec] = pipeline.plan_matrix(cfg.settings, inventory, pipeline.prepare_dataset(cfg, cfg.settings, inventory))
    pipeline.start_run(cfg, "lying", cfg.settings)
    r = harness.run_case(cfg, "lying", spec, log=lambda m: None)
    assert r.status == "crashed" and error in r.error


def test_a_full_disk_while_writing_the_synthetic_set_names_it_and_leaves_no_partial_folder(tmp_path, monkeypatch):
    import errno

    written = []

    def dump_until_full(path, batch):
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(path)
        Path(path).write_bytes(b"x")

    monkeypatch.setattr(cifar10, "dump_batch", dump_until_full)
    with pytest.raises(OSError, match=r"No space left on device \(writing the synthetic data set for .*data"):
        cifar10.write_synthetic(str(tmp_path / "data"), train_images=50, test_images=10)
    assert list((tmp_path / "data").iterdir()) == []


def test_a_report_that_cannot_be_written_leaves_the_run_validated_and_never_latest(tmp_path):
    from trainbench.store.results import PUBLISHED, VALIDATED
    from trainbench.workflows import harness, pipeline

    from test_results import result

    cfg = config.load(write_config(tmp_path))
    pipeline.start_run(cfg, "full", cfg.settings)
    harness._save(cfg, result(run_id="full"), log=lambda m: None)
    db = pipeline.store(cfg)
    db.set_state("full", VALIDATED)
    blocked = run_folder.run_dir(cfg.output_dir, "full") / "report.md"
    blocked.mkdir()  # what a full disk does to the write, as far as the run's state can tell
    with pytest.raises(OSError, match="report.md"):
        pipeline.publish(cfg, "full")
    assert db.run_state("full") == VALIDATED and not (cfg.output_dir / "latest").exists()
    blocked.rmdir()
    assert pipeline.publish(cfg, "full")["latest"] and db.run_state("full") == PUBLISHED
