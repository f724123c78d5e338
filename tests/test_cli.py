"""The CLI's answers to mistakes: one line naming what is wrong and what is accepted, exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainbench import cli, config, fingerprint
from trainbench.store import run_folder
from trainbench.store.results import INVALID, PUBLISHED, ResultStore
from trainbench.workflows import harness, pipeline

from conftest import postgres_admin, postgres_database, write_config
from test_results import result


@pytest.mark.parametrize("command", [["report", "--run-id", "cli__typo"], ["results", "--run-id", "cli__typo"]])
def test_an_unknown_run_id_is_an_error_naming_the_runs_there_are(tmp_path, capsys, command):
    cfg_path = write_config(tmp_path)
    store = ResultStore(config.load(cfg_path).database_url)
    store.save_run("cli__real", {})
    assert cli.main(["--config", str(cfg_path), *command]) == 2
    err = capsys.readouterr().err
    assert err == "trainbench: no run 'cli__typo' in the results database; newest runs: cli__real (or latest)\n"
    assert not (tmp_path / "output" / "runs" / "cli__typo").exists()


def test_a_second_run_of_the_same_run_id_on_this_host_is_refused(tmp_path, capsys):
    cfg_path = write_config(tmp_path)
    with run_folder.measuring(tmp_path / "output", "cli__same"):
        assert cli.main(["--config", str(cfg_path), "run", "--run-id", "cli__same"]) == 2
    err = capsys.readouterr().err
    assert f"run 'cli__same' is being measured on this host by pid {os.getpid()}; wait for it" in err
    assert not (tmp_path / "output" / "runs" / "cli__same" / "raw").exists()


def test_a_published_run_this_host_measured_is_never_measured_again_under_its_id(tmp_path, capsys):
    cfg_path = write_config(tmp_path)
    cfg = config.load(cfg_path)
    pipeline.start_run(cfg, "cli__done", cfg.settings)
    measured = result(run_id="cli__done", case_key="gpu__pytorch__cpu__r1")
    measured.host = cli.this_host()
    stored = harness._save(cfg, measured, log=lambda m: None)
    db = pipeline.store(cfg)
    db.set_state("cli__done", PUBLISHED)
    before = db.rows("cli__done")
    assert cli.main(["--config", str(cfg_path), "run", "--run-id", "cli__done"]) == 2
    err = capsys.readouterr().err
    assert "run 'cli__done' is already published with this host's (gpu) results; they are kept" in err
    assert db.rows("cli__done") == before and db.run_state("cli__done") == PUBLISHED
    assert [r.case_key for r in run_folder.raw_results(cfg.output_dir, "cli__done")] == [stored.case_key]


def test_a_run_still_running_or_invalid_never_becomes_latest(tmp_path, capsys):
    cfg_path = write_config(tmp_path)
    cfg = config.load(cfg_path)
    for run_id in ("cli__running", "cli__invalid"):
        pipeline.start_run(cfg, run_id, cfg.settings)
        harness._save(cfg, result(run_id=run_id), log=lambda m: None)
    pipeline.store(cfg).set_state("cli__invalid", INVALID)
    published = pipeline.publish(cfg, "cli__running")
    assert published["state"] == "running" and not published["latest"]
    assert (tmp_path / "output" / "runs" / "cli__running" / "report.md").is_file()
    assert not (tmp_path / "output" / "latest").exists()
    assert cli.main(["--config", str(cfg_path), "report", "--run-id", "latest"]) == 2
    assert "no published benchmark run with results yet" in capsys.readouterr().err


def test_results_as_csv_quote_what_a_spreadsheet_would_run(tmp_path, capsys):
    import csv
    import io

    cfg_path = write_config(tmp_path)
    store = ResultStore(config.load(cfg_path).database_url)
    store.save_run("cli__csv", {})
    crashed = result(run_id="cli__csv", status="crashed")
    crashed.error = '=HYPERLINK("http://evil.example","click")'
    store.save(crashed)
    assert cli.main(["--config", str(cfg_path), "results", "--run-id", "cli__csv", "--format", "csv"]) == 0
    (row,) = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert row["error"] == "'" + crashed.error


def run_on(cfg_path: Path, host: str, run_id: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRAINBENCH_CONFIG": str(cfg_path), fingerprint.HOST_VAR: host}
    return subprocess.run(
        [sys.executable, "-m", "trainbench", "run", "--run-id", run_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_one_run_id_measured_on_two_hosts_holds_both_hosts_cases(tmp_path):
    """Each host's CLI plans for itself ($TRAINBENCH_HOST), so its cases run there instead of being recorded
    `unavailable` for the default host; the second host's run validates and publishes the run with both."""
    cfg_path = write_config(tmp_path, epochs=1, train_images=256, warmup=0, repeats=1)
    for host in ("hosta", "hostb"):
        proc = run_on(cfg_path, host, "cli__fleet")
        assert proc.returncode == 0, proc.stderr[-3000:]
    store = ResultStore(config.load(cfg_path).database_url)
    assert sorted((r["host"], r["framework"], r["status"]) for r in store.current_rows("cli__fleet")) == [
        ("hosta", "pytorch", "ok"),
        ("hostb", "pytorch", "ok"),
    ]
    assert store.run_state("cli__fleet") == PUBLISHED
    published = json.loads(proc.stdout[proc.stdout.rindex("\n{\n") :])
    assert published["rows"] == 2 and published["latest"]
    report = Path(published["markdown"]).read_text()
    assert "hosta" in report and "hostb" in report


def test_a_host_s_invalid_rows_keep_the_two_host_run_from_being_published(tmp_path):
    """hosta's row is broken after its run (a negative wall time): hostb's run validates every row of the run, not
    only its own, so the run is refused instead of published with hosta's bad figure."""
    import sqlalchemy as sa

    from trainbench.store.results import results

    cfg_path = write_config(tmp_path, epochs=1, train_images=256, warmup=0, repeats=1)
    assert run_on(cfg_path, "hosta", "cli__bad").returncode == 0
    store = ResultStore(config.load(cfg_path).database_url)
    with store.engine.begin() as conn:
        conn.execute(sa.update(results).where(results.c.host == "hosta").values(wall_s=-1.0))
    proc = run_on(cfg_path, "hostb", "cli__bad")
    assert proc.returncode == 1 and "failed validation" in proc.stderr, proc.stderr[-3000:]
    assert store.run_state("cli__bad") != PUBLISHED


@pytest.fixture
def own_postgres():
    """A PostgreSQL database of this test alone (its connections are cut mid-run), dropped afterwards; and how to
    let it accept connections or not."""
    name = f"trainbench_cut_{os.getpid()}"

    def allow(yes: bool) -> None:
        postgres_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(yes).lower()}')
        if not yes:
            postgres_admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))

    with postgres_database(name) as url:
        yield url, allow


def test_a_database_lost_mid_run_names_the_step_and_case_and_the_rerun_trains_nothing_twice(
    tmp_path, capsys, monkeypatch, own_postgres
):
    """Issue 27, item 8: PostgreSQL refusing connections after the first case is stored. The message names the
    case being stored and where its raw JSON is; the same command, once the database is back, keeps what was stored,
    stores what the database missed from its raw JSON, and trains neither again."""
    url, allow = own_postgres
    cfg_path = write_config(tmp_path, database_url=url, repeats=2, train_images=256, epochs=1)
    saved = harness._save
    trained: list[str] = []

    def save_then_cut(config, result, log):  # called once per case trained
        trained.append(result.case_key)
        if len(trained) == 2:
            allow(False)  # the database stops accepting connections as the second case is stored
        return saved(config, result, log)

    monkeypatch.setattr(harness, "_save", save_then_cut)
    assert cli.main(["--config", str(cfg_path), "run", "--run-id", "cli__cut"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    raw = tmp_path / "output" / "runs" / "cli__cut" / "raw"
    assert err.startswith("trainbench: the results database failed while measuring and storing pytorch | cpu | r2")
    assert f"kept as raw JSON in {raw}: once the database is back, `trainbench run --run-id cli__cut`" in err
    assert len(list(raw.glob("*.json"))) == 2
    monkeypatch.setattr(harness, "_save", saved)
    allow(True)
    assert cli.main(["--config", str(cfg_path), "run", "--run-id", "cli__cut"]) == 0
    out = capsys.readouterr().out
    assert "pytorch | cpu | r1: already stored in this run, kept" in out
    assert "pytorch | cpu | r2: storing the result an earlier try measured" in out
    assert trained == ["gpu__pytorch__cpu__r1", "gpu__pytorch__cpu__r2"]  # each trained once, the first run
    assert sorted(r["case_key"] for r in ResultStore(url).rows("cli__cut")) == trained
