"""Opt-in GPU clock locking (`[measurement] lock_clocks`), so boost and idle clocks stop moving the numbers.

Each GPU of the set is locked to its default applications (base) clock, a frequency it can hold
under load without power or thermal throttling, through NVML (`nvmlDeviceSetGpuLockedClocks`,
which needs root); `restore` resets the lock.  What was done, or why it was not, is recorded with
the row: a refusal never stops a measurement.
"""

from __future__ import annotations

from trainbench.devices import optional


def lock(nvml, uuids) -> dict:
    """{"locked_mhz": {uuid: MHz}, "refused": {uuid: reason}}: the locks this call set, for `restore`."""
    locked, refused = {}, {}
    for uuid in uuids:
        h = nvml.nvmlDeviceGetHandleByUUID(uuid)
        mhz = optional(nvml.nvmlDeviceGetDefaultApplicationsClock, h, nvml.NVML_CLOCK_GRAPHICS)
        if mhz is None:
            refused[uuid] = "no default applications clock reported"
            continue
        try:
            nvml.nvmlDeviceSetGpuLockedClocks(h, mhz, mhz)
            locked[uuid] = mhz
        except Exception as exc:  # pynvml.NVMLError_NoPermission and friends
            refused[uuid] = f"{type(exc).__name__}: {exc}"
    return {"locked_mhz": locked, "refused": refused}


def restore(nvml, done: dict) -> dict:
    """Undo `lock`; returns the record with what was restored (and what could not be)."""
    restored, failed = [], {}
    for uuid in done.get("locked_mhz", {}):
        try:
            nvml.nvmlDeviceResetGpuLockedClocks(nvml.nvmlDeviceGetHandleByUUID(uuid))
            restored.append(uuid)
        except Exception as exc:
            failed[uuid] = f"{type(exc).__name__}: {exc}"
    return {**done, "restored": restored, "restore_failed": failed}
