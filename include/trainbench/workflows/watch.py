"""The environment watch: what a host's measurements depend on, read without training anything, and what changed.

Read as the fingerprint reads it (`trainbench.fingerprint`), and a little more: NVML's driver and CUDA driver
versions and each GPU's model and VBIOS; the CPU model; each configured framework interpreter (its path: a host
pointed at another interpreter has changed), its Python, its framework's packages and the CUDA libraries it has
as wheels (cuDNN, NCCL, the CUDA runtime: the versions a framework's own report names only after a training run);
each trainer's revision.  A reading takes seconds (one version probe per interpreter), so the watch may run every
few hours on a host's queue between measurements.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from trainbench import frameworks
from trainbench.config import Config
from trainbench.devices import discover
from trainbench.frameworks import interpreters
from trainbench.measure import environ

LIBRARIES = (
    "nvidia-cudnn-cu12",
    "nvidia-cudnn-cu11",
    "nvidia-nccl-cu12",
    "nvidia-nccl-cu11",
    "nvidia-cuda-runtime-cu12",
    "nvidia-cuda-runtime-cu11",
    "nvidia-cublas-cu12",
    "jax-cuda12-plugin",
    "jax-cuda12-pjrt",
)


def read(config: Config, host: str, nvml=None, nvml_error: str | None = None) -> dict[str, Any]:
    """This host's environment now; `nvml` replaces the NVML library (tests without GPUs)."""
    inventory = discover(nvml, nvml_error)
    found: dict[str, Any] = {
        "host": host,
        "driver_version": inventory.driver_version,
        "cuda_driver_version": inventory.cuda_driver_version,
        "gpus": {g.uuid: {"name": g.name, "vbios": g.vbios_version} for g in inventory.gpus},
        "cpu_model": inventory.cpu_model,
        "nvml_error": inventory.nvml_error,
        "frameworks": {},
    }
    for name, fw in frameworks.REGISTRY.items():
        interpreter = config.interpreter(name)
        if fw.interpreter_of is not None or not interpreter.python:
            continue
        probe = interpreters.probe(
            interpreter.python, (*fw.distributions, *LIBRARIES), environ.trainer_environ(interpreter.environ)
        )
        found["frameworks"][name] = {
            "interpreter": interpreter.python,
            "python": probe.get("python"),
            "packages": probe.get("packages", {}),
            "trainer_revision": fw.revision,
            **({"error": probe["error"]} if probe.get("error") else {}),
        }
    return found


def digest(environment: dict) -> str:
    return hashlib.sha256(json.dumps(environment, sort_keys=True, default=str).encode()).hexdigest()


def changes(before: dict, after: dict, prefix: str = "") -> dict[str, list]:
    """Every value that differs, by its dotted path ("frameworks.pytorch.packages.torch"): [before, after]."""
    found: dict[str, list] = {}
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        path = f"{prefix}{key}"
        if isinstance(old, dict) and isinstance(new, dict):
            found |= changes(old, new, f"{path}.")
        elif old != new:
            found[path] = [old, new]
    return found
