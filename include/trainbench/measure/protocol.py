"""Parse what a trainer prints: one JSON object per line (`start`, `mark`, `epoch`, `summary`).

Every event carries `t`, the wall clock (`time.time()`) when it was printed; `mark` events
name the moments the phase timeline is cut at (`ready`: framework imported and devices
initialised; `data`: the data set is on the device), in the spirit of MLPerf's logging markers.

Anything else on stdout (framework warnings, progress text, banners) is ignored, so a trainer
never has to silence its framework for the harness to read it.  An event line is checked on
parsing (its required fields and their types, `EVENT_FIELDS`): a malformed one is recorded in
`TrainerReport.errors`, which makes the row `crashed` (see `outcome.classify`), never `ok`.
Numbers must also be finite and possible (`RANGES`: no negative seconds, no 1e12 images/s, no
accuracy of 7.5), a run reports at most the epochs it was asked for (`check_epochs`), and its figures agree
with each other and with the wall time the harness measured (`check_figures`).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field


@dataclass
class TrainerReport:
    start: dict | None = None
    epochs: list[dict] = field(default_factory=list)
    summary: dict | None = None
    errors: list[str] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)  # mark name -> its `t`

    @property
    def steady_images_per_s(self) -> float | None:
        """Median images/s over the steady epochs; None for a one-epoch run, whose only epoch pays for warm-up
        (its figure passed for steady made 2 CPU workers scale by 314 %)."""
        rates = [e["images_per_s"] for e in steady(self.epochs) if e.get("images_per_s")]
        return statistics.median(rates) if rates else None

    @property
    def losses(self) -> list[float]:
        return [e["loss"] for e in self.epochs]


def steady(epochs: list[dict] | None) -> list[dict]:
    """The steady epochs of a run: all after the first, which pays for warm-up (compilation, caches, clocks)."""
    return (epochs or [])[1:]


NUMBER = (int, float)
# per event kind: field -> (accepted types, required)
EVENT_FIELDS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "start": {"framework": ((str,), True), "framework_version": ((str,), False), "devices": ((int,), False)},
    "mark": {"name": ((str,), True), "t": (NUMBER, True)},
    "epoch": {
        "epoch": ((int,), True),
        "seconds": (NUMBER, True),
        "images_per_s": (NUMBER, True),
        "loss": (NUMBER, True),
        "images": ((int,), False),
        "accuracy": (NUMBER, False),
    },
    "summary": {
        "test_accuracy": (NUMBER, False),
        "test_images": ((int,), False),
        "parameters": ((int,), False),
        "framework": ((str,), False),
        "framework_version": ((str,), False),
        "devices": ((int,), False),
        "train_images": ((int,), False),
        "batch_size": ((int,), False),
        "epochs": ((int,), False),
        "allocator_peak_mib": (NUMBER, False),
    },
}
# field -> (lowest, highest, lowest allowed itself): what a CIFAR-10 trainer can truthfully print, generously
RANGES: dict[str, tuple[float, float, bool]] = {
    "epoch": (1, 1e6, True),
    "seconds": (0, 1e7, False),
    "images_per_s": (0, 1e8, False),
    "loss": (0, 1e6, True),
    "images": (0, 1e9, True),
    "accuracy": (0, 1, True),
    "test_accuracy": (0, 1, True),
    "test_images": (0, 1e9, True),
    "parameters": (1, 1e12, True),
    "devices": (1, 1e4, True),
    "train_images": (0, 1e9, True),
    "batch_size": (1, 1e7, True),
    "epochs": (1, 1e6, True),
    "allocator_peak_mib": (0, 1e8, True),
}


def _decode(line: str) -> dict | None:
    """The JSON object a line carries if it names a trainer event (checked or not), else None."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and obj.get("event") in EVENT_FIELDS else None


def problem(event: dict) -> str | None:
    """What is wrong with an event's fields, or None: required ones present, every known one of its type."""
    for name, (types, required) in {"t": (NUMBER, False), **EVENT_FIELDS[event["event"]]}.items():
        if name not in event:
            if required:
                return f"{event['event']} event lacks {name!r}"
            continue
        value = event[name]
        if value is None and not required:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            expected = "a number" if types == NUMBER else "an integer" if types == (int,) else "a string"
            return f"{event['event']} event field {name!r} must be {expected}, got {value!r:.60}"
        if isinstance(value, (int, float)) and (why := impossible(name, value)):
            return f"{event['event']} event field {name!r} {why}"
    return None


def impossible(name: str, value: float) -> str | None:
    """Why a figure a trainer printed cannot be true (not finite, outside `RANGES`), or None."""
    if not math.isfinite(value):
        return f"must be finite, got {value!r}"
    if name in RANGES:
        low, high, inclusive = RANGES[name]
        if not (low <= value if inclusive else low < value) or value > high:
            bound = "[" if inclusive else "("
            return f"must lie in {bound}{low:g}, {high:g}], got {value!r:.60}"
    return None


def check_epochs(report: TrainerReport, planned: int) -> None:
    """More epoch events than the run asked for is a protocol error (a trainer printing 200,000 of them left a
    22 MB row): the extra ones are dropped and named in `errors`."""
    if len(report.epochs) > planned:
        report.errors.append(f"{len(report.epochs)} epoch events for a run of {planned} epochs")
        del report.epochs[planned:]


RATE_SLACK = 2.0  # an epoch's images/s may differ from its images / seconds by this factor, no more
WALL_SLACK_S = 1.0  # the epochs' seconds may exceed the trainer's measured wall time by this clock skew, no more


def check_figures(report: TrainerReport, wall_s: float | None) -> None:
    """Figures that contradict each other or the harness's own clock are protocol errors (named in `errors`):
    an epoch's images/s against its images / seconds, and the epochs' seconds against the trainer's wall time."""
    for e in report.epochs:
        images = e.get("images") or (report.summary or {}).get("train_images")
        if images and not images / e["seconds"] / RATE_SLACK <= e["images_per_s"] <= images / e["seconds"] * RATE_SLACK:
            report.errors.append(
                f"epoch {e['epoch']} claims {e['images_per_s']:.6g} images/s for {images} images in "
                f"{e['seconds']:.6g} s ({images / e['seconds']:.6g} images/s)"
            )
    spent = sum(e["seconds"] for e in report.epochs)
    if wall_s is not None and spent > wall_s + WALL_SLACK_S:
        report.errors.append(
            f"its epochs took {spent:.6g} s in all, longer than the whole trainer ran ({wall_s:.6g} s)"
        )


def parse_line(line: str) -> dict | None:
    """The event a line carries, or None when it is not a well-formed trainer event."""
    event = _decode(line)
    return event if event is not None and problem(event) is None else None


def parse(lines) -> TrainerReport:
    report = TrainerReport()
    for n, line in enumerate(lines, 1):
        event = _decode(line)
        if event is None:
            continue
        if (why := problem(event)) is not None:
            report.errors.append(f"stdout line {n}: {why}")
            continue
        kind = event.pop("event")
        if kind == "mark":
            report.marks[event["name"]] = event["t"]
        elif kind == "epoch":
            report.epochs.append(event)
        else:
            setattr(report, kind, event)
    return report
