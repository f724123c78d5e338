"""The benchmark matrix: framework x device set x repeat, checked against the host.

Repeats are interleaved (every case once, then every case again) so that drift in the
machine's state spreads over all cases instead of biasing one.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

from trainbench.config import DEVICE_SET_HELP, ConfigError, Settings
from trainbench.devices import Inventory


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

    @property
    def label(self) -> str:
        return f"{self.framework} | {self.device_set.text} | r{self.repeat}"

    @property
    def key(self) -> str:
        """A file-name-safe identity, stable across retries of the same case."""
        return f"{self.framework}__{self.device_set.text.replace(',', '-').replace(':', '')}__r{self.repeat}"

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "label": self.label, "key": self.key}

    @classmethod
    def from_dict(cls, d: dict) -> "Case":
        ds = {k: tuple(v) if isinstance(v, list) else v for k, v in d["device_set"].items()}
        return cls(framework=d["framework"], device_set=DeviceSet(**ds), repeat=d["repeat"])


def resolve_device_set(text: str, inventory: Inventory) -> DeviceSet:
    """Turn "cpu", "cpu:N", "0,1" or "GPU-uuid,..." into a DeviceSet of this host."""
    text = text.replace(" ", "")
    if text == "cpu" or text.startswith("cpu:"):
        workers = int(text.split(":", 1)[1]) if ":" in text else 1
        if workers < 1:
            raise ConfigError(f"malformed device set {text!r}; accepted: {DEVICE_SET_HELP}")
        return DeviceSet(text=text, kind="cpu", workers=workers)
    keys = [k for k in text.split(",") if k]
    if not keys:
        raise ConfigError(f"malformed device set {text!r}; accepted: {DEVICE_SET_HELP}")
    try:
        gpus = [inventory.gpu(k) for k in keys]
    except LookupError as exc:
        raise ConfigError(f"device set {text!r}: {exc}") from None
    if len({g.uuid for g in gpus}) != len(gpus):
        raise ConfigError(f"device set {text!r} names the same GPU twice")
    return DeviceSet(text=",".join(keys), kind="gpu", workers=len(gpus),
                     gpu_uuids=tuple(g.uuid for g in gpus), gpu_names=tuple(g.name for g in gpus),
                     gpu_indices=tuple(g.index for g in gpus))


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


MAX_CASES = 1024  # Airflow's [core] max_map_length: one mapped task per case


def plan(settings: Settings, inventory: Inventory) -> list[Case]:
    device_sets = expand(settings.device_sets, inventory)
    cases = [Case(framework=f, device_set=d, repeat=r)
             for r in range(1, settings.repeats + 1)
             for f in settings.frameworks
             for d in device_sets]
    if len(cases) > MAX_CASES:
        raise ConfigError(f"{len(cases)} cases ({len(settings.frameworks)} frameworks x {len(device_sets)} device sets "
                          f"x {settings.repeats} repeats) exceed the {MAX_CASES} one run can map; "
                          "name fewer device sets than \"all\", or fewer frameworks or repeats")
    return cases
