"""PyTorch: one process per device, spread by torchrun (DDP; gloo on the CPU, NCCL on GPUs).

Two entries: `pytorch` (eager) and `pytorch-graph` (the same trainer with `--variant graph`: torch.compile
on the CPU, the whole train step as a CUDA graph on GPUs; see `trainers/pytorch_train.py`)."""

from __future__ import annotations

import os

from trainbench.frameworks.base import Framework, Interpreter, LaunchSpec, device_environ, device_flag, variant
from trainbench.planning import Case, TrainingJob


def launch(interpreter: Interpreter, case: Case, job: TrainingJob) -> LaunchSpec:
    ds = case.device_set
    script = str(FRAMEWORK.trainer_path)
    environ = device_environ(case)
    if ds.workers == 1:
        return LaunchSpec([interpreter.python, script, *job.trainer_args(device_flag(case))], environ)
    if ds.kind == "cpu":  # N worker processes share the host's cores
        environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // ds.workers))
    return LaunchSpec(
        [
            interpreter.python,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={ds.workers}",
            script,
            *job.trainer_args(device_flag(case)),
        ],
        environ,
    )


FRAMEWORK = Framework(
    name="pytorch",
    title="PyTorch",
    distributions=("torch",),
    modules=("torch",),
    trainer="pytorch_train.py",
    launch=launch,
)

GRAPH = variant(FRAMEWORK, "graph", "PyTorch graph")
