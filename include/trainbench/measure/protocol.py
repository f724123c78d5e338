"""Parse what a trainer prints: one JSON object per line (`start`, `epoch`, `summary`).

Anything else on stdout (framework warnings, progress text) is ignored, so a trainer never
has to silence its framework for the harness to read it.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field


@dataclass
class TrainerReport:
    start: dict | None = None
    epochs: list[dict] = field(default_factory=list)
    summary: dict | None = None

    @property
    def steady_images_per_s(self) -> float | None:
        """Median images/s over the epochs after the first (which pays for warm-up)."""
        rates = [e["images_per_s"] for e in self.epochs if e.get("images_per_s")]
        if not rates:
            return None
        return statistics.median(rates[1:] if len(rates) > 1 else rates)

    @property
    def losses(self) -> list[float]:
        return [e["loss"] for e in self.epochs]


def parse_line(line: str) -> dict | None:
    """The event a line carries, or None when it is not a trainer event."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) and obj.get("event") in ("start", "epoch", "summary") else None


def parse(lines) -> TrainerReport:
    report = TrainerReport()
    for line in lines:
        event = parse_line(line)
        if event is None:
            continue
        kind = event.pop("event")
        if kind == "epoch":
            report.epochs.append(event)
        else:
            setattr(report, kind, event)
    return report
