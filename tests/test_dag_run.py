"""The whole cifar10_benchmark DAG through Airflow (`airflow dags test`), real trainers on the CPU."""

import csv
import io
import re
import subprocess

import pytest

from trainbench import config
from trainbench.store.results import ResultStore

from conftest import BIN, dags_test, write_config

pytestmark = pytest.mark.integration


def trainbench_cli(env: dict, *args: str) -> str:
    return subprocess.run(
        [str(BIN / "python"), "-m", "trainbench", *args], env=env, capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture(scope="module")
def benchmark_run(airflow_db, tmp_path_factory):
    folder = tmp_path_factory.mktemp("dagrun")
    env = {**airflow_db, "TRAINBENCH_CONFIG": str(write_config(folder))}
    proc = dags_test(
        env,
        {
            "frameworks": ["pytorch", "pytorch-graph", "mxnet", "mxnet-hybrid", "jax", "neon"],
            "device_sets": ["cpu", "cpu:2"],
            "epochs": 2,
            "train_images": 1280,  # neon trains multiples of 5
            "repeats": 1,
        },
    )
    cfg = config.load(env["TRAINBENCH_CONFIG"])
    return proc, cfg, env


def test_dag_run_measures_every_case(benchmark_run):
    proc, cfg, _ = benchmark_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = ResultStore(cfg.database_url).rows()
    assert sorted((r["framework"], r["device_set"], r["repeat"], r["status"]) for r in rows) == sorted(
        [
            (fw, ds, 1, "ok")
            for fw in ("pytorch", "pytorch-graph", "mxnet", "mxnet-hybrid", "jax")
            for ds in ("cpu", "cpu:2")
        ]
        + [("neon", "cpu", 1, "ok"), ("neon", "cpu:2", 1, "unsupported")]
    )
    measured = [r for r in rows if r["status"] == "ok"]
    for r in measured:
        assert r["wall_s"] > 1 and r["user_s"] > 0.5 and r["sys_s"] > 0
        assert r["images_per_s"] > 0 and r["peak_mem_mib"] > 50
        assert r["parameters"] == (None if r["framework"] == "neon" else 420_096)  # neon's: tests/test_neon.py
        losses = [e["loss"] for e in r["epochs"]]
        assert len(losses) == 2 and losses[1] < losses[0]
        assert r["run_id"].startswith("manual__") and r["environment"]["data_kind"] == "synthetic"
    torch = {r["device_set"]: r for r in measured if r["framework"] == "pytorch"}
    assert torch["cpu"]["telemetry"]["tree_processes"] == 1
    assert torch["cpu:2"]["telemetry"]["tree_processes"] >= 3  # torchrun and its two workers
    assert torch["cpu:2"]["summary"]["devices"] == 2


def test_task_log_shows_progress_per_epoch(benchmark_run):
    proc, _, _ = benchmark_run
    out = proc.stdout + proc.stderr
    for label in (
        "pytorch | cpu | r1",
        "pytorch | cpu:2 | r1",
        "mxnet | cpu:2 | r1",
        "jax | cpu | r1",
        "neon | cpu | r1",
    ):
        assert f"{label}: epoch 1 " in out and f"{label}: epoch 2 " in out


def test_markdown_report_is_laid_out_like_the_original_log(benchmark_run):
    _, cfg, _ = benchmark_run
    text = (cfg.output_dir / "latest" / "report.md").read_text()
    assert "## PyTorch on `gpu`\n### CPU x 2 workers\n```\n$ time python -m torch.distributed.run" in text
    assert "### CPU\n```\n$ time python pytorch_train.py --data-dir" in text
    assert "## MXNet on `gpu`\n### CPU x 2 workers\n```\n$ time python" in text
    assert "## Neon on `gpu`\n### CPU x 2 workers\n```\n(unsupported)\ncpu:2: neon's CPU backend has no" in text
    assert "### CPU\n```\n$ time python cifar10_conv.py -b cpu -e 2 -z 128 -r 0 -w " in text
    assert text.index("## Neon") < text.index("## MXNet") < text.index("## PyTorch") < text.index("## JAX")
    graph, hybrid = (
        text.split(f"## {title} on `gpu`\n")[1].split("### CPU\n```\n$ time python ")[1]
        for title in ("PyTorch graph", "MXNet hybrid")
    )
    assert graph.startswith("pytorch_train.py") and "--variant graph" in graph.splitlines()[0]
    assert hybrid.startswith("mxnet_train.py") and "--variant hybrid" in hybrid.splitlines()[0]
    for key in ("real    ", "user    ", "sys     "):  # `time`'s format; a compiling run may take minutes
        assert len(re.findall(rf"^{key}\d+m\d+\.\d{{3}}s$", text, re.M)) == 11, key
    assert len(re.findall(r"^peak memory    ", text, re.M)) == 11


def test_results_cli_prints_every_row_as_csv(benchmark_run):
    _, _, env = benchmark_run
    rows = list(csv.DictReader(io.StringIO(trainbench_cli(env, "results", "--format", "csv"))))
    assert len(rows) == 12 and {r["device_set"] for r in rows} == {"cpu", "cpu:2"}
    assert set(rows[0]) >= {
        "run_id",
        "framework",
        "device_set",
        "repeat",
        "status",
        "wall_s",
        "user_s",
        "sys_s",
        "peak_mem_mib",
        "images_per_s",
        "error",
    }
    assert all(float(r["wall_s"]) > 0 for r in rows if r["status"] == "ok")


def test_unknown_device_fails_planning_naming_it(airflow_db, tmp_path):
    env = {**airflow_db, "TRAINBENCH_CONFIG": str(write_config(tmp_path))}
    proc = dags_test(env, {"device_sets": ["cpu", "3"]})
    out = proc.stdout + proc.stderr
    assert "device set '3': device '3' does not exist on this host; GPUs here: none" in out
    assert ResultStore(config.load(env["TRAINBENCH_CONFIG"]).database_url).rows() == []


def test_real_dataset_missing_says_where_and_how(airflow_db, tmp_path):
    env = {**airflow_db, "TRAINBENCH_CONFIG": str(write_config(tmp_path))}
    proc = dags_test(env, {"dataset": "real"})
    out = proc.stdout + proc.stderr
    assert f"CIFAR-10 is not in {tmp_path / 'data' / 'cifar-10-batches-py'}" in out
    assert 'dataset "synthetic"' in out


def test_bad_trigger_conf_is_rejected_before_anything_runs(airflow_db, tmp_path):
    env = {**airflow_db, "TRAINBENCH_CONFIG": str(write_config(tmp_path))}
    proc = dags_test(env, {"frameworks": ["caffe"]})
    assert proc.returncode != 0
    assert "'caffe' is not one of ['neon', 'mxnet', 'pytorch'" in proc.stdout + proc.stderr


def test_a_typo_in_the_conf_is_refused_naming_the_accepted_keys(airflow_db, tmp_path):
    env = {**airflow_db, "TRAINBENCH_CONFIG": str(write_config(tmp_path))}
    proc = dags_test(env, {"epoch": 50})
    out = proc.stdout + proc.stderr
    assert "unknown key(s) ['epoch'] in the run's conf; accepted: ['batch_size', 'dataset', 'device_sets'" in out
    store = ResultStore(config.load(env["TRAINBENCH_CONFIG"]).database_url)
    assert store.rows() == []
    (run,) = store.run_ids()  # said as what it is, never `running` for ever
    assert store.run_state(run) == "refused"
    assert "the run was refused before measuring (check_conf says why)" in out
    assert "case task(s) failed or were stopped" not in out
