"""What does Airflow cost a benchmark run? A 12-case CPU matrix (pytorch, mxnet, jax x cpu, cpu:2 x 2 repeats)
through the real Celery deployment (tests/deployment.py: PostgreSQL, Redis, scheduler, one "GPU host" worker),
triggered through the REST API.  Prints the median gap on the host between one case's end and the next case's
start, both as Airflow sees its tasks and as the trainers saw it (target <= 1 s), and last the DAG wall time over
the sum of the trainers' wall times, `dag overhead: X` (goal <= 1.05 for cases of about 20 s).  `--quick`: two tiny
pytorch cases.

    .venv/bin/python benchmarks/dag_overhead.py --epochs 3 --train-images 8192
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from trainbench.store.results import ResultStore

from _common import parse, with_quick
from deployment import Deployment


def main() -> None:
    p = with_quick(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    p.add_argument("--frameworks", nargs="+", default=["pytorch", "mxnet", "jax"])
    p.add_argument("--device-sets", nargs="+", default=["cpu", "cpu:2"])
    p.add_argument("--repeats", type=int, default=2, help="at least 2 cases in all: the gaps lie between them")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-images", type=int, default=8192)
    args = parse(p, frameworks=["pytorch"], device_sets=["cpu"], epochs=2, train_images=256)
    conf = {
        "frameworks": args.frameworks,
        "device_sets": args.device_sets,
        "repeats": args.repeats,
        "epochs": args.epochs,
        "train_images": args.train_images,
        "dataset": "synthetic",
    }
    with tempfile.TemporaryDirectory(prefix="dag-overhead-") as tmp:
        d = Deployment(Path(tmp), ("gpu",))
        try:
            d.up()
            run_id = d.trigger(conf)
            print(f"{run_id}: {conf}", flush=True)
            state = d.finished(run_id, timeout_s=3600)
            run = d.run(run_id)
            tis = sorted(
                (t for t in d.task_instances(run_id) if t["task_id"] == "gpu.train"), key=lambda t: t["start_date"]
            )
            store = ResultStore(d.results.url)
            rows = sorted(store.current_rows(run_id), key=lambda r: r["started_at"])
            store.engine.dispose()
        finally:
            d.down()
    when = dt.datetime.fromisoformat
    dag_wall = (when(run["end_date"]) - when(run["start_date"])).total_seconds()
    case_walls = [r["wall_s"] for r in rows]
    task_gaps = [(when(b["start_date"]) - when(a["end_date"])).total_seconds() for a, b in zip(tis, tis[1:])]
    ends = [r["started_at"] + dt.timedelta(seconds=r["wall_s"]) for r in rows]
    case_gaps = [(b["started_at"] - end).total_seconds() for end, b in zip(ends, rows[1:])]
    print(
        f"state {state}; {len(rows)} cases, trainer wall {min(case_walls):.1f}-{max(case_walls):.1f} s "
        f"(median {statistics.median(case_walls):.1f} s)"
    )
    print(
        f"gap between consecutive train tasks on the host (Airflow): median {statistics.median(task_gaps):.2f} s "
        f"(min {min(task_gaps):.2f}, max {max(task_gaps):.2f}, n={len(task_gaps)})"
    )
    print(
        f"gap between one trainer's exit and the next case's start (fingerprint, then launch): "
        f"median {statistics.median(case_gaps):.2f} s "
        f"(min {min(case_gaps):.2f}, max {max(case_gaps):.2f}, n={len(case_gaps)})"
    )
    print(f"DAG wall {dag_wall:.1f} s / sum of case walls {sum(case_walls):.1f} s")
    print(f"dag overhead: {dag_wall / sum(case_walls):.3f}")


if __name__ == "__main__":
    main()
