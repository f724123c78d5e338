"""JAX: a jitted, pmapped step in one process; on the CPU, XLA fakes one host device per worker."""

from __future__ import annotations

from trainbench.frameworks.base import Framework, Interpreter, LaunchSpec, single_process
from trainbench.planning import Case, TrainingJob


def launch(interpreter: Interpreter, case: Case, job: TrainingJob) -> LaunchSpec:
    environ = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}  # else JAX reserves 75 % of the GPU: no memory figure
    if case.device_set.kind == "cpu":
        environ["JAX_PLATFORMS"] = "cpu"
        environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={case.device_set.workers}"
    return single_process(FRAMEWORK, interpreter, case, job, environ)


FRAMEWORK = Framework(
    name="jax",
    title="JAX",
    distributions=("jax", "jaxlib"),
    modules=("jax", "jaxlib", "flax"),
    trainer="jax_train.py",
    launch=launch,
)
