"""The environment fingerprint of a result, and the key that says which results compare.

The key is computed before the trainer starts (from the device inventory, the framework's
installed package version, and the workload), so a retry of a crashed case lands on the
same key and replaces its row, while a driver or framework upgrade starts a new series.
"""

from __future__ import annotations

import hashlib
import json
import platform
import socket
import subprocess

import psutil

from trainbench.devices import Inventory
from trainbench.planning import Case

DISTRIBUTIONS = {"pytorch": ("torch",), "mxnet": ("mxnet", "mxnet-cu117", "mxnet-cu116", "mxnet-cu112", "mxnet-cu110"),
                 "jax": ("jax", "jaxlib"), "neon": ("nervananeon", "neon")}
PROBE = ("import importlib.metadata as m, json, platform, sys\n"
         "def v(d):\n"
         "    try: return m.version(d)\n"
         "    except m.PackageNotFoundError: return None\n"
         "print(json.dumps({'python': platform.python_version(), 'packages': {d: v(d) for d in sys.argv[1:]}}))")

# What decides whether two results may be compared; everything else is context.
KEY_FIELDS = ("framework", "framework_packages", "framework_python", "device_kind", "workers", "gpu_names",
              "gpu_uuids", "driver_version", "cuda_driver_version", "cpu_model", "data_kind", "epochs",
              "batch_size", "train_images")


def probe_framework(python: str, framework: str, timeout_s: float = 60) -> dict:
    """Installed versions of the framework's packages in its interpreter, without importing it."""
    dists = DISTRIBUTIONS.get(framework, (framework,))
    try:
        out = subprocess.run([python, "-c", PROBE, *dists], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"python": None, "packages": {}, "error": f"{type(exc).__name__}: {exc}"}
    if out.returncode != 0:
        return {"python": None, "packages": {}, "error": out.stderr.strip()[-500:]}
    found = json.loads(out.stdout)
    found["packages"] = {k: v for k, v in found["packages"].items() if v}
    return found


def fingerprint(inventory: Inventory, case: Case, probe: dict, workload: dict) -> dict:
    ds = case.device_set
    gpus = [g for g in inventory.gpus if g.uuid in ds.gpu_uuids]
    return {
        "framework": case.framework,
        "framework_packages": probe.get("packages", {}),
        "framework_python": probe.get("python"),
        "device_kind": ds.kind,
        "workers": ds.workers,
        "gpu_names": [g.name for g in gpus],
        "gpu_uuids": [g.uuid for g in gpus],
        "gpu_pci_bus_ids": [g.pci_bus_id for g in gpus],
        "gpu_memory_total_mib": [g.memory_total_mib for g in gpus],
        "gpu_power_limit_w": [g.power_limit_w for g in gpus],
        "gpu_persistence_mode": [g.persistence_mode for g in gpus],
        "gpu_mig_mode": [g.mig_mode for g in gpus],
        "gpu_accounting_mode": [g.accounting_mode for g in gpus],
        "driver_version": inventory.driver_version if gpus else None,
        "cuda_driver_version": inventory.cuda_driver_version if gpus else None,
        "cpu_model": inventory.cpu_model,
        "cpu_count": inventory.cpu_count,
        "host_memory_mib": psutil.virtual_memory().total / 2**20,
        "hostname": socket.gethostname(),
        "harness_python": platform.python_version(),
        **workload,
    }


def env_key(fp: dict) -> str:
    blob = json.dumps({k: fp.get(k) for k in KEY_FIELDS}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
