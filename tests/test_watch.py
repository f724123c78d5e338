"""The environment watch: a host's environment read without training, stored with its time, and what changed since
the host's previous reading; through Airflow, an asset event per host that changed and none for one that did not."""

import json
import sqlite3

import pytest

from trainbench import config
from trainbench.workflows import pipeline, watch

from conftest import ENVS, dags_test, write_config
from nvml_standin import StandInNvml, log_host


def test_a_reading_names_driver_gpus_and_every_interpreter_s_packages(tmp_path):
    cfg = config.load(write_config(tmp_path))
    found = watch.read(cfg, "gpu", nvml=StandInNvml(log_host().devices, driver="580.65.06"))
    assert (found["host"], found["driver_version"], found["cuda_driver_version"]) == ("gpu", "580.65.06", "13.0")
    assert {g["vbios"] for g in found["gpus"].values()} == {"96.00.89.00.01"} and len(found["gpus"]) == 3
    assert set(found["frameworks"]) == {"neon", "pytorch", "mxnet", "jax"}  # variants share their base's interpreter
    torch = found["frameworks"]["pytorch"]
    assert torch["packages"]["torch"] and torch["python"] and torch["trainer_revision"]


def test_a_change_is_named_by_its_path_with_old_and_new(tmp_path):
    cfg = config.load(write_config(tmp_path))
    nvml = StandInNvml(log_host().devices, driver="580.65.06")
    first = pipeline.watch_environment(cfg, "gpu", nvml)
    assert first["changed"] == {} and first["previous_at"] is None
    assert pipeline.watch_environment(cfg, "gpu", nvml)["changed"] == {}
    nvml.driver = "590.10.01"
    nvml.devices[1].vbios = "96.00.99.00.01"
    changed = pipeline.watch_environment(cfg, "gpu", nvml)["changed"]
    assert changed == {
        "driver_version": ["580.65.06", "590.10.01"],
        f"gpus.{nvml.devices[1].uuid}.vbios": ["96.00.89.00.01", "96.00.99.00.01"],
    }
    readings = pipeline.store(cfg).environments("gpu")
    assert [r["environment"]["driver_version"] for r in readings] == ["580.65.06"] * 2 + ["590.10.01"]
    assert pipeline.store(cfg).environments("other") == []


@pytest.mark.integration
def test_the_watch_dag_announces_a_changed_interpreter_and_stays_quiet_otherwise(airflow_db, tmp_path):
    """Three runs of the watch through Airflow: the first reading, an unchanged one (both skipped, no event), then
    the jax interpreter replaced by one without jax (its packages change): one event on the host's asset."""
    env = {**airflow_db, "TRAINBENCH_CONFIG": str(write_config(tmp_path, hosts=["hosta"]))}
    for day, said in (("2026-11-02", "hosta: its first reading"), ("2026-11-03", "hosta: unchanged since")):
        proc = dags_test(env, {}, logical_date=day, dag_id="environment_watch")
        assert proc.returncode == 0 and said in proc.stdout + proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert events(env, "trainbench_environment_hosta") == []
    replaced = {"jax": {"python": str(ENVS / "pytorch" / "bin" / "python")}}
    env["TRAINBENCH_CONFIG"] = str(write_config(tmp_path, hosts=["hosta"], interpreters=replaced))
    proc = dags_test(env, {}, logical_date="2026-11-04", dag_id="environment_watch")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (extra,) = events(env, "trainbench_environment_hosta")
    assert extra["host"] == "hosta"
    (jax,) = [v for k, v in extra["changed"].items() if k == "frameworks.jax.packages.jax"]
    assert jax[0] and jax[1] is None


def events(env: dict, asset: str) -> list[dict]:
    """The extras of `asset`'s events in the Airflow database of `env`, oldest first."""
    path = env["AIRFLOW_HOME"] + "/airflow.db"
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT asset_event.extra FROM asset_event JOIN asset ON asset.id = asset_event.asset_id"
            " WHERE asset.name = ? ORDER BY asset_event.id",
            (asset,),
        ).fetchall()
    return [json.loads(extra) for (extra,) in rows]


def test_a_retried_watch_still_announces_the_change_it_read(tmp_path):
    """The watch stored its reading, then died before its event was recorded: the retry (same run) replaces that
    reading and compares with the one before, so the change is announced, not lost as "unchanged"."""
    cfg = config.load(write_config(tmp_path))
    nvml = StandInNvml(log_host().devices, driver="580.65.06")
    pipeline.watch_environment(cfg, "gpu", nvml, run_id="watch-1")
    nvml.driver = "590.10.01"
    first = pipeline.watch_environment(cfg, "gpu", nvml, run_id="watch-2")
    retry = pipeline.watch_environment(cfg, "gpu", nvml, run_id="watch-2")
    assert first["changed"] == retry["changed"] == {"driver_version": ["580.65.06", "590.10.01"]}
    assert [r["run_id"] for r in pipeline.store(cfg).environments("gpu")] == ["watch-1", "watch-2"]


def test_a_reading_that_failed_is_neither_stored_nor_a_change(tmp_path):
    """Right after a driver upgrade NVML often fails until a reboot; an interpreter's probe may time out."""
    import pytest

    cfg = config.load(write_config(tmp_path))
    nvml = StandInNvml(log_host().devices)
    pipeline.watch_environment(cfg, "gpu", nvml)
    with pytest.raises(pipeline.ReadingFailed, match="NVML shows no GPU where it showed 3"):
        pipeline.watch_environment(cfg, "gpu", None)  # no NVML on this machine: the stand-in is gone
    broken = config.load(write_config(tmp_path, interpreters={"jax": {"python": str(tmp_path / "no-such-python")}}))
    with pytest.raises(pipeline.ReadingFailed, match="jax: "):
        pipeline.watch_environment(broken, "gpu", nvml)
    assert len(pipeline.store(cfg).environments("gpu")) == 1
