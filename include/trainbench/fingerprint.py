"""The fingerprint of a result (host, devices, driver, framework versions, workload), and its key.

The key is computed before the trainer starts (from the device inventory, the framework's
installed package version, the trainer's revision and the workload), so a retry of a crashed
case lands on the same key and replaces its row, while a driver or framework upgrade, or a change
to the trainer itself, starts a new series.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket

import psutil

from trainbench import frameworks
from trainbench.devices import Inventory
from trainbench.planning import Case

# What decides whether two results may be compared; everything else is context.
HOST_VAR = "TRAINBENCH_HOST"  # set on each fleet worker to the host (queue) name it serves
KEY_FIELDS = (
    "host",
    "framework",
    "trainer_revision",
    "framework_packages",
    "framework_python",
    "device_kind",
    "workers",
    "gpu_names",
    "gpu_uuids",
    "driver_version",
    "cuda_driver_version",
    "cpu_model",
    "data_kind",
    "epochs",
    "batch_size",
    "train_images",
)


def fingerprint(inventory: Inventory, case: Case, probe: dict, workload: dict) -> dict:
    ds = case.device_set
    gpus = [g for g in inventory.gpus if g.uuid in ds.gpu_uuids]
    return {
        "host": case.host,
        "worker_host": worker_host(),
        "framework": case.framework,
        "trainer_revision": frameworks.REGISTRY[case.framework].revision
        if case.framework in frameworks.REGISTRY
        else None,
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
    """Which results compare: a hash of the fields that decide it (`KEY_FIELDS`)."""
    blob = json.dumps({k: fp.get(k) for k in KEY_FIELDS}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def worker_host() -> str | None:
    """The fleet host this process serves, as its worker declares it (None outside a fleet worker)."""
    return os.environ.get(HOST_VAR) or None
