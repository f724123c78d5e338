"""A stand-in for the NVML library on hosts without GPUs (the hardware is what is absent).

It answers the calls trainbench makes with the shapes `nvidia-ml-py` returns, from a
scripted device state: memory used, throttle reasons and idle stretches can follow a function of
time, so a sampler's peak detection and throttle shares are tested against known figures.  Each
health fault (ECC errors, retired pages, remapped rows, a narrow PCIe link, XID events) is a field
of `Device` whose default is a healthy GPU; a call named in `Device.unsupported` answers
NOT_SUPPORTED.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

MIB = 2**20
NVML_CLOCK_SM = 1
NVML_TEMPERATURE_GPU = 0
GPU_IDLE = 0x1


class NotSupported(Exception):
    """What NVMLError_NotSupported is to the callers: an exception from the call."""


@dataclass
class Device:
    uuid: str
    name: str
    bus_id: str
    total_mib: float = 81559.0
    idle_mib: float = 480.0
    used_mib: Callable[[float], float] | None = None  # seconds since `start` -> MiB used
    processes: list = field(default_factory=list)
    accounting: int = 0
    accounted: dict = field(default_factory=dict)  # pid -> max MiB
    energy_mj_per_s: float = 300_000.0
    reasons: int | Callable[[float], int] = 0  # clock-event reason bits, or seconds since `start` -> bits
    idle: Callable[[float], bool] | None = None  # seconds since `start` -> idle: only the gpu_idle bit is reported
    ecc_corrected: int = 0  # volatile (since the driver loaded) and aggregate alike
    ecc_uncorrected: int = 0
    ecc_uncorrected_earlier: int = 0  # in the aggregate count only: before the last driver load or reset
    retired_pages: tuple[int, int] = (0, 0)  # pages retired for multiple single-bit, for double-bit errors
    retirement_pending: bool = False
    remapped_rows: tuple[int, int, bool, bool] = (0, 0, False, False)  # corrected, uncorrected, pending, failure
    pcie: tuple[int, int, int, int] = (5, 5, 16, 16)  # current generation, max generation, current width, max width
    xids: list[int] = field(default_factory=list)  # XID events not yet delivered
    persistence: int = 1
    unsupported: set[str] = field(default_factory=set)  # NVML calls that answer NOT_SUPPORTED
    locked_clocks: tuple[int, int] | None = None
    may_lock_clocks: bool = True  # False: the driver refuses (not root), as NVML answers NO_PERMISSION
    vbios: str = "96.00.89.00.01"


class StandInNvml:
    NVML_CLOCK_SM = NVML_CLOCK_SM
    NVML_CLOCK_GRAPHICS = 0
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU
    NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
    NVML_VOLATILE_ECC = 0
    NVML_AGGREGATE_ECC = 1
    NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS = 0
    NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = 1
    nvmlEventTypeXidCriticalError = 8

    def __init__(self, devices: list[Device], driver: str = "580.65.06", cuda: int = 13000):
        self.devices, self.driver, self.cuda = devices, driver, cuda
        self.start = time.monotonic()
        self.memory_calls = 0
        self.event_sets: list[list] = []  # created and not yet freed

    def _now(self) -> float:
        return time.monotonic() - self.start

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i):
        return self.devices[i]

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return next(d for d in self.devices if d.uuid == uuid)

    def nvmlDeviceGetUUID(self, h):
        return h.uuid

    def nvmlDeviceGetName(self, h):
        return h.name

    def nvmlDeviceGetPciInfo(self, h):
        return SimpleNamespace(busId=h.bus_id.encode())

    def nvmlDeviceGetMemoryInfo(self, h):
        self.memory_calls += 1
        used = h.used_mib(self._now()) if h.used_mib else h.idle_mib
        return SimpleNamespace(total=h.total_mib * MIB, used=used * MIB, free=(h.total_mib - used) * MIB)

    def nvmlDeviceGetMigMode(self, h):
        return [0, 0]

    def nvmlDeviceGetPersistenceMode(self, h):
        return self._supported(h, "nvmlDeviceGetPersistenceMode").persistence

    def nvmlDeviceGetAccountingMode(self, h):
        return h.accounting

    def nvmlDeviceSetAccountingMode(self, h, mode):
        h.accounting = mode

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return 700_000

    def nvmlDeviceGetVbiosVersion(self, h):
        return h.vbios

    def nvmlSystemGetDriverVersion(self):
        return self.driver

    def nvmlSystemGetCudaDriverVersion_v2(self):
        return self.cuda

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [SimpleNamespace(pid=pid, usedGpuMemory=mib * MIB) for pid, mib in h.processes]

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        return int(self._now() * h.energy_mj_per_s)

    def nvmlDeviceGetClockInfo(self, h, kind):
        return 1980 if int(self._now() * 10) % 2 else 1755

    def nvmlDeviceGetDefaultApplicationsClock(self, h, kind):
        return 1755

    def nvmlDeviceSetGpuLockedClocks(self, h, low, high):
        if not h.may_lock_clocks:
            raise PermissionError("NVML_ERROR_NO_PERMISSION")
        h.locked_clocks = (low, high)

    def nvmlDeviceResetGpuLockedClocks(self, h):
        h.locked_clocks = None

    def nvmlDeviceGetTemperature(self, h, kind):
        return 40 + int(self._now() * 10)

    def nvmlDeviceGetPowerUsage(self, h):
        return 350_000

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        if h.idle and h.idle(self._now()):
            return GPU_IDLE
        return h.reasons(self._now()) if callable(h.reasons) else h.reasons

    def _supported(self, h: Device, call: str) -> Device:
        if call in h.unsupported:
            raise NotSupported(f"{call}: Not Supported")
        return h

    def nvmlDeviceGetTotalEccErrors(self, h, kind, counter):
        h = self._supported(h, "nvmlDeviceGetTotalEccErrors")
        if kind == self.NVML_MEMORY_ERROR_TYPE_CORRECTED:
            return h.ecc_corrected
        return h.ecc_uncorrected + (h.ecc_uncorrected_earlier if counter == self.NVML_AGGREGATE_ECC else 0)

    def nvmlDeviceGetRetiredPages(self, h, cause):
        count = self._supported(h, "nvmlDeviceGetRetiredPages").retired_pages[cause]
        return [0x1000 * (i + 1) for i in range(count)]

    def nvmlDeviceGetRetiredPagesPendingStatus(self, h):
        return int(self._supported(h, "nvmlDeviceGetRetiredPagesPendingStatus").retirement_pending)

    def nvmlDeviceGetRemappedRows(self, h):
        corrected, uncorrected, pending, failure = self._supported(h, "nvmlDeviceGetRemappedRows").remapped_rows
        return corrected, uncorrected, int(pending), int(failure)

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h):
        return self._supported(h, "nvmlDeviceGetCurrPcieLinkGeneration").pcie[0]

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h):
        return self._supported(h, "nvmlDeviceGetMaxPcieLinkGeneration").pcie[1]

    def nvmlDeviceGetCurrPcieLinkWidth(self, h):
        return self._supported(h, "nvmlDeviceGetCurrPcieLinkWidth").pcie[2]

    def nvmlDeviceGetMaxPcieLinkWidth(self, h):
        return self._supported(h, "nvmlDeviceGetMaxPcieLinkWidth").pcie[3]

    def nvmlEventSetCreate(self):
        event_set: list = []  # the registered devices
        self.event_sets.append(event_set)
        return event_set

    def nvmlDeviceRegisterEvents(self, h, types, event_set):
        self._supported(h, "nvmlDeviceRegisterEvents")
        event_set.append(h)

    def nvmlEventSetWait_v2(self, event_set, timeout_ms):
        for h in event_set:
            if h.xids:
                return SimpleNamespace(device=h, eventType=self.nvmlEventTypeXidCriticalError, eventData=h.xids.pop(0))
        raise TimeoutError("NVML_ERROR_TIMEOUT")

    def nvmlEventSetFree(self, event_set):
        event_set.clear()
        self.event_sets.remove(event_set)

    def nvmlDeviceGetAccountingPids(self, h):
        return list(h.accounted)

    def nvmlDeviceGetAccountingStats(self, h, pid):
        return SimpleNamespace(maxMemoryUsage=h.accounted[pid] * MIB)


def log_host() -> StandInNvml:
    """The original log's host: two Titan X and a GTX 980."""
    return StandInNvml(
        [
            Device("GPU-aaaa-0000", "Titan X", "00000000:01:00.0", 12288, 138),
            Device("GPU-bbbb-1111", "Titan X", "00000000:02:00.0", 12288, 29),
            Device("GPU-cccc-2222", "GTX 980", "00000000:03:00.0", 4096, 15),
        ],
        driver="352.63",
        cuda=7050,
    )
