"""MXNet (retired, 1.9.1): Gluon over a list of contexts, one process for every device of the set.

Two entries: `mxnet` (imperative Gluon) and `mxnet-hybrid` (the same trainer with `--variant hybrid`:
hybridize(static_alloc=True, static_shape=True), as the original port ran)."""

from __future__ import annotations

import os
from pathlib import Path

from trainbench.frameworks.base import Framework, Interpreter, LaunchSpec, single_process, variant
from trainbench.planning import Case, TrainingJob


def cuda11_libraries(interpreter: Interpreter) -> dict[str, str]:
    """`LD_LIBRARY_PATH` with the lib folders of the `nvidia-*-cu11` wheels in the interpreter's venv first.

    mxnet-cu117 links the CUDA 11 runtime, cuBLAS, cuDNN and NCCL from the system; on a host (or image)
    with CUDA 12/13 only, the wheels of `envs/mxnet-cu117.txt` hold them, so no host has to configure the path.
    """
    python = Path(interpreter.python)
    if python.parent.name != "bin":
        return {}
    libs = sorted(str(p) for p in python.parent.parent.glob("lib/python3*/site-packages/nvidia/*/lib") if p.is_dir())
    if not libs:
        return {}
    return {"LD_LIBRARY_PATH": os.pathsep.join([*libs, *filter(None, [os.environ.get("LD_LIBRARY_PATH")])])}


def launch(interpreter: Interpreter, case: Case, job: TrainingJob) -> LaunchSpec:
    return single_process(FRAMEWORK, interpreter, case, job, cuda11_libraries(interpreter))


FRAMEWORK = Framework(
    name="mxnet",
    title="MXNet",
    distributions=("mxnet", "mxnet-cu117", "mxnet-cu116", "mxnet-cu112", "mxnet-cu110"),
    modules=("mxnet",),
    trainer="mxnet_train.py",
    launch=launch,
)

HYBRID = variant(FRAMEWORK, "hybrid", "MXNet hybrid")
