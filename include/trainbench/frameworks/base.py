"""What a framework entry is, and what every launch shares.

A `Framework` is the one place a framework is described: its title in reports, the
distributions the fingerprint records, the modules whose absence means "not installed",
its trainer script, and how a case is launched and its output read.  Its interpreter and
the pinned file that creates it follow from its name unless the configuration says
otherwise (`[frameworks.<name>]`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from trainbench.measure.protocol import TrainerReport, parse, parse_line
from trainbench.planning import Case, TrainingJob

TRAINERS_DIR = Path(__file__).resolve().parents[1] / "trainers"


class Unavailable(Exception):
    """The framework cannot run here (no interpreter or script configured); the case is recorded as such."""


class Unsupported(Exception):
    """The framework cannot run this case at all (a device set it has no mode for); the row says why."""


@dataclass(frozen=True)
class Interpreter:
    """Where a framework's trainer runs, and how `make envs` creates it.

    `options` holds the rest of the framework's configuration section: `env` (extra
    environment variables for the trainer), `script` (neon), `base_python`.
    """

    name: str
    python: str
    requirements: str | None = None
    options: dict = field(default_factory=dict)

    @property
    def environ(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.options.get("env", {}).items()}


class OutputReader(Protocol):
    """Reads what a trainer prints while it runs (both streams, each line with the wall clock it arrived at)."""

    def feed(self, stream: str, line: str, t: float) -> dict | None:
        """An epoch event the line completes (for the task log), or None."""
        ...

    def report(self, stdout_lines: list[str]) -> TrainerReport: ...


class JsonLines:
    """The project's trainers: one JSON event per stdout line (`measure.protocol`), read whole at the end."""

    def feed(self, stream: str, line: str, t: float) -> dict | None:
        event = parse_line(line) if stream == "stdout" else None
        return event if event is not None and event["event"] == "epoch" else None

    def report(self, stdout_lines: list[str]) -> TrainerReport:
        return parse(stdout_lines)


@dataclass(frozen=True)
class LaunchSpec:
    """The trainer's command line, the variables added to its environment, a fresh reader of what it prints per
    launch, and what must exist before it starts (`prepare`, given the task's log; never timed)."""

    argv: list[str]
    environ: dict[str, str]
    reader: Callable[[], OutputReader] = JsonLines
    prepare: Callable[[Callable[[str], None]], None] | None = None


Launcher = Callable[[Interpreter, Case, TrainingJob], LaunchSpec]


@dataclass(frozen=True)
class Framework:
    name: str
    title: str
    distributions: tuple[str, ...]
    modules: tuple[str, ...]
    launch: Launcher
    trainer: str | None = None
    create: Callable[[Interpreter, Callable[[str], None]], None] | None = None  # builds its interpreter (neon)
    interpreter_of: str | None = None  # a variant: the framework whose interpreter (and section) it shares

    @property
    def trainer_path(self) -> Path | None:
        return TRAINERS_DIR / self.trainer if self.trainer else None

    @property
    def revision(self) -> str | None:
        """A hash of the trainer and the data module it imports: a change in how the work is done starts a new
        series (history measured by another trainer never judges this one); None for an external script."""
        if self.trainer_path is None:
            return None
        digest = hashlib.sha256()
        for path in (self.trainer_path, TRAINERS_DIR / "cifar10.py"):
            digest.update(path.read_bytes())
        return digest.hexdigest()[:12]

    @property
    def base(self) -> str:
        """The framework whose interpreter runs this entry: its own name, or a variant's base."""
        return self.interpreter_of or self.name

    def default_interpreter(self) -> str:
        """`make envs` creates it here."""
        return f".envs/{self.base}/bin/python"

    def default_requirements(self) -> str:
        return f"envs/{self.base}.txt"


def variant(base: Framework, flag: str, title: str) -> Framework:
    """`base` executed another way, as a registry entry of its own (its own case key, series, history and
    report rows): the same distributions, modules, trainer, network and interpreter (`[frameworks.<base>]`;
    it has no section of its own), launched as `base` is with `--variant <flag>` added to the trainer's flags."""

    def launch(interpreter: Interpreter, case: Case, job: TrainingJob) -> LaunchSpec:
        spec = base.launch(interpreter, case, job)
        return replace(spec, argv=[*spec.argv, "--variant", flag])

    return replace(base, name=f"{base.name}-{flag}", title=title, launch=launch, interpreter_of=base.name)


def device_environ(case: Case) -> dict[str, str]:
    """Hide every GPU but the set's, named by UUID in PCI bus order (NVML and CUDA agree then)."""
    return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(case.device_set.gpu_uuids)}


def device_flag(case: Case) -> str:
    return "cuda" if case.device_set.kind == "gpu" else "cpu"


def single_process(
    fw: Framework, interpreter: Interpreter, case: Case, job: TrainingJob, environ: dict[str, str]
) -> LaunchSpec:
    """A trainer that drives every device of the set from one process (`--devices N`)."""
    argv = [
        interpreter.python,
        str(fw.trainer_path),
        *job.trainer_args(device_flag(case)),
        "--devices",
        str(case.device_set.workers),
    ]
    return LaunchSpec(argv, {**device_environ(case), **environ})
