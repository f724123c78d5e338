"""A run's reports: Markdown like the original log (`markdown`), self-contained HTML with charts (`html`,
`charts`), CSV and Parquet (`tables`); `rows` holds what they share."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from trainbench.reports import html_page, markdown, tables


def write_all(
    rows: list[dict],
    folder: Path,
    run_id: str,
    *,
    history: Sequence[dict] = (),
    verdicts: Sequence[dict] = (),
    run_order: Sequence[str] = (),
    comparisons: Sequence[dict] = (),
    imported: Sequence[dict] = (),
) -> dict[str, Path]:
    """Write every report into the run's folder, each file replaced whole (a reader never sees half of one)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "markdown": folder / "report.md",
        "html": folder / "report.html",
        "csv": folder / "results.csv",
        "parquet": folder / "results.parquet",
    }
    page = html_page.render(
        run_id, rows, list(history), list(verdicts), list(comparisons), list(imported), list(run_order)
    )
    _replace(files["markdown"], markdown.render(rows, run_id, verdicts, comparisons, imported).encode())
    _replace(files["html"], page.encode())
    _replace(files["csv"], tables.csv_text(rows).encode())
    buffer = io.BytesIO()
    tables.frame(rows).to_parquet(buffer, index=False)
    _replace(files["parquet"], buffer.getvalue())
    return files


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
