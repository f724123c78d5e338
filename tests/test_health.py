"""GPU health: each fault injected through the NVML stand-in, what it makes of a repeat and of its host."""

import pytest

from trainbench.measure import health

from nvml_standin import Device, StandInNvml


def gpu(**faults) -> tuple[StandInNvml, Device]:
    dev = Device("GPU-dddd-3333", "H200", "00000000:04:00.0", **faults)
    return StandInNvml([dev]), dev


def test_a_healthy_snapshot_has_every_item_and_no_problem():
    nvml, dev = gpu()
    snap = health.snapshot(nvml, dev)
    assert snap == {
        "uuid": "GPU-dddd-3333",
        "ecc_volatile_corrected": 0,
        "ecc_aggregate_corrected": 0,
        "ecc_volatile_uncorrected": 0,
        "ecc_aggregate_uncorrected": 0,
        "retired_pages_single_bit": 0,
        "retired_pages_double_bit": 0,
        "retired_pages_pending": False,
        "remapped_rows_corrected": 0,
        "remapped_rows_uncorrected": 0,
        "remap_pending": False,
        "remap_failure": False,
        "pcie_gen": 5,
        "pcie_max_gen": 5,
        "pcie_width": 16,
        "pcie_max_width": 16,
        "temperature_c": snap["temperature_c"],
        "persistence_mode": True,
    }
    assert isinstance(snap["temperature_c"], int)
    assert health.problems(snap) == [] and health.new_faults(snap, snap) == []


def test_what_nvml_does_not_support_is_none_never_a_problem():
    calls = {"nvmlDeviceGetTotalEccErrors", "nvmlDeviceGetRetiredPages", "nvmlDeviceGetRemappedRows"}
    nvml, dev = gpu(unsupported=calls | {"nvmlDeviceGetCurrPcieLinkWidth", "nvmlDeviceRegisterEvents"})
    snap = health.snapshot(nvml, dev)
    assert snap["ecc_volatile_uncorrected"] is None and snap["retired_pages_double_bit"] is None
    assert snap["remapped_rows_corrected"] is None and snap["remap_failure"] is None and snap["pcie_width"] is None
    assert health.problems(snap) == [] and health.new_faults(snap, snap) == []
    watcher = health.XidWatcher(nvml, dev)
    watcher.poll()
    assert watcher.events is None and "Not Supported" in watcher.error


@pytest.mark.parametrize(
    "fault, problem",
    [
        ({"retirement_pending": True}, "page retirement pending: reset the GPU (nvidia-smi -r) or reboot"),
        ({"remapped_rows": (0, 1, True, False)}, "row remapping pending: reset the GPU"),
        ({"remapped_rows": (0, 0, False, True)}, "row remapping failed (no spare rows left): take the GPU out"),
        ({"pcie": (5, 5, 8, 16)}, "PCIe link x8 of x16: reseat the card"),
    ],
)
def test_problems_name_the_gpu_and_what_to_do(fault, problem):
    nvml, dev = gpu(**fault)
    (found,) = health.problems(health.snapshot(nvml, dev))
    assert found.startswith("GPU-dddd-3333: ") and problem in found


def test_pcie_generation_below_its_maximum_at_idle_is_no_problem_but_under_load_it_is_a_fault():
    nvml, dev = gpu(pcie=(1, 5, 16, 16))
    snap = health.snapshot(nvml, dev)
    assert health.problems(snap) == [] and health.new_faults(snap, snap) == []
    assert health.new_faults(snap, {**snap, "pcie_gen_under_load": 5}) == []
    assert health.new_faults(snap, {**snap, "pcie_gen_under_load": 3}) == ["GPU-dddd-3333: PCIe gen 3 of 5 under load"]


@pytest.mark.parametrize(
    "change, fault",
    [
        ({"ecc_uncorrected": 2}, "2 new uncorrectable ECC error(s)"),
        ({"retired_pages": (0, 1)}, "1 new retired page(s)"),
        ({"retirement_pending": True}, "page retirement pending"),
        ({"remapped_rows": (0, 1, False, False)}, "1 new remapped row(s)"),
        ({"remapped_rows": (0, 0, False, True)}, "row remapping failed"),
        ({"pcie": (5, 5, 4, 16)}, "PCIe link x4 of x16"),
    ],
)
def test_new_faults_name_what_turned_bad(change, fault):
    nvml, dev = gpu()
    before = health.snapshot(nvml, dev)
    for name, value in change.items():
        setattr(dev, name, value)
    (found,) = health.new_faults(before, health.snapshot(nvml, dev))
    assert found.startswith(f"GPU-dddd-3333: {fault}")


def test_corrected_ecc_errors_and_old_retired_pages_are_no_new_fault():
    nvml, dev = gpu(retired_pages=(3, 1))
    before = health.snapshot(nvml, dev)
    dev.ecc_corrected = 40
    assert health.new_faults(before, health.snapshot(nvml, dev)) == []


def test_xid_events_are_drained_and_only_those_of_the_gpu_are_faults():
    """XIDs a trainer causes itself (43: stopped by the application) are kept but do not fault the GPU."""
    nvml, dev = gpu()
    watcher = health.XidWatcher(nvml, dev)
    watcher.poll()
    assert watcher.events == []
    dev.xids = [43, 79]
    watcher.poll()
    watcher.close()
    assert watcher.events == [43, 79] and dev.xids == []
    snap = health.snapshot(nvml, dev)
    assert health.new_faults(snap, {**snap, "xid_events": [43]}) == []
    assert health.new_faults(snap, {**snap, "xid_events": [43, 79]}) == [
        "GPU-dddd-3333: XID 79 (see NVIDIA's XID catalogue)"
    ]
