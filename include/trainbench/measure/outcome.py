"""Turn how a trainer ended into a result status and an error excerpt.

A benchmark's failures are results too (the original log recorded neon's 3-GPU crash),
so every ending maps to a status; none of them raises.
"""

from __future__ import annotations

import re
import signal

from trainbench.measure.protocol import TrainerReport, parse_line
from trainbench.measure.runner import ProcessResult

STATUSES = ("ok", "crashed", "timeout", "oom", "unsupported", "unavailable", "busy")
OOM_TEXT = re.compile(r"out of memory|CUDA_ERROR_OUT_OF_MEMORY|RESOURCE_EXHAUSTED|cudaErrorMemoryAllocation", re.I)
UNSUPPORTED_TEXT = re.compile(
    r"no kernel image is available|CUDA_ERROR_NO_BINARY_FOR_GPU|not compiled with CUDA|"
    r"Torch not compiled with CUDA|CUDA driver version is insufficient|"
    r"must split evenly over \d+ devices",
    re.I,
)
# torchrun reports a worker the kernel OOM killer took as "exitcode  : -9" and exits 1 itself.
WORKER_SIGKILL = re.compile(r"exitcode\s*:\s*-9\b|Signal 9 \(SIGKILL\)")
EXCERPT_LINES = 12


def error_excerpt(result: ProcessResult) -> str:
    """The last traceback (or the last lines) the trainer printed."""
    lines = [l for l in result.stderr_tail + [l for l in result.stdout_lines if parse_line(l) is None] if l.strip()]
    starts = [i for i, l in enumerate(lines) if l.startswith("Traceback")]
    tail = lines[starts[-1] :] if starts else lines
    return "\n".join(tail[-EXCERPT_LINES:])


def missing_module(modules: tuple[str, ...]) -> re.Pattern:
    """An import error of the framework's own modules (or numpy): the framework is not installed there."""
    return re.compile(rf"No module named '?({'|'.join(map(re.escape, (*modules, 'numpy')))})\b")


def classify(result: ProcessResult, report: TrainerReport, modules: tuple[str, ...]) -> tuple[str, str | None]:
    """The status and error of a finished trainer; `modules` are the framework's (see its registry entry)."""
    text = "\n".join(result.stderr_tail + result.stdout_lines)
    excerpt = error_excerpt(result)
    if result.timed_out:
        return "timeout", f"{result.killed_by}; last output:\n{excerpt}"
    if result.killed_by:
        return "crashed", f"{result.killed_by}; last output:\n{excerpt}"
    if result.returncode == 0 and report.summary is not None:
        return "ok", None
    if missing_module(modules).search(text):
        return "unavailable", excerpt
    if UNSUPPORTED_TEXT.search(text):
        return "unsupported", excerpt
    if OOM_TEXT.search(text):
        return "oom", excerpt
    if result.signal == signal.SIGKILL or WORKER_SIGKILL.search(text):
        return "oom", f"killed by SIGKILL (the kernel OOM killer is the usual sender)\n{excerpt}".strip()
    if result.returncode == 0:
        return "crashed", f"exited 0 without a summary line\n{excerpt}".strip()
    how = f"signal {signal.Signals(result.signal).name}" if result.signal else f"exit status {result.returncode}"
    return "crashed", f"{how}\n{excerpt}".strip()
