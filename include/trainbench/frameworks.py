"""How each framework's trainer is launched for a case, and how its output is read.

Every project trainer takes the same flags (`--data-dir --epochs --batch-size
--train-images --test-images --seed --device`) and prints the same JSON lines; only the
launch differs: PyTorch spreads over devices with torchrun (one process per device), MXNet
and JAX drive all devices of the set from one process (`--devices N`).  neon is the
exception: it cannot be installed anywhere we build, so its adapter runs neon's own example
script in a legacy interpreter with the original log's flags and reads what neon prints.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from trainbench.config import FrameworkEnv
from trainbench.planning import Case
from trainbench.trainer_output import TrainerReport, parse

TRAINERS_DIR = Path(__file__).resolve().parent / "trainers"


class Unavailable(Exception):
    """The framework cannot run here (no interpreter or script configured); the case is recorded as such."""


@dataclass(frozen=True)
class TrainingJob:
    """What every trainer is asked to do, whatever the framework."""

    data_dir: str
    epochs: int
    batch_size: int
    seed: int
    train_images: int | None = None

    def trainer_args(self, device: str) -> list[str]:
        args = ["--data-dir", self.data_dir, "--epochs", str(self.epochs),
                "--batch-size", str(self.batch_size), "--seed", str(self.seed), "--device", device]
        if self.train_images:
            args += ["--train-images", str(self.train_images), "--test-images", str(min(self.train_images, 10_000))]
        return args


@dataclass(frozen=True)
class LaunchSpec:
    argv: list[str]
    env: dict[str, str]
    parse: Callable[[list[str]], TrainerReport] = parse


def device_env(case: Case) -> dict[str, str]:
    """Hide every GPU but the set's, named by UUID in PCI bus order (NVML and CUDA agree then)."""
    return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(case.device_set.gpu_uuids)}


def _device(case: Case) -> str:
    return "cuda" if case.device_set.kind == "gpu" else "cpu"


def pytorch(fw: FrameworkEnv, case: Case, job: TrainingJob) -> LaunchSpec:
    ds = case.device_set
    script = str(TRAINERS_DIR / "pytorch_train.py")
    if ds.workers == 1:
        return LaunchSpec([fw.python, script, *job.trainer_args(_device(case))], device_env(case))
    env = device_env(case)
    if ds.kind == "cpu":  # N worker processes share the host's cores
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // ds.workers))
    return LaunchSpec([fw.python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ds.workers}",
                       script, *job.trainer_args(_device(case))], env)


def mxnet(fw: FrameworkEnv, case: Case, job: TrainingJob) -> LaunchSpec:
    argv = [fw.python, str(TRAINERS_DIR / "mxnet_train.py"), *job.trainer_args(_device(case)),
            "--devices", str(case.device_set.workers)]
    return LaunchSpec(argv, device_env(case))


def jax(fw: FrameworkEnv, case: Case, job: TrainingJob) -> LaunchSpec:
    env = {**device_env(case), "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    if case.device_set.kind == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={case.device_set.workers}"
    argv = [fw.python, str(TRAINERS_DIR / "jax_train.py"), *job.trainer_args(_device(case)),
            "--devices", str(case.device_set.workers)]
    return LaunchSpec(argv, env)


NEON_EPOCH = re.compile(r"Epoch\s+(\d+)\s+\[Train\s*\|[^|]*\|\s*(\d+)/(\d+)\s+batches,\s*([-\d.naif]+)\s+cost,\s*([\d.]+)s\]")
NEON_ERROR = re.compile(r"Misclassification error\s*=\s*([\d.]+)\s*%")


def parse_neon(lines: list[str]) -> TrainerReport:
    """neon redraws a progress bar per epoch (with \\r) and prints the test misclassification at the end.

    Only an epoch's completed bar counts; partial redraws are progress, not epochs.
    """
    report = TrainerReport()
    epochs: dict[int, dict] = {}
    for line in lines:
        for m in NEON_EPOCH.finditer(line):
            epoch, done, batches, cost, seconds = m.groups()
            if done == batches:
                epochs[int(epoch) + 1] = {"epoch": int(epoch) + 1, "seconds": float(seconds), "loss": float(cost),
                                          "batches": int(batches)}
        if m := NEON_ERROR.search(line):
            report.summary = {"framework": "neon", "test_accuracy": 1 - float(m.group(1)) / 100}
    report.epochs = [epochs[k] for k in sorted(epochs)]
    return report


def neon(fw: FrameworkEnv, case: Case, job: TrainingJob) -> LaunchSpec:
    """The original log's command lines: `-b gpu -i N`, `-b mgpu -m N`, `-b cpu`, with `-e` and `-z`."""
    script = fw.options.get("script", "")
    if not fw.python:
        raise Unavailable("no neon interpreter configured: set [frameworks.neon] python to a legacy interpreter "
                          "with neon installed (neon cannot be installed on current Python versions)")
    if not script or not Path(script).is_file():
        raise Unavailable(f"neon's example script not found at {script!r}: set [frameworks.neon] script to "
                          "neon's examples/cifar10_conv.py")
    ds = case.device_set
    backend = ["-b", "cpu"] if ds.kind == "cpu" else ["-b", "gpu", "-i", "0"] if ds.workers == 1 else \
        ["-b", "mgpu", "-m", str(ds.workers)]
    argv = [fw.python, script, *backend, "-e", str(job.epochs), "-z", str(job.batch_size), "-r", str(job.seed),
            "-w", str(Path(job.data_dir).parent)]
    return LaunchSpec(argv, device_env(case), parse_neon)


ADAPTERS = {"pytorch": pytorch, "mxnet": mxnet, "jax": jax, "neon": neon}


def launch_spec(fw: FrameworkEnv, case: Case, job: TrainingJob) -> LaunchSpec:
    """The framework's launch, with the configuration's extra environment (`[frameworks.X] env`) on top."""
    spec = ADAPTERS[case.framework](fw, case, job)
    extra = fw.options.get("env", {})
    return LaunchSpec(spec.argv, {**spec.env, **{k: str(v) for k, v in extra.items()}}, spec.parse) if extra else spec
