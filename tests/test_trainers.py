"""Every trainer really trains the spec's network, through the runner the DAG uses."""

import json

import pytest

from trainbench import config, frameworks, outcome, runner
from trainbench.devices import Inventory
from trainbench.planning import Case, resolve_device_set
from trainbench.trainer_output import parse

from conftest import write_config

CPU = Inventory(gpus=(), cpu_model="test", cpu_count=2)
TRAINED = ["pytorch"]


def train(cfg, framework, device_set, data, epochs=2, images=1024, batch=128):
    case = Case(framework, resolve_device_set(device_set, CPU), 1)
    job = frameworks.TrainingJob(data_dir=data, epochs=epochs, batch_size=batch, seed=0, train_images=images)
    import os
    r = runner.run(frameworks.command(cfg.framework(framework), case, job),
                   env={**os.environ, **frameworks.device_env(case)}, timeout_s=300)
    return r, parse(r.stdout_lines)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return config.load(write_config(tmp_path_factory.mktemp("cfg")))


@pytest.mark.parametrize("framework", TRAINED)
@pytest.mark.parametrize("device_set", ["cpu", "cpu:2"])
def test_trainer_trains_the_spec_network(cfg, framework, device_set, synthetic_data):
    r, report = train(cfg, framework, device_set, synthetic_data)
    assert outcome.classify(r, report) == ("ok", None), r.stderr_tail
    assert report.start["parameters"] == report.summary["parameters"] == 420_096
    assert report.summary["devices"] == int(device_set.partition(":")[2] or 1)
    assert [e["epoch"] for e in report.epochs] == [1, 2]
    assert all(e["images"] == 1024 and e["seconds"] > 0 for e in report.epochs)
    assert report.losses[1] < report.losses[0]
    assert 0 <= report.summary["test_accuracy"] <= 1 and report.summary["synthetic_data"] is True
    assert r.wall_s > sum(e["seconds"] for e in report.epochs)


@pytest.mark.parametrize("framework", TRAINED)
def test_impossible_batch_is_a_crash_with_the_trainer_message(cfg, framework, synthetic_data):
    r, report = train(cfg, framework, "cpu", synthetic_data, epochs=1, images=64, batch=128)
    status, error = outcome.classify(r, report)
    assert status == "crashed" and "batch size 128 is larger than the 64 training images" in error


def test_every_trainer_prints_one_json_object_per_event(cfg, synthetic_data):
    r, _ = train(cfg, "pytorch", "cpu", synthetic_data, epochs=1, images=256)
    events = [json.loads(l)["event"] for l in r.stdout_lines if l.startswith("{")]
    assert events == ["start", "epoch", "summary"]
