"""What one case x repeat measured: the value that travels from the runner to the raw JSON, the database
and the reports.  `to_dict`/`from_dict` are its JSON form (the raw file in the run folder, XCom)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any

from trainbench.planning import Case


@dataclass
class Result:
    run_id: str
    case_key: str
    env_key: str
    framework: str
    device_set: str
    repeat: int
    status: str
    host: str | None = None
    warmup: bool = False  # a warm-up run: shown, never in statistics or verdicts
    device_names: str | None = None
    environment: dict = field(default_factory=dict)  # the fingerprint
    started_at: dt.datetime | None = None
    command: str | None = None
    error: str | None = None
    wall_s: float | None = None  # perf_counter around launch and reap, as `time`'s real
    user_s: float | None = None  # rusage of the child and every descendant it (or we) reaped
    sys_s: float | None = None
    peak_mem_mib: float | None = None  # sum over the set's devices; see `devices` for each and its method
    peak_mem_method: str | None = None
    devices: list[dict] = field(default_factory=list)
    images_per_s: float | None = None  # median of the epochs after the first
    parameters: int | None = None
    final_loss: float | None = None
    test_accuracy: float | None = None
    epochs: list[dict] | None = None
    summary: dict | None = None
    telemetry: dict | None = None
    phases: dict[str, float] | None = None  # seconds per phase of the run (trainbench.measure.phases)
    id: int | None = None  # the results database's row id, once stored

    @classmethod
    def for_case(cls, run_id: str, case: Case, env_key: str, environment: dict, status: str = "pending") -> Result:
        return cls(
            run_id=run_id,
            case_key=case.key,
            env_key=env_key,
            framework=case.framework,
            host=case.host,
            warmup=case.warmup,
            device_set=case.device_set.text,
            repeat=case.repeat,
            status=status,
            device_names=" + ".join(case.device_set.gpu_names) or None,
            environment=environment,
            started_at=dt.datetime.now(dt.UTC),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Result:
        values = {k: v for k, v in d.items() if k in _FIELDS}
        if isinstance(values.get("started_at"), str):
            values["started_at"] = dt.datetime.fromisoformat(values["started_at"])
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(finite(self.to_dict()), default=_json_default, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Result:
        return cls.from_dict(json.loads(text))


_FIELDS = frozenset(f.name for f in dataclasses.fields(Result))


def finite(value):
    """NaN and infinities (a diverged loss) as None: PostgreSQL's JSON and Parquet reject them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def _json_default(o):
    return o.isoformat() if isinstance(o, dt.datetime) else str(o)
