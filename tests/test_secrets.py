"""No secret leaves the harness: a results database password is never printed, logged, put in XCom or written
to a report, and the framework interpreters never see the harness's secrets."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from trainbench import config
from trainbench.cli import main as cli_main
from trainbench.measure import environ
from trainbench.store.results import ResultStore, metadata

from conftest import BIN, ENVS, ROOT, dags_test, write_config

PASSWORD = "S3cret-PW-7f1c"
REFERENCE = ROOT / "include" / "reference" / "000_8ad6f2660727c232.txt"


def with_password(url: str) -> str:
    return url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


def test_shown_url_hides_the_password():
    assert config.shown_url(f"postgresql+psycopg://u:{PASSWORD}@h:5432/db") == "postgresql+psycopg://u:***@h:5432/db"
    assert config.shown_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql+psycopg://u@h/db?password={PASSWORD}", "postgresql+psycopg://u@h/db?password=***"),
        (
            f"postgresql+psycopg://u@h/db?sslmode=require&sslpassword={PASSWORD}",
            "postgresql+psycopg://u@h/db?sslmode=require&sslpassword=***",
        ),
    ],
)
def test_shown_url_hides_a_password_given_as_a_query_parameter(url, shown):
    assert config.shown_url(url) == shown


def test_import_log_never_prints_a_password_given_as_a_query_parameter(postgres_url, tmp_path, capsys):
    url = f"{postgres_url}?password={PASSWORD}"  # the local server trusts 127.0.0.1, so any password connects
    assert cli_main(["--config", str(write_config(tmp_path, database_url=url)), "import-log", str(REFERENCE)]) == 0
    printed = capsys.readouterr().out
    assert "password=***" in printed and PASSWORD not in printed
    engine = ResultStore(postgres_url).engine  # the session's database, left empty for the next test
    metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS trainbench_schema_version"))


def test_a_loaded_configuration_never_shows_the_password(tmp_path):
    """A Config is logged or lands in a traceback as its repr: the URL's password must not be in it."""
    cfg = config.load(write_config(tmp_path, database_url=f"postgresql+psycopg://u:{PASSWORD}@h:5432/db"))
    assert PASSWORD in cfg.database_url and PASSWORD not in repr(cfg) and PASSWORD not in str(cfg)


def leaks(folder: Path) -> list[str]:
    """Every file under `folder` whose bytes hold the password."""
    return [str(p) for p in folder.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]


def stored_text(url: str) -> str:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        names = sa.inspect(conn).get_table_names()
        return "\n".join(str(r) for t in names for r in conn.execute(sa.text(f'SELECT * FROM "{t}"')))


@pytest.mark.integration
def test_no_output_of_a_run_holds_the_database_password(airflow_db, postgres_url, tmp_path):
    """One DAG run and the CLI commands, with a password in the results database URL: stdout and stderr, the
    Airflow task logs and metadata database (XCom), every file of the output folder and the stored rows."""
    url = with_password(postgres_url)  # the local server trusts 127.0.0.1, so any password connects
    cfg = write_config(tmp_path, database_url=url, epochs=1, train_images=256)
    env = {**airflow_db, "TRAINBENCH_CONFIG": str(cfg)}
    proc = dags_test(env, {"frameworks": ["pytorch"], "device_sets": ["cpu"], "epochs": 1, "train_images": 256})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    outputs = [proc.stdout + proc.stderr]
    commands = (
        ["report", "--run-id", "latest"],
        ["import-log", str(REFERENCE)],
        ["results"],
        ["run", "--run-id", "cli"],
    )
    for command in commands:
        cli = subprocess.run(
            [str(BIN / "python"), "-m", "trainbench", *command], env=env, capture_output=True, text=True, timeout=300
        )
        assert cli.returncode == 0, cli.stderr
        outputs.append(cli.stdout + cli.stderr)
    assert all("postgres:***@" in outputs[i] for i in (1, 2, 4))  # the URL is still shown, without its password
    assert not [o for o in outputs if PASSWORD in o]
    airflow_home = Path(airflow_db["AIRFLOW_HOME"])
    assert not leaks(airflow_home / "logs")
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        xcoms = "\n".join(str(v) for (v,) in db.execute("SELECT value FROM xcom"))
    assert xcoms and "postgres:***@" in xcoms and PASSWORD not in xcoms
    assert not leaks(tmp_path / "output")
    assert stored_text(postgres_url) and PASSWORD not in stored_text(postgres_url)


def test_only_allowed_names_reach_a_framework_interpreter():
    base = {
        "PATH": "/usr/bin",
        "CUDA_VISIBLE_DEVICES": "0",
        "OMP_NUM_THREADS": "4",
        "TF_VAR_db_pass": "x",
        "TORCH_HUB_AUTH": "x",
        "OMP_DB_PASS": "x",
        "CUDA_SOMETHING_NEW": "x",
        "PYTHONSTARTUP": "/tmp/evil.py",
    }
    assert environ.trainer_environ({}, base) == {
        "PATH": "/usr/bin",
        "CUDA_VISIBLE_DEVICES": "0",
        "OMP_NUM_THREADS": "4",
    }


def spy(folder: Path, seen: Path) -> Path:
    """A `sitecustomize.py` that records the environment of every interpreter it starts in."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(
        f"import os\nwith open({str(seen)!r}, 'a') as f:\n    f.write(repr(sorted(os.environ.items())) + '\\n')\n"
    )
    return folder


def test_the_version_probe_and_the_trainer_never_see_the_harness_secrets(tmp_path, monkeypatch):
    """A `sitecustomize.py` on the harness's PYTHONPATH would run in every interpreter inheriting its environment:
    it must run in none. One on the PYTHONPATH the site configures for the framework does run, in the probe and the
    trainer, and must see nothing secret."""
    harness_seen, site_seen = tmp_path / "harness.txt", tmp_path / "site.txt"
    secrets = {
        "PYTHONPATH": str(spy(tmp_path / "harness-spy", harness_seen)),
        "AIRFLOW__CORE__FERNET_KEY": "fernet-" + PASSWORD,
        "TRAINBENCH_DATABASE_URL": f"sqlite:///{tmp_path / PASSWORD / 'results.db'}",
        "TF_VAR_db_pass": PASSWORD,
        "TORCH_HUB_AUTH": PASSWORD,
        "OMP_DB_PASS": PASSWORD,
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    cfg = write_config(tmp_path, epochs=1, train_images=256)
    pytorch = f'python = "{ENVS / "pytorch" / "bin" / "python"}"'
    site_env = f'env = {{ PYTHONPATH = "{spy(tmp_path / "site-spy", site_seen)}" }}'
    cfg.write_text(cfg.read_text().replace(pytorch, f"{pytorch}\n{site_env}", 1))
    assert cli_main(["--config", str(cfg), "run", "--run-id", "cli__spy"]) == 0
    assert not harness_seen.exists()
    seen = site_seen.read_text().splitlines()
    assert len(seen) >= 2 and not [line for line in seen if PASSWORD in line]  # the probe, then the trainer
    assert ResultStore(config.load(cfg).database_url).rows("cli__spy")[0]["status"] == "ok"
