"""A run's reports: Markdown like the original log (`markdown`), self-contained HTML with charts (`html`,
`charts`), CSV and Parquet (`tables`); `rows` holds what they share."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from trainbench.cases import CaseSummary
from trainbench.comparison import CaseComparison
from trainbench.reports import html_page, markdown, tables
from trainbench.reports.rows import ORDINARY, Standing
from trainbench.result import Result
from trainbench.store.run_folder import REPORT_PAGE, replace_file

REPORT = "the run's reports"


def write_all(
    summaries: Sequence[CaseSummary],
    folder: Path,
    run_id: str,
    *,
    history: Sequence[Result] = (),
    verdicts: Sequence[dict] = (),
    run_order: Sequence[str] = (),
    fingerprints: Mapping[str, dict] | None = None,
    comparisons: Sequence[CaseComparison] = (),
    imported: Sequence[Result] = (),
    quarantines: Sequence[Mapping] = (),
    standing: Standing = ORDINARY,
) -> dict[str, Path]:
    """Write every report of the run's cases into its folder, each file replaced whole (a reader never sees half
    of one).  `quarantines`: the hosts that stopped measuring in the run, and why; `standing`: whether it was
    stopped, and the planned cases that never ran."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "markdown": folder / "report.md",
        "html": folder / REPORT_PAGE,
        "csv": folder / "results.csv",
        "parquet": folder / "results.parquet",
        "cases_csv": folder / "cases.csv",
        "cases_parquet": folder / "cases.parquet",
    }
    rows = [r.to_dict() for s in summaries for r in s.results]
    stats = [{"run_id": run_id, **s.stats_row()} for s in summaries if s.counted]
    page = html_page.render(
        run_id,
        summaries,
        history,
        verdicts,
        comparisons,
        imported,
        run_order,
        fingerprints or {},
        quarantines,
        standing,
    )
    text = markdown.render(summaries, run_id, verdicts, comparisons, imported, quarantines, standing)
    replace_file(files["markdown"], text.encode(), REPORT)
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
