"""GPU acceptance as far as a CPU host allows: the goals judged on made rows (pass, fail, not applicable, not
measured), the GPU state left as found, the whole orchestration through the core pipeline with the NVML stand-in
(trainers that cannot see its GPU: not measured, never a crash), and the CLI without a GPU."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time

import pytest

from trainbench import config
from trainbench.measure.memory import NVML_ACCOUNTING, NVML_SAMPLED
from trainbench.result import Result
from trainbench.store.results import open_store
from trainbench.trainers import cifar10
from trainbench.workflows import gpu_check

from conftest import ROOT, write_config
from nvml_standin import Device, StandInNvml

H200 = "NVIDIA H200"


def row(
    fw: str,
    repeat: int,
    epoch_s: float,
    wall_s: float = 20.0,
    launch_s: float = 5.0,
    sampled: float = 1628.8,
    accounted: float | None = 1620.0,
    gpu: str = H200,
    **fields,
) -> Result:
    """A repeat of `fw` on one GPU: a 3 s first epoch, then nine of `epoch_s`; launch to first step `launch_s`."""
    devices = [{"device": "GPU-0", "used_mib": sampled, "method": NVML_SAMPLED}]
    if accounted is not None:
        devices.append({"device": "GPU-0", "used_mib": accounted, "method": NVML_ACCOUNTING})
    return Result(
        **{
            "run_id": "gpu_check__t",
            "case_key": f"{fw}-{repeat}-{fields.get('warmup', False)}",
            "env_key": "e",
            "framework": fw,
            "device_set": "0",
            "repeat": repeat,
            "status": "ok",
            "device_names": gpu,
            "wall_s": wall_s,
            "images_per_s": 50_000 / epoch_s,
            "epochs": [{"epoch": 1, "seconds": 3.0}] + [{"epoch": e, "seconds": epoch_s} for e in range(2, 11)],
            "phases": {"startup": launch_s - 1.0, "data": 1.0, "first_epoch": 3.0},
            "devices": devices,
            **fields,
        }
    )


def rows(graph=0.207, eager=0.75, jax=0.15, walls=(20.0, 20.1, 19.9, 20.05), gpu=H200, **kw) -> list[Result]:
    found = []
    for fw, epoch_s in (("pytorch", eager), ("pytorch-graph", graph), ("jax", jax)):
        found.append(row(fw, 0, 9.0, wall_s=60.0, launch_s=30.0, gpu=gpu, warmup=True))
        found.append(row(fw, 1, 9.0, gpu=gpu, status="crashed", error="Traceback\nRuntimeError: CUDA error"))
        found += [row(fw, i + 1, epoch_s * (1 + i / 1000), wall_s=w, gpu=gpu, **kw) for i, w in enumerate(walls)]
    return found


def statuses(found: list[gpu_check.Goal]) -> dict[str, str]:
    return {g.figure: g.status for g in found}


def test_every_goal_passes_on_good_figures_and_warmups_and_failed_repeats_never_count():
    found = gpu_check.goals(rows())
    assert set(statuses(found).values()) == {gpu_check.PASS}, gpu_check.table(found)
    assert len(found) == 2 + 3 * 4
    graph = next(g for g in found if g.figure == "PyTorch graph: steady epoch")
    assert graph.goal == "<= 0.22 s on H100/H200" and graph.measured.startswith("0.207 s (median of 4, ")


def test_each_goal_fails_on_figures_beyond_it():
    found = statuses(
        gpu_check.goals(rows(graph=0.25, eager=0.92, walls=(20.0, 22.0, 19.0, 21.0), launch_s=7.0, sampled=1660.0))
    )
    assert found["PyTorch graph: steady epoch"] == found["PyTorch: steady epoch"] == gpu_check.FAIL
    for fw in gpu_check.FRAMEWORKS:
        assert found[f"{fw}: launch to first step"] == gpu_check.FAIL
        assert found[f"{fw}: repeat CV of wall time"] == gpu_check.FAIL
        assert found[f"{fw}: sampled memory vs accounting"] == gpu_check.FAIL
    noisy = [row("jax", i, 0.15 * (1 + 0.05 * i)) for i in range(1, 5)]
    assert statuses(gpu_check.goals(noisy))["jax: repeat CV of images/s"] == gpu_check.FAIL


def test_per_epoch_goals_are_shown_but_not_judged_off_h100_and_h200():
    found = {g.figure: g for g in gpu_check.goals(rows(gpu="NVIDIA A100-SXM4-80GB", eager=0.92))}
    eager = found["PyTorch: steady epoch"]
    assert eager.status == gpu_check.NOT_APPLICABLE and eager.measured.endswith("on NVIDIA A100-SXM4-80GB")
    assert found["jax: launch to first step"].status == gpu_check.PASS


@pytest.mark.parametrize(
    ("made", "figure", "why"),
    [
        ([row("jax", 1, 0.15)], "jax: repeat CV of wall time", "1 counted repeat(s): a CV needs 2"),
        ([row("jax", 1, 0.15, accounted=None)], "jax: sampled memory vs accounting", "no accounting figure"),
        ([row("jax", 1, 0.15)], "pytorch: launch to first step", "not run"),
        (
            [row("jax", 1, 0.15, status="oom", error="CUDA out of memory")],
            "jax: launch to first step",
            "1 oom: CUDA out of memory",
        ),
    ],
)
def test_what_was_not_measured_says_why(made, figure, why):
    goal = next(g for g in gpu_check.goals(made) if g.figure == figure)
    assert goal.status == gpu_check.NOT_MEASURED and goal.measured.startswith(why)


def test_the_gpu_state_must_be_left_as_found():
    before = {"GPU-0": {"accounting_mode": 0, "graphics_clock_mhz": 1755, "memory_clock_mhz": 2619}}
    assert gpu_check.state_goal(before, before, rows()).status == gpu_check.PASS
    changed = gpu_check.state_goal(before, {"GPU-0": {**before["GPU-0"], "accounting_mode": 1}}, [])
    assert changed.status == gpu_check.FAIL and changed.measured == "GPU-0 accounting_mode 0 -> 1"
    stuck = row("pytorch", 1, 0.8, telemetry={"clock_lock": {"restore_failed": {"GPU-0": "NVMLError_NoPermission"}}})
    found = gpu_check.state_goal(before, before, [stuck])
    assert found.status == gpu_check.FAIL and found.measured == "GPU-0 clock lock not reset: NVMLError_NoPermission"


def test_the_whole_check_with_a_gpu_its_trainers_cannot_see_reports_instead_of_crashing(tmp_path):
    cfg = config.load(write_config(tmp_path))
    cifar10.write_synthetic(str(tmp_path / "output" / "gpu_check" / "data" / cifar10.synthetic_name(0)), 0, 256, 64)
    nvml = StandInNvml([Device("GPU-0aaa-0000", H200, "00000000:01:00.0")])
    lines: list[str] = []
    assert gpu_check.main(cfg, "gpu", nvml, repeats=1, warmup=0, out=lines.append) == 1
    assert any(line.startswith("FAIL  frameworks: no framework of the run can measure here (") for line in lines)
    assert lines[-1] == "gpu-check: the doctor failed (frameworks): GPU acceptance not measured"

    lines.clear()
    settings = gpu_check.settings_for(cfg, gpu_host=True, repeats=1, warmup=0)
    assert (settings.device_sets, settings.epochs, settings.train_images) == (("0",), 10, None)
    report = gpu_check.acceptance(
        cfg, "gpu", nvml, settings, started=time.perf_counter() - gpu_check.BUDGET_S, out=lines.append
    )
    progress = [l for l in lines if l.startswith("[")]
    assert [l.split("] ")[1].split(":")[0] for l in progress] == [
        "pytorch | 0 | r1",
        "pytorch-graph | 0 | r1",
        "jax | 0 | r1",
    ]
    assert all(": crashed: " in l for l in progress)
    goals = {g["figure"]: g for g in report["goals"]}
    assert goals["jax: launch to first step"]["status"] == gpu_check.NOT_MEASURED
    assert goals["jax: launch to first step"]["measured"].startswith("1 crashed: ")
    assert goals["GPU state after the run"]["status"] == gpu_check.PASS
    assert goals["gpu-check time"]["status"] == gpu_check.FAIL
    written = tmp_path / "output" / "gpu_check" / "runs" / report["run_id"] / "gpu_check.json"
    assert json.loads(written.read_text())["goals"] == report["goals"]
    assert lines[-1] == f"gpu-check: {report['elapsed_s']:.0f} s; figures in {written}"
    assert open_store(cfg.database_url).run_ids() == []
    assert len(open_store(gpu_check.own_folder(cfg).database_url).rows(report["run_id"])) == 3


FAKE_TRAINER = """#!{python}
import json, sys, time
if sys.argv[1] == "-c":  # the fingerprint's probe, then the doctor's
    if "'packages'" in sys.argv[2]:
        print(json.dumps({{"python": "3.12.3", "packages": {{"torch": "2.9.0", "jax": "0.7.2", "jaxlib": "0.7.2"}}}}))
    else:
        print(json.dumps({{"version": "2.9.0", "cuda": "CUDA 12.8", "gpus": 1, "nccl": "2.21.5"}}))
    sys.exit(0)
seconds = 0.02 if "graph" in sys.argv else 0.015 if "jax" in sys.argv[1] else 0.075
def emit(event, **fields):
    print(json.dumps({{"event": event, "t": time.time(), **fields}}), flush=True)
emit("start", framework="fake")
emit("mark", name="ready")
emit("mark", name="data")
for epoch in range(1, 11):  # as long as it claims: the harness holds epochs to the wall time it measured
    time.sleep(seconds * (3 if epoch == 1 else 1))
    emit("epoch", epoch=epoch, seconds=seconds * (3 if epoch == 1 else 1), images_per_s=50000 / seconds, loss=1.0)
emit("summary", test_accuracy=0.5)
"""


def test_a_gpu_host_whose_trainers_run_gets_its_goals_judged(tmp_path):
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_TRAINER.format(python=sys.executable))
    fake.chmod(0o755)
    cfg = config.load(write_config(tmp_path, interpreters={"pytorch": {"python": fake}, "jax": {"python": fake}}))
    cifar10.write_synthetic(str(tmp_path / "output" / "gpu_check" / "data" / cifar10.synthetic_name(0)), 0, 256, 64)
    lines: list[str] = []
    nvml = StandInNvml([Device("GPU-0aaa-0000", H200, "00000000:01:00.0")])
    assert gpu_check.main(cfg, "gpu", nvml, repeats=2, warmup=1, out=lines.append) == 1
    progress = [l.split("] ", 1)[1] for l in lines if l.startswith("[")]
    assert len(progress) == 9 and progress[0].startswith("pytorch | 0 | warm-up: ok, wall ")
    assert "steady epoch 0.075 s, launch to first step" in progress[0]
    goals = {g.split(" | ")[0].strip(): g.split(" | ")[-1] for g in lines if " | " in g and not g.startswith("[")}
    assert goals["PyTorch graph: steady epoch"] == goals["PyTorch: steady epoch"] == gpu_check.PASS
    assert all(goals[f"{fw}: launch to first step"] == gpu_check.PASS for fw in gpu_check.FRAMEWORKS)
    assert goals["jax: repeat CV of images/s"] == gpu_check.PASS
    assert goals["jax: sampled memory vs accounting"] == gpu_check.NOT_MEASURED
    assert goals["GPU state after the run"] == gpu_check.PASS


def test_without_a_gpu_it_says_so_and_exits_0_after_the_doctor_unless_the_doctor_fails(tmp_path):
    cfg_path = write_config(tmp_path)
    argv = [sys.executable, "-m", "trainbench", "--config", str(cfg_path), "gpu-check"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS  frameworks: usable: pytorch, pytorch-graph, jax" in done.stdout
    assert done.stdout.splitlines()[-1] == "gpu-check: no GPU on this host: GPU acceptance not measured"
    (tmp_path / "blocked").write_text("")
    blocked = dataclasses.replace(config.load(cfg_path), output_dir=tmp_path / "blocked" / "output")
    lines: list[str] = []
    assert gpu_check.main(blocked, "gpu", out=lines.append) == 1
    assert lines[-1] == "gpu-check: the doctor failed (output folder, results database): GPU acceptance not measured"
