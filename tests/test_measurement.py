"""Measurement engine: inventory, idle check, GPU sampling, fingerprint, and on_kill.

NVML is replaced by a stand-in (there is no GPU here); every process is real.
"""

import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import psutil
import pytest

from trainbench import config, devices, fingerprint
from trainbench.frameworks import interpreters
from trainbench.measure import environ, idle, memory, runner, sampling
from trainbench.planning import plan
from trainbench.store.results import ResultStore
from trainbench.workflows import harness, pipeline

from conftest import write_config
from nvml_standin import Device, StandInNvml, log_host


def test_inventory_reads_every_gpu_and_the_driver():
    inv = devices.discover(nvml=log_host())
    assert [(g.index, g.name, g.uuid) for g in inv.gpus] == [
        (0, "Titan X", "GPU-aaaa-0000"),
        (1, "Titan X", "GPU-bbbb-1111"),
        (2, "GTX 980", "GPU-cccc-2222"),
    ]
    g = inv.gpus[2]
    assert (g.pci_bus_id, g.memory_total_mib, g.power_limit_w) == ("00000000:03:00.0", 4096, 700)
    assert (g.mig_mode, g.persistence_mode, g.accounting_mode) == (False, True, False)
    assert (inv.driver_version, inv.cuda_driver_version) == ("352.63", "7.5")
    assert devices.Inventory.from_dict(inv.to_dict()) == inv


def test_host_without_nvml_has_only_its_cpu():
    inv = devices.discover(nvml=None, nvml_error="NVMLError_LibraryNotFound: NVML Shared Library Not Found")
    assert inv.gpus == () and inv.cpu_count >= 1 and "LibraryNotFound" in inv.nvml_error
    assert [c.device_set.text for c in plan(("pytorch",), ("all",), 1, inv)] == ["cpu"]


def test_this_host_reports_its_cpu_when_nvml_is_absent():
    inv = devices.discover()
    assert inv.cpu_model and (inv.gpus == () or inv.driver_version)


def test_idle_check_learns_levels_and_names_what_is_busy(tmp_path):
    nvml = log_host()
    levels = {}
    uuids = ["GPU-aaaa-0000", "GPU-cccc-2222"]
    assert idle.busy_reasons(nvml, uuids, levels, 64, driver="352.63") == []
    assert levels == {"GPU-aaaa-0000 driver 352.63": 138, "GPU-cccc-2222 driver 352.63": 15}
    nvml.devices[2].processes = [(4242, 700)]
    nvml.devices[0].idle_mib = 600
    reasons = idle.busy_reasons(nvml, uuids, levels, 64, driver="352.63")
    assert reasons == [
        "GPU-aaaa-0000: 600 MiB used, above its idle level 138 MiB + 64 MiB",
        "GPU-cccc-2222: foreign compute process(es) pid 4242 (700 MiB)",
    ]


def test_wait_until_idle_waits_for_the_device_to_free(tmp_path):
    nvml = log_host()
    dev = nvml.devices[1]
    dev.processes = [(99, 300)]
    threading.Timer(0.3, dev.processes.clear).start()
    path = tmp_path / "levels.json"
    reasons = idle.wait_until_idle(nvml, [dev.uuid], path, 64, wait_s=5, poll_s=0.05, log=lambda m: None)
    assert reasons == [] and idle.load_levels(path) == {f"{dev.uuid} driver None": 29}
    dev.processes = [(99, 300)]
    started = time.monotonic()
    assert idle.wait_until_idle(nvml, [dev.uuid], path, 64, wait_s=0.2, poll_s=0.05, log=lambda m: None)
    assert time.monotonic() - started < 2


def test_a_new_driver_learns_its_own_idle_level():
    nvml, levels = log_host(), {}
    dev = nvml.devices[0]
    assert idle.busy_reasons(nvml, [dev.uuid], levels, 64, driver="352.63") == []
    dev.idle_mib = 400  # the new driver idles higher: not busy, a new level
    assert idle.busy_reasons(nvml, [dev.uuid], levels, 64, driver="361.42") == []
    assert levels == {f"{dev.uuid} driver 352.63": 138, f"{dev.uuid} driver 361.42": 400}


def spike(idle_mib, peak_mib, at_s, width_s, after_mib):
    return lambda t: idle_mib if t < at_s else peak_mib if t < at_s + width_s else after_mib


def test_gpu_monitor_catches_a_short_spike_and_reports_peak_minus_idle():
    nvml = StandInNvml(
        [
            Device(
                "GPU-h100",
                "NVIDIA H100 80GB HBM3",
                "00000000:19:00.0",
                used_mib=spike(480, 1505, 0.15, 0.02, 1200),
                accounting=0,
                reasons=0x4,
            )
        ]
    )
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.6)"])
    nvml.devices[0].accounted = {child.pid: 1016, 1: 5000}  # pid 1 is not in the trainer's tree
    mon = sampling.GpuMonitor(nvml, ["GPU-h100"], interval_s=0.005, telemetry_every=10)
    mon.prepare()
    nvml.start = time.monotonic()
    mon.start(child.pid)
    child.wait()
    out = mon.stop()
    (g,) = out["gpus"]
    assert (g["idle_mib"], g["peak_mib"], g["used_mib"]) == (480, 1505, 1025)
    assert out["gpu_samples"] >= 40 and out["gpu_sample_interval_s"] == 0.005
    assert g["sm_clock_mhz"] == [1755, 1980] and g["max_power_w"] == 350 and g["max_temperature_c"] >= 40
    assert g["energy_j"] == pytest.approx(0.6 * 300, rel=0.5) and g["throttle_reasons"] == ["sw_power_cap"]
    if g["accounting"]:  # as root the monitor turns accounting mode on, as it would on a real GPU
        assert g["accounting_max_mib"] == 1016
        assert g["accounting"] == "enabled" and g["accounting_restored"] and nvml.devices[0].accounting == 0
    else:
        assert g["accounting_max_mib"] is None
    assert nvml.event_sets == []  # the XID event set is freed once read


def test_a_trainer_that_cannot_start_leaves_no_event_set_or_accounting_mode_behind(tmp_path, monkeypatch):
    """The monitors are prepared before the child is started; when it cannot be, what they set up is undone."""
    monkeypatch.setattr(sampling.os, "geteuid", lambda: 0)  # as root, where the monitor turns accounting mode on
    nvml = StandInNvml([Device("GPU-h100", "NVIDIA H100 80GB HBM3", "00000000:19:00.0", accounting=0)])
    prepared = []

    class Seen(sampling.GpuMonitor):
        def prepare(self) -> None:
            super().prepare()
            prepared.append((len(nvml.event_sets), nvml.devices[0].accounting))

    class Broken(sampling.HostRssMonitor):
        def prepare(self) -> None:
            raise RuntimeError("a monitor that cannot read its baseline")

    for monitors, refused in (
        ([Seen(nvml, ["GPU-h100"])], OSError),
        ([Seen(nvml, ["GPU-h100"]), Broken()], RuntimeError),
    ):
        with pytest.raises(refused):
            runner.Launch([str(tmp_path / "no-such-python")], monitors=monitors).start()
        assert prepared.pop() == (1, 1)  # what there was to undo: an event set, accounting mode turned on
        assert nvml.event_sets == [] and nvml.devices[0].accounting == 0


def test_memory_figures_carry_their_method():
    inv = devices.discover(nvml=log_host())
    case = plan(("pytorch",), ("0,1",), 1, inv)[0]
    monitors = {
        "gpus": [
            {"uuid": "GPU-aaaa-0000", "idle_mib": 138, "peak_mib": 1038, "used_mib": 900, "accounting_max_mib": 880},
            {"uuid": "GPU-bbbb-1111", "idle_mib": 29, "peak_mib": 201, "used_mib": 172, "accounting_max_mib": None},
        ],
        "gpu_sample_interval_s": 0.005,
    }
    fig = memory.figures(case.device_set, monitors)
    assert fig["peak_mem_mib"] == 1072 and "peak minus idle, sampled every 5 ms" in fig["peak_mem_method"]
    assert [(d["name"], d["used_mib"], d["method"]) for d in fig["devices"]] == [
        ("Titan X", 900, "nvml_sampled"),
        ("Titan X", 172, "nvml_sampled"),
        ("Titan X", 880, "nvml_accounting"),
    ]
    from trainbench.reports.rows import memory_line
    from trainbench.result import Result

    shown = Result("r", "pytorch__0-1__r1", "k", "pytorch", "0,1", 1, "ok", devices=fig["devices"])
    assert memory_line(shown) == "peak memory    (1038 - 138)MiB + (201 - 29)MiB"


def test_driver_upgrade_changes_the_comparability_key_and_nothing_else_does():
    inv = devices.discover(nvml=log_host())
    case = plan(("pytorch",), ("0",), 1, inv)[0]
    probe = {"python": "3.11.7", "packages": {"torch": "2.13.0"}}
    work = {"data_kind": "synthetic", "epochs": 10, "batch_size": 128, "train_images": None}
    key = fingerprint.env_key(fingerprint.fingerprint(inv, case, probe, work))
    assert key == fingerprint.env_key(fingerprint.fingerprint(inv, case, dict(probe), dict(work)))
    newer = devices.discover(nvml=StandInNvml(log_host().devices, driver="361.42"))
    assert fingerprint.env_key(fingerprint.fingerprint(newer, case, probe, work)) != key
    other_torch = {**probe, "packages": {"torch": "2.14.1"}}
    assert fingerprint.env_key(fingerprint.fingerprint(inv, case, other_torch, work)) != key
    assert fingerprint.env_key(fingerprint.fingerprint(inv, case, probe, {**work, "data_kind": "real"})) != key


def test_probe_reads_the_framework_version_without_importing_it():
    found = interpreters.probe(sys.executable, ("torch",), environ.trainer_environ({}))
    assert found["python"] == ".".join(map(str, sys.version_info[:3])) and "torch" not in found["packages"]
    assert interpreters.probe("/nonexistent/python", ("jax", "jaxlib"), {})["error"].startswith("FileNotFoundError")


@pytest.fixture
def gpu_case(tmp_path):
    cfg = config.load(write_config(tmp_path))
    cfg = config.Config(**{**cfg.__dict__, "measurement": config.Measurement(idle_wait_s=0)})
    nvml = log_host()
    inv = devices.discover(nvml=nvml).to_dict()
    dataset = {"kind": "synthetic", "data_dir": str(tmp_path / "data")}
    (spec,) = pipeline.plan_matrix(cfg.settings.overridden(device_sets=["2"]), inv, dataset)
    pipeline.start_run(cfg, "busy-run", cfg.settings)
    return cfg, nvml, spec


def test_busy_device_is_never_measured_it_retries_then_records_busy(gpu_case):
    cfg, nvml, spec = gpu_case
    nvml.devices[2].processes = [(31337, 2048)]
    with pytest.raises(idle.DeviceBusy, match="GPU-cccc-2222: foreign compute process"):
        harness.run_case(cfg, "busy-run", spec, log=lambda m: None, final_attempt=False, nvml=nvml)
    assert ResultStore(cfg.database_url).rows("busy-run") == []
    harness.run_case(cfg, "busy-run", spec, log=lambda m: None, final_attempt=True, nvml=nvml)
    (row,) = ResultStore(cfg.database_url).rows("busy-run")
    assert row["status"] == "busy" and "pid 31337" in row["error"] and row["wall_s"] is None


def test_on_kill_stops_the_whole_trainer_tree_and_the_row_says_so(tmp_path, synthetic_data, monkeypatch):
    from trainbench_airflow.operators import TrainCaseOperator

    cfg_path = write_config(tmp_path, epochs=500, train_images=2048, device_sets=["cpu:2"])
    cfg = config.load(cfg_path)
    inv = devices.discover().to_dict()
    (spec,) = pipeline.plan_matrix(cfg.settings, inv, {"kind": "synthetic", "data_dir": synthetic_data})
    pipeline.start_run(cfg, "kill-run", cfg.settings)
    op = TrainCaseOperator(task_id="train", spec=spec.to_dict())
    context = {"run_id": "kill-run", "ti": SimpleNamespace(try_number=1, dag_id="cifar10_benchmark")}
    monkeypatch.setenv("TRAINBENCH_CONFIG", str(cfg_path))
    worker = threading.Thread(target=op.execute, args=(context,))
    worker.start()
    while op._launch is None or len(psutil.Process(op._launch.proc.pid).children(recursive=True)) < 2:
        assert worker.is_alive(), "the task ended before its trainer started"
        time.sleep(0.1)
    tree = [op._launch.proc.pid] + [p.pid for p in psutil.Process(op._launch.proc.pid).children(recursive=True)]
    time.sleep(1.0)
    asked = time.perf_counter()
    op.on_kill()  # in Airflow: the SIGTERM handler on the thread that waits for the trainer
    assert time.perf_counter() - asked < 0.5  # the supervisor SIGKILLs the task 5 s after its SIGTERM
    worker.join(timeout=30)
    assert not worker.is_alive()
    alive = [p for p in tree if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    (row,) = ResultStore(cfg.database_url).rows("kill-run")
    assert row["status"] == "killed" and row["error"].startswith("killed by Airflow") and row["wall_s"] > 1
    assert "killed by Airflow" in (cfg.output_dir / "runs" / "kill-run" / "report.md").read_text()


def test_clock_locking_is_opt_in_recorded_and_restored(gpu_case, synthetic_data, monkeypatch):
    """lock_clocks locks each GPU of the case to its base clock for the run and resets it after, even when the
    trainer fails; a refusal is recorded and the case is measured anyway."""
    cfg, nvml, spec = gpu_case
    cfg = config.Config(**{**cfg.__dict__, "measurement": config.Measurement(idle_wait_s=0, lock_clocks=True)})
    seen = []
    monkeypatch.setattr(harness.runner.Launch, "wait", _recording_wait(seen, nvml.devices[2]))
    result = harness.run_case(cfg, "busy-run", spec, log=lambda m: None, nvml=nvml)
    assert seen == [(1755, 1755)] and nvml.devices[2].locked_clocks is None
    lock = result.telemetry["clock_lock"]
    assert lock["locked_mhz"] == {"GPU-cccc-2222": 1755} and lock["restored"] == ["GPU-cccc-2222"]
    nvml.devices[2].may_lock_clocks = False
    refused = harness.run_case(cfg, "busy-run", spec, log=lambda m: None, nvml=nvml).telemetry["clock_lock"]
    assert refused["locked_mhz"] == {} and "NO_PERMISSION" in refused["refused"]["GPU-cccc-2222"]


def _recording_wait(seen, device):
    original = harness.runner.Launch.wait

    def wait(self):
        seen.append(device.locked_clocks)
        return original(self)

    return wait
