"""The compose files as Debian's docker-compose reads them: valid, no secret of their own, one worker per host,
a GPU host on another machine configured by its .env alone, and .env.example recipes that make valid secrets."""

import re
import shutil
import subprocess

import pytest
import yaml
from cryptography.fernet import Fernet

from conftest import ROOT

EXAMPLE = (ROOT / ".env.example").read_text()
REMOTE = {
    "TRAINBENCH_HOST": "h100-a",
    "TRAINBENCH_HOST_ADDRESS": "h100-a.example.org",
    "AIRFLOW_API_URL": "http://airflow.example.org:8080",
    "AIRFLOW_BROKER_URL": "redis://:rpw@airflow.example.org:6379/0",
    "AIRFLOW_DATABASE_URL": "postgresql+psycopg://airflow:pw@airflow.example.org:5432/airflow",
    "TRAINBENCH_DATABASE_URL": "postgresql+psycopg://airflow:pw@airflow.example.org:5432/trainbench",
    "TRAINBENCH_DATA_DIR": "/srv/cifar10",
}


@pytest.fixture(autouse=True)
def docker_compose():
    if shutil.which("docker-compose") is None:
        pytest.fail(
            "needs Debian's docker-compose, which make test installs: "
            "apt-get install -y --no-install-recommends docker-compose"
        )


def recipes() -> dict[str, str]:
    """Each secret of .env.example and the command written above it."""
    return {name: cmd for cmd, name in re.findall(r"^# recipe: (.+)\n([A-Z_]+)=$", EXAMPLE, re.M)}


def made_secrets() -> dict[str, str]:
    return {
        name: subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=True).stdout.strip()
        for name, cmd in recipes().items()
    }


def env_file(tmp_path, values: dict[str, str]):
    path = tmp_path / ".env"
    lines = [f"{l}{values[l[:-1]]}" if l.endswith("=") and l[:-1] in values else l for l in EXAMPLE.splitlines()]
    path.write_text("\n".join([*lines, *(f"{k}={v}" for k, v in values.items() if f"\n{k}=" not in EXAMPLE)]) + "\n")
    return path


def compose_config(env, compose_file="docker-compose.yaml") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker-compose", "-f", str(ROOT / compose_file), "--env-file", str(env), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_every_secret_has_a_recipe_and_each_makes_a_valid_value():
    made = made_secrets()
    assert set(made) == {
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "AIRFLOW_JWT_SECRET",
        "AIRFLOW_SECRET_KEY",
        "AIRFLOW_FERNET_KEY",
    }
    Fernet(made["AIRFLOW_FERNET_KEY"]).decrypt(Fernet(made["AIRFLOW_FERNET_KEY"]).encrypt(b"conn"))
    for name in ("POSTGRES_PASSWORD", "REDIS_PASSWORD"):  # they go into URLs unquoted
        assert re.fullmatch(r"[A-Za-z0-9_-]{40,}", made[name]), name


def test_compose_file_is_valid_once_the_secrets_are_set(tmp_path):
    made = made_secrets()
    proc = compose_config(env_file(tmp_path, made))
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    gpu = services["airflow-worker-gpu"]
    assert gpu["command"] == "celery worker -q gpu -c 1" and gpu["environment"]["TRAINBENCH_HOST"] == "gpu"
    scheduler = services["airflow-scheduler"]
    assert scheduler["environment"]["TRAINBENCH_DATABASE_URL"].endswith("@postgres/trainbench")
    assert scheduler["environment"]["AIRFLOW__CELERY__BROKER_URL"] == f"redis://:{made['REDIS_PASSWORD']}@redis:6379/0"
    # the api-server reads a task's log from its worker's log server with a token signed by this shared key
    assert {s["environment"]["AIRFLOW__API__SECRET_KEY"] for s in services.values() if "build" in s} == {
        made["AIRFLOW_SECRET_KEY"]
    }
    passwords = scheduler["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    assert any(passwords.startswith(v.split(":")[1] + "/") for v in scheduler["volumes"] if "airflow-home" in str(v))
    assert all(str(p).startswith("127.0.0.1:") for s in services.values() for p in s.get("ports", []))
    for secret in made.values():
        assert secret not in (ROOT / "docker-compose.yaml").read_text()


def test_compose_refuses_to_start_without_the_secrets():
    proc = compose_config(ROOT / ".env.example")
    assert proc.returncode != 0 and "set AIRFLOW_FERNET_KEY in .env" in proc.stderr


def test_a_gpu_host_on_another_machine_is_configured_by_its_env_alone(tmp_path):
    values = {**made_secrets(), **REMOTE}
    proc = compose_config(env_file(tmp_path, values), "docker-compose.gpu-host.yaml")
    assert proc.returncode == 0, proc.stderr
    worker = yaml.safe_load(proc.stdout)["services"]["airflow-worker-gpu"]
    env = worker["environment"]
    assert worker["command"] == "celery worker -q h100-a -c 1" and env["TRAINBENCH_HOST"] == "h100-a"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == REMOTE["AIRFLOW_BROKER_URL"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == REMOTE["AIRFLOW_DATABASE_URL"]
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow.example.org:8080/execution/"
    assert env["TRAINBENCH_DATABASE_URL"] == REMOTE["TRAINBENCH_DATABASE_URL"]
    assert env["AIRFLOW__API__SECRET_KEY"] == values["AIRFLOW_SECRET_KEY"]
    # task logs: the api-server fetches them from http://<task's hostname>:8793, so that name must reach here
    assert worker["hostname"] == "h100-a.example.org" and {"published": 8793, "target": 8793} in worker["ports"]
    assert any(str(v).startswith("/srv/cifar10:/opt/trainbench/data") for v in worker["volumes"])
    assert "@postgres/" not in str(worker) and "redis:6379" not in str(worker)


@pytest.mark.parametrize("name", ["TRAINBENCH_DATA_DIR", "TRAINBENCH_HOST_ADDRESS"])
def test_a_gpu_host_without_its_data_folder_or_address_is_refused(tmp_path, name):
    values = {**made_secrets(), **REMOTE}
    del values[name]
    proc = compose_config(env_file(tmp_path, values), "docker-compose.gpu-host.yaml")
    assert proc.returncode != 0 and f"set {name} in .env" in proc.stderr


def test_the_gpu_worker_of_the_main_deployment_mounts_cifar10_when_told_where(tmp_path):
    """Its data volume starts empty (and a GPU host refuses auto without CIFAR-10): TRAINBENCH_DATA_DIR mounts one."""
    made = made_secrets()
    volumes = {}
    for name, values in (("volume", made), ("folder", {**made, "TRAINBENCH_DATA_DIR": "/srv/cifar10"})):
        proc = compose_config(env_file(tmp_path, values))
        assert proc.returncode == 0, proc.stderr
        volumes[name] = [str(v) for v in yaml.safe_load(proc.stdout)["services"]["airflow-worker-gpu"]["volumes"]]
    assert any(v.startswith("trainbench-data:/opt/trainbench/data") for v in volumes["volume"])
    assert any(v.startswith("/srv/cifar10:/opt/trainbench/data") for v in volumes["folder"])
