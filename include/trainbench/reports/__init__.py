"""A run's reports: Markdown like the original log (`markdown`), self-contained HTML with charts (`html`,
`charts`), CSV and Parquet (`tables`); `rows` holds what they share."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from trainbench.reports import html_page, markdown, tables
from trainbench.reports.rows import report_order
from trainbench.store.run_folder import replace_file

REPORT = "the run's reports"


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
    stats: Sequence[dict] = (),
) -> dict[str, Path]:
    """Write every report into the run's folder, each file replaced whole (a reader never sees half of one)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "markdown": folder / "report.md",
        "html": folder / "report.html",
        "csv": folder / "results.csv",
        "parquet": folder / "results.parquet",
        "cases_csv": folder / "cases.csv",
        "cases_parquet": folder / "cases.parquet",
    }
    stats = sorted(stats, key=lambda s: report_order({**s, "repeat": 0}))
    page = html_page.render(
        run_id, rows, list(history), list(verdicts), list(comparisons), list(imported), list(run_order), stats
    )
    replace_file(
        files["markdown"], markdown.render(rows, run_id, verdicts, comparisons, imported, stats).encode(), REPORT
    )
    replace_file(files["html"], page.encode(), REPORT)
    replace_file(files["csv"], tables.csv_text(rows).encode(), REPORT)
    replace_file(files["cases_csv"], tables.stats_csv_text(stats).encode(), REPORT)
    buffer = io.BytesIO()
    tables.frame(rows).to_parquet(buffer, index=False)
    replace_file(files["parquet"], buffer.getvalue(), REPORT)
    buffer = io.BytesIO()
    tables.stats_frame(stats).to_parquet(buffer, index=False)
    replace_file(files["cases_parquet"], buffer.getvalue(), REPORT)
    return files
