"""Shared set-up of the benchmarks: a trainer command on synthetic data, from the project's config, launched and
read as the harness does; `--quick` for every script (tests/test_benchmarks.py runs each so none rots unseen)."""

from __future__ import annotations

import argparse
import statistics
import time

from trainbench import config, devices, frameworks
from trainbench.measure import environ, runner
from trainbench.measure.protocol import TrainerReport
from trainbench.planning import Case, TrainingJob, resolve_device_set
from trainbench.workflows.pipeline import discover_devices, prepare_dataset

TRAINER_QUICK = {"epochs": 2, "train_images": 256, "pairs": 2}  # two epochs: the first is never steady


def with_quick(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--quick", action="store_true", help="tiny sizes through the same code path, in well under a minute")
    return p


def parse(p: argparse.ArgumentParser, **quick) -> argparse.Namespace:
    """The command line; with --quick, `quick`'s values replace the defaults it leaves unset."""
    args = p.parse_args()
    if args.quick:
        p.set_defaults(**quick)
        args = p.parse_args()
    return args


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--framework", default="pytorch")
    p.add_argument("--device-set", default=None, help='default: "0" on a GPU host, else "cpu"')
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-images", type=int, default=4096, help="0 for the whole set")
    p.add_argument("--pairs", type=int, default=5)
    return with_quick(p)


def trainer_launch(args) -> tuple[frameworks.LaunchSpec, Case, devices.Inventory]:
    cfg = config.load()
    inv = devices.discover()
    text = args.device_set or ("0" if inv.gpus else "cpu")
    case = Case(args.framework, resolve_device_set(text, inv), 1)
    dataset = prepare_dataset(cfg, cfg.settings.overridden(dataset="auto"), discover_devices())
    job = TrainingJob(
        data_dir=dataset["data_dir"], epochs=args.epochs, batch_size=128, seed=0, train_images=args.train_images or None
    )
    spec = frameworks.launch_spec(cfg.interpreter(args.framework), case, job)
    if spec.prepare is not None:  # what must exist before the trainer starts (neon's data); never timed
        spec.prepare(print)
    return spec, case, inv


def child_env(spec: frameworks.LaunchSpec) -> dict[str, str]:
    """The trainer's environment as the harness gives it: the allowed part of ours plus the framework's."""
    return environ.trainer_environ(spec.environ)


def launched(spec: frameworks.LaunchSpec, **kwargs) -> tuple[runner.ProcessResult, TrainerReport]:
    """One trainer run through the runner, its output read as the harness reads it (each line as it arrives)."""
    reader = spec.reader()
    result = runner.run(
        spec.argv, env=child_env(spec), on_line=lambda stream, line: reader.feed(stream, line, time.time()), **kwargs
    )
    return result, reader.report(result.stdout_lines)


def describe(label: str, pairs: list[tuple[float, float]]) -> str:
    ratios = sorted(a / b for a, b in pairs if b)
    spread = f"min {ratios[0]:.4f}, max {ratios[-1]:.4f}, n={len(ratios)}"
    return f"{label}: median ratio {statistics.median(ratios):.4f} ({spread})"
