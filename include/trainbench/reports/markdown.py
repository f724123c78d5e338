"""The Markdown report, laid out like the original log.

Framework -> device combination -> the command, `time`'s real/user/sys, peak memory per
device as "(peak - idle)MiB", so this week's table reads like the one the project started
from; regression verdicts, driver comparisons and the imported logs follow it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence

from trainbench import cases, frameworks
from trainbench.cases import CaseSummary
from trainbench.comparison import CaseComparison
from trainbench.measure.outcome import TAINTED
from trainbench.reports.rows import (
    ONE_EPOCH,
    ORDINARY,
    Standing,
    clock,
    combination,
    hosts,
    memory_line,
    phases_line,
    short_command,
    variant_pairs,
)
from trainbench.result import Result


def render(
    summaries: Sequence[CaseSummary],
    run_id: str,
    verdicts: Sequence[dict] = (),
    comparisons: Sequence[CaseComparison] = (),
    imported: Sequence[Result] = (),
    quarantines: Sequence[Mapping] = (),
    standing: Standing = ORDINARY,
) -> str:
    out = [f"# trainbench run `{run_id}`", ""]
    if standing.heading:
        out += [f"## {standing.heading}", "", standing.text, ""]
        out += [f"- never ran on `{cell(p['host'])}`: {cell(p['label'])}" for p in standing.never_ran]
        out.append("")
    if quarantines:
        out += ["## Quarantined hosts", ""]
        out += [f"- `{cell(q['host'])}` stopped measuring in this run: {cell(q['reason'])}" for q in quarantines]
        out.append("")
    out.append("## Devices")
    for host in hosts(summaries):
        out += _devices(host, [r for s in summaries if s.key.host == host for r in s.results])
    out.append("")
    sections: dict[tuple[str, str], list[CaseSummary]] = {}
    for s in summaries:
        sections.setdefault((s.key.host, s.key.framework), []).append(s)
    for (host, fw), found in sections.items():
        out += ["", f"## {frameworks.title(fw)}" + (f" on `{cell(host)}`" if host else "")]
        for s in found:
            for combo in dict.fromkeys(combination(r) for r in s.results):
                out.append(f"### {cell(combo)}")
                for r in s.results:
                    if combination(r) == combo:
                        out += _fenced(_block(r))
                out.append("")
    if summaries:
        out += table(
            "Dispersion over the repeats",
            (
                "host",
                "framework",
                "device set",
                "repeats",
                "wall median (min-max)",
                "wall CV",
                "images/s median (min-max)",
                "images/s CV",
                "noisy",
            ),
            [
                (
                    s.key.host,
                    s.key.framework,
                    s.key.device_set,
                    s.wall.n,
                    f"{_fmt(s.wall.median, '.2f')} s ({_fmt(s.wall.min, '.2f')}-{_fmt(s.wall.max, '.2f')})",
                    _fmt(s.wall.cv, ".1%"),
                    f"{_fmt(s.ips.median, ',.0f')} ({_fmt(s.ips.min, ',.0f')}-{_fmt(s.ips.max, ',.0f')})",
                    _fmt(s.ips.cv, ".1%"),
                    "yes" if s.noisy else "unknown (1 repeat)" if s.noisy is None else "no",
                )
                for s in summaries
                if s.counted
            ],
        )
        one_epoch = [h for h in hosts(summaries) if not any(s.ips.n for s in summaries if s.key.host == h)]
        out += [f"- `{cell(h)}`: {ONE_EPOCH}" for h in one_epoch if any(s.wall.n for s in summaries if s.key.host == h)]
    out += table(
        "Variants beside their eager sibling",
        (
            "host",
            "variant",
            "device set",
            "repeats",
            "eager images/s",
            "variant images/s",
            "speed-up (range)",
            "verdict",
            "first epoch, eager / variant",
        ),
        [
            (
                p["host"],
                p["variant"],
                p["device_set"],
                p["repeats"],
                f"{p['base_ips']:,.0f}",
                f"{p['variant_ips']:,.0f}",
                f"{p['speedup']:.2f}x ({p['speedup_low']:.2f}-{p['speedup_high']:.2f})",
                p["verdict"],
                f"{_fmt(p['base_first_epoch_s'], '.2f')} s / {_fmt(p['variant_first_epoch_s'], '.2f')} s",
            )
            for p in variant_pairs(summaries)
        ],
    )
    out += table(
        "Regressions against history",
        ("host", "framework", "device set", "metric", "verdict", "change", "detail"),
        [
            (
                v["host"],
                v["framework"],
                v["device_set"],
                v["metric"],
                v["verdict"],
                _fmt(v["change"], "+.1%"),
                v["detail"],
            )
            for v in cases.listed(v for v in verdicts if v["run_id"] == run_id)
        ],
    )
    out += table(
        "Environments of each case (oldest first)",
        (
            "host",
            "framework",
            "device set",
            "environment",
            "runs",
            "what changed",
            "wall median s",
            "wall change (range)",
            "images/s median",
            "images/s change (range)",
            "reading",
        ),
        [
            (
                c.host,
                c.framework,
                c.device_set,
                e.label,
                len(e.runs),
                changed_text(e.changed),
                _fmt(e.summary.wall.median, ".2f"),
                _change(e.wall),
                _fmt(e.summary.ips.median, ",.0f"),
                _change(e.ips),
                e.reading,
            )
            for c in comparisons
            for e in c.environments
        ],
    )
    out += table(
        "Imported logs (the original log)",
        ("host", "framework", "devices", "repeat", "status", "real", "user", "sys", "peak memory (MiB)"),
        [
            (
                r.host or "",
                r.framework,
                r.device_names or r.device_set,
                r.repeat,
                r.status,
                clock(r.wall_s),
                clock(r.user_s),
                clock(r.sys_s),
                _fmt(r.peak_mem_mib, ".0f"),
            )
            for r in sorted(imported, key=cases.order)
        ],
    )
    return "\n".join(out).rstrip() + "\n"


def _devices(host: str, results: list[Result]) -> list[str]:
    """The log's device list, per host."""
    gpus: dict[str, str] = {}
    for r in results:
        for uuid, name in zip(r.environment.get("gpu_uuids", []), r.environment.get("gpu_names", [])):
            gpus[uuid] = name
    out = [f"* Device {cell(uuid)}: {cell(name)}" for uuid, name in gpus.items()]
    env = next((r.environment for r in results if r.environment), {})
    if env:
        out.append(f"* CPU: {cell(env.get('cpu_model'))} ({cell(env.get('cpu_count'))} logical cores)")
        where = f"host `{cell(host)}`, machine " if host else ""
        out.append(f"* Tested on {where}`{cell(env.get('hostname'))}`")
        kinds = sorted({cell(kind) for r in results if (kind := r.environment.get("data_kind"))})
        out.append(f"* Data: {', '.join(kinds)} CIFAR-10")
    return out


def _block(r: Result) -> list[str]:
    block = []
    if r.warmup:
        block.append(f"(warm-up {r.repeat}: shown, never in statistics or verdicts)")
    if r.command:
        block.append(f"$ time {short_command(r.command)}")
    if r.status == TAINTED:
        block.append(f"({TAINTED}: shown, never in statistics or verdicts; {r.error})")
    elif r.status != cases.OK:
        return block + [f"({r.status})", *([r.error] if r.error else [])]
    block += [f"real    {clock(r.wall_s)}", f"user    {clock(r.user_s)}", f"sys     {clock(r.sys_s)}"]
    if memory := memory_line(r):
        block.append(memory)
    if r.images_per_s:
        block.append(f"images/s       {r.images_per_s:.1f} (steady state, repeat {r.repeat})")
    if timeline := phases_line(r):
        block.append(timeline)
    return block


def table(title: str, header: Sequence[str], rows: list[Sequence[object]]) -> list[str]:
    """A "## title" section holding a Markdown table of `rows` (none: nothing), each cell made inert."""
    if not rows:
        return []
    return ["", f"## {title}", "", _row(*header), "|" + "---|" * len(header), *(_row(*r) for r in rows)]


def changed_text(changed: dict) -> str:
    """ "driver_version 550.54 → 560.35, torch 2.11 → 2.13"."""
    return ", ".join(f"{k} {_short(old)} → {_short(new)}" for k, (old, new) in changed.items())


def _short(value: object) -> str:
    return "none" if value is None else ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _change(change) -> str:
    if change is None:
        return ""
    return f"{change.median:+.1%} ({change.low:+.1%} to {change.high:+.1%})"


def cell(value: object) -> str:
    """Text from a row as one table cell or heading: on one line, no `|` to shift columns, no raw HTML."""
    return html.escape(" ".join(str(value).split()), quote=False).replace("|", "\\|")


def _row(*cells: object) -> str:
    return "| " + " | ".join(cell(c) for c in cells) + " |"


def _fenced(lines: list[str]) -> list[str]:
    """A code block whose fence is longer than any run of backticks inside it, so a trainer's error text
    (whatever it prints) cannot close the block and inject headings, links or HTML into the report."""
    longest = max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, *lines, fence]


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)
