"""The self-contained HTML report: tables and matplotlib charts embedded as PNG.

Charts: wall time per framework x device set, scaling (speed-up and efficiency against the
single-device run of the same framework, as DLBS and Lambda's tables show it), memory per
device, steady-state images/s, and each case's history with regressions marked.
"""

from __future__ import annotations

import base64
import html
import io
import statistics

from trainbench.report import PEAK_MINUS_IDLE, combination, report_order


def _figure_html(fig, title: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(title)}</figcaption></figure>'


def _table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3f}"
        return html.escape("" if v is None else str(v))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cases(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    cases: dict[tuple[str, str], list[dict]] = {}
    for r in sorted(rows, key=report_order):
        cases.setdefault((r["framework"], r["device_set"]), []).append(r)
    return cases


def _median(rows: list[dict], field: str) -> float | None:
    values = [r[field] for r in rows if r["status"] == "ok" and r.get(field) is not None]
    return statistics.median(values) if values else None


def _workers(device_set: str) -> int:
    return int(device_set.partition(":")[2] or 1) if device_set.startswith("cpu") else len(device_set.split(","))


def scaling(rows: list[dict]) -> list[list]:
    """Per framework: each set's images/s against the same framework's best single-device run."""
    cases = _cases(rows)
    out = []
    for (fw, ds), rs in cases.items():
        n = _workers(ds)
        rate = _median(rs, "images_per_s")
        singles = [_median(v, "images_per_s") for (f, d), v in cases.items()
                   if f == fw and _workers(d) == 1 and d.startswith("cpu") == ds.startswith("cpu")]
        singles = [s for s in singles if s]
        if rate and singles and n > 1:
            speedup = rate / max(singles)
            out.append([fw, ds, n, rate, speedup, speedup / n])
    return out


def _bar_chart(labels: list[str], values: list[float], ylabel: str, title: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(labels) + 2), 3.2))
    ax.bar(range(len(values)), values, color="#4c72b0")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    return fig


def charts(rows: list[dict], history: list[dict], verdicts: list[dict], run_order: list[str]) -> dict[str, str]:
    """Every chart of the report, as HTML figures keyed by name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = _cases(rows)
    labels = [f"{fw} | {combination(rs[0])}" for (fw, _), rs in cases.items()]
    out = {}
    walls = [_median(rs, "wall_s") or 0.0 for rs in cases.values()]
    out["wall_time"] = _figure_html(_bar_chart(labels, walls, "wall time (s), median of repeats",
                                               "Wall time per framework x device set"), "Wall time")
    rates = [_median(rs, "images_per_s") or 0.0 for rs in cases.values()]
    out["images_per_s"] = _figure_html(_bar_chart(labels, rates, "images/s (steady state)",
                                                  "Steady-state throughput"), "Steady-state images/s")
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(labels) + 2), 3.2))
    for i, rs in enumerate(cases.values()):
        ok = [r for r in rs if r["status"] == "ok" and r.get("devices")]
        bottom = 0.0
        if ok:
            for d in ok[0]["devices"]:
                if d["method"] in (*PEAK_MINUS_IDLE, "host_rss") and d.get("used_mib") is not None:
                    ax.bar(i, d["used_mib"], bottom=bottom, edgecolor="white")
                    bottom += d["used_mib"]
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("MiB (per device, stacked)")
    ax.set_title("Peak memory per device (GPU: peak - idle; CPU: host RSS)", fontsize=10)
    out["memory"] = _figure_html(fig, "Memory per device")
    scale = scaling(rows)
    if scale:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
        names = [f"{r[0]} | {r[1]}" for r in scale]
        a1.bar(range(len(scale)), [r[4] for r in scale], color="#55a868")
        a1.set_xticks(range(len(scale)), names, rotation=30, ha="right", fontsize=8)
        a1.set_title("Speed-up vs single device", fontsize=10)
        a2.bar(range(len(scale)), [r[5] for r in scale], color="#c44e52")
        a2.axhline(1.0, color="grey", lw=0.8)
        a2.set_xticks(range(len(scale)), names, rotation=30, ha="right", fontsize=8)
        a2.set_title("Scaling efficiency (speed-up / devices)", fontsize=10)
        out["scaling"] = _figure_html(fig, "Scaling")
    out["history"] = history_chart(rows, history, verdicts, run_order)
    return out


def history_chart(rows: list[dict], history: list[dict], verdicts: list[dict], run_order: list[str]) -> str:
    """Median wall time per run for each case and environment of this run, oldest first; flagged runs marked.

    One line per environment key: a driver upgrade starts a new line instead of a step in the old one.
    """
    import matplotlib.pyplot as plt

    rank = {run: i for i, run in enumerate(run_order)}
    flagged = {(v["run_id"], v["framework"], v["device_set"], v["env_key"]): v["verdict"] for v in verdicts
               if v["verdict"] in ("regressed", "improved")}
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for fw, ds, key in dict.fromkeys((r["framework"], r["device_set"], r["env_key"]) for r in rows):
        per_run: dict[str, list[float]] = {}
        for r in history + rows:
            if (r["framework"], r["device_set"], r["env_key"]) == (fw, ds, key) and r["status"] == "ok" \
                    and r.get("wall_s"):
                per_run.setdefault(r["run_id"], []).append(r["wall_s"])
        runs = sorted(per_run, key=lambda run: rank.get(run, len(rank)))
        if not runs:
            continue
        xs = [rank.get(run, len(rank)) for run in runs]
        ys = [statistics.median(per_run[run]) for run in runs]
        ax.plot(xs, ys, marker="o", ms=3, label=f"{fw} | {ds} | env {key[:6]}")
        for x, y, run in zip(xs, ys, runs):
            mark = flagged.get((run, fw, ds, key))
            if mark:
                ax.plot(x, y, marker="v" if mark == "regressed" else "^", ms=10,
                        color="red" if mark == "regressed" else "green")
    ax.set_xlabel("run (oldest to newest)")
    ax.set_ylabel("wall time (s), median")
    ax.set_title("History per case (red: regressed, green: improved)", fontsize=10)
    if ax.lines:
        ax.legend(fontsize=7, loc="best")
    return _figure_html(fig, "History per case")


CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
       "margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}"
       "th{background:#f0f0f0}figure{display:inline-block;margin:1em}.regressed{color:#b00}")


def render(run_id: str, rows: list[dict], history: list[dict], verdicts: list[dict], comparisons: list[dict],
           historical: list[dict], run_order: list[str]) -> str:
    figures = charts(rows, history, verdicts, run_order)
    results = [[r["framework"], r["device_set"], combination(r), r["repeat"], r["status"], r.get("wall_s"),
                r.get("user_s"), r.get("sys_s"), r.get("peak_mem_mib"), r.get("images_per_s"),
                (r.get("error") or "").strip().rpartition("\n")[2]]
               for r in sorted(rows, key=report_order)]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>trainbench {html.escape(run_id)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>trainbench run <code>{html.escape(run_id)}</code></h1>"]
    parts.append("<h2>Results</h2>")
    parts.append(_table(["framework", "device set", "devices", "repeat", "status", "wall s", "user s", "sys s",
                         "peak MiB", "images/s", "error"], results))
    parts += [figures["wall_time"], figures["images_per_s"], figures["memory"]]
    if "scaling" in figures:
        parts.append("<h2>Scaling</h2>")
        parts.append(_table(["framework", "device set", "devices", "images/s", "speed-up", "efficiency"],
                            scaling(rows)))
        parts.append(figures["scaling"])
    parts.append("<h2>Regressions</h2>")
    parts.append(_table(["framework", "device set", "metric", "verdict", "current", "baseline", "change", "p",
                         "history runs", "detail"],
                        [[v["framework"], v["device_set"], v["metric"], v["verdict"], v["current"], v["baseline"],
                          v["change"], v["p_value"], v["history_runs"], v["detail"]]
                         for v in verdicts if v["run_id"] == run_id]))
    parts.append(figures["history"])
    if comparisons:
        parts.append("<h2>Driver and framework upgrades</h2>")
        parts.append(_table(["framework", "device set", "before", "after", "before median", "after median",
                             "after / before"],
                            [[c["framework"], c["device_set"], c["before"], c["after"], c["before_median"],
                              c["after_median"], c["ratio"]] for c in comparisons]))
    if historical:
        parts.append("<h2>Historical baseline (the original log)</h2>")
        parts.append(_table(["framework", "devices", "repeat", "status", "wall s", "user s", "sys s", "peak MiB"],
                            [[r["framework"], r.get("device_names") or r["device_set"], r["repeat"], r["status"],
                              r.get("wall_s"), r.get("user_s"), r.get("sys_s"), r.get("peak_mem_mib")]
                             for r in sorted(historical, key=report_order)]))
    parts.append("</body></html>")
    return "\n".join(parts)
