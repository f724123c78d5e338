"""The report's charts (matplotlib, embedded as PNG): wall time, images/s, memory per device, scaling
(speed-up and efficiency against the same framework's single-device run, as DLBS and Lambda's tables show
it), and each case's history with regressions marked."""

from __future__ import annotations

import base64
import html
import io
import statistics

from trainbench.checks.dispersion import measured
from trainbench.measure.memory import HOST_RSS, PEAK_MINUS_IDLE
from trainbench.measure.phases import PHASES
from trainbench.planning import workers_of
from trainbench.reports.rows import cases, combination, median_ok, median_phases, phase_title


def figure_html(fig, title: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    alt = html.escape(title)
    return f'<figure><img alt="{alt}" src="data:image/png;base64,{data}"><figcaption>{alt}</figcaption></figure>'


def scaling(rows: list[dict]) -> list[list]:
    """Per framework: each set's images/s against the same framework's best single-device run."""
    groups = cases(rows)
    out = []
    for (fw, ds), rs in groups.items():
        n = workers_of(ds)
        rate = median_ok(rs, "images_per_s")
        singles = [
            median_ok(v, "images_per_s")
            for (f, d), v in groups.items()
            if f == fw and workers_of(d) == 1 and d.startswith("cpu") == ds.startswith("cpu")
        ]
        best = max((s for s in singles if s), default=None)
        if rate and best and n > 1:
            speedup = rate / best
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

    groups = cases(rows)
    labels = [f"{fw} | {combination(rs[0])}" for (fw, _), rs in groups.items()]
    out = {}
    walls = [median_ok(rs, "wall_s") or 0.0 for rs in groups.values()]
    out["wall_time"] = figure_html(
        _bar_chart(labels, walls, "wall time (s), median of repeats", "Wall time per framework x device set"),
        "Wall time",
    )
    rates = [median_ok(rs, "images_per_s") or 0.0 for rs in groups.values()]
    out["images_per_s"] = figure_html(
        _bar_chart(labels, rates, "images/s (steady state)", "Steady-state throughput"), "Steady-state images/s"
    )
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(labels) + 2), 3.2))
    for i, rs in enumerate(groups.values()):
        ok = [r for r in rs if r["status"] == "ok" and r.get("devices")]
        bottom = 0.0
        if ok:
            for d in ok[0]["devices"]:
                if d["method"] in (*PEAK_MINUS_IDLE, HOST_RSS) and d.get("used_mib") is not None:
                    ax.bar(i, d["used_mib"], bottom=bottom, edgecolor="white")
                    bottom += d["used_mib"]
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("MiB (per device, stacked)")
    ax.set_title("Peak memory per device (GPU: peak - idle; CPU: host RSS)", fontsize=10)
    out["memory"] = figure_html(fig, "Memory per device")
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
        out["scaling"] = figure_html(fig, "Scaling")
    phases = phases_chart(rows)
    if phases:
        out["phases"] = phases
    out["history"] = history_chart(rows, history, verdicts, run_order)
    return out


def history_chart(rows: list[dict], history: list[dict], verdicts: list[dict], run_order: list[str]) -> str:
    """Median wall time per run for each case and environment of this run, oldest first; flagged runs marked.

    One line per environment key: a driver upgrade starts a new line instead of a step in the old one.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rank = {run: i for i, run in enumerate(run_order)}
    flagged = {
        (v["run_id"], v["framework"], v["device_set"], v["env_key"]): v["verdict"]
        for v in verdicts
        if v["verdict"] in ("regressed", "improved")
    }
    fig, ax = plt.subplots(figsize=(8, 3.6))
    seen_x: set[int] = set()
    for fw, ds, key in dict.fromkeys((r["framework"], r["device_set"], r["env_key"]) for r in rows):
        per_run: dict[str, list[float]] = {}
        for r in measured(history + rows):
            if (
                (r["framework"], r["device_set"], r["env_key"]) == (fw, ds, key)
                and r["status"] == "ok"
                and r.get("wall_s")
            ):
                per_run.setdefault(r["run_id"], []).append(r["wall_s"])
        runs = sorted(per_run, key=lambda run: rank.get(run, len(rank)))
        if not runs:
            continue
        xs = [rank.get(run, len(rank)) for run in runs]
        seen_x.update(xs)
        ys = [statistics.median(per_run[run]) for run in runs]
        ax.plot(xs, ys, marker="o", ms=3, label=f"{fw} | {ds} | env {key[:6]}")
        for x, y, run in zip(xs, ys, runs):
            mark = flagged.get((run, fw, ds, key))
            if mark:
                ax.plot(
                    x,
                    y,
                    marker="v" if mark == "regressed" else "^",
                    ms=10,
                    color="red" if mark == "regressed" else "green",
                )
    ax.set_xlabel("run (oldest to newest)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(seen_x) == 1:
        (only,) = seen_x
        ax.set_xlim(only - 1, only + 1)  # a single run: one point in the middle, not a fractional axis
    ax.set_ylabel("wall time (s), median")
    ax.set_title("History per case (red: regressed, green: improved)", fontsize=10)
    if ax.lines:
        ax.legend(fontsize=7, loc="best")
    return figure_html(fig, "History per case")


PHASE_COLOURS = ("#8172b3", "#937860", "#dd8452", "#4c72b0", "#55a868", "#c44e52")


def phases_chart(rows: list[dict]) -> str | None:
    """One stacked bar per case: the median seconds of each phase, startup to teardown."""
    import matplotlib.pyplot as plt

    groups = [
        (f"{fw} | {combination(rs[0])}", timeline)
        for (fw, _), rs in cases(rows).items()
        if (timeline := median_phases(rs)) is not None
    ]
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(groups) + 1.4))
    left = [0.0] * len(groups)
    for phase, colour in zip(PHASES, PHASE_COLOURS):
        widths = [timeline[phase] for _, timeline in groups]
        ax.barh(range(len(groups)), widths, left=left, color=colour, label=phase_title(phase))
        left = [a + b for a, b in zip(left, widths)]
    ax.set_yticks(range(len(groups)), [label for label, _ in groups], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (median of repeats)")
    ax.set_title("Where the wall time goes", fontsize=10)
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    return figure_html(fig, "Phases per case")
