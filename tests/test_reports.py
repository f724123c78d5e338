"""Reports rendered from stored runs: the log's Markdown layout, HTML with every chart, CSV and Parquet."""

import datetime as dt
import html.parser
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from trainbench import cases, config
from trainbench.reports import charts, html_page, markdown
from trainbench.result import Result
from trainbench.store import imported_logs, run_folder
from trainbench.store.results import BENCHMARK, PUBLISHED, ResultStore
from trainbench.workflows import harness, pipeline

from conftest import write_config
from test_imported_logs import REFERENCE
from test_results import result


def log_blocks(text: str) -> dict[str, list[str]]:
    """The original log's runs as "### title" -> normalised code-block lines."""
    blocks, title, inside, lines = {}, None, False, []
    for line in text.splitlines():
        if line.startswith("### "):
            title = line[4:].strip()
        elif line.strip() == "```":
            if inside:
                blocks.setdefault(title, []).append([re.sub(r"\s+", " ", l.replace("$ ", "")).strip() for l in lines])
            inside, lines = not inside, []
        elif inside:
            lines.append(line)
    return blocks


def test_markdown_of_the_imported_rows_reproduces_the_original_log():
    original = REFERENCE.read_text()
    summaries = cases.summarize(imported_logs.parse_log(original, REFERENCE.name), max_cv=0.05)
    ours = log_blocks(markdown.render(summaries, "imported"))
    theirs = log_blocks(original)
    for title, blocks in theirs.items():
        for block in blocks:
            if block[1] == "(crashed)":
                assert block[:2] in [b[:2] for b in ours[title]]
            else:
                assert block in ours[title], (title, block, ours[title])


class _Html(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.figures, self.tables, self.headings, self.scripts = [], [], 0, [], []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.links += [v or "" for k, v in attrs.items() if k in ("src", "href", "action", "xlink:href", "srcset")]
        if tag == "figure" and "chart" in (attrs.get("class") or "").split():
            self.figures.append(int(attrs["data-index"]))
        if tag == "script":
            self.scripts.append({**attrs, "text": ""})
        self.tables += tag == "table"

    def handle_data(self, data):
        if self.lasttag in ("h1", "h2") and data.strip():
            self.headings.append(data.strip())
        if self.lasttag == "script":
            self.scripts[-1]["text"] += data

    def chart_data(self) -> dict:
        return json.loads(next(s["text"] for s in self.scripts if s.get("id") == "chart-data"))


@pytest.fixture
def stored_history(tmp_path):
    """Five weekly runs of a GPU case (the last one 10 % slower), a 2-GPU case, and the imported original log."""
    cfg = config.load(write_config(tmp_path))
    store = ResultStore(cfg.database_url)
    for week in range(5):
        run = f"scheduled__2026-11-{2 + 7 * week:02d}"
        pipeline.start_run(cfg, run, cfg.settings, logical_date=dt.datetime(2026, 11, 2 + 7 * week, 3, tzinfo=dt.UTC))
        for rep in (1, 2, 3):
            wall = 10.0 * (1.1 if week == 4 else 1.0) + 0.01 * rep
            for ds, names, speed in (("0", "NVIDIA H100", 1.0), ("0,1", "NVIDIA H100 + NVIDIA H100", 1.8)):
                r = result(run_id=run, case_key=f"pytorch__{ds.replace(',', '-')}__r{rep}", wall=wall / speed)
                r.device_set, r.device_names, r.repeat = ds, names, rep
                r.images_per_s = 50_000 * speed / wall
                r.started_at = dt.datetime(2026, 11, 2 + 7 * week, tzinfo=dt.UTC)
                harness._save(cfg, r, log=lambda m: None)
        store.set_state(run, PUBLISHED)  # each week was validated and published in its day
    imported_logs.import_log(store, REFERENCE)
    return cfg, store, run


def test_publish_writes_every_format_with_charts_and_the_verdicts(stored_history):
    cfg, store, run = stored_history
    verdicts = pipeline.detect_regressions(cfg, run, log=lambda m: None)
    assert {(v["device_set"], v["metric"]): v["verdict"] for v in verdicts} == {
        ("0", "wall_s"): "regressed",
        ("0,1", "wall_s"): "regressed",
        ("0", "images_per_s"): "regressed",
        ("0,1", "images_per_s"): "regressed",
    }
    out = pipeline.publish(cfg, run)
    page = _Html()
    page.feed(Path(out["html"]).read_text())
    data = page.chart_data()
    assert sorted(page.figures) == list(range(len(data["charts"])))
    assert [c["name"] for c in data["charts"]] == [
        "wall_time",
        "images_per_s",
        "memory",
        "phases",
        "scaling",
        "scaling",
        "history",
        "history",
    ]
    wall, ips, memory, phases, speedup, efficiency, *history = data["charts"]
    assert wall["categories"] == ips["categories"] == ["pytorch | NVIDIA H100 + NVIDIA H100", "pytorch | NVIDIA H100"]
    assert wall["series"][0]["values"] == pytest.approx([11.02 / 1.8, 11.02])
    assert wall["series"][0]["notes"][0] == "3 repeats, min 6.12, max 6.13"
    assert memory["stacked"] and memory["series"][0]["values"] == [1025.0, 1025.0]
    assert [s["label"] for s in phases["series"]][:2] == ["startup", "data"]
    assert speedup["series"][0]["values"] == pytest.approx([1.8]) and efficiency["reference"] == 100
    assert [c["title"] for c in history] == ["pytorch · 0,1", "pytorch · 0"]
    assert len(data["runs"]) == 5 and data["runs"][-1]["run"] == run
    for chart in history:
        (series,) = chart["series"]
        assert [p["x"] for p in series["points"]] == [0, 1, 2, 3, 4] and "driver" in series["label"]
        marked = [p for p in series["points"] if p.get("verdicts")]
        assert [p["x"] for p in marked] == [4] and {v["verdict"] for v in marked[0]["verdicts"]} == {"regressed"}
    assert "img" not in page.tags
    assert {"Summary", "Results", "Scaling", "Regressions", "History per case"} <= set(page.headings)
    assert "Imported logs (the original log)" in page.headings
    text = Path(out["html"]).read_text()
    assert "0: fastest <b>pytorch</b>" in text and "scaling efficiency" in text and "regressed (wall_s, +10.0%)" in text
    assert not re.search(r"<td>-?[1-9][\d,]*\.\d{3,}</td>", text), "figures are rounded as a person reads them"
    assert "<td>1,025</td>" in text  # MiB whole
    md = Path(out["markdown"]).read_text()
    assert "| pytorch | 0 | wall_s | regressed | +10.0% |" in md and "## Imported logs (the original log)" in md
    assert "peak memory    (1505 - 480)MiB" in md
    assert "phases         startup 4.50 s | data 0.50 s | first epoch 1.50 s | steady training 5.50 s" in md
    parquet = pd.read_parquet(out["parquet"])
    csv = pd.read_csv(out["csv"])
    assert len(parquet) == len(csv) == 6 and set(parquet["device_set"]) == {"0", "0,1"}
    assert (cfg.output_dir / "latest" / "report.html").read_text() == Path(out["html"]).read_text()


def test_the_html_report_loads_nothing_from_outside_itself(stored_history):
    """Script, styles and chart data are inline: no URL to fetch anything from, opened offline or from a mail."""
    cfg, _, run = stored_history
    text = Path(pipeline.publish(cfg, run)["html"]).read_text()
    page = _Html()
    page.feed(text)
    assert page.links == []
    assert not {"link", "img", "iframe", "object", "embed", "base", "image", "use"} & set(page.tags)
    assert [sorted(s) for s in page.scripts] == [["id", "text", "type"], ["text"]]
    assert charts.script() in text and charts.stylesheet() in text
    outside = re.findall(r"https?://[^\s\"'<>)]*|url\((?!#)|@import", text)
    assert outside == ["http://www.w3.org/2000/svg"]  # the SVG namespace: a name, nothing to fetch


def test_latest_is_the_newest_week_with_results(stored_history):
    """A backfill of an older week, or a newer run that measured nothing, never becomes "latest"."""
    cfg, store, newest = stored_history
    old = "backfill__2026-10-26T03:00:00+00:00"
    pipeline.start_run(cfg, old, cfg.settings, logical_date=dt.datetime(2026, 10, 26, 3, tzinfo=dt.UTC))
    harness._save(cfg, result(run_id=old, case_key="gpu__pytorch__0__r1"), log=lambda m: None)
    pipeline.start_run(
        cfg, "failed-before-measuring", cfg.settings, logical_date=dt.datetime(2026, 12, 7, 3, tzinfo=dt.UTC)
    )
    assert pipeline.publish(cfg, old)["latest"] is False
    assert store.latest_run_id() == newest
    latest = cfg.output_dir / "latest"
    assert latest.is_symlink() and latest.resolve() == run_folder.run_dir(cfg.output_dir, newest).resolve()
    assert pipeline.publish(cfg, newest)["latest"] is True
    assert f"# trainbench run `{newest}`" in (latest / "report.md").read_text()


def test_backfill_reuses_the_settings_its_week_was_first_measured_with(stored_history):
    cfg, store, _ = stored_history
    week = dt.datetime(2026, 11, 9, 3, tzinfo=dt.UTC)
    pipeline.start_run(cfg, "scheduled__2026-11-09T03:00:00+00:00", cfg.settings.overridden(epochs=7), week)
    assert pipeline.original_settings(cfg, week) == cfg.settings.as_dict()  # the week's first run, not the later one
    assert pipeline.original_settings(cfg, week + dt.timedelta(days=1)) is None


def test_the_summary_claims_a_fastest_case_only_as_far_as_the_repeats_allow():
    def found(*cases_walls):
        out = []
        for framework, walls in cases_walls:
            for rep, wall in enumerate(walls, 1):
                r = result(case_key=f"{framework}__0__r{rep}", wall=wall)
                r.framework, r.repeat = framework, rep
                out.append(r)
        return cases.summarize(out, max_cv=0.05)

    clear = found(("jax", [9.9, 10.0, 10.1]), ("pytorch", [11.8, 12.0, 12.3]))
    assert html_page._fastest("0", clear) == "0: fastest <b>jax</b>, 10.00 s (median wall time)"
    overlapping = found(("jax", [9.0, 10.0, 11.5]), ("pytorch", [10.5, 11.0, 12.0]))
    assert "by median only: within the repeats' spread of pytorch" in html_page._fastest("0", overlapping)
    wide_third = found(("jax", [9.9, 10.0, 10.1]), ("pytorch", [11.8, 12.0, 12.3]), ("mxnet", [9.0, 13.0, 16.0]))
    assert "by median only: within the repeats' spread of mxnet" in html_page._fastest("0", wide_third)
    single = found(("jax", [10.0]), ("pytorch", [11.8, 12.0, 12.3]))
    assert "1 repeat: its lead over pytorch is within unknown noise" in html_page._fastest("0", single)
    hostile = found(("<b>x</b>", [10.0]))
    assert "&lt;b&gt;x&lt;/b&gt;" in html_page._fastest("0", hostile)


def test_a_backfill_of_an_earlier_week_is_judged_only_against_weeks_before_it(stored_history):
    cfg, store, latest = stored_history
    run = "backfill__2026-10-26"
    pipeline.start_run(cfg, run, cfg.settings, logical_date=dt.datetime(2026, 10, 26, 3, tzinfo=dt.UTC))
    for rep in (1, 2, 3):
        r = result(run_id=run, case_key=f"pytorch__0__r{rep}", wall=11.0 + 0.01 * rep)  # 10 % slower than later weeks
        r.device_set, r.device_names, r.repeat, r.images_per_s = "0", "NVIDIA H100", rep, 50_000 / 11.0
        r.started_at = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)  # measured after every other week
        harness._save(cfg, r, log=lambda m: None)
    assert store.run_ids(source=BENCHMARK)[0] == run
    verdicts = pipeline.detect_regressions(cfg, run, log=lambda m: None)
    assert {v["verdict"] for v in verdicts} == {"insufficient history"}, verdicts
    assert store.latest_run_id() == latest


HOSTILE_ERROR = '=HYPERLINK("http://evil.example","click")\n```\n# Injected heading\n[link](http://evil.example)\n<script>x</script>'


def hostile_rows() -> list[Result]:
    crashed = result(case_key="pytorch__0__r1", status="crashed")
    crashed.error = HOSTILE_ERROR
    imported = result(run_id="imp", case_key="mxnet__0__r1")
    imported.framework, imported.device_names = "mxnet", "Titan X | evil column"
    return [crashed, imported]


def test_a_trainer_error_cannot_break_out_of_its_code_block():
    import markdown_it

    crashed, imported = hostile_rows()
    text = markdown.render(cases.summarize([crashed], max_cv=0.05), "r1", imported=[imported])
    tokens = markdown_it.MarkdownIt("commonmark").enable("table").parse(text)
    assert not [t for t in tokens if t.type == "heading_open" and t.map and "Injected" in text.splitlines()[t.map[0]]]
    assert not [t for t in tokens if t.type in ("html_block", "html_inline")]
    assert any("# Injected heading" in t.content for t in tokens if t.type == "fence")
    rows = [t for t in tokens if t.type == "tr_open"]
    cells = [t for t in tokens if t.type == "td_open"]
    assert len(cells) == 9 * (len(rows) - 1)  # the imported table keeps its 9 columns
    assert "Titan X \\| evil column" in text


def test_a_device_named_with_markup_lands_escaped_in_the_device_list():
    import markdown_it

    r = result(case_key="pytorch__0__r1")
    r.environment = {
        "gpu_uuids": ["GPU-1 | x"],
        "gpu_names": ["<b>H100</b> | evil"],
        "cpu_model": "<i>Xeon</i>",
        "hostname": "gpu`1",
    }
    text = markdown.render(cases.summarize([r], max_cv=0.05), "r1")
    tokens = markdown_it.MarkdownIt("commonmark").enable("table").parse(text)
    assert not [t for t in tokens if t.type in ("html_block", "html_inline")]
    assert not [c for t in tokens for c in t.children or () if c.type == "html_inline"]
    assert "* Device GPU-1 \\| x: &lt;b&gt;H100&lt;/b&gt; \\| evil" in text


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted():
    import csv
    import io

    from trainbench.reports import tables

    crashed, _ = hostile_rows()
    (row,) = list(csv.DictReader(io.StringIO(tables.csv_text([crashed.to_dict()]))))
    assert row["error"].startswith("'=HYPERLINK(") and row["wall_s"] == "12.5"


def test_no_scaling_figure_or_variant_direction_is_claimed_from_noisy_repeats():
    """A contended CPU: cpu:2's repeats disagree wildly (the 438 % scaling efficiency of an earlier report)."""
    from trainbench.cases import NOISY

    def case(framework, device_set, rates):
        out = []
        for rep, rate in enumerate(rates, 1):
            r = result(case_key=f"{framework}__{device_set}__r{rep}")
            r.framework, r.device_set, r.repeat, r.images_per_s, r.wall_s = (
                framework,
                device_set,
                rep,
                rate,
                50_000 / rate,
            )
            r.devices = []
            out.append(r)
        return out

    found = (
        case("pytorch", "cpu", [1000.0, 1010.0])
        + case("pytorch", "cpu:2", [8770.0, 1500.0])
        + case("pytorch-graph", "cpu", [3000.0, 1100.0])
    )
    summaries = cases.summarize(found, max_cv=0.05)
    assert {(s.key.framework, s.key.device_set): s.noisy for s in summaries} == {
        ("pytorch", "cpu"): False,
        ("pytorch", "cpu:2"): True,
        ("pytorch-graph", "cpu"): True,
    }
    page = html_page.render("r1", summaries, [], [], [], [], ["r1"])
    summary = page[page.index("<h2>Summary</h2>") : page.index("<h2>Results</h2>")]
    assert "pytorch on cpu:2: 2 devices; no scaling figure claimed, cpu:2 noisy" in summary
    assert "scaling efficiency" not in summary
    text = markdown.render(summaries, "r1")
    variants = text[text.index("## Variants beside their eager sibling") :]
    (line,) = [l for l in variants.splitlines() if l.startswith("| (no host)") or "| pytorch-graph | cpu |" in l]
    assert NOISY in line and "faster" not in line
    assert NOISY in page


def test_a_host_quarantined_in_the_run_is_named_with_its_reason_in_both_reports(stored_history):
    """A quarantined host may have planned nothing (its GPUs gone): the report still says it stopped, and why."""
    cfg, store, run = stored_history
    out = pipeline.publish(cfg, run)
    assert "Quarantined hosts" not in Path(out["markdown"]).read_text()
    store.quarantine(run, "h100-b", "doctor: nvml: NVML failed: NVMLError_Unknown")
    out = pipeline.publish(cfg, run)
    text = Path(out["markdown"]).read_text()
    assert "## Quarantined hosts\n\n- `h100-b` stopped measuring in this run: doctor: nvml: NVML failed" in text
    page = Path(out["html"]).read_text()
    assert "Host <b>h100-b</b> stopped measuring in this run: doctor: nvml: NVML failed: NVMLError_Unknown" in page


def test_a_one_epoch_run_shows_no_steady_throughput_or_scaling_and_says_why():
    """Its only epoch pays for warm-up: taken for steady, 2 CPU workers once scaled by 314 %."""
    from trainbench.reports.rows import ONE_EPOCH

    found = []
    for ds, wall in (("cpu", 10.0), ("cpu:2", 6.0)):
        for repeat in (1, 2):
            r = result(case_key=f"pytorch__{ds}__r{repeat}", wall=wall + repeat / 10)
            r.device_set, r.repeat, r.images_per_s, r.host = ds, repeat, None, "gpu"
            found.append(r)
    summaries = cases.summarize(found, max_cv=0.05)
    assert f"- `gpu`: {ONE_EPOCH}" in markdown.render(summaries, "r1")
    assert any(ONE_EPOCH in str(text) for _, items in html_page.summary(summaries, []) for _, text in items)
    assert charts.scaling(summaries) == []
    assert "images_per_s" not in {c["name"] for c in charts.report(summaries, [], [], ["r1"])["charts"]}


def test_a_before_after_strip_carries_its_scale():
    """Issue 27, item 20: two clouds of dots say nothing of how far apart they are without the axis's values."""
    svg = str(charts.strip([12.0, 12.4], [13.1, 13.5], "wall time before and after"))
    dots = re.findall(r'<circle class="(before|after)" fill="#\w+" cx="([\d.]+)"', svg)
    assert [side for side, _ in dots] == ["before", "before", "after", "after"]
    assert float(dots[0][1]) == 8.0 and float(dots[-1][1]) == 232.0  # the least and the most at the axis's ends
    labels = re.findall(r"<text[^>]*>([^<]+)</text>", svg)
    assert labels == ["12.00", "13.50"] and 'aria-label="wall time before and after"' in svg
    rates = re.findall(r"<text[^>]*>([^<]+)</text>", str(charts.strip([78000.0], [74123.4], "images/s")))
    assert rates == ["74,123", "78,000"]


def test_a_host_with_nothing_measured_says_so_never_no_change(tmp_path):
    """Issue 26, item 5: a quarantined host's unavailable cases hold no verdict; its summary says nothing was
    measured, not "No change against history beyond its noise"."""
    measured, down = result(run_id="r1", case_key="a__pytorch__0__r1"), result(run_id="r1", status="unavailable")
    measured.host, down.host, down.case_key = "a", "b", "b__pytorch__0__r1"
    summaries = cases.summarize([measured, down], 0.05)
    lines = dict(html_page.summary(summaries, []))
    assert [text for _, text in lines["b"]] == [
        "Nothing measured on this host in this run (its rows say why): nothing judged."
    ]
    assert "No change against history beyond its noise." in [str(text) for _, text in lines["a"]]
