"""Each framework as its users run it fast, beside its eager self: steady seconds per epoch and start-up
seconds (the phase timeline: interpreter and framework start-up, data to the device, first epoch with
compilation) per registry entry, all in one run on one device set, each through the runner the DAG uses.

    .venv/bin/python benchmarks/variants.py --device-set cpu --epochs 3 --train-images 4096
"""

from __future__ import annotations

import argparse
import statistics

from trainbench import frameworks
from trainbench.measure import outcome, phases

from _common import TRAINER_QUICK, launched, parse, parser, trainer_launch

DEFAULT = ("pytorch", "pytorch-graph", "mxnet", "mxnet-hybrid", "jax")


def measure(args: argparse.Namespace, name: str) -> dict:
    spec, case, _ = trainer_launch(argparse.Namespace(**{**vars(args), "framework": name}))
    result, report = launched(spec, timeout_s=3600)
    status, error = outcome.classify(result, report, frameworks.REGISTRY[name].modules)
    timeline = phases.timeline(report, result.launched_at, result.exited_at) or {}
    steady = [e["seconds"] for e in report.epochs[1:]]
    return {
        "name": name,
        "device_set": case.device_set.text,
        "status": status,
        "error": (error or "").splitlines()[-1:],
        "steady_s": statistics.median(steady) if steady else None,
        "images_per_s": report.steady_images_per_s,
        "first_epoch_s": timeline.get("first_epoch"),
        "startup_s": timeline.get("startup"),
        "data_s": timeline.get("data"),
        "wall_s": result.wall_s,
        "loss": report.losses[0] if report.losses else None,
    }


def cell(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--frameworks", nargs="+", default=list(DEFAULT), choices=list(frameworks.NAMES))
    args = parse(p, **TRAINER_QUICK, frameworks=["mxnet", "mxnet-hybrid"])  # an entry beside its eager self, fast
    rows = []
    for name in args.frameworks:
        rows.append(measure(args, name))
        r = rows[-1]
        print(f"{name}: {r['status']} {' '.join(r['error'])}", flush=True)
    print(f"\n{rows[0]['device_set']}, {args.epochs} epochs of {args.train_images} images, batch 128")
    header = (
        "| entry | status | steady s/epoch | steady images/s | start-up s | data s | first epoch s | wall s "
        "| epoch-1 loss |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for r in rows:
        print(
            f"| {r['name']} | {r['status']} | {cell(r['steady_s'])} | {cell(r['images_per_s'], '.0f')} | "
            f"{cell(r['startup_s'], '.2f')} | {cell(r['data_s'], '.2f')} | {cell(r['first_epoch_s'], '.2f')} | "
            f"{cell(r['wall_s'], '.2f')} | {cell(r['loss'], '.4f')} |"
        )


if __name__ == "__main__":
    main()
