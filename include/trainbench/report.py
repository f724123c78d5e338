"""Reports of a run: Markdown laid out like the original log, CSV and Parquet exports.

The Markdown keeps the log's shape (framework -> device combination -> the command,
`time`'s real/user/sys, peak memory per device as "(peak - idle)MiB"), so this week's
table reads like the one the project started from; regression verdicts, driver
comparisons and the historical baseline follow it.  The HTML report is html_report.py.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import shutil
from pathlib import Path

from trainbench.results import CSV_COLUMNS

PEAK_MINUS_IDLE = ("nvml_sampled", "log_peak_minus_idle")
FRAMEWORK_TITLES = {"neon": "Neon", "mxnet": "MXNet", "pytorch": "PyTorch", "jax": "JAX"}  # the log's order first


def clock(seconds: float | None) -> str:
    """`time`'s format: 0m43.526s."""
    if seconds is None:
        return "-"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.3f}s"


def short_command(command: str) -> str:
    """The command as a person would type it: interpreter and scripts by their base names."""
    if not command:
        return ""
    argv = shlex.split(command)
    return shlex.join([os.path.basename(a) if os.path.isabs(a) and not os.path.isdir(a) else a for a in argv])


def combination(row: dict) -> str:
    if row.get("device_names"):
        return row["device_names"]
    ds = row["device_set"]
    workers = int(ds.split(":")[1]) if ":" in ds else 1
    return "CPU" if workers == 1 else f"CPU x {workers} workers"


def report_order(row: dict) -> tuple:
    """Frameworks in the log's order; per framework the largest GPU set first (as the log), then CPU sets."""
    fw = list(FRAMEWORK_TITLES).index(row["framework"]) if row["framework"] in FRAMEWORK_TITLES else len(FRAMEWORK_TITLES)
    ds = row["device_set"]
    device = (1, int(ds.partition(":")[2] or 1)) if ds.startswith("cpu") else (0, -len(ds.split(",")), ds)
    return fw, row["framework"], device, row["repeat"]


def memory_line(row: dict) -> str | None:
    """The log's "peak memory    (peak - idle)MiB + ..." line, or the host RSS on the CPU."""
    devices = row.get("devices") or []
    sampled = [d for d in devices if d["method"] in PEAK_MINUS_IDLE]
    if sampled:
        return "peak memory    " + " + ".join(f"({d['peak_mib']:.0f} - {d['idle_mib']:.0f})MiB" for d in sampled)
    if devices:
        return "peak memory    " + " + ".join(f"{d['used_mib']:.0f}MiB" for d in devices) + \
            f" ({row.get('peak_mem_method')})"
    return None


def markdown(rows: list[dict], run_id: str, verdicts: list[dict] = (), comparisons: list[dict] = (),
             historical: list[dict] = ()) -> str:
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
        kinds = sorted({(r.get('environment') or {}).get('data_kind') for r in rows} - {None})
        out.append(f"* Data: {', '.join(kinds)} CIFAR-10")
    out.append("")
    for fw in dict.fromkeys(r["framework"] for r in rows):
        out += ["", f"## {FRAMEWORK_TITLES.get(fw, fw)}"]
        fw_rows = [r for r in rows if r["framework"] == fw]
        for combo in dict.fromkeys(combination(r) for r in fw_rows):
            out.append(f"### {combo}")
            for r in sorted((r for r in fw_rows if combination(r) == combo), key=lambda r: r["repeat"]):
                out.append("```")
                if r.get("command"):
                    out.append(f"$ time {short_command(r['command'])}")
                if r["status"] == "ok":
                    out += [f"real    {clock(r['wall_s'])}", f"user    {clock(r['user_s'])}",
                            f"sys     {clock(r['sys_s'])}"]
                    if memory_line(r):
                        out.append(memory_line(r))
                    if r.get("images_per_s"):
                        out.append(f"images/s       {r['images_per_s']:.1f} (steady state, repeat {r['repeat']})")
                else:
                    out.append(f"({r['status']})")
                    if r.get("error"):
                        out.append(r["error"])
                out.append("```")
            out.append("")
    mine = sorted((v for v in verdicts if v["run_id"] == run_id), key=lambda v: report_order({**v, "repeat": 0}))
    if mine:
        out += ["", "## Regressions against history", "",
                "| framework | device set | verdict | change | detail |", "|---|---|---|---|---|"]
        out += [f"| {v['framework']} | {v['device_set']} | {v['verdict']} | "
                f"{_fmt(v['change'], '+.1%')} | {v['detail']} |" for v in mine]
    if comparisons:
        out += ["", "## Driver and framework upgrades", "",
                "| framework | device set | before | after | before median | after median | after/before |",
                "|---|---|---|---|---|---|---|"]
        out += [f"| {c['framework']} | {c['device_set']} | {_versions(c['before'])} | {_versions(c['after'])} | "
                f"{c['before_median']:.3f} | {c['after_median']:.3f} | {c['ratio']:.3f} |" for c in comparisons]
    if historical:
        out += ["", "## Historical baseline (the original log)", "",
                "| framework | devices | repeat | status | real | user | sys | peak memory (MiB) |",
                "|---|---|---|---|---|---|---|---|"]
        out += [f"| {r['framework']} | {r.get('device_names') or r['device_set']} | {r['repeat']} | {r['status']} | "
                f"{clock(r.get('wall_s'))} | {clock(r.get('user_s'))} | {clock(r.get('sys_s'))} | "
                f"{_fmt(r.get('peak_mem_mib'), '.0f')} |"
                for r in sorted(historical, key=report_order)]
    return "\n".join(out).rstrip() + "\n"


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _versions(fields: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in fields.items() if v)


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def frame(rows: list[dict]):
    """The rows as a DataFrame for CSV/Parquet: scalar columns as they are, nested ones as JSON text."""
    import pandas as pd

    nested = ("epochs", "summary", "environment", "telemetry", "devices")
    return pd.DataFrame([{k: json.dumps(v, default=str) if k in nested else v for k, v in r.items()} for r in rows])


def write_all(rows: list[dict], folder: Path, latest: Path, run_id: str, *, history: list[dict] = (),
              verdicts: list[dict] = (), run_order: list[str] = (), comparisons: list[dict] = (),
              historical: list[dict] = ()) -> dict[str, Path]:
    """Write every report into the run's folder and copy them to the stable latest path."""
    from trainbench import html_report

    folder.mkdir(parents=True, exist_ok=True)
    files = {"markdown": folder / "report.md", "html": folder / "report.html", "csv": folder / "results.csv",
             "parquet": folder / "results.parquet"}
    files["markdown"].write_text(markdown(rows, run_id, verdicts, comparisons, historical))
    files["html"].write_text(html_report.render(run_id, rows, list(history), list(verdicts), list(comparisons),
                                                list(historical), list(run_order)))
    files["csv"].write_text(csv_text(rows))
    frame(rows).to_parquet(files["parquet"], index=False)
    latest.mkdir(parents=True, exist_ok=True)
    for path in files.values():
        shutil.copy2(path, latest / path.name)
    return files
