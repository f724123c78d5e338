"""Every benchmark runs: `--help`, and `--quick` (tiny sizes, the same code path) ending in its headline figure, so
none rots unseen while the code it measures changes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, write_config

SCRIPTS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_"))
N = r"\d[\d,]*(\.\d+)?"  # a figure as the scripts print it
HEADLINE = {  # the last line of each script's --quick run: a new script fails here until it has one
    "ab_power": rf"ab power: cv 2% false_alarms {N}% detect_5pct {N}% mean_repeats {N}",
    "dag_overhead": rf"dag overhead: {N}",
    "data_startup": rf"60,000 images ready in {N} s: (meets|MISSES) the target <= 0.3 s",
    "harness_overhead": rf"images/s  runner/bare: median ratio {N} \(min {N}, max {N}, n=2\)  \(target >= 0.995\)",
    "regression_power": rf"regression power after warm-up: wall_s false_alarms {N}% detect_15pct {N}%; "
    rf"images_per_s false_alarms {N}% detect_15pct {N}%",
    "repeatability": rf"warm \(after a warm-up run\) +wall median {N} s CV {N}% \| images/s median {N} CV {N}% \(n=2\)",
    "report_generation": rf"report 1000 rows: {N} s",
    "timing_agreement": rf"user\+sys runner/time: median ratio {N} \(min {N}, max {N}, n=2\)  \(target 0.98..1.02\)",
    "ui_page_load": rf"page /compare 1000 rows: first {N} ms, then {N} ms \({N} KiB\)",
    "variants": rf"\| mxnet-hybrid \| ok \| {N} \| {N} \| {N} \| {N} \| {N} \| {N} \| {N} \|",
}
STARTS_AIRFLOW = {"dag_overhead"}  # a whole Celery deployment: minutes


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """The scripts' environment: this checkout's packages and a configuration writing under a temporary folder
    (one for the module, so the trainers' synthetic data is written once)."""
    path = os.pathsep.join([str(ROOT / "include"), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")])
    config = write_config(tmp_path_factory.mktemp("benchmarks"))
    return {**os.environ, "PYTHONPATH": path, "TRAINBENCH_CONFIG": str(config)}


def benchmark(name: str, env: dict, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("name", SCRIPTS)
def test_help(name, env):
    done = benchmark(name, env, "--help", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.integration) if n in STARTS_AIRFLOW else n for n in SCRIPTS]
)
def test_quick_run_ends_in_its_figure(name, env):
    done = benchmark(name, env, "--quick", timeout=300 if name in STARTS_AIRFLOW else 120)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    last = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(HEADLINE[name], last), last
