"""The run's rows as tables: CSV (the columns `results --format csv` prints) and Parquet (every column), and its
dispersion per case (`cases.csv`, `cases.parquet`)."""

from __future__ import annotations

import csv
import io
import json

CSV_COLUMNS = (
    "run_id",
    "framework",
    "device_set",
    "host",
    "repeat",
    "warmup",
    "status",
    "wall_s",
    "user_s",
    "sys_s",
    "peak_mem_mib",
    "images_per_s",
    "test_accuracy",
    "error",
)


def csv_text(rows: list[dict]) -> str:
    return _csv(rows, CSV_COLUMNS)


def _csv(rows, columns) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _inert(r.get(k)) for k in columns} for r in rows)
    return buf.getvalue()


def _inert(value):
    """Text a spreadsheet would run as a formula (=, +, -, @, tab, CR first) gets a leading quote (OWASP)."""
    if isinstance(value, str) and value.startswith(("=", "+", "-", "@", "\t", "\r")):
        return "'" + value
    return value


def frame(rows: list[dict]):
    """The rows as a DataFrame for CSV/Parquet: scalar columns as they are, nested ones as JSON text."""
    import pandas as pd

    nested = ("epochs", "summary", "environment", "telemetry", "devices", "phases")
    return pd.DataFrame([{k: json.dumps(v, default=str) if k in nested else v for k, v in r.items()} for r in rows])


STATS_COLUMNS = (
    "run_id",
    "framework",
    "device_set",
    "host",
    "env_key",
    "repeats",
    "wall_median",
    "wall_min",
    "wall_max",
    "wall_cv",
    "ips_median",
    "ips_min",
    "ips_max",
    "ips_cv",
    "noisy",
)


def stats_csv_text(stats: list[dict]) -> str:
    return _csv(stats, STATS_COLUMNS)


def stats_frame(stats: list[dict]):
    import pandas as pd

    return pd.DataFrame(list(stats), columns=list(STATS_COLUMNS))
