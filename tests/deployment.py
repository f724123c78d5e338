"""The production deployment, started as processes on this machine: what tests/test_deployment.py and
benchmarks/dag_overhead.py run against.

CeleryExecutor with Airflow's database on the local PostgreSQL server, Redis as the broker, an
api-server, scheduler, DAG processor and triggerer, a default worker, and one single-slot worker per
"GPU host" on its own queue (running CPU cases here).  The results database is a PostgreSQL instance
of its own (`initdb` + `pg_ctl` on a free port), so a test can stop and start it during a run.
Every process is started in a session of its own and `stop()` ends them all.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).parent))
from conftest import write_config  # noqa: E402

ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
REDIS_DB = 1 + os.getpid() % 15  # per test process: two deployments at once (two developers) never share a broker
PG_BIN = Path(next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin")))))
DAG = "cifar10_benchmark"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _end(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


class ResultsPostgres:
    """A PostgreSQL server of the test's own (the results database), run as the postgres user.

    Its folder lies outside pytest's (root-only) temporary folders, where the postgres user can reach it.
    """

    def __init__(self):
        self.folder, self.port = Path(tempfile.mkdtemp(prefix="trainbench-results-pg-")), free_port()
        shutil.chown(self.folder, "postgres", "postgres")
        self._as_postgres(PG_BIN / "initdb", "-D", str(self.folder / "data"), "-A", "trust", "-U", "postgres")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *argv) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *map(str, argv)], check=True, capture_output=True, timeout=120
        )

    def start(self) -> None:
        self._as_postgres(
            PG_BIN / "pg_ctl",
            "-D",
            self.folder / "data",
            "-l",
            self.folder / "server.log",
            "-w",
            "-o",
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1",
            "start",
        )

    def stop(self) -> None:
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.folder / "data", "-m", "fast", "-w", "stop")


class Deployment:
    def __init__(
        self,
        home: Path,
        hosts: tuple[str, ...],
        neon_script: Path | None = None,
        retry_delay_s: float = 5,
        host_frameworks: dict[str, dict[str, dict[str, str]]] | None = None,
        alerts: dict | None = None,
        connections: dict[str, str] | None = None,
    ):
        """`host_frameworks` gives a host a trainbench.toml of its own ([frameworks] entries replaced), as a fleet
        host whose interpreters differ has; `alerts` is the [alerts] section and `connections` the Airflow
        connections (id -> URI) every component sees, as AIRFLOW_CONN_<ID> variables."""
        self.home, self.hosts, self.port = home, hosts, free_port()
        self.procs: dict[str, subprocess.Popen] = {}
        self.commands: dict[str, tuple[list[str], dict]] = {}
        self.token: str | None = None
        self.airflow_db = f"tb_airflow_{os.getpid()}"
        self.results = ResultsPostgres()
        neon = {"python": sys.executable, "script": str(neon_script)} if neon_script else None
        common = {
            "neon": neon,
            "hosts": list(hosts),
            "database_url": self.results.url,
            "retry_delay_s": retry_delay_s,
            "environment_change": {"min_repeats": 3, "cap": 5},
            "alerts": alerts,
        }
        self.common = common
        self.config = write_config(home, **common)
        self.host_configs = {
            host: write_config(home, interpreters=found, name=f"trainbench-{host}.toml", **common)
            for host, found in (host_frameworks or {}).items()
        }
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.airflow_db}",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg://postgres@127.0.0.1:5432/{self.airflow_db}",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.port}",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "TRAINBENCH_CONFIG": str(self.config),
            **{f"AIRFLOW_CONN_{conn_id.upper()}": uri for conn_id, uri in (connections or {}).items()},
        }

    def up(self) -> Deployment:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.airflow_db}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.airflow_db}"')
        redis.Redis(db=REDIS_DB).flushdb()
        self.results.start()
        subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"], env=self.env, check=True, capture_output=True, timeout=300
        )
        self.start("api-server", "api-server", "--port", str(self.port))
        self.start("scheduler", "scheduler")
        self.start("dag-processor", "dag-processor")
        self.start("triggerer", "triggerer")
        self.start(
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
        for host in self.hosts:  # what adding a host is: one worker on its own queue, naming its host
            self.start(
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
                TRAINBENCH_CONFIG=str(self.host_configs.get(host, self.config)),
                AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL="1",  # as docker-compose.yaml: the slot frees within 1 s
            )
        self.login()
        self.wait_for("the DAG to be parsed", self._dag_parsed)
        self.api("PATCH", f"/api/v2/dags/{DAG}", {"is_paused": False})
        return self

    def down(self) -> None:
        for proc in self.procs.values():
            _end(proc, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _end(proc, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(subprocess.CalledProcessError):
            self.results.stop()
        shutil.rmtree(self.results.folder, ignore_errors=True)
        redis.Redis(db=REDIS_DB).flushdb()
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.airflow_db}" WITH (FORCE)')

    def start(self, name: str, *args: str, **extra_env: str) -> None:
        self.commands[name] = ([str(BIN / "airflow"), *args], {**self.env, **extra_env})
        self.restart(name)

    def restart(self, name: str) -> None:
        argv, env = self.commands[name]
        with open(self.home / f"{name}.log", "a") as log:
            self.procs[name] = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def kill(self, name: str) -> None:
        """SIGKILL a component and everything in its session, as a host that dies would."""
        _end(self.procs[name], signal.SIGKILL)
        self.procs[name].wait()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.home.glob("*.log")))

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", method=method, data=data, headers=headers
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def page(self, path: str) -> str:
        """A page of the api-server (the Benchmarks page, say) as the logged-in user sees it."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode()

    def wait_for(self, what: str, check, timeout_s: float = 180, alive: bool = True):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            assert not (alive and dead), f"{dead} exited while waiting for {what}\n{self.logs()}"
            with contextlib.suppress(OSError):
                if found := check():
                    return found
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")

    def login(self) -> None:
        """As the UI does: the user's password for a JWT (SimpleAuthManager writes the generated password)."""
        passwords = self.home / "simple_auth_manager_passwords.json.generated"
        self.wait_for("the api-server", lambda: passwords.is_file() and self.api("GET", "/api/v2/monitor/health"))
        secret = json.loads(passwords.read_text())["admin"]
        self.token = self.api("POST", "/auth/token", {"username": "admin", "password": secret})["access_token"]

    def _dag_parsed(self) -> bool:
        try:
            return bool(self.api("GET", f"/api/v2/dags/{DAG}"))
        except urllib.error.HTTPError:
            return False

    def trigger(self, conf: dict, dag: str = DAG) -> str:
        return self.api("POST", f"/api/v2/dags/{dag}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]

    def run(self, run_id: str, dag: str = DAG) -> dict:
        return self.api("GET", f"/api/v2/dags/{dag}/dagRuns/{urllib.parse.quote(run_id)}")

    def finished(self, run_id: str, timeout_s: float = 600, dag: str = DAG) -> str:
        return self.wait_for(
            f"run {run_id}",
            lambda: (s := self.run(run_id, dag)["state"]) in ("success", "failed") and s,
            timeout_s,
            alive=False,
        )

    def task_instances(self, run_id: str) -> list[dict]:
        path = f"/api/v2/dags/{DAG}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances?limit=500"
        return self.api("GET", path)["task_instances"]

    def runs(self, dag: str = DAG) -> list[dict]:
        return self.api("GET", f"/api/v2/dags/{dag}/dagRuns?limit=100")["dag_runs"]
