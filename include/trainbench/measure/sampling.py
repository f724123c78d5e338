"""Monitors that sample a running trainer: host RSS of its process tree, and GPU telemetry.

Each monitor is explicit about its units and method: memory in MiB, power in W, energy in
J, clocks in MHz.  The GPU monitor reads device-wide memory used (NVML v1 query for both
the idle baseline and the peaks, so the two are comparable) and reports the original
log's figure, peak minus idle, per device.
"""

from __future__ import annotations

import os
import threading

import psutil

from trainbench.devices import optional
from trainbench.measure import health
from trainbench.measure.memory import NVML_SAMPLED
from trainbench.units import MIB


class _Sampler:
    """A daemon thread calling `sample()` every `interval_s` until stopped."""

    interval_s = 0.05

    def prepare(self) -> None:
        """Read baselines just before the child is launched."""

    def abandon(self) -> None:
        """Undo what `prepare` set up, for a child that never started."""

    def start(self, pid: int) -> None:
        self.pid = pid
        self.samples = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=type(self).__name__, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._safe_sample()
            self._stop.wait(self.interval_s)

    def _safe_sample(self) -> None:
        """A failing query (GPU lost, Xid) is recorded and sampling goes on; it never loses the run."""
        try:
            self.sample()
            self.samples += 1
        except Exception as exc:
            if len(self.errors) < 10:
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def _join(self) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        raise NotImplementedError


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class HostRssMonitor(_Sampler):
    """Peak resident memory of the whole process tree (ru_maxrss only knows the largest child)."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.pids: set[int] = set()

    def sample(self) -> None:
        total = 0
        for p in process_tree(self.pid):
            try:
                total += p.memory_info().rss
                self.pids.add(p.pid)
            except psutil.NoSuchProcess:
                pass
        self.peak_bytes = max(self.peak_bytes, total)

    def stop(self) -> dict:
        self._join()
        return {
            "host_peak_rss_mib": self.peak_bytes / MIB,
            "host_rss_samples": self.samples,
            "tree_processes": len(self.pids),
        }


# NVML clock-event ("throttle") reason bits, named as nvidia-smi names them.
THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
GPU_IDLE = 0x1
THROTTLE_METHOD = (
    "share of the telemetry samples without the gpu_idle bit (the GPU busy) with the reason's bit set; "
    "no share without such samples"
)


class GpuMonitor(_Sampler):
    """Per GPU of the set: device memory used (NVML v1 query) every `interval_s`, telemetry less often.

    `prepare()` reads each device's idle level just before launch; the result's figure is
    peak used minus that idle level, the original log's "(peak - idle) MiB".  It includes
    the CUDA context and NCCL buffers, a real cost to the user that allocator peaks omit.
    When NVML accounting mode is on (or can be turned on, as root), the per-process
    high-water marks of the trainer's process tree are summed per device as well.

    Health (trainbench.measure.health) is read per device before launch and after exit;
    between them each telemetry sample drains XID events, notes the PCIe generation while
    the GPU is not idle, and counts the throttle reason bits set: a reason's share is the
    share of busy telemetry samples (no gpu_idle bit) with its bit set, since idle stretches
    (start-up, data loading) would otherwise dilute heavy slowdown while the GPU worked.
    """

    def __init__(
        self, nvml, gpu_uuids, interval_s: float = 0.005, telemetry_every: int = 20, enable_accounting: bool = True
    ):
        self.nvml, self.interval_s, self.telemetry_every = nvml, interval_s, telemetry_every
        self.uuids = list(gpu_uuids)
        self.handles = [nvml.nvmlDeviceGetHandleByUUID(u) for u in self.uuids]
        self.enable_accounting = enable_accounting
        self.pids: set[int] = set()

    def _used(self, h) -> int:
        return self.nvml.nvmlDeviceGetMemoryInfo(h).used

    def _accounting(self, h) -> str | None:
        """ "on", "enabled" (by us, as root), or None when unavailable."""
        mode = optional(self.nvml.nvmlDeviceGetAccountingMode, h)
        if mode == 1:
            return "on"
        if mode == 0 and self.enable_accounting and os.geteuid() == 0:
            if (
                optional(self.nvml.nvmlDeviceSetAccountingMode, h, 1) is not None
                or optional(self.nvml.nvmlDeviceGetAccountingMode, h) == 1
            ):
                return "enabled"
        return None

    def prepare(self) -> None:
        n = len(self.handles)
        self.idle = [self._used(h) for h in self.handles]
        self.peak = list(self.idle)
        self.energy0 = [optional(self.nvml.nvmlDeviceGetTotalEnergyConsumption, h) for h in self.handles]
        self.accounting = [self._accounting(h) for h in self.handles]
        self.clock = [[None, None] for _ in range(n)]
        self.max_temp = [None] * n
        self.max_power = [None] * n
        self.reasons = [0] * n
        self.reason_counts = [dict.fromkeys(THROTTLE_REASONS, 0) for _ in range(n)]
        self.reason_samples = [0] * n
        self.idle_samples = [0] * n
        self.pcie_gen_under_load: list[int | None] = [None] * n
        self.health_before = [health.snapshot(self.nvml, h) for h in self.handles]
        self.xids = [health.XidWatcher(self.nvml, h) for h in self.handles]

    def abandon(self) -> None:
        """Free the XID event sets and turn accounting mode off where `prepare` turned it on."""
        for watcher in self.xids:
            watcher.close()
        for i, h in enumerate(self.handles):
            self._accounting_off(i, h)

    def _accounting_off(self, i: int, h) -> None:
        """Accounting mode back off where `prepare` turned it on."""
        if self.accounting[i] == "enabled":
            optional(self.nvml.nvmlDeviceSetAccountingMode, h, 0)

    def sample(self) -> None:
        for i, h in enumerate(self.handles):
            self.peak[i] = max(self.peak[i], self._used(h))
        if self.samples % self.telemetry_every == 0:
            self._telemetry()

    def _telemetry(self) -> None:
        nvml = self.nvml
        reasons_call = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        reasons_call = reasons_call or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        for i, h in enumerate(self.handles):
            clock = optional(nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_SM)
            if clock is not None:
                lo, hi = self.clock[i]
                self.clock[i] = [clock if lo is None else min(lo, clock), clock if hi is None else max(hi, clock)]
            temp = optional(nvml.nvmlDeviceGetTemperature, h, nvml.NVML_TEMPERATURE_GPU)
            if temp is not None:
                self.max_temp[i] = max(temp, self.max_temp[i] or temp)
            power = optional(nvml.nvmlDeviceGetPowerUsage, h)
            if power is not None:
                self.max_power[i] = max(power / 1000, self.max_power[i] or 0)
            reasons = optional(reasons_call, h)
            if reasons is not None:
                self._count_reasons(i, h, reasons)
            self.xids[i].poll()
        self.pids.update(p.pid for p in process_tree(self.pid))

    def _count_reasons(self, i: int, h, reasons: int) -> None:
        self.reasons[i] |= reasons
        if reasons & GPU_IDLE:
            self.idle_samples[i] += 1
            return
        self.reason_samples[i] += 1
        for bit in THROTTLE_REASONS:
            if reasons & bit:
                self.reason_counts[i][bit] += 1
        gen = optional(self.nvml.nvmlDeviceGetCurrPcieLinkGeneration, h)
        if gen is not None:
            self.pcie_gen_under_load[i] = max(gen, self.pcie_gen_under_load[i] or gen)

    def _health(self, i: int, h) -> dict:
        """Before and after snapshots, what happened between them, and the faults that makes."""
        watcher = self.xids[i]
        watcher.poll()
        watcher.close()
        samples = self.reason_samples[i]
        after = health.snapshot(self.nvml, h) | {
            "xid_events": watcher.events,
            "pcie_gen_under_load": self.pcie_gen_under_load[i],
        }
        return {
            "before": self.health_before[i],
            "after": after,
            "xid_error": watcher.error,
            "faults": health.new_faults(self.health_before[i], after),
            "throttle_share": {
                THROTTLE_REASONS[bit]: count / samples for bit, count in self.reason_counts[i].items() if count
            },
            "throttle_method": THROTTLE_METHOD,
            "throttle_samples": samples,
            "throttle_idle_samples": self.idle_samples[i],
        }

    def _accounted_peak(self, h) -> float | None:
        pids = set(optional(self.nvml.nvmlDeviceGetAccountingPids, h) or []) & self.pids
        stats = [optional(self.nvml.nvmlDeviceGetAccountingStats, h, pid) for pid in pids]
        used = [s.maxMemoryUsage for s in stats if s is not None]
        return sum(used) / MIB if used else None

    def stop(self) -> dict:
        """The figures per device; accounting mode, where this monitor turned it on, is turned off again."""
        self._join()
        self._safe_sample()
        devices = []
        for i, (uuid, h) in enumerate(zip(self.uuids, self.handles)):
            e1 = optional(self.nvml.nvmlDeviceGetTotalEnergyConsumption, h)
            accounted = self._accounted_peak(h) if self.accounting[i] else None
            self._accounting_off(i, h)
            devices.append(
                {
                    "uuid": uuid,
                    "idle_mib": self.idle[i] / MIB,
                    "peak_mib": self.peak[i] / MIB,
                    "used_mib": (self.peak[i] - self.idle[i]) / MIB,
                    "method": NVML_SAMPLED,
                    "accounting": self.accounting[i],
                    "accounting_max_mib": accounted,
                    "accounting_restored": self.accounting[i] == "enabled"
                    and optional(self.nvml.nvmlDeviceGetAccountingMode, h) == 0,
                    "sm_clock_mhz": self.clock[i],
                    "max_temperature_c": self.max_temp[i],
                    "max_power_w": self.max_power[i],
                    "energy_j": (e1 - self.energy0[i]) / 1000
                    if e1 is not None and self.energy0[i] is not None
                    else None,
                    "throttle_reasons": [name for bit, name in THROTTLE_REASONS.items() if self.reasons[i] & bit],
                    "health": self._health(i, h),
                }
            )
        return {
            "gpus": devices,
            "gpu_samples": self.samples,
            "gpu_sample_interval_s": self.interval_s,
            "gpu_sample_errors": self.errors,
        }
