"""neon (discontinued 2019): it cannot be installed on any current Python, so this entry runs neon's own
example script (`examples/cifar10_conv.py`) in a legacy interpreter the user points at, with the original
log's command lines, and reads what neon prints instead of the project's JSON lines."""

from __future__ import annotations

import re
from pathlib import Path

from trainbench.frameworks.base import Framework, Interpreter, LaunchSpec, Unavailable, device_environ
from trainbench.measure.protocol import TrainerReport
from trainbench.planning import Case, TrainingJob

NEON_EPOCH = re.compile(
    r"Epoch\s+(\d+)\s+\[Train\s*\|[^|]*\|\s*(\d+)/(\d+)\s+batches,\s*([-\d.naif]+)\s+cost,\s*([\d.]+)s\]"
)
NEON_ERROR = re.compile(r"Misclassification error\s*=\s*([\d.]+)\s*%")


def parse_output(lines: list[str]) -> TrainerReport:
    """neon redraws a progress bar per epoch (with \\r) and prints the test misclassification at the end.

    Only an epoch's completed bar counts; partial redraws are progress, not epochs.
    """
    report = TrainerReport()
    epochs: dict[int, dict] = {}
    for line in lines:
        for m in NEON_EPOCH.finditer(line):
            epoch, done, batches, cost, seconds = m.groups()
            if done == batches:
                epochs[int(epoch) + 1] = {
                    "epoch": int(epoch) + 1,
                    "seconds": float(seconds),
                    "loss": float(cost),
                    "batches": int(batches),
                }
        if error := NEON_ERROR.search(line):
            report.summary = {"framework": "neon", "test_accuracy": 1 - float(error.group(1)) / 100}
    report.epochs = [epochs[k] for k in sorted(epochs)]
    return report


def launch(interpreter: Interpreter, case: Case, job: TrainingJob) -> LaunchSpec:
    """The original log's command lines: `-b gpu -i N`, `-b mgpu -m N`, `-b cpu`, with `-e` and `-z`."""
    script = interpreter.options.get("script", "")
    if not interpreter.python:
        raise Unavailable(
            "no neon interpreter configured: set [frameworks.neon] python to a legacy interpreter "
            "with neon installed (neon cannot be installed on current Python versions)"
        )
    if not script or not Path(script).is_file():
        raise Unavailable(
            f"neon's example script not found at {script!r}: set [frameworks.neon] script to "
            "neon's examples/cifar10_conv.py"
        )
    ds = case.device_set
    backend = (
        ["-b", "cpu"]
        if ds.kind == "cpu"
        else ["-b", "gpu", "-i", "0"]
        if ds.workers == 1
        else ["-b", "mgpu", "-m", str(ds.workers)]
    )
    argv = [
        interpreter.python,
        script,
        *backend,
        "-e",
        str(job.epochs),
        "-z",
        str(job.batch_size),
        "-r",
        str(job.seed),
        "-w",
        str(Path(job.data_dir).parent),
    ]
    return LaunchSpec(argv, device_environ(case), parse_output)


FRAMEWORK = Framework(
    name="neon",
    title="Neon",
    distributions=("nervananeon", "neon"),
    modules=("neon",),
    launch=launch,
    installable=False,
)
