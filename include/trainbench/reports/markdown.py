"""The Markdown report, laid out like the original log.

Framework -> device combination -> the command, `time`'s real/user/sys, peak memory per
device as "(peak - idle)MiB", so this week's table reads like the one the project started
from; regression verdicts, driver comparisons and the imported logs follow it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

from trainbench import frameworks
from trainbench.reports.rows import (
    clock,
    combination,
    memory_line,
    noisy_cases,
    phases_line,
    report_order,
    short_command,
    variant_pairs,
)


def render(
    rows: list[dict],
    run_id: str,
    verdicts: Sequence[dict] = (),
    comparisons: Sequence[dict] = (),
    imported: Sequence[dict] = (),
    stats: Sequence[dict] = (),
) -> str:
    rows = sorted(rows, key=report_order)
    out = [f"# trainbench run `{run_id}`", ""]
    env = rows[0].get("environment") or {} if rows else {}
    gpus = {}
    for r in rows:
        e = r.get("environment") or {}
        for uuid, name in zip(e.get("gpu_uuids", []), e.get("gpu_names", [])):
            gpus[uuid] = name
    out.append("## Devices")
    out += [f"* Device {uuid}: {name}" for uuid, name in gpus.items()]
    if env:
        out.append(f"* CPU: {env.get('cpu_model')} ({env.get('cpu_count')} logical cores)")
        out.append(f"* Tested on `{env.get('hostname')}`")
        kinds = sorted({str(kind) for r in rows if (kind := (r.get("environment") or {}).get("data_kind"))})
        out.append(f"* Data: {', '.join(kinds)} CIFAR-10")
    out.append("")
    for fw in dict.fromkeys(r["framework"] for r in rows):
        out += ["", f"## {frameworks.title(fw)}"]
        fw_rows = [r for r in rows if r["framework"] == fw]
        for combo in dict.fromkeys(combination(r) for r in fw_rows):
            out.append(f"### {_cell(combo)}")
            for r in sorted((r for r in fw_rows if combination(r) == combo), key=report_order):
                block = []
                if r.get("warmup"):
                    block.append(f"(warm-up {r['repeat']}: shown, never in statistics or verdicts)")
                if r.get("command"):
                    block.append(f"$ time {short_command(r['command'])}")
                if r["status"] == "ok":
                    block += [
                        f"real    {clock(r['wall_s'])}",
                        f"user    {clock(r['user_s'])}",
                        f"sys     {clock(r['sys_s'])}",
                    ]
                    if memory := memory_line(r):
                        block.append(memory)
                    if r.get("images_per_s"):
                        block.append(f"images/s       {r['images_per_s']:.1f} (steady state, repeat {r['repeat']})")
                    if timeline := phases_line(r):
                        block.append(timeline)
                else:
                    block.append(f"({r['status']})")
                    if r.get("error"):
                        block.append(r["error"])
                out += _fenced(block)
            out.append("")
    if stats:
        out += [
            "",
            "## Dispersion over the repeats",
            "",
            "| framework | device set | host | repeats | wall median (min-max) | wall CV | images/s median (min-max) "
            "| images/s CV | noisy |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        out += [
            _row(
                s["framework"],
                s["device_set"],
                s["host"],
                s["repeats"],
                f"{_fmt(s['wall_median'], '.2f')} s ({_fmt(s['wall_min'], '.2f')}-{_fmt(s['wall_max'], '.2f')})",
                _fmt(s["wall_cv"], ".1%"),
                f"{_fmt(s['ips_median'], ',.0f')} ({_fmt(s['ips_min'], ',.0f')}-{_fmt(s['ips_max'], ',.0f')})",
                _fmt(s["ips_cv"], ".1%"),
                "yes" if s["noisy"] else "unknown (1 repeat)" if s["noisy"] is None else "no",
            )
            for s in stats
        ]
    if pairs := variant_pairs(rows, noisy_cases(stats)):
        out += [
            "",
            "## Variants beside their eager sibling",
            "",
            "| variant | device set | host | repeats | eager images/s | variant images/s | speed-up (range) | verdict "
            "| first epoch, eager / variant |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        out += [
            _row(
                p["variant"],
                p["device_set"],
                p["host"],
                p["repeats"],
                f"{p['base_ips']:,.0f}",
                f"{p['variant_ips']:,.0f}",
                f"{p['speedup']:.2f}x ({p['speedup_low']:.2f}-{p['speedup_high']:.2f})",
                p["verdict"],
                f"{_fmt(p['base_first_epoch_s'], '.2f')} s / {_fmt(p['variant_first_epoch_s'], '.2f')} s",
            )
            for p in pairs
        ]
    mine = sorted((v for v in verdicts if v["run_id"] == run_id), key=lambda v: report_order({**v, "repeat": 0}))
    if mine:
        out += [
            "",
            "## Regressions against history",
            "",
            "| framework | device set | metric | verdict | change | detail |",
            "|---|---|---|---|---|---|",
        ]
        out += [
            _row(v["framework"], v["device_set"], v["metric"], v["verdict"], _fmt(v["change"], "+.1%"), v["detail"])
            for v in mine
        ]
    if comparisons:
        out += [
            "",
            "## Driver and framework upgrades",
            "",
            "| framework | device set | before | after | before median | after median | after/before |",
            "|---|---|---|---|---|---|---|",
        ]
        out += [
            _row(
                c["framework"],
                c["device_set"],
                _versions(c["before"]),
                _versions(c["after"]),
                f"{c['before_median']:.3f}",
                f"{c['after_median']:.3f}",
                f"{c['ratio']:.3f}",
            )
            for c in comparisons
        ]
    if imported:
        out += [
            "",
            "## Imported logs (the original log)",
            "",
            "| framework | devices | repeat | status | real | user | sys | peak memory (MiB) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        out += [
            _row(
                r["framework"],
                r.get("device_names") or r["device_set"],
                r["repeat"],
                r["status"],
                clock(r.get("wall_s")),
                clock(r.get("user_s")),
                clock(r.get("sys_s")),
                _fmt(r.get("peak_mem_mib"), ".0f"),
            )
            for r in sorted(imported, key=report_order)
        ]
    return "\n".join(out).rstrip() + "\n"


def _cell(value: object) -> str:
    """Text from a row as one table cell or heading: on one line, no `|` to shift columns, no raw HTML."""
    return html.escape(" ".join(str(value).split()), quote=False).replace("|", "\\|")


def _row(*cells: object) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _fenced(lines: list[str]) -> list[str]:
    """A code block whose fence is longer than any run of backticks inside it, so a trainer's error text
    (whatever it prints) cannot close the block and inject headings, links or HTML into the report."""
    longest = max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, *lines, fence]


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _versions(fields: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in fields.items() if v)
