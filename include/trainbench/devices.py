"""What devices this host has: GPUs through NVML (`nvidia-ml-py`), else only the CPU.

NVML indices are not CUDA indices; a GPU is identified by its UUID everywhere past
planning.  `discover()` takes the NVML module as a parameter so a stand-in can replace
the library on a host without GPUs.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    pci_bus_id: str
    name: str
    memory_total_mib: float
    mig_mode: bool | None = None
    persistence_mode: bool | None = None
    accounting_mode: bool | None = None
    power_limit_w: float | None = None
    vbios_version: str | None = None


@dataclass(frozen=True)
class Inventory:
    gpus: tuple[Gpu, ...]
    cpu_model: str
    cpu_count: int
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    nvml_error: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Inventory:
        return cls(**{**d, "gpus": tuple(Gpu(**g) for g in d["gpus"])})

    def gpu(self, key: str) -> Gpu:
        """Look a GPU up by NVML index or UUID; the error lists what exists."""
        for g in self.gpus:
            if key == str(g.index) or key.lower() == g.uuid.lower():
                return g
        have = (
            ", ".join(f"{g.index} ({g.name}, {g.uuid})" for g in self.gpus) or 'none (CPU only: use "cpu" or "cpu:N")'
        )
        raise LookupError(f"device {key!r} does not exist on this host; GPUs here: {have}")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def nvml_text(value) -> str:
    """NVML strings: bytes from older bindings, str from newer ones."""
    return value.decode() if isinstance(value, bytes) else str(value)


def optional(call, *args):
    """NVML answers NOT_SUPPORTED for many queries on some boards; that is not an error."""
    try:
        return call(*args)
    except Exception:  # pynvml.NVMLError and its many subclasses
        return None


def _flag(state) -> bool | None:
    return None if state is None else state == 1


def load_nvml():
    """The NVML bindings, initialised, or None with the reason."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml, None
    except Exception as exc:  # ImportError, or NVMLError_LibraryNotFound/DriverNotLoaded
        return None, f"{type(exc).__name__}: {exc}"


def discover(nvml=None, nvml_error: str | None = None) -> Inventory:
    """Inventory of this host. Pass an initialised NVML module, or None to load the real one."""
    if nvml is None and nvml_error is None:
        nvml, nvml_error = load_nvml()
    cpu: dict[str, Any] = {"cpu_model": cpu_model(), "cpu_count": os.cpu_count() or 1}
    if nvml is None:
        return Inventory(gpus=(), nvml_error=nvml_error, **cpu)
    gpus = []
    for i in range(nvml.nvmlDeviceGetCount()):
        h = nvml.nvmlDeviceGetHandleByIndex(i)
        mig = optional(nvml.nvmlDeviceGetMigMode, h)
        limit = optional(nvml.nvmlDeviceGetEnforcedPowerLimit, h)
        gpus.append(
            Gpu(
                index=i,
                uuid=nvml_text(nvml.nvmlDeviceGetUUID(h)),
                pci_bus_id=nvml_text(nvml.nvmlDeviceGetPciInfo(h).busId),
                name=nvml_text(nvml.nvmlDeviceGetName(h)),
                memory_total_mib=nvml.nvmlDeviceGetMemoryInfo(h).total / 2**20,
                mig_mode=_flag(mig[0] if mig else None),
                persistence_mode=_flag(optional(nvml.nvmlDeviceGetPersistenceMode, h)),
                accounting_mode=_flag(optional(nvml.nvmlDeviceGetAccountingMode, h)),
                power_limit_w=limit / 1000 if limit is not None else None,
                vbios_version=nvml_text(vbios) if (vbios := optional(nvml.nvmlDeviceGetVbiosVersion, h)) else None,
            )
        )
    cuda = optional(nvml.nvmlSystemGetCudaDriverVersion_v2) or optional(nvml.nvmlSystemGetCudaDriverVersion)
    return Inventory(
        gpus=tuple(gpus),
        driver_version=nvml_text(nvml.nvmlSystemGetDriverVersion()),
        cuda_driver_version=f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else None,
        **cpu,
    )
