"""The benchmark matrix: framework x device set x repeat, checked against the host.

Also the device-set grammar ("all", "cpu", "cpu:N", "0,1", "GPU-<uuid>,...") and the typed
values planning hands to the training tasks (`CaseSpec`, travelling as XCom or JSON).
Repeats are interleaved (every case once, then every case again) so that drift in the
machine's state spreads over all cases instead of biasing one.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass
from typing import Any

from trainbench.devices import Inventory
from trainbench.errors import ConfigError

DEVICE_SET_PATTERN = r"^(all|cpu(:[1-9][0-9]*)?|([0-9]+|GPU-[0-9a-fA-F-]+)(,([0-9]+|GPU-[0-9a-fA-F-]+))*)$"
DEVICE_SET_HELP = (
    '"all" (every combination of the host\'s GPUs), a GPU set as comma-separated indices '
    'or UUIDs ("0", "0,1", "GPU-8f0c...,GPU-1a2b..."), "cpu", or "cpu:N" for N data-parallel CPU workers'
)
MAX_CASES = 1024  # Airflow's [core] max_map_length: one mapped task per case
DEFAULT_HOST = "gpu"
HOST_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,62}$"


def check_device_set_text(text: Any) -> str:
    """The text without spaces, or a ConfigError naming what is accepted."""
    if not isinstance(text, str) or not re.match(DEVICE_SET_PATTERN, text.replace(" ", "")):
        raise ConfigError(f"malformed device set {text!r}; accepted: {DEVICE_SET_HELP}")
    return text.replace(" ", "")


def workers_of(text: str) -> int:
    """How many devices (GPUs, or CPU workers) a resolved device set's text names."""
    if text.startswith("cpu"):
        return int(text.partition(":")[2] or 1)
    return len(text.split(","))


@dataclass(frozen=True)
class DeviceSet:
    """One device combination a case runs on: N CPU workers, or a list of GPUs by UUID."""

    text: str
    kind: str  # "cpu" or "gpu"
    workers: int
    gpu_uuids: tuple[str, ...] = ()
    gpu_names: tuple[str, ...] = ()
    gpu_indices: tuple[int, ...] = ()


@dataclass(frozen=True)
class Case:
    framework: str
    device_set: DeviceSet
    repeat: int
    host: str = DEFAULT_HOST  # the fleet host (its Celery queue) the case was planned on and must run on
    warmup: bool = False  # run first, stored, never counted in statistics or verdicts

    @property
    def label(self) -> str:
        return f"{self.framework} | {self.device_set.text} | {'warm-up ' if self.warmup else 'r'}{self.repeat}"

    @property
    def key(self) -> str:
        """A file-name-safe identity, stable across retries of the same case."""
        device_set = self.device_set.text.replace(",", "-").replace(":", "")
        return f"{self.host}__{self.framework}__{device_set}__{'w' if self.warmup else 'r'}{self.repeat}"

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "label": self.label, "key": self.key}

    @classmethod
    def from_dict(cls, d: dict) -> Case:
        ds: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d["device_set"].items()}
        return cls(d["framework"], DeviceSet(**ds), d["repeat"], d.get("host", DEFAULT_HOST), d.get("warmup", False))


@dataclass(frozen=True)
class TrainingJob:
    """What every trainer is asked to do, whatever the framework."""

    data_dir: str
    epochs: int
    batch_size: int
    seed: int
    train_images: int | None = None

    def trainer_args(self, device: str) -> list[str]:
        args = [
            "--data-dir",
            self.data_dir,
            "--epochs",
            str(self.epochs),
            "--batch-size",
            str(self.batch_size),
            "--seed",
            str(self.seed),
            "--device",
            device,
        ]
        if self.train_images:
            args += ["--train-images", str(self.train_images), "--test-images", str(self.test_images)]
        return args

    @property
    def test_images(self) -> int | None:
        """A run of the first N training images tests on the first N test images (all 10,000 at most)."""
        return min(self.train_images, 10_000) if self.train_images else None


@dataclass(frozen=True)
class CaseSpec:
    """Everything one training task needs, nothing it must look up: planned once, sent as XCom."""

    case: Case
    job: TrainingJob
    data_kind: str
    timeout_s: float

    @property
    def workload(self) -> dict:
        """What was asked of the trainer: part of the fingerprint, so different workloads never compare."""
        return {
            "data_kind": self.data_kind,
            "epochs": self.job.epochs,
            "batch_size": self.job.batch_size,
            "train_images": self.job.train_images,
        }

    def to_dict(self) -> dict:
        return {
            "case": self.case.to_dict(),
            "job": dataclasses.asdict(self.job),
            "data_kind": self.data_kind,
            "timeout_s": self.timeout_s,
        }

    @classmethod
    def from_dict(cls, d: dict) -> CaseSpec:
        return cls(
            case=Case.from_dict(d["case"]),
            job=TrainingJob(**d["job"]),
            data_kind=d["data_kind"],
            timeout_s=d["timeout_s"],
        )


def resolve_device_set(text: str, inventory: Inventory) -> DeviceSet:
    """Turn "cpu", "cpu:N", "0,1" or "GPU-uuid,..." into a DeviceSet of this host."""
    text = check_device_set_text(text)
    if text == "all":
        raise ConfigError('"all" names several device sets; expand() resolves it')
    if text.startswith("cpu"):
        workers = workers_of(text)
        if workers > inventory.cpu_count:
            raise ConfigError(
                f"device set {text!r} asks for {workers} CPU workers; this host has {inventory.cpu_count} cores: "
                f"use cpu:1 to cpu:{inventory.cpu_count}"
            )
        return DeviceSet(text=text, kind="cpu", workers=workers)
    keys = text.split(",")
    try:
        gpus = [inventory.gpu(k) for k in keys]
    except LookupError as exc:
        raise ConfigError(f"device set {text!r}: {exc}") from None
    if len({g.uuid for g in gpus}) != len(gpus):
        raise ConfigError(f"device set {text!r} names the same GPU twice")
    return DeviceSet(
        text=text,
        kind="gpu",
        workers=len(gpus),
        gpu_uuids=tuple(g.uuid for g in gpus),
        gpu_names=tuple(g.name for g in gpus),
        gpu_indices=tuple(g.index for g in gpus),
    )


def expand(texts: tuple[str, ...], inventory: Inventory) -> list[DeviceSet]:
    """Resolve every device set, expanding "all" to every combination of the host's GPUs."""
    out: list[DeviceSet] = []
    for text in texts:
        if text == "all":
            indices = [str(g.index) for g in inventory.gpus]
            combos = [",".join(c) for n in range(len(indices), 0, -1) for c in itertools.combinations(indices, n)]
            out.extend(resolve_device_set(c, inventory) for c in combos or ["cpu"])
        else:
            out.append(resolve_device_set(text, inventory))
    unique = {(d.kind, d.workers, d.gpu_uuids): d for d in reversed(out)}
    return [d for d in out if unique[(d.kind, d.workers, d.gpu_uuids)] is d]


def plan(
    frameworks: tuple[str, ...],
    device_sets: tuple[str, ...],
    repeats: int,
    inventory: Inventory,
    host: str = DEFAULT_HOST,
    warmup: int = 0,
) -> list[Case]:
    """The cases of one host, resolved against that host's inventory: warm-ups first, then the measured
    repeats interleaved."""
    resolved = expand(device_sets, inventory)
    cases = [Case(f, d, w, host, warmup=True) for w in range(1, warmup + 1) for f in frameworks for d in resolved]
    cases += [Case(f, d, r, host) for r in range(1, repeats + 1) for f in frameworks for d in resolved]
    if len(cases) > MAX_CASES:
        raise ConfigError(
            f"{len(cases)} cases ({len(frameworks)} frameworks x {len(resolved)} device sets "
            f"x {repeats} repeats) exceed the {MAX_CASES} one run can map; "
            'name fewer device sets than "all", or fewer frameworks or repeats'
        )
    return cases
