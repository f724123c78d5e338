"""The results store on SQLite and PostgreSQL: round trips, migrations, idempotency, outage fallback."""

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from trainbench import config, devices
from trainbench.config import ConfigError
from trainbench.result import Result
from trainbench.store import run_folder
from trainbench.store.results import IMPORTED_LOG, INVALID, PUBLISHED, RUNNING, ResultStore, metadata
from trainbench.workflows import harness, pipeline

from conftest import write_config


def result(run_id="r1", case_key="pytorch__0__r1", env_key="e1", wall=12.5, status="ok") -> Result:
    return Result.from_dict(
        {
            "run_id": run_id,
            "case_key": case_key,
            "env_key": env_key,
            "framework": "pytorch",
            "device_set": "0",
            "device_names": "NVIDIA H100",
            "repeat": 1,
            "status": status,
            "wall_s": wall,
            "user_s": 10.0,
            "sys_s": 1.5,
            "peak_mem_mib": 1025.0,
            "peak_mem_method": "NVML",
            "images_per_s": 78000.0,
            "parameters": 420096,
            "final_loss": 0.5,
            "test_accuracy": 0.7,
            "error": None,
            "command": "python t.py",
            "started_at": dt.datetime(2026, 11, 23, 3, 0, tzinfo=dt.UTC),
            "epochs": [{"epoch": 1, "seconds": 0.7, "loss": 1.2}],
            "summary": {"parameters": 420096},
            "environment": {"driver_version": "580.65"},
            "telemetry": {"gpu_samples": 2076},
            "phases": {
                "startup": 4.5,
                "data": 0.5,
                "first_epoch": 1.5,
                "steady_training": 5.5,
                "evaluation": 0.3,
                "teardown": 0.2,
            },
            "devices": [
                {
                    "device": "GPU-1",
                    "name": "NVIDIA H100",
                    "idle_mib": 480.0,
                    "peak_mib": 1505.0,
                    "used_mib": 1025.0,
                    "method": "nvml_sampled",
                },
                {
                    "device": "GPU-1",
                    "name": "NVIDIA H100",
                    "idle_mib": None,
                    "peak_mib": None,
                    "used_mib": 1016.0,
                    "method": "nvml_accounting",
                },
            ],
        }
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = f"sqlite:///{tmp_path}/results.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    s = ResultStore(url)
    yield s
    if request.param == "postgresql":
        metadata.drop_all(s.engine)
        with s.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS trainbench_schema_version"))
    s.engine.dispose()


def test_round_trip_keeps_every_field_and_device(store):
    store.save_run("r1", {"epochs": 10})
    store.save(result())
    (row,) = store.rows("r1")
    expected = result()
    for key in ("status", "wall_s", "device_names", "epochs", "environment", "telemetry", "parameters"):
        assert row[key] == getattr(expected, key)
    assert row["started_at"].replace(tzinfo=dt.UTC) == expected.started_at
    assert [(d["method"], d["used_mib"]) for d in row["devices"]] == [
        ("nvml_sampled", 1025.0),
        ("nvml_accounting", 1016.0),
    ]


def test_retry_replaces_and_a_new_environment_adds(store):
    store.save_run("r1", {})
    store.save(result(wall=12.5, status="crashed"))
    store.save(result(wall=11.0))
    assert [(r["status"], r["wall_s"], len(r["devices"])) for r in store.rows("r1")] == [("ok", 11.0, 2)]
    store.save(result(env_key="e2-new-driver", wall=10.0))
    assert sorted(r["env_key"] for r in store.rows("r1")) == ["e1", "e2-new-driver"]
    store.save_run("r1", {"changed": True})
    assert store.run_ids() == ["r1"]


def test_migrations_build_exactly_the_declared_schema(store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert [
        d
        for d in diff
        if not (isinstance(d, tuple) and d[0] == "remove_table" and d[1].name == "trainbench_schema_version")
    ] == []
    ResultStore(str(store.engine.url.render_as_string(hide_password=False)))  # upgrading again is a no-op


def test_non_finite_numbers_are_stored_as_null(store):
    store.save_run("r1", {})
    diverged = result(status="ok")
    diverged.final_loss, diverged.epochs = float("nan"), [{"epoch": 1, "seconds": 1.0, "loss": float("inf")}]
    (row,) = [store.rows("r1")[0] for _ in [store.save(diverged)]]
    assert row["final_loss"] is None and row["epochs"] == [{"epoch": 1, "seconds": 1.0, "loss": None}]


def test_verdicts_are_replaced_per_run(store):
    store.save_run("r1", {})
    v = {
        "framework": "pytorch",
        "device_set": "0",
        "env_key": "e1",
        "metric": "wall_s",
        "verdict": "stable",
        "current": 1.0,
        "baseline": 1.0,
        "change": 0.0,
        "p_value": 0.5,
        "history_runs": 3,
        "detail": "x",
    }
    store.save_verdicts("r1", [v])
    store.save_verdicts("r1", [{**v, "verdict": "regressed"}])
    assert [x["verdict"] for x in store.verdicts()] == ["regressed"]


def test_database_outage_loses_nothing(tmp_path, synthetic_data):
    """A case measured while the database is down keeps its raw JSON; collect loads it later."""
    cfg = config.load(write_config(tmp_path, epochs=1, train_images=256))
    down = config.Config(**{**cfg.__dict__, "database_url": "postgresql+psycopg://postgres@127.0.0.1:1/none"})
    (spec,) = pipeline.plan_matrix(
        cfg.settings, devices.discover().to_dict(), {"kind": "synthetic", "data_dir": synthetic_data}
    )
    with pytest.raises(sa.exc.OperationalError):
        pipeline.start_run(down, "outage", cfg.settings)
    with pytest.raises(sa.exc.OperationalError):
        harness.run_case(down, "outage", spec, log=lambda m: None)
    (raw,) = (run_folder.run_dir(cfg.output_dir, "outage") / "raw").glob("*.json")
    measured = json.loads(raw.read_text())
    assert measured["status"] == "ok"
    said = []
    harness.run_case(cfg, "outage", spec, log=said.append)  # the task's retry, database back
    assert "storing the result an earlier try measured" in said[0]
    assert [r["wall_s"] for r in ResultStore(cfg.database_url).rows("outage")] == [measured["wall_s"]]
    assert pipeline.collect(cfg, "outage") == {"rows": 1, "loaded_from_raw": 0, "statuses": {"ok": 1}}
    rows = pipeline.store(cfg).current_rows("outage")
    assert [(r["case_key"], r["status"]) for r in rows] == [("gpu__pytorch__cpu__r1", "ok")]
    assert rows[0]["wall_s"] > 0 and rows[0]["devices"][0]["method"] == "host_rss"


EIGHT_GPUS = ",".join(f"GPU-{i:08x}-1111-2222-3333-444444444444" for i in range(8))


def test_a_device_set_of_eight_gpu_uuids_is_stored_and_written_raw(store, tmp_path):
    store.save_run("r1", {})
    r = result(case_key=f"pytorch__{EIGHT_GPUS.replace(',', '-')}__r1")
    r.device_set = EIGHT_GPUS
    assert len(r.case_key) > 330
    store.save(r)
    (row,) = store.rows("r1")
    assert row["device_set"] == EIGHT_GPUS and row["case_key"] == r.case_key
    path = run_folder.write_raw(tmp_path / "output", r)
    assert len(path.name) < 200
    assert [x.case_key for x in run_folder.raw_results(tmp_path / "output", "r1")] == [r.case_key]


def test_only_a_published_run_is_latest(store):
    for run, state in (("week1", PUBLISHED), ("week2", RUNNING), ("week3", INVALID)):
        store.save_run(run, {})
        store.save(result(run_id=run))
        store.set_state(run, state)
    assert store.run_state("week2") == RUNNING and store.latest_run_id() == "week1"
    store.set_state("week2", PUBLISHED)
    assert store.latest_run_id() == "week2"


def test_a_run_id_taken_by_the_other_source_is_refused(store):
    store.save_run("imported:log.txt:abc", {}, source=IMPORTED_LOG)
    with pytest.raises(ConfigError, match="run id 'imported:log.txt:abc' is already an imported log's; choose"):
        store.save_run("imported:log.txt:abc", {})
    store.save_run("cli__x", {})
    with pytest.raises(ConfigError, match="run id 'cli__x' is already a benchmark run's"):
        store.save_run("cli__x", {}, source=IMPORTED_LOG)


def test_importing_the_same_log_twice_at_once_leaves_one_copy(store):
    from concurrent.futures import ThreadPoolExecutor

    from trainbench.store import imported_logs

    from test_imported_logs import REFERENCE

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda _: imported_logs.import_log(store, REFERENCE), range(4)))
    assert len(set(ids)) == 1
    expected = imported_logs.parse_log(REFERENCE.read_text(), REFERENCE.name)
    assert len(store.rows(ids[0])) == len(expected)


def test_a_full_disk_names_the_file_and_what_was_being_written(tmp_path, capsys):
    """/dev/full answers every write with ENOSPC, as a full disk does: the raw result's temporary file is linked
    there, and the CLI's one line names the file and the step."""
    import os
    import threading

    from trainbench import cli

    r = result()
    path = run_folder.raw_path(tmp_path / "output", r.run_id, r.case_key, r.env_key)
    path.parent.mkdir(parents=True)
    path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}").symlink_to("/dev/full")
    with pytest.raises(OSError) as err:
        run_folder.write_raw(tmp_path / "output", r)
    message = cli.one_line(err.value)
    assert message == f"No space left on device (writing the raw result of {r.case_key}): {path}"
    assert not path.exists()


def test_a_quarantine_keeps_its_first_reason_and_alerts_are_recorded_once(store):
    assert store.quarantined("r1", "gpu-a") is None
    assert (
        store.quarantine("r1", "gpu-a", "GPU-1: 2 new uncorrectable ECC errors")
        == "GPU-1: 2 new uncorrectable ECC errors"
    )
    assert store.quarantine("r1", "gpu-a", "doctor: output folder") == "GPU-1: 2 new uncorrectable ECC errors"
    assert store.quarantined("r1", "gpu-b") is None and store.quarantined("r2", "gpu-a") is None
    assert [q["host"] for q in store.quarantines("r1")] == ["gpu-a"]
    store.mark_alerts_sent("r1", "email", ["regressed:a", "tainted:b"])
    store.mark_alerts_sent("r1", "email", ["regressed:a"])
    assert store.alerts_already_sent("r1", "email") == {"regressed:a", "tainted:b"}
    assert store.alerts_already_sent("r1", "webhook") == set()


def test_processes_opening_a_new_sqlite_database_at_once_all_get_it_migrated(tmp_path):
    """Two `import-log` or two `run` on a fresh sqlite:/// file: without taking turns most failed with
    `table runs already exists`."""
    import subprocess
    import sys

    from conftest import eventually

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    go = tmp_path / "go"
    opener = (
        "import pathlib, sys, time\n"
        "from trainbench.store.results import ResultStore\n"
        "pathlib.Path(sys.argv[2]).touch()\n"
        "while not pathlib.Path(sys.argv[1]).exists(): time.sleep(0.001)\n"
        "ResultStore(sys.argv[3])\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", opener, go, tmp_path / f"ready{i}", url], stderr=subprocess.PIPE)
        for i in range(6)
    ]
    eventually("every process ready", lambda: all((tmp_path / f"ready{i}").exists() for i in range(6)), 120)
    go.touch()
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    assert ResultStore(url).run_ids() == []


def test_a_store_outlives_the_database_server_dropping_its_connections(postgres_url):
    """What a PostgreSQL restart does to a long CLI run's pooled connections ("terminating connection due to
    administrator command"): the next step reconnects instead of aborting the run."""
    import psycopg

    s = ResultStore(postgres_url)
    try:
        s.save_run("before_restart", {})
        database = sa.engine.make_url(postgres_url).database
        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as admin:
            dropped = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                "pg_backend_pid()",
                (database,),
            ).fetchone()[0]
        assert dropped >= 1
        s.save_run("after_restart", {})
        assert {"before_restart", "after_restart"} <= set(s.run_ids())
    finally:
        metadata.drop_all(s.engine)
        with s.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS trainbench_schema_version"))
        s.engine.dispose()
