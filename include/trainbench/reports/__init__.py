"""A run's reports: Markdown like the original log (`markdown`), self-contained HTML with charts (`html`,
`charts`), CSV and Parquet (`tables`); `rows` holds what they share."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from trainbench.reports import html_page, markdown, tables


def write_all(
    rows: list[dict],
    folder: Path,
    latest: Path,
    run_id: str,
    *,
    history: Sequence[dict] = (),
    verdicts: Sequence[dict] = (),
    run_order: Sequence[str] = (),
    comparisons: Sequence[dict] = (),
    imported: Sequence[dict] = (),
) -> dict[str, Path]:
    """Write every report into the run's folder and copy them to the stable latest path."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "markdown": folder / "report.md",
        "html": folder / "report.html",
        "csv": folder / "results.csv",
        "parquet": folder / "results.parquet",
    }
    files["markdown"].write_text(markdown.render(rows, run_id, verdicts, comparisons, imported))
    files["html"].write_text(
        html_page.render(
            run_id, rows, list(history), list(verdicts), list(comparisons), list(imported), list(run_order)
        )
    )
    files["csv"].write_text(tables.csv_text(rows))
    tables.frame(rows).to_parquet(files["parquet"], index=False)
    latest.mkdir(parents=True, exist_ok=True)
    for path in files.values():
        shutil.copy2(path, latest / path.name)
    return files
