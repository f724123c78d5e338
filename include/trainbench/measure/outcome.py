"""Turn how a trainer ended into a result status and an error excerpt.

A benchmark's failures are results too (the original log recorded neon's 3-GPU crash),
so every ending maps to a status; none of them raises.  A status says only what there is
evidence for: `oom` needs out-of-memory text from the framework or the kernel's word (the
cgroup's oom_kill counter, or its log); a SIGKILL without either is `killed`, with its sender.
The statuses are listed with their meaning in docs/measurement.md.
"""

from __future__ import annotations

import re
import signal

from trainbench.measure.protocol import TrainerReport, parse_line
from trainbench.measure.runner import ProcessResult

TAINTED = "tainted"  # ended ok on a GPU that was unhealthy or throttled: shown, never counted
STATUSES = ("ok", TAINTED, "crashed", "timeout", "killed", "oom", "unsupported", "unavailable", "busy")
STOPPED_BY_AIRFLOW = "killed by Airflow"  # how a `killed` row's error starts when Airflow stopped its task
OOM_TEXT = re.compile(
    r"out of memory|OutOfMemoryError|CUDA_ERROR_OUT_OF_MEMORY|RESOURCE_EXHAUSTED|cudaErrorMemoryAllocation|"
    r"\bMemoryError\b|can't allocate memory|Cannot allocate memory|std::bad_alloc",
    re.I,
)
UNSUPPORTED_TEXT = re.compile(
    r"no kernel image is available|CUDA_ERROR_NO_BINARY_FOR_GPU|not compiled with CUDA|"
    r"Torch not compiled with CUDA|CUDA driver version is insufficient|"
    r"must split evenly over \d+ devices|variant \S+ does not support|"
    r"No module named '?pycuda\b",  # neon's GPU backend (its kernels need pycuda and a Maxwell or Pascal GPU)
    re.I,
)
# torchrun reports a worker killed by SIGKILL as "exitcode  : -9" and exits 1 itself.
WORKER_SIGKILL = re.compile(r"exitcode\s*:\s*-9\b|Signal 9 \(SIGKILL\)")
EXCERPT_LINES = 12
ERROR_HEAD = ERROR_TAIL = 4096  # bytes of a stored error's start and end


def cap(text: str, head: int = ERROR_HEAD, tail: int = ERROR_TAIL) -> str:
    """Stored error text: whole when short, else its first and last bytes with the size of the cut between."""
    raw = text.encode()
    if len(raw) <= head + tail:
        return text
    first = raw[:head].decode(errors="ignore")
    last = raw[len(raw) - tail :].decode(errors="ignore")
    return f"{first}\n[... {len(raw) - head - tail} bytes omitted ...]\n{last}"


def taint(status: str, error: str | None, reasons: list[str]) -> tuple[str, str | None]:
    """A repeat measured on an unhealthy or throttled GPU: an `ok` one is `tainted` (its numbers describe the
    GPU's trouble, not the software), another keeps its status; the error names the reasons either way."""
    if not reasons:
        return status, error
    why = "GPU health: " + "; ".join(reasons)
    if status == "ok":
        return TAINTED, why
    return status, cap(f"{error}\n{why}" if error else why)


def error_excerpt(result: ProcessResult) -> str:
    """The last traceback (or the last lines) the trainer printed, capped at ERROR_HEAD + ERROR_TAIL bytes."""
    lines = [l for l in result.stderr_tail + [l for l in result.stdout_lines if parse_line(l) is None] if l.strip()]
    starts = [i for i, l in enumerate(lines) if l.startswith("Traceback")]
    tail = lines[starts[-1] :] if starts else lines
    return cap("\n".join(tail[-EXCERPT_LINES:]))


def missing_module(modules: tuple[str, ...]) -> re.Pattern:
    """An import error of the framework's own modules (or numpy): the framework is not installed there."""
    return re.compile(rf"No module named '?({'|'.join(map(re.escape, (*modules, 'numpy')))})\b")


def kernel_oom_evidence(result: ProcessResult) -> str | None:
    """The kernel's word that its OOM killer took (part of) the trainer, or None."""
    if result.oom_kills:
        return f"the kernel OOM killer struck: the cgroup's memory.events oom_kill counter rose by {result.oom_kills}"
    if result.kernel_log_oom:
        return "the kernel OOM killer struck: the kernel log names the trainer's process"
    return None


def classify(result: ProcessResult, report: TrainerReport, modules: tuple[str, ...]) -> tuple[str, str | None]:
    """The status and error of a finished trainer; `modules` are the framework's (see its registry entry)."""
    status, error = _classify(result, report, modules)
    return status, None if error is None else cap(error)


def _classify(result: ProcessResult, report: TrainerReport, modules: tuple[str, ...]) -> tuple[str, str | None]:
    text = "\n".join(result.stderr_tail + result.stdout_lines)
    excerpt = error_excerpt(result)
    if result.timed_out:
        return "timeout", f"{result.killed_by}; last output:\n{excerpt}"
    if result.killed_by:
        return "killed", f"{result.killed_by}; last output:\n{excerpt}"
    if report.errors:
        return "crashed", "malformed trainer output: " + "; ".join(report.errors[:3]) + f"\n{excerpt}".rstrip()
    if result.returncode == 0 and report.summary is not None:
        return "ok", None
    if missing_module(modules).search(text):
        return "unavailable", excerpt
    if UNSUPPORTED_TEXT.search(text):
        return "unsupported", excerpt
    if OOM_TEXT.search(text):
        return "oom", excerpt
    sigkill = result.signal == signal.SIGKILL or WORKER_SIGKILL.search(text)
    if sigkill and (evidence := kernel_oom_evidence(result)):
        return "oom", f"killed by SIGKILL; {evidence}\n{excerpt}".strip()
    if sigkill:
        who = "the trainer" if result.signal == signal.SIGKILL else "a worker"
        return "killed", (
            f"killed by SIGKILL from outside the harness ({who}; external: no timeout, no stop from Airflow, "
            f"and no sign of the kernel OOM killer)\n{excerpt}"
        ).strip()
    if result.returncode == 0:
        return "crashed", f"exited 0 without a summary line\n{excerpt}".strip()
    how = f"signal {signal.Signals(result.signal).name}" if result.signal else f"exit status {result.returncode}"
    return "crashed", f"{how}\n{excerpt}".strip()
