"""Check a run's result rows with Great Expectations before they are published.

A benchmark whose rows are wrong (a negative time, a missing case, a trainer that is not
the spec's model) must fail loudly rather than end up in a report; GX gives each check a
name, keeps the evidence, and renders it as Data Docs beside the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import great_expectations as gx
import pandas as pd
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.expectations.row_conditions import Column

from trainbench.measure.outcome import STATUSES
from trainbench.measure.phases import TOLERANCE as PHASES_TOLERANCE
from trainbench.measure.protocol import RANGES, impossible

MODEL_PARAMETERS = 420096
SITE = "trainbench"
COLUMNS = (
    "case_key",
    "env_key",
    "framework",
    "planned",
    "stored",
    "status",
    "wall_s",
    "user_s",
    "sys_s",
    "parameters",
    "epoch_count",
    "epoch_seconds_total",
    "first_loss",
    "last_loss",
    "losses_finite",
    "memory_fraction",
    "phases_gap",
    "images_per_s",
    "peak_mem_mib",
    "test_accuracy",
    "figures_possible",
)
SHOWN = 8
IGNORED_KWARGS = {
    "batch_id",
    "column",
    "column_A",
    "column_B",
    "row_condition",
    "condition_parser",
    "result_format",
    "ignore_row_if",
    "mostly",
}


@dataclass
class ValidationResult:
    success: bool
    failures: list[str]
    statistics: dict
    docs_index: Path | None

    def summary(self) -> str:
        """What the failed Airflow task shows: every failed expectation with its evidence."""
        if self.success:
            return f"all {self.statistics.get('evaluated_expectations')} expectations met"
        head = (
            f"{len(self.failures)} of {self.statistics.get('evaluated_expectations')} expectations failed"
            + (f" (Data Docs: {self.docs_index})" if self.docs_index else "")
            + ":"
        )
        return "\n".join([head, *(f"- {f}" for f in self.failures)])


def frame(rows: list[dict], planned_case_keys: list[str], host_memory_mib: float | None = None) -> pd.DataFrame:
    """One line per result with the derived figures the expectations need, and one per planned case without a result.

    The plan joins the rows as flags rather than as a set-valued expectation: GX copies a
    value set of thousands of keys into every metric it derives, which took seconds.
    """
    planned = set(planned_case_keys)
    stored = {r.get("case_key") for r in rows}
    records = [{"case_key": k, "planned": True, "stored": False} for k in planned_case_keys if k not in stored]
    for r in rows:
        epochs = r.get("epochs") or []
        losses = [e.get("loss") for e in epochs]
        env = r.get("environment") or {}
        capacity = dict(zip(env.get("gpu_uuids") or [], env.get("gpu_memory_total_mib") or []))
        if host_memory_mib:
            capacity["host"] = host_memory_mib
        fractions = [
            d["used_mib"] / capacity[d["device"]]
            for d in r.get("devices") or []
            if capacity.get(d["device"]) and d.get("used_mib") is not None
        ]
        records.append(
            {
                **{
                    k: r.get(k)
                    for k in ("case_key", "env_key", "framework", "status", "wall_s", "user_s", "sys_s", "parameters")
                },
                "planned": r.get("case_key") in planned,
                "stored": True,
                "epoch_count": len(epochs),
                "epoch_seconds_total": sum(e.get("seconds") or 0.0 for e in epochs),
                "first_loss": losses[0] if losses else None,
                "last_loss": losses[-1] if losses else None,
                "losses_finite": all(isinstance(x, (int, float)) and math.isfinite(x) for x in losses),
                "memory_fraction": max(fractions, default=None),
                "phases_gap": _phases_gap(r),
                "images_per_s": r.get("images_per_s"),
                "peak_mem_mib": r.get("peak_mem_mib"),
                "test_accuracy": r.get("test_accuracy"),
                "figures_possible": _figures_possible(r),
            }
        )
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def _figures_possible(row: dict) -> bool:
    """Every number of every epoch and of the summary is one the trainer protocol accepts (`protocol.impossible`)."""
    figures = [item for e in [*(row.get("epochs") or []), row.get("summary") or {}] for item in e.items()]
    return not any(
        impossible(name, value)
        for name, value in figures
        if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "t"
    )


def _phases_gap(row: dict) -> float | None:
    """How far the phases' sum is from the wall time, as a fraction of it (None without a timeline)."""
    timeline, wall = row.get("phases"), row.get("wall_s")
    if not timeline or not wall:
        return None
    return abs(sum(timeline.values()) - wall) / wall


def expectations(epochs: int | None = None) -> list:
    """The checks, each described the way a failure should read; `epochs` is what the run planned."""
    ok = Column("status") == "ok"
    e = gx.expectations
    planned_epochs = (
        []
        if epochs is None
        else [
            e.ExpectColumnValuesToBeBetween(
                column="epoch_count",
                min_value=epochs,
                max_value=epochs,
                row_condition=ok,
                description=f"ok runs: every one of the {epochs} planned epochs reported",
            )
        ]
    )
    return [
        *planned_epochs,
        e.ExpectColumnValuesToBeInSet(column="status", value_set=list(STATUSES), description="every status is known"),
        e.ExpectColumnValuesToNotBeNull(column="wall_s", row_condition=ok, description="ok runs have a wall time"),
        e.ExpectColumnValuesToBeBetween(
            column="wall_s",
            min_value=0,
            strict_min=True,
            row_condition=ok,
            description="ok runs: wall time is positive",
        ),
        e.ExpectColumnValuesToBeBetween(
            column="user_s",
            min_value=0,
            strict_min=True,
            row_condition=ok,
            description="ok runs: user CPU time is positive",
        ),
        e.ExpectColumnValuesToBeBetween(
            column="sys_s", min_value=0, row_condition=ok, description="ok runs: system CPU time is not negative"
        ),
        e.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="wall_s",
            column_B="epoch_seconds_total",
            or_equal=True,
            row_condition=ok,
            description="ok runs: wall time covers the sum of epoch times",
        ),
        e.ExpectColumnValuesToBeBetween(
            column="phases_gap",
            min_value=0,
            max_value=PHASES_TOLERANCE,
            row_condition=ok,
            description=f"ok runs with a timeline: the phases add up to the wall time within {PHASES_TOLERANCE:.0%}",
        ),
        e.ExpectColumnValuesToBeBetween(
            column="memory_fraction",
            min_value=0,
            max_value=1,
            row_condition=ok,
            description="ok runs: memory used fits the device (used / capacity)",
        ),
        e.ExpectColumnValuesToBeBetween(
            column="images_per_s",
            min_value=0,
            strict_min=True,
            max_value=RANGES["images_per_s"][1],
            row_condition=ok,
            description=f"ok runs: images/s is positive and at most {RANGES['images_per_s'][1]:g}",
        ),
        e.ExpectColumnValuesToBeBetween(
            column="peak_mem_mib", min_value=0, row_condition=ok, description="ok runs: peak memory is not negative"
        ),
        e.ExpectColumnValuesToBeBetween(
            column="test_accuracy", min_value=0, max_value=1, row_condition=ok, description="ok runs: accuracy in 0..1"
        ),
        e.ExpectColumnValuesToBeInSet(
            column="figures_possible",
            value_set=[True],
            row_condition=ok,
            description="ok runs: every epoch's and the summary's figures are finite and possible",
        ),
        e.ExpectColumnValuesToBeInSet(
            column="losses_finite",
            value_set=[True],
            row_condition=ok,
            description="ok runs: every epoch loss is finite",
        ),
        e.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="first_loss",
            column_B="last_loss",
            row_condition=ok & (Column("epoch_count") >= 2),
            description="ok runs of 2+ epochs: the loss falls",
        ),
        e.ExpectColumnValuesToBeInSet(
            column="parameters",
            value_set=[MODEL_PARAMETERS],
            row_condition=ok,
            description="ok runs that report it: the model has the spec's parameters",
        ),
        e.ExpectColumnValuesToNotBeNull(
            column="parameters",
            row_condition=ok & (Column("framework") != "neon"),
            description="ok runs of the project's trainers report their parameter count",
        ),
        e.ExpectColumnValuesToBeInSet(column="stored", value_set=[True], description="every planned case has a row"),
        e.ExpectColumnValuesToBeInSet(column="planned", value_set=[True], description="every row is a planned case"),
        e.ExpectColumnValuesToBeUnique(column="case_key", description="no case has more than one row"),
    ]


def run_suite(
    rows: list[dict],
    planned_case_keys: list[str],
    docs_dir: Path,
    host_memory_mib: float | None = None,
    epochs: int | None = None,
) -> ValidationResult:
    """Validate the rows against the plan and write Data Docs under `docs_dir`."""
    docs_dir = Path(docs_dir)
    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
            data_docs_sites={
                SITE: {
                    "class_name": "SiteBuilder",
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                }
            },
        ),
    )
    batch = (
        context.data_sources.add_pandas("trainbench")
        .add_dataframe_asset("results")
        .add_batch_definition_whole_dataframe("run")
    )
    suite = context.suites.add(gx.ExpectationSuite(name="trainbench_results", expectations=expectations(epochs)))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="results", data=batch, suite=suite))
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="trainbench",
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="docs")],
            result_format={"result_format": "SUMMARY", "unexpected_index_column_names": ["case_key"]},
        )
    )
    df = frame(rows, planned_case_keys, host_memory_mib)
    (result,) = checkpoint.run(batch_parameters={"dataframe": df}).run_results.values()
    index = docs_dir / "index.html"
    return ValidationResult(
        success=bool(result.success),
        failures=[describe(r) for r in result.results if not r.success],
        statistics={**result.statistics, "rows": len(rows)},
        docs_index=index if index.exists() else None,
    )


def describe(r) -> str:
    """One failed expectation as a line a person can act on."""
    config, found = r.expectation_config, r.result
    kwargs = config.kwargs
    columns = ", ".join(kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs)
    line = f"{config.description}: {config.type}({columns})"
    if r.exception_info.get("raised_exception"):
        return f"{line} raised {r.exception_info.get('exception_message')}"
    expected = ", ".join(
        f"{k}={_few(v) if isinstance(v, list) else v}"
        for k, v in kwargs.items()
        if k not in IGNORED_KWARGS and v is not None
    )
    cases = [i.get("case_key") for i in found.get("partial_unexpected_index_list") or []]
    return (
        f"{line}{f' expected {expected}' if expected else ''}; {found.get('unexpected_count')} unexpected, "
        f"e.g. {_few(found.get('partial_unexpected_list') or [])} in cases {_few(cases)}"
    )


def _few(values: list) -> str:
    shown = ", ".join(map(_text, values[:SHOWN]))
    return f"[{shown}{f', ... {len(values) - SHOWN} more' if len(values) > SHOWN else ''}]"


def _text(value) -> str:
    """A value without numpy's reprs: (2.1, 2.5) rather than (np.float64(2.1), np.float64(2.5))."""
    if isinstance(value, (tuple, list, dict)):
        return "(" + ", ".join(map(_text, value.values() if isinstance(value, dict) else value)) + ")"
    return str(value.item() if hasattr(value, "item") else value)
