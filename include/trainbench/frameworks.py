"""How each framework's trainer is launched for a case: command line and environment.

Every trainer takes the same flags (`--data-dir --epochs --batch-size --train-images
--test-images --seed --device`) and prints the same JSON lines; only the launch differs
(PyTorch spreads over devices with torchrun, the others inside one process).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from trainbench.config import FrameworkEnv
from trainbench.planning import Case

TRAINERS_DIR = Path(__file__).resolve().parent / "trainers"


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


def device_env(case: Case) -> dict[str, str]:
    """Hide every GPU but the set's, named by UUID in PCI bus order (NVML and CUDA agree then)."""
    ds = case.device_set
    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(ds.gpu_uuids)}
    if ds.kind == "cpu":
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // ds.workers))
    return env


def pytorch_command(fw: FrameworkEnv, case: Case, job: TrainingJob) -> list[str]:
    ds = case.device_set
    script = str(TRAINERS_DIR / "pytorch_train.py")
    device = "cuda" if ds.kind == "gpu" else "cpu"
    if ds.workers == 1:
        return [fw.python, script, *job.trainer_args(device)]
    return [fw.python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ds.workers}",
            script, *job.trainer_args(device)]


COMMANDS = {"pytorch": pytorch_command}


def command(fw: FrameworkEnv, case: Case, job: TrainingJob) -> list[str]:
    return COMMANDS[case.framework](fw, case, job)
