"""The pipeline's steps on their own: what a host refuses to measure before anything runs."""

from __future__ import annotations

import pytest

from trainbench import config, devices
from trainbench.config import ConfigError
from trainbench.workflows import pipeline

import cifar10
from conftest import write_config
from nvml_standin import log_host


@pytest.fixture
def gpu_host() -> dict:
    return devices.discover(log_host()).to_dict()


def test_a_gpu_host_without_cifar10_refuses_auto_instead_of_measuring_synthetic_data(tmp_path, gpu_host):
    cfg = config.load(write_config(tmp_path))
    with pytest.raises(ConfigError) as err:
        pipeline.prepare_dataset(cfg, cfg.settings.overridden(dataset="auto"), gpu_host)
    message = str(err.value)
    assert message.startswith(f'dataset is "auto" but CIFAR-10 is not in {tmp_path / "data"}')
    assert "this host has GPUs" in message and 'run with dataset "synthetic"' in message
    assert not (tmp_path / "output" / "data").exists()


def test_synthetic_data_on_a_gpu_host_only_when_asked_for(tmp_path, gpu_host):
    cfg = config.load(write_config(tmp_path, train_images=256))
    chosen = pipeline.prepare_dataset(cfg, cfg.settings.overridden(dataset="synthetic"), gpu_host)
    assert chosen["kind"] == "synthetic" and cifar10.is_synthetic(chosen["data_dir"])


def test_a_cpu_host_still_falls_back_to_synthetic_data(tmp_path):
    cfg = config.load(write_config(tmp_path))
    cpu_only = devices.Inventory(gpus=(), cpu_model="t", cpu_count=2).to_dict()
    assert pipeline.prepare_dataset(cfg, cfg.settings.overridden(dataset="auto"), cpu_only)["kind"] == "synthetic"


class _FailingNvml:
    """NVML that loads but fails (a GPU fallen off the bus, a driver mid-upgrade)."""

    def nvmlDeviceGetCount(self):
        raise RuntimeError("NVMLError_Unknown: Unknown Error")


def test_a_quarantined_host_whose_gpus_are_gone_plans_nothing_instead_of_failing_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(devices, "load_nvml", lambda: (_FailingNvml(), None))
    with pytest.raises(RuntimeError, match="NVMLError_Unknown"):
        pipeline.discover_devices()
    inventory = pipeline.discover_devices(quarantined=True)
    assert (
        not inventory["gpus"] and "the host is quarantined: RuntimeError: NVMLError_Unknown" in inventory["nvml_error"]
    )
    cfg = config.load(write_config(tmp_path))
    settings = cfg.settings.overridden(device_sets=["0", "cpu"])
    dataset = {"kind": "none", "data_dir": ""}
    with pytest.raises(ConfigError):
        pipeline.plan_matrix(settings, inventory, dataset)
    assert pipeline.plan_matrix(settings, inventory, dataset, quarantined=True) == []


def test_publications_of_one_run_take_turns_so_the_last_holds_every_row_stored_before_it(tmp_path):
    """Two tasks stopped at once each publish; without turns, the one that read one row could write last."""
    import threading

    from trainbench.store import run_folder
    from trainbench.workflows import harness

    from test_results import result

    cfg = config.load(write_config(tmp_path))
    pipeline.start_run(cfg, "two_stopped", cfg.settings)
    harness._save(cfg, result(run_id="two_stopped", case_key="pytorch__0__r1", status="killed"), log=lambda m: None)
    with run_folder.publishing(cfg.output_dir, "two_stopped"):  # the first stopped task, publishing
        second = threading.Thread(target=pipeline.publish, args=(cfg, "two_stopped"))
        second.start()
        harness._save(cfg, result(run_id="two_stopped", case_key="pytorch__0__r2", status="killed"), log=lambda m: None)
    second.join(timeout=120)
    assert not second.is_alive()
    assert (run_folder.run_dir(cfg.output_dir, "two_stopped") / "report.md").read_text().count("(killed)") == 2
