"""Does the runner report what `time` reports? The same trainer command, alternately
under /usr/bin/time -v and under the runner; prints runner/time ratios of wall and, last, of user+sys.

Targets: wall within 1 %, user+sys within 2 %.

    .venv/bin/python benchmarks/timing_agreement.py --pairs 5
"""

from __future__ import annotations

import re
import subprocess

from trainbench.measure import runner

from _common import TRAINER_QUICK, child_env, describe, parse, parser, trainer_launch


def gnu_time(argv: list[str], env: dict) -> tuple[float, float]:
    """Wall and user+sys as GNU time -v reports them."""
    err = subprocess.run(["/usr/bin/time", "-v", *argv], env=env, capture_output=True, text=True).stderr
    user = float(re.search(r"User time \(seconds\): ([\d.]+)", err).group(1))
    sys_ = float(re.search(r"System time \(seconds\): ([\d.]+)", err).group(1))
    h, m, s = (
        [0, 0] + re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", err).group(1).split(":")
    )[-3:]
    return int(h) * 3600 + int(m) * 60 + float(s), user + sys_


def main() -> None:
    args = parse(parser(__doc__.splitlines()[0]), **TRAINER_QUICK)
    spec, case, _ = trainer_launch(args)
    env = child_env(spec)
    walls, cpus = [], []
    for i in range(args.pairs):
        if i % 2:  # alternate which side goes first, so drift does not favour one
            theirs = gnu_time(spec.argv, env)
            ours = runner.run(spec.argv, env=env)
        else:
            ours = runner.run(spec.argv, env=env)
            theirs = gnu_time(spec.argv, env)
        walls.append((ours.wall_s, theirs[0]))
        cpus.append((ours.user_s + ours.sys_s, theirs[1]))
        print(
            f"pair {i + 1}: runner wall {ours.wall_s:.3f} s cpu {ours.user_s + ours.sys_s:.3f} s | "
            f"time wall {theirs[0]:.3f} s cpu {theirs[1]:.3f} s",
            flush=True,
        )
    print(f"{case.label}, {args.epochs} epochs, {args.train_images} images")
    print(describe("wall     runner/time", walls) + "  (target 0.99..1.01)")
    print(describe("user+sys runner/time", cpus) + "  (target 0.98..1.02)")


if __name__ == "__main__":
    main()
