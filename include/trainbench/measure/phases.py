"""Where a run's wall time goes: the phase timeline, cut at the trainer's timestamped events.

    launch ─ startup ─ ready ─ data ─ data on device ─ first epoch ─ epoch 1 ─ steady training ─ last epoch
           ─ evaluation ─ summary ─ teardown ─ exit

`startup` is the interpreter and the framework's import and device initialisation; `data` is
loading the data set and putting it on the device; `first epoch` holds building the model and the
step, compilation and warm-up (torch.compile, JAX's jit, MXNet's hybridize, CUDA graph capture);
`steady training` is epochs 2..n; `teardown` is from the last event to the process being reaped.
Consecutive cuts, so the phases add up to the wall clock from launch to exit, which agrees with the
measured wall time up to the clock difference (`time.time()` against `perf_counter`, well under 1 %).
"""

from __future__ import annotations

from trainbench.measure.protocol import TrainerReport

PHASES = ("startup", "data", "first_epoch", "steady_training", "evaluation", "teardown")
TOLERANCE = 0.02  # the phases' sum may differ from the wall time by this fraction (validated)


def timeline(report: TrainerReport, launched_at: float | None, exited_at: float | None) -> dict[str, float] | None:
    """Seconds per phase, or None when the trainer did not print the marks (neon, a crash before training)."""
    epochs = [e for e in report.epochs if e.get("t") is not None]
    summary_t = (report.summary or {}).get("t")
    found = [launched_at, report.marks.get("ready"), report.marks.get("data")]
    if epochs:
        found += [epochs[0]["t"], epochs[-1]["t"], summary_t, exited_at]
    cuts = [float(c) for c in found if c is not None]
    if len(cuts) != len(PHASES) + 1:
        return None
    return {name: max(0.0, b - a) for name, a, b in zip(PHASES, cuts, cuts[1:])}
