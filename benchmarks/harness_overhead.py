"""What does measuring cost? The same trainer run bare (plain subprocess) and through the
runner with every sampler on and its output read line by line (as the harness runs it), alternated over
several pairs; prints the median wall ratio (target <= 1.01) and, last, the trainer's steady-state images/s
ratio (target >= 0.995).

    .venv/bin/python benchmarks/harness_overhead.py --pairs 5
"""

from __future__ import annotations

import subprocess
import time

from trainbench import devices
from trainbench.measure import sampling

from _common import TRAINER_QUICK, child_env, describe, launched, parse, parser, trainer_launch


def monitors(case) -> list:
    found = [sampling.HostRssMonitor()]
    if case.device_set.kind == "gpu":
        nvml, _ = devices.load_nvml()
        found.append(sampling.GpuMonitor(nvml, case.device_set.gpu_uuids))
    return found


def bare_run(spec, env) -> tuple[float, float]:
    """The trainer under a plain subprocess: no subreaper, no samplers, no line callbacks."""
    started = time.perf_counter()
    bare = subprocess.run(spec.argv, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, spec.reader().report(bare.stdout.splitlines()).steady_images_per_s


def main() -> None:
    args = parse(parser(__doc__.splitlines()[0]), **TRAINER_QUICK)
    spec, case, _ = trainer_launch(args)
    env = child_env(spec)
    walls, rates, samples = [], [], []
    for i in range(args.pairs):
        if i % 2:  # alternate which side goes first, so drift does not favour one
            measured, report = launched(spec, monitors=monitors(case))
            bare_wall, bare_rate = bare_run(spec, env)
        else:
            bare_wall, bare_rate = bare_run(spec, env)
            measured, report = launched(spec, monitors=monitors(case))
        rate = report.steady_images_per_s
        walls.append((measured.wall_s, bare_wall))
        rates.append((rate, bare_rate))
        samples.append(measured.monitors.get("gpu_samples", measured.monitors["host_rss_samples"]))
        print(
            f"pair {i + 1}: bare {bare_wall:.3f} s {bare_rate:.1f} images/s | "
            f"runner {measured.wall_s:.3f} s {rate:.1f} images/s, {samples[-1]} samples",
            flush=True,
        )
    print(
        f"{case.label}, {args.epochs} epochs, {args.train_images} images, samplers: "
        f"{', '.join(type(m).__name__ for m in monitors(case))}"
    )
    print(describe("wall      runner/bare", walls) + "  (target <= 1.01)")
    print(describe("images/s  runner/bare", rates) + "  (target >= 0.995)")


if __name__ == "__main__":
    main()
