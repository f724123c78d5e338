"""The host doctor: each check's pass and its failure on this CPU host (GPU checks through the NVML stand-in, framework
interpreters faked by a script that answers the probe), the CLI's exit status, and the DAG's pre-flight quarantine."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from trainbench import config
from trainbench.config import ConfigError, Measurement
from trainbench.store.results import VERSION_TABLE, open_store
from trainbench.trainers import cifar10
from trainbench.workflows import doctor, gpu_check

from conftest import ROOT, write_config
from nvml_standin import Device, StandInNvml

CPU_TORCH = {"version": "2.9.0+cpu", "cuda": None, "gpus": 0}
CUDA_TORCH = {"version": "2.9.0", "cuda": "CUDA 12.8", "gpus": 2, "nccl": "2.21.5"}


def fake_python(folder, found: dict | None, stderr: str = "", status: int = 0) -> str:
    """An interpreter that answers the doctor's probe with `found`, as a framework's would."""
    path = folder / "fake-python"
    path.write_text(f"#!/bin/sh\necho '{json.dumps(found)}'\necho '{stderr}' >&2\nexit {status}\n")
    path.chmod(0o755)
    return str(path)


def configured(tmp_path, found: dict | None = None, **benchmark) -> config.Config:
    python = fake_python(tmp_path, found or CPU_TORCH)
    return config.load(write_config(tmp_path, interpreters={"pytorch": {"python": python}}, **benchmark))


def checks_of(cfg, nvml=None, **changes) -> dict[str, doctor.Check]:
    settings = cfg.settings.overridden(**changes) if changes else None
    return {c.name: c for c in doctor.run(cfg, "gpu", nvml, settings)}


def gpus(n: int = 1, **fields) -> StandInNvml:
    return StandInNvml(
        [Device(f"GPU-{i}aaa-0000", "NVIDIA H200", f"00000000:0{i + 1}:00.0", **fields) for i in range(n)]
    )


class FailingNvml(StandInNvml):
    def nvmlDeviceGetCount(self):
        raise RuntimeError("NVML_ERROR_GPU_IS_LOST")


def test_a_check_s_status_is_one_of_three():
    with pytest.raises(ValueError, match=r"check 'nvml': status 'ok'; accepted: \['pass', 'warn', 'fail'\]"):
        doctor.Check("nvml", "ok", "")


def test_a_cpu_host_with_its_framework_can_measure(tmp_path):
    cfg = config.load(write_config(tmp_path))
    checks = doctor.run(cfg, "gpu")
    assert [c.name for c in checks] == [
        "fleet host",
        "nvml",
        "device sets",
        "framework pytorch",
        "frameworks",
        "data set",
        "output folder",
        "results database",
    ]
    assert all(c.status == doctor.PASS for c in checks), [c.line() for c in checks]
    named = {c.name: c for c in checks}
    assert named["nvml"].detail.startswith("CPU host: no NVML")
    assert "PyTorch 2." in named["framework pytorch"].detail
    assert doctor.can_measure(checks)


def test_a_host_the_fleet_does_not_name_warns(tmp_path):
    cfg = configured(tmp_path)
    assert doctor.run(cfg, "gpu")[0].line() == "PASS  fleet host: gpu, one of [fleet] hosts"
    other = doctor.run(cfg, "h100-z")[0]
    assert (
        other.status == doctor.WARN
        and other.detail == "'h100-z' is not in [fleet] hosts ['gpu']: the DAG plans no case for it"
    )
    assert other.fix.startswith("set $TRAINBENCH_HOST to this host's queue name, or add 'h100-z' to [fleet] hosts")


def test_nvml_present_but_failing_fails(tmp_path, monkeypatch):
    cfg = configured(tmp_path)
    assert checks_of(cfg, FailingNvml([]))["nvml"].status == doctor.FAIL
    assert "NVML_ERROR_GPU_IS_LOST" in checks_of(cfg, FailingNvml([]))["nvml"].detail
    monkeypatch.setattr(doctor, "load_nvml", lambda: (None, "NVMLError_DriverNotLoaded: Driver Not Loaded"))
    found = checks_of(cfg)["nvml"]
    assert found.status == doctor.FAIL and "Driver Not Loaded" in found.detail and "reboot" in found.fix


def test_gpus_named_in_the_device_sets_but_none_visible_fail(tmp_path):
    found = checks_of(configured(tmp_path), device_sets=("0",))
    assert found["nvml"].status == doctor.FAIL
    assert "device sets ['0'] name GPUs" in found["nvml"].detail
    assert found["device sets"].status == doctor.FAIL and "device '0' does not exist" in found["device sets"].detail


def test_gpu_host_nvml_and_device_sets(tmp_path):
    found = checks_of(configured(tmp_path, CUDA_TORCH), gpus(2), device_sets=("0", "0,1"), dataset="synthetic")
    assert found["nvml"].status == doctor.PASS
    assert found["nvml"].detail == "driver 580.65.06, CUDA 13.0, 2 GPU(s): NVIDIA H200"
    assert found["device sets"].detail == "0, 0,1 (2 cases per repeat)"
    every = checks_of(configured(tmp_path, CUDA_TORCH), gpus(3), device_sets=("all",), dataset="synthetic")
    assert every["device sets"].detail == "7 sets: 0,1,2, 0,1, 0,2, 1,2, 0, 1, ... (7 cases per repeat)"


@pytest.mark.parametrize(
    ("fault", "problem"),
    [
        ({"ecc_uncorrected": 1}, "GPU-0aaa-0000: 1 uncorrectable ECC error(s) since the driver loaded"),
        ({"remapped_rows": (0, 0, False, True)}, "GPU-0aaa-0000: row remapping failed"),
        ({"retirement_pending": True}, "GPU-0aaa-0000: page retirement pending"),
    ],
)
def test_each_gpu_s_health(tmp_path, fault, problem):
    cfg = configured(tmp_path, CUDA_TORCH, dataset="synthetic")
    healthy = checks_of(cfg, gpus(1))
    assert healthy["gpu 0 health"].line() == "PASS  gpu 0 health: GPU-0aaa-0000: no problem NVML reports"
    assert doctor.can_measure(list(healthy.values()))
    sick = checks_of(cfg, gpus(1, **fault), device_sets=("0",))
    assert sick["gpu 0 health"].status == doctor.FAIL and problem in sick["gpu 0 health"].detail
    assert "`nvidia-smi -q -i 0`" in sick["gpu 0 health"].fix
    assert not doctor.can_measure(list(sick.values()))


def test_a_sick_gpu_the_run_does_not_use_warns_and_the_host_measures(tmp_path):
    cfg = configured(tmp_path, CUDA_TORCH, dataset="synthetic")
    nvml = gpus(2)
    nvml.devices[1].retirement_pending = True
    found = checks_of(cfg, nvml, device_sets=("0",))
    assert found["gpu 0 health"].status == doctor.PASS
    sick = found["gpu 1 health"]
    assert sick.status == doctor.WARN and sick.detail.startswith("GPU-1aaa-0000: page retirement pending")
    assert sick.detail.endswith("; no device set of this run uses it") and doctor.can_measure(list(found.values()))
    assert checks_of(cfg, nvml, device_sets=("1",))["gpu 1 health"].status == doctor.FAIL


def test_a_link_below_its_width_warns_without_stopping_the_host(tmp_path):
    """Some platforms (VMs, bifurcated slots) train every link below NVML's maximum: quarantining them would stop
    the host every week."""
    cfg = configured(tmp_path, CUDA_TORCH, dataset="synthetic")
    found = checks_of(cfg, gpus(1, pcie=(5, 5, 8, 16)), device_sets=("0",))
    narrow = found["gpu 0 health"]
    assert narrow.status == doctor.WARN and narrow.detail.startswith("GPU-0aaa-0000: PCIe link x8 of x16")
    assert doctor.can_measure(list(found.values()))


NO_PYNVML = "ModuleNotFoundError: No module named 'pynvml'"


@pytest.mark.parametrize(
    ("error", "fix"),
    [
        (NO_PYNVML, "-m pip install nvidia-ml-py=="),
        ("NVMLError_LibraryNotFound: NVML Shared Library Not Found", "check `nvidia-smi`"),
    ],
)
def test_a_gpu_host_without_nvml_fails_instead_of_passing_as_a_cpu_host(tmp_path, monkeypatch, error, fix):
    cfg = configured(tmp_path)
    monkeypatch.setattr(doctor, "load_nvml", lambda: (None, error))
    assert checks_of(cfg)["nvml"].status == doctor.PASS
    (tmp_path / "nvidia0").write_text("")
    monkeypatch.setattr(doctor, "NVIDIA_DEVICE_PATHS", (str(tmp_path / "nvidia0"), str(tmp_path / "absent")))
    found = checks_of(cfg)["nvml"]
    assert (
        found.status == doctor.FAIL and found.detail == f"NVIDIA devices ({tmp_path / 'nvidia0'}) but no NVML: {error}"
    )
    assert fix in found.fix


def test_gpu_check_on_a_gpu_host_without_nvml_fails_instead_of_saying_no_gpu(tmp_path, monkeypatch):
    cfg = configured(tmp_path)
    monkeypatch.setattr(doctor, "load_nvml", lambda: (None, NO_PYNVML))
    monkeypatch.setattr(gpu_check, "load_nvml", lambda: (None, NO_PYNVML))
    monkeypatch.setattr(doctor, "NVIDIA_DEVICE_PATHS", (str(tmp_path),))
    said: list[str] = []
    assert gpu_check.main(cfg, "gpu", out=said.append) == 1
    assert said[-1] == "gpu-check: the doctor failed (nvml): GPU acceptance not measured"


def test_persistence_mode_off_warns(tmp_path):
    cfg = configured(tmp_path, CUDA_TORCH, dataset="synthetic")
    assert checks_of(cfg, gpus(1))["persistence mode"].status == doctor.PASS
    off = checks_of(cfg, gpus(2, persistence=0))["persistence mode"]
    assert off.status == doctor.WARN and off.detail.startswith("off on GPU(s) [0, 1]") and "nvidia-smi -pm 1" in off.fix


def test_accounting_mode_off_warns_unless_root_turns_it_on(tmp_path, monkeypatch):
    cfg = configured(tmp_path, CUDA_TORCH, dataset="synthetic")
    assert checks_of(cfg, gpus(1, accounting=1))["accounting mode"].detail == "on"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert "turned on for each case" in checks_of(cfg, gpus(1))["accounting mode"].detail
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    off = checks_of(cfg, gpus(1))["accounting mode"]
    assert off.status == doctor.WARN and "`nvidia-smi -am 1`" in off.fix


def test_clock_locking_needs_root_and_is_checked_only_when_asked(tmp_path, monkeypatch):
    cfg = configured(tmp_path, CUDA_TORCH, dataset="synthetic")
    assert "clock locking" not in checks_of(cfg, gpus(1))
    cfg = dataclasses.replace(cfg, measurement=Measurement(lock_clocks=True))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert checks_of(cfg, gpus(1))["clock locking"].status == doctor.PASS
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    refused = checks_of(cfg, gpus(1))["clock locking"]
    assert refused.status == doctor.WARN and "lock_clocks = false" in refused.fix


def test_a_framework_interpreter_that_sees_its_gpus_with_nccl_passes(tmp_path):
    found = checks_of(configured(tmp_path, CUDA_TORCH), gpus(2), device_sets=("0,1",), dataset="synthetic")
    assert found["framework pytorch"].status == doctor.PASS
    assert "PyTorch 2.9.0 (CUDA 12.8, 2.21.5), sees 2 GPU(s); runs pytorch" in found["framework pytorch"].detail


@pytest.mark.parametrize(
    ("found", "problem"),
    [
        (CPU_TORCH, "a build without CUDA on a GPU host"),
        ({**CUDA_TORCH, "gpus": 1}, "sees 1 of the 2 GPUs NVML shows"),
        ({**CUDA_TORCH, "nccl": None}, "no NCCL, which the multi-GPU sets need"),
    ],
)
def test_a_framework_blind_to_the_gpus_warns_and_no_usable_framework_fails(tmp_path, found, problem):
    checks = checks_of(configured(tmp_path, found), gpus(2), device_sets=("0,1",), dataset="synthetic")
    assert checks["framework pytorch"].status == doctor.WARN
    assert problem in checks["framework pytorch"].detail
    assert "install the CUDA build of pytorch" in checks["framework pytorch"].fix
    assert checks["frameworks"].status == doctor.FAIL
    assert f"(framework pytorch: {checks['framework pytorch'].detail})" in checks["frameworks"].detail


def test_a_missing_interpreter_warns_and_the_others_still_measure(tmp_path):
    missing = str(tmp_path / "none" / "bin" / "python")
    cfg = config.load(
        write_config(tmp_path, frameworks=["pytorch", "jax"], interpreters={"pytorch": {"python": missing}})
    )
    found = checks_of(cfg)
    assert found["framework pytorch"].status == doctor.WARN
    assert f"interpreter {missing} not found; pytorch rows will be unavailable" in found["framework pytorch"].detail
    assert "`make envs`" in found["framework pytorch"].fix
    assert found["frameworks"].status == doctor.PASS and found["frameworks"].detail == "usable: jax"


def test_an_interpreter_that_cannot_import_its_framework_warns(tmp_path):
    python = fake_python(tmp_path, None, stderr="ModuleNotFoundError: No module named torch", status=1)
    cfg = config.load(write_config(tmp_path, interpreters={"pytorch": {"python": python}}))
    found = checks_of(cfg)
    assert "cannot import pytorch: ModuleNotFoundError: No module named torch" in found["framework pytorch"].detail
    assert found["frameworks"].status == doctor.FAIL


def test_the_data_set(tmp_path):
    cfg = configured(tmp_path)
    assert "synthetic, written to" in checks_of(cfg)["data set"].detail
    missing = checks_of(cfg, dataset="real")["data set"]
    assert missing.status == doctor.FAIL and "cifar-10-python.tar.gz" in missing.fix
    assert "this host has GPUs" in checks_of(configured(tmp_path, CUDA_TORCH), gpus(1))["data set"].detail
    real = cifar10.write_synthetic(str(tmp_path / "data"), train_images=2048, test_images=512)
    os.remove(os.path.join(real, cifar10.SYNTHETIC_MARKER))
    found = checks_of(cfg, dataset="real")["data set"]
    assert found.status == doctor.PASS and found.detail.startswith("real, 1024 training and 512 test images")
    with open(os.path.join(real, "data_batch_1"), "r+b") as f:
        f.truncate(100)
    damaged = checks_of(cfg, dataset="real")["data set"]
    assert damaged.status == doctor.FAIL and "data_batch_1: not a CIFAR-10 batch" in damaged.detail


def test_the_output_folder_must_be_writable(tmp_path):
    cfg = configured(tmp_path)
    assert checks_of(cfg)["output folder"].status == doctor.PASS
    (tmp_path / "blocked").write_text("")
    blocked = dataclasses.replace(cfg, output_dir=tmp_path / "blocked" / "output")
    found = {c.name: c for c in doctor.run(blocked)}
    assert found["output folder"].status == doctor.FAIL and "is not writable" in found["output folder"].detail
    assert "[paths] output_dir" in found["output folder"].fix


def test_the_results_database_reachable_and_migrated(tmp_path):
    (tmp_path / "folder.db").mkdir()
    found = checks_of(configured(tmp_path, database_url=f"sqlite:///{tmp_path / 'folder.db'}"))["results database"]
    assert found.status == doctor.FAIL and "unable to open database file" in found.detail
    newer = tmp_path / "newer.db"
    store = open_store(f"sqlite:///{newer}")
    with store.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = 'ffff'"))
    open_store.cache_clear()
    found = checks_of(configured(tmp_path, database_url=f"sqlite:///{newer}"))["results database"]
    assert found.status == doctor.FAIL and "'ffff'" in found.detail and "update trainbench" in found.fix
    ok = checks_of(configured(tmp_path))["results database"]
    assert ok.status == doctor.PASS and ok.detail.endswith("reachable, migrations at head (0011)")
    (tmp_path / "file").write_text("")
    blocked = configured(tmp_path, database_url=f"sqlite:///{tmp_path / 'file' / 'results.db'}")
    found = checks_of(blocked)["results database"]
    assert found.status == doctor.FAIL and found.detail.endswith("results.db: File exists") and "writable" in found.fix


def test_the_cli_exit_status_says_whether_the_host_can_measure(tmp_path):
    cfg_path = write_config(tmp_path)

    def doctor_cli(*flags: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "trainbench", "--config", str(cfg_path), "doctor", *flags]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)

    ready = doctor_cli()
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert ready.stdout.splitlines()[1].startswith("PASS  nvml: CPU host")
    assert "gpu: can measure (0 failed, 0 warnings, " in ready.stdout
    blind = doctor_cli("--device-sets", "0")
    assert blind.returncode == 1
    assert "FAIL  nvml: no GPU visible" in blind.stdout and "gpu: cannot measure (2 failed" in blind.stdout


def test_preflight_quarantines_a_host_that_cannot_measure(tmp_path):
    cfg = configured(tmp_path)
    store = open_store(cfg.database_url)
    ready = doctor.preflight(cfg, "run1", "gpu")
    assert ready["can_measure"] and ready["failed"] == [] and store.quarantined("run1", "gpu") is None
    blind = doctor.preflight(cfg, "run1", "gpu", cfg.settings.overridden(device_sets=("0",)), FailingNvml([]))
    assert not blind["can_measure"] and blind["failed"] == ["nvml", "device sets"]
    assert blind["host"] == "gpu" and {c["name"] for c in blind["checks"]} >= {"nvml", "data set"}
    reason = store.quarantined("run1", "gpu")
    assert reason is not None and reason.startswith("doctor: nvml: NVML answers but fails")
    assert blind["quarantined"] == reason
    assert doctor.preflight(cfg, "run1", "gpu")["can_measure"]  # repaired, the host's tasks cleared: measures again
    assert store.quarantined("run1", "gpu") is None
    sick = doctor.preflight(
        configured(tmp_path, CUDA_TORCH, dataset="synthetic", device_sets=["0"]),
        "run2",
        "gpu",
        nvml=gpus(1, ecc_uncorrected=1),
    )
    assert sick["failed"] == ["gpu 0 health"]
    assert store.quarantined("run2", "gpu") == f"doctor: gpu 0 health: {sick['checks'][3]['detail']}"


def test_a_run_asking_a_cpu_host_for_gpus_fails_naming_them_and_quarantines_nothing(tmp_path):
    cfg = configured(tmp_path)
    with pytest.raises(ConfigError) as refused:
        doctor.preflight(cfg, "run1", "gpu", cfg.settings.overridden(device_sets=("0",)))
    assert str(refused.value).startswith("the run asks host gpu for devices it does not have: nvml: no GPU visible")
    assert "device sets: " in str(refused.value) and "GPUs here: none (CPU only" in str(refused.value)
    assert open_store(cfg.database_url).quarantined("run1", "gpu") is None


@pytest.mark.parametrize("gpus_found", ["8", None, -1])
def test_a_probe_answering_an_odd_gpu_count_warns_instead_of_crashing_the_doctor(tmp_path, gpus_found):
    checks = checks_of(configured(tmp_path, {**CUDA_TORCH, "gpus": gpus_found}), gpus(2), dataset="synthetic")
    assert checks["framework pytorch"].status == doctor.WARN
    assert f"probe answered gpus = {gpus_found!r}, not a count of GPUs" in checks["framework pytorch"].detail


def test_an_interpreter_leaving_a_child_behind_answers_at_once_and_the_child_is_stopped(tmp_path):
    import time

    import psutil

    python = tmp_path / "fake-python"  # answers, then leaves a child holding its output open
    python.write_text(f"#!/bin/sh\necho '{json.dumps(CPU_TORCH)}'\nsleep 300 &\necho $! > {tmp_path / 'child'}\n")
    python.chmod(0o755)
    cfg = config.load(write_config(tmp_path, interpreters={"pytorch": {"python": str(python)}}))
    started = time.monotonic()
    found = checks_of(cfg)
    assert found["framework pytorch"].status == doctor.PASS, found["framework pytorch"]
    assert time.monotonic() - started < doctor.PROBE_TIMEOUT_S
    child = int((tmp_path / "child").read_text())
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_an_interpreter_that_cannot_start_says_why(tmp_path):
    not_executable = tmp_path / "python3"
    not_executable.write_text("#!/bin/sh\n")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for python, why in ((not_executable, "is not an executable file"), (loop, "is a symbolic link loop")):
        cfg = config.load(write_config(tmp_path, interpreters={"pytorch": {"python": str(python)}}))
        assert f"interpreter {python} {why}" in checks_of(cfg)["framework pytorch"].detail
