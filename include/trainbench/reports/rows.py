"""What every report shares: the log's formats (`time`'s clock, the memory line, device titles) and the variants
beside their eager siblings; cases, their order and their figures come from `trainbench.cases`."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trainbench import comparison, frameworks
from trainbench.cases import CaseSummary, Spread
from trainbench.measure.memory import PEAK_MINUS_IDLE
from trainbench.measure.phases import PHASES
from trainbench.planning import workers_of
from trainbench.result import Result

ONE_EPOCH = (  # why a host's report has no steady-state throughput and no scaling
    "no steady-state images/s and no scaling figure: its runs trained one epoch, which pays for warm-up; "
    "steady state starts at epoch 2 (epochs >= 2)"
)


@dataclass(frozen=True)
class Standing:
    """Where the run stands when its reports are written: stopped part-way, or with planned cases that never ran
    (each host's planned case key and label)."""

    stopped: bool = False
    planned: int = 0
    never_ran: tuple[Mapping, ...] = ()

    @property
    def heading(self) -> str | None:
        if self.stopped:
            return "Run stopped"
        return "Cases that never ran" if self.never_ran else None

    @property
    def text(self) -> str:
        measured = f"{self.planned - len(self.never_ran)} of {self.planned} planned cases hold results"
        if self.stopped:
            return f"This run was stopped in Airflow while measuring: it was never judged against history; {measured}."
        return f"{measured}; the others never ran (their tasks failed or were stopped)."

    @property
    def judged(self) -> bool:
        """Whether the run's verdicts were made: a stopped run's never were."""
        return not self.stopped


ORDINARY = Standing()  # a run measured whole (or of unknown plan)


def clock(seconds: float | None) -> str:
    """`time`'s format: 0m43.526s."""
    if seconds is None:
        return "-"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.3f}s"


def short_command(command: str) -> str:
    """The command as a person would type it: interpreter and scripts by their base names."""
    if not command:
        return ""
    argv = shlex.split(command)
    return shlex.join([os.path.basename(a) if os.path.isabs(a) and not os.path.isdir(a) else a for a in argv])


def combination(result: Result) -> str:
    """The devices as the log titles them: "Titan X + Titan X", "CPU", "CPU x 2 workers"."""
    if result.device_names:
        return result.device_names
    workers = workers_of(result.device_set)
    return "CPU" if workers == 1 else f"CPU x {workers} workers"


def memory_line(result: Result) -> str | None:
    """The log's "peak memory    (peak - idle)MiB + ..." line, or the host RSS on the CPU."""
    devices = result.devices or []
    sampled = [d for d in devices if d["method"] in PEAK_MINUS_IDLE]
    if sampled:
        return "peak memory    " + " + ".join(f"({d['peak_mib']:.0f} - {d['idle_mib']:.0f})MiB" for d in sampled)
    if devices:
        return (
            "peak memory    " + " + ".join(f"{d['used_mib']:.0f}MiB" for d in devices) + f" ({result.peak_mem_method})"
        )
    return None


def phase_title(name: str) -> str:
    return name.replace("_", " ")


def phases_line(result: Result) -> str | None:
    """Where the wall time went: "phases  startup 4.31 s | data 0.52 s | first epoch 1.20 s | ..."."""
    timeline = result.phases
    if not timeline:
        return None
    return "phases         " + " | ".join(f"{phase_title(p)} {timeline[p]:.2f} s" for p in PHASES if p in timeline)


def hosts(summaries: Sequence[CaseSummary]) -> list[str]:
    """The hosts of a run's cases, in case order."""
    return list(dict.fromkeys(s.key.host for s in summaries))


def variant_pairs(summaries: Sequence[CaseSummary]) -> list[dict]:
    """Each execution variant beside its eager sibling on the same host and device set: steady images/s of both,
    the speed-up of the medians, and the range every pairing of repeats allows, read as `comparison` reads an
    environment change: a direction only when that whole range is on one side of 1, and neither case is noisy."""
    by_case = {(s.key.host, s.key.framework, s.key.device_set): s for s in summaries}
    out = []
    for (host, fw, ds), variant in by_case.items():
        entry = frameworks.REGISTRY.get(fw)
        if entry is None or entry.interpreter_of is None or (eager := by_case.get((host, entry.base, ds))) is None:
            continue
        change = comparison.Change.between(eager.ips, variant.ips)
        if change is None:
            continue
        out.append(
            {
                "host": host,
                "variant": fw,
                "base": entry.base,
                "device_set": ds,
                "repeats": min(eager.ips.n, variant.ips.n),
                "base_ips": eager.ips.median,
                "variant_ips": variant.ips.median,
                "speedup": 1 + change.median,
                "speedup_low": 1 + change.low,
                "speedup_high": 1 + change.high,
                "verdict": comparison.reading(eager, variant, change, None),
                "base_first_epoch_s": _first_epoch(eager),
                "variant_first_epoch_s": _first_epoch(variant),
            }
        )
    return out


def _first_epoch(summary: CaseSummary) -> float | None:
    """The timeline's first-epoch phase holds a variant's compilation (torch.compile, hybridize, graph capture)."""
    return Spread.of((r.phases or {}).get("first_epoch") for r in summary.counted).median
