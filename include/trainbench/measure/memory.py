"""The memory figure of a result and the names of the methods that produce per-device rows.

The original log's figure is "peak used minus idle used" per GPU; on the CPU the figure is
the peak resident memory of the trainer's whole process tree.  Every device row names its
method, so figures measured differently are never compared as if they were the same.
"""

from __future__ import annotations

from trainbench.planning import DeviceSet

NVML_SAMPLED = "nvml_sampled"  # NVML device memory used, sampled; peak minus the idle level read before launch
NVML_ACCOUNTING = "nvml_accounting"  # NVML accounting mode: per-process high-water marks, summed per device
HOST_RSS = "host_rss"  # resident memory of the process tree, sampled
IMPORTED_LOG = "log_peak_minus_idle"  # a hand-made log's "(peak - idle)MiB"
PEAK_MINUS_IDLE = (NVML_SAMPLED, IMPORTED_LOG)
DESCRIPTIONS = {
    NVML_SAMPLED: "NVML device memory used, peak minus idle, sampled",
    NVML_ACCOUNTING: "NVML accounting mode, per-process maximum, summed per device",
    HOST_RSS: "host RSS of the process tree, sampled",
    IMPORTED_LOG: "log: peak used minus idle used, per device",
}


def figures(device_set: DeviceSet, monitors: dict) -> dict:
    """The result's peak memory: per GPU peak minus idle (the log's figure), or the tree's host RSS on the CPU.

    Accounting-mode figures, where NVML kept them, are extra device rows with their own method.
    """
    if device_set.kind == "gpu" and monitors.get("gpus"):
        gpus = monitors["gpus"]
        names = dict(zip(device_set.gpu_uuids, device_set.gpu_names))
        rows = [
            {
                "device": g["uuid"],
                "name": names.get(g["uuid"]),
                "idle_mib": g["idle_mib"],
                "peak_mib": g["peak_mib"],
                "used_mib": g["used_mib"],
                "method": NVML_SAMPLED,
            }
            for g in gpus
        ]
        rows += [
            {
                "device": g["uuid"],
                "name": names.get(g["uuid"]),
                "idle_mib": None,
                "peak_mib": None,
                "used_mib": g["accounting_max_mib"],
                "method": NVML_ACCOUNTING,
            }
            for g in gpus
            if g.get("accounting_max_mib") is not None
        ]
        every = f" every {monitors['gpu_sample_interval_s'] * 1000:g} ms"
        return {
            "peak_mem_mib": sum(g["used_mib"] for g in gpus),
            "devices": rows,
            "peak_mem_method": DESCRIPTIONS[NVML_SAMPLED] + every,
        }
    if "host_peak_rss_mib" in monitors:
        rss = monitors["host_peak_rss_mib"]
        return {
            "peak_mem_mib": rss,
            "peak_mem_method": DESCRIPTIONS[HOST_RSS],
            "devices": [
                {
                    "device": "host",
                    "name": "CPU",
                    "idle_mib": None,
                    "peak_mib": rss,
                    "used_mib": rss,
                    "method": HOST_RSS,
                }
            ],
        }
    return {"peak_mem_mib": None, "peak_mem_method": None, "devices": []}
