"""The frameworks trainbench knows, one module each; this registry is the only list of them.

Adding a framework is one module here (its `Framework` entry, listed below) plus its
trainer script in `trainbench/trainers/` and its pinned interpreter file in `envs/`.
Every project trainer takes the same flags and prints the same JSON lines; only the launch
differs per framework (see each module).
"""

from __future__ import annotations

from dataclasses import replace

from trainbench.frameworks import jax, mxnet, neon, pytorch
from trainbench.frameworks.base import Framework, Interpreter, LaunchSpec, Unavailable, Unsupported
from trainbench.planning import Case, TrainingJob

# The original log's order first (neon, MXNet), then the frameworks trainbench added, then the execution
# variants (entries with `interpreter_of`: the same trainer, network and interpreter, run another way).
REGISTRY: dict[str, Framework] = {
    f.name: f for f in (neon.FRAMEWORK, mxnet.FRAMEWORK, pytorch.FRAMEWORK, jax.FRAMEWORK, mxnet.HYBRID, pytorch.GRAPH)
}
NAMES = tuple(REGISTRY)
BASES = tuple(name for name, f in REGISTRY.items() if f.interpreter_of is None)  # entries with an interpreter

__all__ = [
    "BASES",
    "NAMES",
    "REGISTRY",
    "Framework",
    "Interpreter",
    "LaunchSpec",
    "Unavailable",
    "Unsupported",
    "execution",
    "launch_spec",
    "title",
]


def execution(name: str) -> str:
    """How an entry runs its framework: a variant's flag (`pytorch-graph`: "graph"), else "default"."""
    fw = REGISTRY.get(name)
    return fw.name.removeprefix(f"{fw.base}-") if fw is not None and fw.interpreter_of else "default"


def title(name: str) -> str:
    return REGISTRY[name].title if name in REGISTRY else name


def launch_spec(interpreter: Interpreter, case: Case, job: TrainingJob) -> LaunchSpec:
    """The framework's launch, with the configuration's extra environment (`[frameworks.X] env`) on top."""
    spec = REGISTRY[case.framework].launch(interpreter, case, job)
    return replace(spec, environ={**spec.environ, **interpreter.environ})
