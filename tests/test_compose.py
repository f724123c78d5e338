"""docker-compose.yaml as Debian's docker-compose reads it: valid, no secret of its own, one worker per host."""

import shutil
import subprocess

import pytest
import yaml

from conftest import ROOT


@pytest.fixture(autouse=True)
def docker_compose():
    if shutil.which("docker-compose") is None:
        pytest.fail("needs Debian's docker-compose, which make setup installs: apt-get install -y docker-compose")


def compose_config(env_file) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yaml"), "--env-file", str(env_file), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_compose_file_is_valid_once_the_secrets_are_set(tmp_path):
    env = tmp_path / ".env"
    example = (ROOT / ".env.example").read_text()
    filled = {"POSTGRES_PASSWORD": "pg-secret", "AIRFLOW_JWT_SECRET": "jwt-secret", "AIRFLOW_FERNET_KEY": "fernet"}
    env.write_text("".join(f"{line}{filled.get(line.rstrip('='), '')}\n" for line in example.splitlines()))
    proc = compose_config(env)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    gpu = services["airflow-worker-gpu"]
    assert gpu["command"] == "celery worker -q gpu -c 1" and gpu["environment"]["TRAINBENCH_HOST"] == "gpu"
    assert services["airflow-scheduler"]["environment"]["TRAINBENCH_DATABASE_URL"].endswith("@postgres/trainbench")
    assert "jwt-secret" not in (ROOT / "docker-compose.yaml").read_text()


def test_compose_refuses_to_start_without_the_secrets():
    proc = compose_config(ROOT / ".env.example")
    assert proc.returncode != 0 and "set AIRFLOW_FERNET_KEY in .env" in proc.stderr
