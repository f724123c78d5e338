"""MXNet (retired, 1.9.1): Gluon over a list of contexts, one process for every device of the set.

Two entries: `mxnet` (imperative Gluon) and `mxnet-hybrid` (the same trainer with `--variant hybrid`:
hybridize(static_alloc=True, static_shape=True), as the original port ran)."""

from __future__ import annotations

from trainbench.frameworks.base import Framework, Interpreter, LaunchSpec, single_process, variant
from trainbench.planning import Case, TrainingJob


def launch(interpreter: Interpreter, case: Case, job: TrainingJob) -> LaunchSpec:
    return single_process(FRAMEWORK, interpreter, case, job, {})


FRAMEWORK = Framework(
    name="mxnet",
    title="MXNet",
    distributions=("mxnet", "mxnet-cu117", "mxnet-cu116", "mxnet-cu112", "mxnet-cu110"),
    modules=("mxnet",),
    trainer="mxnet_train.py",
    launch=launch,
)

HYBRID = variant(FRAMEWORK, "hybrid", "MXNet hybrid")
