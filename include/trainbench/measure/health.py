"""Whether a GPU is fit to measure, and what turned bad while it did, from NVML.

A GPU with uncorrectable ECC errors since the driver loaded, pending page retirement or row
remapping, or a failed row remap measures numbers that belong to a broken machine, not to the
software under test; `problems()` names those before a repeat, `new_faults()` what appeared
during one.  Every item is None where NVML does not support it (consumer boards have no ECC,
older ones no row remapping): unknown is never a fault.

A PCIe link below its maximum width before a repeat is only a warning (`warnings()`): some
platforms (VMs, bifurcated slots) train every link below what NVML reports as the maximum, and
quarantining them would stop the host every week.  A width that dropped during a repeat is a
fault.  PCIe generation drops at idle to save power, so it is judged only under load: the
highest generation the GPU monitor saw while the GPU was not idle.
"""

from __future__ import annotations

from collections.abc import Sequence

from trainbench.devices import nvml_text, optional

# XIDs a trainer causes itself (illegal address, MMU fault, stopped by the application,
# preemptive cleanup when a process is killed): recorded, but no sign of a sick GPU.
APPLICATION_XIDS = frozenset({13, 31, 43, 45})


def _flag(value) -> bool | None:
    return None if value is None else bool(value)


def snapshot(nvml, handle) -> dict:
    """One GPU's health counters and link state now; None for what NVML does not support here."""
    uuid = optional(nvml.nvmlDeviceGetUUID, handle)
    snap: dict = {"uuid": None if uuid is None else nvml_text(uuid)}
    for kind, kind_name in (
        (nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, "corrected"),
        (nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, "uncorrected"),
    ):
        for counter, counter_name in ((nvml.NVML_VOLATILE_ECC, "volatile"), (nvml.NVML_AGGREGATE_ECC, "aggregate")):
            snap[f"ecc_{counter_name}_{kind_name}"] = optional(nvml.nvmlDeviceGetTotalEccErrors, handle, kind, counter)
    for cause, name in (
        (nvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS, "single_bit"),
        (nvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR, "double_bit"),
    ):
        pages = optional(nvml.nvmlDeviceGetRetiredPages, handle, cause)
        snap[f"retired_pages_{name}"] = None if pages is None else len(pages)
    snap["retired_pages_pending"] = _flag(optional(nvml.nvmlDeviceGetRetiredPagesPendingStatus, handle))
    rows = optional(nvml.nvmlDeviceGetRemappedRows, handle)
    corrected, uncorrected, pending, failure = rows if rows is not None else (None,) * 4
    snap.update(
        remapped_rows_corrected=corrected,
        remapped_rows_uncorrected=uncorrected,
        remap_pending=_flag(pending),
        remap_failure=_flag(failure),
        pcie_gen=optional(nvml.nvmlDeviceGetCurrPcieLinkGeneration, handle),
        pcie_max_gen=optional(nvml.nvmlDeviceGetMaxPcieLinkGeneration, handle),
        pcie_width=optional(nvml.nvmlDeviceGetCurrPcieLinkWidth, handle),
        pcie_max_width=optional(nvml.nvmlDeviceGetMaxPcieLinkWidth, handle),
        temperature_c=optional(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU),
        persistence_mode=_flag(optional(nvml.nvmlDeviceGetPersistenceMode, handle)),
    )
    return snap


def _below(have, most) -> bool:
    return have is not None and most is not None and have < most


def problems(snap: dict) -> list[str]:
    """Why this GPU must not measure now, each with what to do; [] when nothing known is wrong.

    Volatile uncorrectable ECC errors (since the last driver load or reset) mean the GPU is sick now; the
    aggregate (lifetime) count is history a reset already dealt with."""
    gpu = snap.get("uuid") or "GPU"
    found = []
    if ecc := snap.get("ecc_volatile_uncorrected"):
        found.append(
            f"{gpu}: {ecc} uncorrectable ECC error(s) since the driver loaded: reset the GPU (nvidia-smi -r) or "
            "reboot; if it recurs, drain the host"
        )
    if snap.get("retired_pages_pending"):
        found.append(f"{gpu}: page retirement pending: reset the GPU (nvidia-smi -r) or reboot the host to retire them")
    if snap.get("remap_pending"):
        found.append(f"{gpu}: row remapping pending: reset the GPU (nvidia-smi -r) or reboot the host to remap them")
    if snap.get("remap_failure"):
        found.append(f"{gpu}: row remapping failed (no spare rows left): take the GPU out of service and RMA it")
    return found


def warnings(snap: dict) -> list[str]:
    """What is worth an operator's look but measures consistently on this platform, so it quarantines nothing."""
    width, most = snap.get("pcie_width"), snap.get("pcie_max_width")
    if not _below(width, most):
        return []
    return [
        f"{snap.get('uuid') or 'GPU'}: PCIe link x{width} of x{most}: if this platform's slots are wider, "
        "reseat the card or its riser and reboot; a narrow link slows every host-device copy"
    ]


def gpu_health(nvml, uuids: Sequence[str]) -> tuple[list[str], list[str]]:
    """Every problem and every warning of these GPUs now."""
    snaps = [snapshot(nvml, nvml.nvmlDeviceGetHandleByUUID(uuid)) for uuid in uuids]
    return [p for s in snaps for p in problems(s)], [w for s in snaps for w in warnings(s)]


def _rose(name: str, before: dict, after: dict) -> int:
    b, a = before.get(name), after.get(name)
    return a - b if a is not None and b is not None and a > b else 0


def new_faults(before: dict, after: dict) -> list[str]:
    """What turned bad between two snapshots of one GPU; `after` may carry the monitor's
    `xid_events` and `pcie_gen_under_load`."""
    gpu = after.get("uuid") or before.get("uuid") or "GPU"
    found = []
    ecc = max(_rose("ecc_volatile_uncorrected", before, after), _rose("ecc_aggregate_uncorrected", before, after))
    if ecc:
        found.append(f"{gpu}: {ecc} new uncorrectable ECC error(s)")
    pages = _rose("retired_pages_single_bit", before, after) + _rose("retired_pages_double_bit", before, after)
    if pages:
        found.append(f"{gpu}: {pages} new retired page(s)")
    rows = _rose("remapped_rows_corrected", before, after) + _rose("remapped_rows_uncorrected", before, after)
    if rows:
        found.append(f"{gpu}: {rows} new remapped row(s)")
    for flag, what in (
        ("retired_pages_pending", "page retirement pending"),
        ("remap_pending", "row remapping pending"),
        ("remap_failure", "row remapping failed"),
    ):
        if after.get(flag) and not before.get(flag):
            found.append(f"{gpu}: {what}")
    xids = [x for x in after.get("xid_events") or () if x not in APPLICATION_XIDS]
    if xids:
        found.append(f"{gpu}: XID {', '.join(map(str, xids))} (see NVIDIA's XID catalogue)")
    width, was = after.get("pcie_width"), before.get("pcie_width")
    if _below(width, was):
        found.append(f"{gpu}: PCIe link x{width} of x{after.get('pcie_max_width')}, down from x{was}")
    if _below(after.get("pcie_gen_under_load"), after.get("pcie_max_gen")):
        found.append(f"{gpu}: PCIe gen {after['pcie_gen_under_load']} of {after['pcie_max_gen']} under load")
    return found


class XidWatcher:
    """Critical XID events of one GPU through an NVML event set, polled without waiting.

    `events` is None when the driver refuses event sets (not checked, never a failure).
    """

    def __init__(self, nvml, handle) -> None:
        self.nvml = nvml
        self.events: list[int] | None = None
        self.error: str | None = None
        self._set = None
        try:
            self._set = nvml.nvmlEventSetCreate()
            nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError, self._set)
            self.events = []
        except Exception as exc:  # NVMLError_NotSupported and kin
            self.error = f"{type(exc).__name__}: {exc}"
            self.close()

    def poll(self) -> None:
        """Drain what arrived; the zero-timeout wait raises once the set is empty."""
        while self._set is not None and self.events is not None:
            try:
                event = self.nvml.nvmlEventSetWait_v2(self._set, 0)
            except Exception:
                return
            self.events.append(int(event.eventData))

    def close(self) -> None:
        if self._set is not None:
            optional(self.nvml.nvmlEventSetFree, self._set)
            self._set = None


def throttling(gpu: dict, max_share: float, reasons: tuple[str, ...]) -> list[str]:
    """The taint reasons one GPU of a row spent more than `max_share` of its telemetry samples under."""
    shares = (gpu.get("health") or {}).get("throttle_share", {})
    return [
        f"{gpu['uuid']}: {name} in {shares[name] * 100:.0f} % of samples (> {max_share * 100:g} %)"
        for name in reasons
        if shares.get(name, 0) > max_share
    ]


def judge(gpus: list[dict], max_throttle_share: float, taint_reasons: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """A repeat's GPUs (its telemetry's "gpus"): the faults that quarantine their host, and the throttling
    that, like a fault, keeps the repeat out of statistics (`[health]`: `config.Health`)."""
    faults = [f for gpu in gpus for f in (gpu.get("health") or {}).get("faults", [])]
    throttled = [t for gpu in gpus for t in throttling(gpu, max_throttle_share, taint_reasons)]
    return faults, throttled
