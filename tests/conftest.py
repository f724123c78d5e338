"""Shared fixtures: an isolated Airflow home and trainbench configuration per test session.

Nothing here touches ~/airflow or the project's own output/ folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TRAINERS = ROOT / "include" / "trainbench" / "trainers"
ENVS = ROOT / ".envs"

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="trainbench-airflow-"))
AIRFLOW_ENV = {
    "AIRFLOW_HOME": str(_AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
}
os.environ.update(AIRFLOW_ENV)
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(TRAINERS))


def write_config(
    folder: Path,
    neon: dict | None = None,
    hosts: list[str] | None = None,
    database_url: str = "",
    retry_delay_s: float = 300,
    interpreters: dict[str, dict[str, str]] | None = None,
    environment_change: dict | None = None,
    alerts: dict | None = None,
    name: str = "trainbench.toml",
    **benchmark,
) -> Path:
    """A trainbench.toml (or `name`) whose output goes to `folder`, with [benchmark] overrides; frameworks from
    .envs/ unless `neon` or `interpreters` sets a framework's entries."""
    settings = {
        "frameworks": ["pytorch"],
        "device_sets": ["cpu"],
        "epochs": 2,
        "batch_size": 128,
        "repeats": 1,
        "warmup": 0,
        "train_images": 1024,
        "timeout_s": 600,
        **benchmark,
    }
    lines = ["[benchmark]"]
    for key, value in settings.items():
        lines.append(f"{key} = {value!r}".replace("'", '"').replace("None", '""'))
    lines += ["", "[paths]", f'data_dir = "{folder / "data"}"', f'output_dir = "{folder / "output"}"']
    lines += [f'database_url = "{database_url}"', "[fleet]", f"hosts = {hosts or ['gpu']!r}".replace("'", '"')]
    lines.append(f"retry_delay_s = {retry_delay_s}")
    lines += ["[environment_change]", *(f"{k} = {v!r}" for k, v in (environment_change or {}).items())]
    lines += ["[alerts]", *(f"{k} = {json.dumps(v)}" for k, v in (alerts or {}).items())]
    entries = {fw: {"python": str(ENVS / fw / "bin" / "python")} for fw in ("pytorch", "mxnet", "jax", "neon")}
    for fw, values in {**entries, **({"neon": neon} if neon else {}), **(interpreters or {})}.items():
        lines += [f"[frameworks.{fw}]", *(f'{k} = "{v}"' for k, v in values.items())]
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def dags_test(
    env: dict, conf: dict, logical_date: str | None = None, dag_id: str = "cifar10_benchmark"
) -> subprocess.CompletedProcess:
    """One whole run of a DAG (`airflow dags test`) in the Airflow home `env` names."""
    return subprocess.run(
        [str(BIN / "airflow"), "dags", "test", dag_id, *filter(None, [logical_date])] + ["-c", json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture
def config_file(tmp_path) -> Path:
    return write_config(tmp_path)


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> str:
    import cifar10

    return cifar10.write_synthetic(str(tmp_path_factory.mktemp("cifar")), seed=0, train_images=2048, test_images=512)


@pytest.fixture(scope="session")
def airflow_db() -> dict:
    """An initialised Airflow metadata database (SQLite) for this session; returns the env to use."""
    env = {**os.environ, **AIRFLOW_ENV}
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
    return env


POSTGRES_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def postgres_admin(statement: str, params: tuple = ()) -> None:
    """Run a statement as the local PostgreSQL server's superuser (127.0.0.1:5432, trust auth), outside any
    transaction (CREATE and DROP DATABASE need that)."""
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(statement, params)


@contextlib.contextmanager
def postgres_database(name: str) -> Iterator[str]:
    """A fresh database `name` on the local PostgreSQL server, dropped afterwards; yields its URL."""
    postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    postgres_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh database on the local PostgreSQL server, dropped afterwards."""
    with postgres_database(f"trainbench_test_{os.getpid()}") as url:
        yield url


def eventually(what: str, holds, timeout_s: float = 30.0, every_s: float = 0.05):
    """Wait until `holds()` is true (returning it), or fail naming `what`: a test waits for a state, never for a
    guess at how long it takes on a loaded machine."""
    deadline = time.monotonic() + timeout_s
    while not (found := holds()):
        assert time.monotonic() < deadline, f"not within {timeout_s:g} s: {what}"
        time.sleep(every_s)
    return found


def slow_python(path: Path, sleep_s: float = 0) -> Path:
    """Another interpreter for pytorch: the same python behind a shell that first sleeps `sleep_s` (a slower host or
    upgrade; with 0 a change of interpreter that slows nothing)."""
    path.write_text(
        f'#!/bin/sh\ncase "$*" in *pytorch_train.py*) sleep {sleep_s};; esac\n'
        f'exec {ENVS / "pytorch" / "bin" / "python"} "$@"\n'
    )
    path.chmod(0o755)
    return path
