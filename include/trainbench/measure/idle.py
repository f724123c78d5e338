"""Never measure on a busy GPU: the idle check run just before every launch.

A device is idle when it has no compute processes and its memory used is within a
threshold of its own idle level.  The idle level is learned: the lowest memory used seen
on that GPU (by UUID and driver version, since a new driver may idle higher) with no
compute process on it, kept in a small JSON file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from trainbench.units import MIB


class DeviceBusy(Exception):
    """A device of the set never became idle within the wait; the case must not be measured now."""


def load_levels(path: Path) -> dict[str, float]:
    return json.loads(path.read_text()) if path.is_file() else {}


def save_levels(path: Path, levels: dict[str, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(levels, indent=1, sort_keys=True))
    os.replace(tmp, path)


def busy_reasons(nvml, uuids, levels: dict[str, float], threshold_mib: float, driver: str | None = None) -> list[str]:
    """Why each device is busy (empty when all are idle); learns lower idle levels as it goes."""
    reasons = []
    for uuid in uuids:
        key = f"{uuid} driver {driver}"
        h = nvml.nvmlDeviceGetHandleByUUID(uuid)
        procs = nvml.nvmlDeviceGetComputeRunningProcesses(h)
        used = nvml.nvmlDeviceGetMemoryInfo(h).used / MIB
        if procs:
            listed = ", ".join(f"pid {p.pid} ({(p.usedGpuMemory or 0) / MIB:.0f} MiB)" for p in procs)
            reasons.append(f"{uuid}: foreign compute process(es) {listed}")
            continue
        level = levels.get(key)
        if level is None or used < level:
            levels[key] = level = used
        if used > level + threshold_mib:
            reasons.append(f"{uuid}: {used:.0f} MiB used, above its idle level {level:.0f} MiB + {threshold_mib:g} MiB")
    return reasons


def wait_until_idle(
    nvml,
    uuids,
    levels_path: Path,
    threshold_mib: float,
    wait_s: float,
    poll_s: float = 5.0,
    driver: str | None = None,
    log=print,
) -> list[str]:
    """Poll until every device is idle or `wait_s` has passed; return the last busy reasons (empty: idle)."""
    deadline = time.monotonic() + wait_s
    levels = load_levels(levels_path)
    while True:
        reasons = busy_reasons(nvml, uuids, levels, threshold_mib, driver)
        save_levels(levels_path, levels)
        if not reasons or time.monotonic() >= deadline:
            return reasons
        log("waiting for idle devices: " + "; ".join(reasons))
        time.sleep(poll_s)
