"""Shared set-up of the benchmarks: a trainer command on synthetic data, from the project's config."""

from __future__ import annotations

import argparse
import os
import statistics

from trainbench import config, devices, frameworks
from trainbench.planning import Case, TrainingJob, resolve_device_set
from trainbench.workflows.pipeline import discover_devices, prepare_dataset


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--framework", default="pytorch")
    p.add_argument("--device-set", default=None, help='default: "0" on a GPU host, else "cpu"')
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-images", type=int, default=4096, help="0 for the whole set")
    p.add_argument("--pairs", type=int, default=5)
    return p


def trainer_launch(args) -> tuple[frameworks.LaunchSpec, Case, devices.Inventory]:
    cfg = config.load()
    inv = devices.discover()
    text = args.device_set or ("0" if inv.gpus else "cpu")
    case = Case(args.framework, resolve_device_set(text, inv), 1)
    dataset = prepare_dataset(cfg, cfg.settings.overridden(dataset="auto"), discover_devices())
    job = TrainingJob(
        data_dir=dataset["data_dir"], epochs=args.epochs, batch_size=128, seed=0, train_images=args.train_images or None
    )
    return frameworks.launch_spec(cfg.interpreter(args.framework), case, job), case, inv


def child_env(spec: frameworks.LaunchSpec) -> dict[str, str]:
    return {**os.environ, **spec.environ}


def describe(label: str, pairs: list[tuple[float, float]]) -> str:
    ratios = sorted(a / b for a, b in pairs if b)
    spread = f"min {ratios[0]:.4f}, max {ratios[-1]:.4f}, n={len(ratios)}"
    return f"{label}: median ratio {statistics.median(ratios):.4f} ({spread})"
