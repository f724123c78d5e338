"""How long publishing takes as history grows: regression verdicts plus every report
(Markdown, HTML with charts, CSV, Parquet) for the newest run, with 100 and with 10,000
stored rows (`--rows`) side by side; prints both times and their ratio, and last `report 10000 rows: X s` (goal:
X <= 0.5 on an idle machine).

    .venv/bin/python benchmarks/report_generation.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

from trainbench import config
from trainbench.store.results import ResultStore, device_memory, results, runs
from trainbench.workflows import pipeline

from _common import parse, with_quick

FRAMEWORKS = ("neon", "mxnet", "pytorch", "jax")
DEVICE_SETS = ("0,1,2", "0,1", "0,2", "1,2", "0", "1", "2")
REPEATS = 3


def fill(store: ResultStore, total_rows: int) -> str:
    """Weekly runs of 4 frameworks x 7 GPU sets x 3 repeats until `total_rows` rows exist."""
    per_run = len(FRAMEWORKS) * len(DEVICE_SETS) * REPEATS
    start = dt.datetime(2020, 1, 6, tzinfo=dt.UTC)
    rows, devices, run_ids = [], [], []
    for week in range(-(-total_rows // per_run)):
        run_id = f"scheduled__{(start + dt.timedelta(weeks=week)):%Y-%m-%d}"
        run_ids.append(
            {"run_id": run_id, "source": "trainbench", "settings": {}, "created_at": start + dt.timedelta(weeks=week)}
        )
        for fw in FRAMEWORKS:
            for ds in DEVICE_SETS:
                n = len(ds.split(","))
                for rep in range(1, REPEATS + 1):
                    rid = len(rows) + 1
                    wall = 20.0 / n**0.8 * (1 + 0.01 * ((week * 7 + rep) % 5))
                    rows.append(
                        {
                            "id": rid,
                            "run_id": run_id,
                            "case_key": f"{fw}__{ds.replace(',', '-')}__r{rep}",
                            "env_key": "e1",
                            "framework": fw,
                            "device_set": ds,
                            "repeat": rep,
                            "status": "ok",
                            "wall_s": wall,
                            "user_s": wall * 0.9,
                            "sys_s": wall * 0.1,
                            "peak_mem_mib": 900.0 * n,
                            "images_per_s": 500_000 / wall,
                            "parameters": 420096,
                            "epochs": [{"epoch": e, "seconds": wall / 12, "loss": 2.0 / e} for e in range(1, 11)],
                            "environment": {"gpu_memory_total_mib": [81559.0] * n},
                            "telemetry": {},
                            "summary": {},
                            "started_at": start + dt.timedelta(weeks=week),
                        }
                    )
                    devices += [
                        {
                            "result_id": rid,
                            "position": i,
                            "device": f"GPU-{i}",
                            "name": "NVIDIA H100",
                            "idle_mib": 480.0,
                            "peak_mib": 1380.0,
                            "used_mib": 900.0,
                            "method": "nvml_sampled",
                        }
                        for i in range(n)
                    ]
                    if len(rows) == total_rows:
                        break
    with store.engine.begin() as conn:
        conn.execute(runs.insert(), run_ids)
        conn.execute(results.insert(), rows)
        conn.execute(device_memory.insert(), devices)
    return rows[-1]["run_id"]


def time_publish(total_rows: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trainbench.toml"
        path.write_text(f'[paths]\noutput_dir = "{tmp}/output"\n')
        cfg = config.load(path)
        store = ResultStore(cfg.database_url)
        run_id = fill(store, total_rows)
        started = time.perf_counter()
        pipeline.detect_regressions(cfg, run_id, log=lambda m: None)
        pipeline.publish(cfg, run_id)
        return time.perf_counter() - started


def main() -> None:
    p = with_quick(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    p.add_argument("--rows", type=int, default=10_000, help="stored rows of the large side")
    args = parse(p, rows=1_000)
    import scipy.stats  # noqa: F401 - the verdicts import it only once a case has history: warm it with the rest

    time_publish(100)  # warm imports (pandas, jinja2, ...) so neither side pays for them
    small, large = time_publish(100), time_publish(args.rows)
    print(f"verdicts + reports, 100 stored rows: {small:.2f} s")
    print(f"verdicts + reports, {args.rows:,} stored rows: {large:.2f} s")
    print(f"ratio {args.rows:,} / 100: {large / small:.2f}")
    print(f"report {args.rows} rows: {large:.2f} s")


if __name__ == "__main__":
    main()
