"""The deployment users run, started for real as processes: CeleryExecutor on PostgreSQL and Redis, an
api-server, scheduler, DAG processor, triggerer, a default worker and two "GPU host" workers on their own
queues (running CPU cases), triggered through the REST API with a JWT as the UI does, then backfilled."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psycopg
import pytest
import redis

from trainbench.store.results import ResultStore

from conftest import BIN, ROOT, write_config

pytestmark = pytest.mark.integration
HOSTS = ("host_a", "host_b")
CONF = {
    "frameworks": ["pytorch"],
    "device_sets": ["cpu"],
    "epochs": 1,
    "train_images": 256,
    "repeats": 2,
    "dataset": "synthetic",
}
REDIS_DB = 13
ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Deployment:
    """Every component as its own process group; `stop()` ends them all."""

    def __init__(self, home: Path, env: dict, port: int):
        self.home, self.env, self.port = home, env, port
        self.procs: dict[str, subprocess.Popen] = {}
        self.token: str | None = None

    def start(self, name: str, *args: str, **extra_env: str) -> None:
        log = open(self.home / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            [str(BIN / "airflow"), *args],
            env={**self.env, **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        for proc in self.procs.values():
            with_signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with_signal(proc, signal.SIGKILL)
                proc.wait()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.home.glob("*.log")))

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method=method,
            data=json.dumps(body).encode() if body else None,
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {self.token}"} if self.token else {}),
            },
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def wait_for(self, what: str, check, timeout_s: float = 180):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            assert not dead, f"{dead} exited while waiting for {what}\n{self.logs()}"
            try:
                found = check()
            except OSError:
                found = None
            if found:
                return found
            time.sleep(1)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")

    def login(self) -> None:
        """As the UI does: the user's password for a JWT (SimpleAuthManager writes the generated password)."""
        passwords = self.home / "simple_auth_manager_passwords.json.generated"
        self.wait_for("the api-server", lambda: passwords.is_file() and self.api("GET", "/api/v2/monitor/health"))
        self.token = self.api(
            "POST", "/auth/token", {"username": "admin", "password": json.loads(passwords.read_text())["admin"]}
        )["access_token"]

    def run_state(self, run_id: str) -> str:
        return self.api("GET", f"/api/v2/dags/cifar10_benchmark/dagRuns/{urllib.parse.quote(run_id)}")["state"]

    def task_instances(self, run_id: str) -> list[dict]:
        path = f"/api/v2/dags/cifar10_benchmark/dagRuns/{urllib.parse.quote(run_id)}/taskInstances?limit=200"
        return self.api("GET", path)["task_instances"]


def with_signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def database(name: str):
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name:
            conn.execute(f'CREATE DATABASE "{name}"')


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    home = tmp_path_factory.mktemp("deployment")
    airflow_db, results_db = f"tb_airflow_{os.getpid()}", f"tb_results_{os.getpid()}"
    for name in (airflow_db, results_db):
        database(name)
    redis.Redis(db=REDIS_DB).flushdb()
    results_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{results_db}"
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg://postgres@127.0.0.1:5432/{airflow_db}",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg://postgres@127.0.0.1:5432/{airflow_db}",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "TRAINBENCH_CONFIG": str(write_config(home, hosts=list(HOSTS), database_url=results_url)),
    }
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    d = Deployment(home, env, port)
    try:
        d.start("api-server", "api-server", "--port", str(port))
        d.start("scheduler", "scheduler")
        d.start("dag-processor", "dag-processor")
        d.start("triggerer", "triggerer")
        d.start(
            "worker-default",
            "celery",
            "worker",
            "-q",
            "default",
            "-c",
            "2",
            "--celery-hostname",
            "default@%h",
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
        )
        for host in HOSTS:  # what adding a host is: one worker on its own queue, naming its host
            d.start(
                f"worker-{host}",
                "celery",
                "worker",
                "-q",
                host,
                "-c",
                "1",
                "--celery-hostname",
                f"{host}@%h",
                AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
                TRAINBENCH_HOST=host,
            )
        d.login()
        d.wait_for("the DAG to be parsed", lambda: _dag_exists(d))
        d.api("PATCH", "/api/v2/dags/cifar10_benchmark", {"is_paused": False})
        d.results = ResultStore(results_url)
        yield d
    finally:
        d.stop()
        redis.Redis(db=REDIS_DB).flushdb()
        for name in (airflow_db, results_db):
            with psycopg.connect(ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _dag_exists(d: Deployment) -> bool:
    try:
        return bool(d.api("GET", "/api/v2/dags/cifar10_benchmark"))
    except urllib.error.HTTPError:
        return False


def finished(d: Deployment, run_id: str, timeout_s: float = 600) -> str:
    return d.wait_for(f"run {run_id}", lambda: (s := d.run_state(run_id)) in ("success", "failed") and s, timeout_s)


def intervals(tis: list[dict], prefix: str) -> list[tuple[dt.datetime, dt.datetime]]:
    return sorted(
        (dt.datetime.fromisoformat(t["start_date"]), dt.datetime.fromisoformat(t["end_date"]))
        for t in tis
        if t["task_id"].startswith(prefix) and t["start_date"] and t["end_date"]
    )


def assert_one_at_a_time(tis: list[dict], host: str) -> None:
    spans = intervals(tis, f"{host}.")
    assert len(spans) >= 5, spans  # discover, prepare, plan, two cases
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start, f"two tasks of {host} overlapped: {spans}"


def test_rest_trigger_runs_each_case_on_its_host_one_at_a_time(deployment):
    d = deployment
    run = d.api("POST", "/api/v2/dags/cifar10_benchmark/dagRuns", {"logical_date": None, "conf": CONF})
    assert finished(d, run["dag_run_id"]) == "success", d.logs()
    tis = d.task_instances(run["dag_run_id"])
    for host in HOSTS:
        assert {t["queue"] for t in tis if t["task_id"].startswith(f"{host}.")} == {host}
        assert_one_at_a_time(tis, host)
    rows = d.results.rows(run["dag_run_id"])
    assert sorted((r["host"], r["repeat"], r["status"]) for r in rows) == [
        (h, rep, "ok") for h in HOSTS for rep in (1, 2)
    ]
    assert all(r["environment"]["worker_host"] == r["host"] and r["wall_s"] > 0 for r in rows)


def test_backfill_runs_its_weeks_one_after_another(deployment):
    d = deployment
    d.api(
        "POST",
        "/api/v2/backfills",
        {
            "dag_id": "cifar10_benchmark",
            "from_date": "2026-11-09T00:00:00Z",
            "to_date": "2026-11-16T03:00:00Z",
            "max_active_runs": 1,
            "reprocess_behavior": "completed",
            "run_backwards": False,
            "dag_run_conf": CONF,
        },
    )
    runs = d.wait_for(
        "the backfill's runs",
        lambda: [
            r
            for r in d.api("GET", "/api/v2/dags/cifar10_benchmark/dagRuns?limit=50")["dag_runs"]
            if r["run_type"] == "backfill"
        ],
    )
    assert sorted(r["logical_date"][:16] for r in runs) == ["2026-11-09T03:00", "2026-11-16T03:00"]
    states = {r["dag_run_id"]: finished(d, r["dag_run_id"], timeout_s=900) for r in runs}
    assert set(states.values()) == {"success"}, d.logs()
    spans = sorted(
        (dt.datetime.fromisoformat(r["start_date"]), dt.datetime.fromisoformat(r["end_date"]))
        for r in d.api("GET", "/api/v2/dags/cifar10_benchmark/dagRuns?limit=50")["dag_runs"]
        if r["run_type"] == "backfill"
    )
    assert spans[0][1] <= spans[1][0], f"backfill runs overlapped: {spans}"
    for run_id in states:
        assert [r["status"] for r in d.results.rows(run_id)] == ["ok"] * 4
