"""Every trainer really trains the spec's network, through the launch and runner the DAG uses."""

import json
import os

import pytest

from trainbench import config, frameworks
from trainbench.devices import Inventory
from trainbench.measure import outcome, phases, runner
from trainbench.planning import Case, TrainingJob, resolve_device_set

from conftest import write_config

CPU = Inventory(gpus=(), cpu_model="test", cpu_count=2)
TRAINED = ["pytorch", "mxnet", "jax"]


def train(cfg, framework, device_set, data, epochs=2, images=1024, batch=128):
    case = Case(framework, resolve_device_set(device_set, CPU), 1)
    job = TrainingJob(data_dir=data, epochs=epochs, batch_size=batch, seed=0, train_images=images)
    spec = frameworks.launch_spec(cfg.interpreter(framework), case, job)
    r = runner.run(spec.argv, env={**os.environ, **spec.environ}, timeout_s=300)
    return r, spec.reader().report(r.stdout_lines)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return config.load(write_config(tmp_path_factory.mktemp("cfg")))


@pytest.fixture(scope="module")
def first_epochs(cfg, synthetic_data):
    """Each framework's single-device run, shared by the equivalence checks."""
    return {fw: train(cfg, fw, "cpu", synthetic_data) for fw in TRAINED}


@pytest.mark.parametrize("framework", TRAINED)
def test_trainer_trains_the_spec_network_on_one_device(first_epochs, framework):
    r, report = first_epochs[framework]
    assert outcome.classify(r, report, frameworks.REGISTRY[framework].modules) == ("ok", None), r.stderr_tail
    assert report.start["parameters"] == report.summary["parameters"] == 420_096
    assert report.summary["framework"] == framework and report.summary["devices"] == 1
    assert [e["epoch"] for e in report.epochs] == [1, 2]
    assert all(e["images"] == 1024 and e["seconds"] > 0 for e in report.epochs)
    assert report.losses[1] < report.losses[0]
    assert 0 <= report.summary["test_accuracy"] <= 1 and report.summary["synthetic_data"] is True
    assert r.wall_s > sum(e["seconds"] for e in report.epochs)


def test_first_epoch_losses_of_all_frameworks_lie_in_one_band(first_epochs):
    """Same net, same init scheme, same data order: the first epoch's mean loss agrees closely."""
    losses = {fw: report.losses[0] for fw, (_, report) in first_epochs.items()}
    assert max(losses.values()) - min(losses.values()) < 0.25, losses
    assert all(1.5 < v < 3.0 for v in losses.values()), losses


@pytest.mark.parametrize("framework", TRAINED)
def test_trainer_is_data_parallel_over_two_devices(cfg, framework, synthetic_data):
    r, report = train(cfg, framework, "cpu:2", synthetic_data)
    assert outcome.classify(r, report, frameworks.REGISTRY[framework].modules) == ("ok", None), r.stderr_tail
    assert report.summary["devices"] == 2 and report.summary["parameters"] == 420_096
    assert report.losses[1] < report.losses[0]


@pytest.mark.parametrize("framework", TRAINED)
def test_impossible_batch_is_a_crash_with_the_trainer_message(cfg, framework, synthetic_data):
    r, report = train(cfg, framework, "cpu", synthetic_data, epochs=1, images=64, batch=128)
    status, error = outcome.classify(r, report, frameworks.REGISTRY[framework].modules)
    assert status == "crashed" and "batch size 128 is larger than the 64 training images" in error


def test_every_trainer_prints_one_json_object_per_event(first_epochs):
    for r, _ in first_epochs.values():
        events = [json.loads(l) for l in r.stdout_lines if l.startswith("{")]
        assert [e["event"] for e in events] == ["mark", "mark", "start", "epoch", "epoch", "summary"]
        assert [e["name"] for e in events[:2]] == ["ready", "data"]
        assert all(isinstance(e["t"], float) for e in events) and [e["t"] for e in events] == sorted(
            e["t"] for e in events
        )


@pytest.mark.parametrize("framework", TRAINED)
def test_phase_timeline_adds_up_to_the_wall_time(first_epochs, framework):
    """The trainer's marks cut the run into phases that account for the wall time `time` would print."""
    r, report = first_epochs[framework]
    timeline = phases.timeline(report, r.launched_at, r.exited_at)
    assert timeline is not None and list(timeline) == list(phases.PHASES), report.marks
    assert timeline["startup"] > 0.1 and timeline["first_epoch"] > 0 and timeline["steady_training"] > 0
    assert abs(sum(timeline.values()) - r.wall_s) / r.wall_s < phases.TOLERANCE
