"""Framework launches: the neon adapter (original command lines, `unavailable`, `unsupported`), configured env."""

import re
import sys

import pytest

from trainbench import config, frameworks
from trainbench.frameworks import Interpreter
from trainbench.measure import outcome, runner
from trainbench.measure.protocol import TrainerReport
from trainbench.planning import Case, TrainingJob, resolve_device_set
from trainbench.store.results import ResultStore
from trainbench.workflows import harness, pipeline

from conftest import ROOT, write_config
from test_planning import THREE_GPUS

FIXTURES = ROOT / "tests" / "fixtures"
JOB = TrainingJob(data_dir="/data/cifar-10-batches-py", epochs=10, batch_size=128, seed=0)


def neon_env(script=FIXTURES / "cifar10_conv.py"):
    return Interpreter("neon", sys.executable, options={"script": str(script)})


@pytest.mark.parametrize("device_set, flags", [("0", ["-b", "gpu", "-i", "0"]), ("cpu", ["-b", "cpu"])])
def test_original_command_lines(device_set, flags):
    spec = frameworks.launch_spec(neon_env(), Case("neon", resolve_device_set(device_set, THREE_GPUS), 1), JOB)
    assert spec.argv[2 : 2 + len(flags)] == flags
    assert spec.argv[-9:] == ["-e", "10", "-z", "128", "-r", "0", "-w", "/data", "-v"]


@pytest.mark.parametrize(
    "device_set, reason",
    [
        ("0,1,2", "the original log's `-b mgpu -m 3` needs neon's multi-GPU backend, a closed add-on"),
        ("cpu:2", "neon's CPU backend has no data-parallel mode"),
    ],
)
def test_device_sets_neon_has_no_mode_for_are_unsupported(device_set, reason):
    with pytest.raises(frameworks.Unsupported, match=re.escape(reason)):
        frameworks.launch_spec(neon_env(), Case("neon", resolve_device_set(device_set, THREE_GPUS), 1), JOB)


def test_neon_trains_only_multiples_of_five_images():
    """neon's loader stacks the label lists of five training batches: they must be equally long."""
    job = TrainingJob(data_dir="/data", epochs=1, batch_size=128, seed=0, train_images=1024)
    with pytest.raises(frameworks.Unsupported, match="train_images 1024: .* a multiple of 5 images"):
        frameworks.launch_spec(neon_env(), Case("neon", resolve_device_set("cpu", THREE_GPUS), 1), job)


def test_a_gpu_without_pycuda_is_unsupported_for_neon():
    """neon's GPU backend imports pycuda first; no interpreter of ours has it, so a GPU row says why."""
    proc = runner.ProcessResult(
        ["python"], 1, 1.0, 0.5, 0.1, stderr_tail=["ModuleNotFoundError: No module named 'pycuda'"]
    )
    assert outcome.classify(proc, TrainerReport(), ("neon",))[0] == "unsupported"


@pytest.fixture
def run_neon(tmp_path):
    def run(neon: dict):
        cfg = config.load(write_config(tmp_path, neon=neon, frameworks=["neon"], train_images=1280))
        settings = cfg.settings
        dataset = pipeline.prepare_dataset(cfg, settings.overridden(dataset="synthetic"), pipeline.discover_devices())
        pipeline.start_run(cfg, "neon-test", settings)
        for spec in pipeline.plan_matrix(settings, pipeline.discover_devices(), dataset):
            harness.run_case(cfg, "neon-test", spec, log=lambda line: None)
        return ResultStore(cfg.database_url).rows("neon-test")

    return run


def test_no_neon_interpreter_is_an_unavailable_row(run_neon):
    (row,) = run_neon({"python": "", "script": ""})
    assert row["status"] == "unavailable" and "no neon interpreter configured" in row["error"]


def test_neon_failing_to_import_is_an_unavailable_row(run_neon):
    (row,) = run_neon({"python": sys.executable, "script": str(FIXTURES / "cifar10_conv.py")})
    assert row["status"] == "unavailable" and "No module named 'neon'" in row["error"]
    assert "cifar10_conv.py -b cpu -e 2 -z 128" in row["command"]


def test_missing_neon_script_is_an_unavailable_row(run_neon, tmp_path):
    (row,) = run_neon({"python": sys.executable, "script": str(tmp_path / "nowhere.py")})
    assert row["status"] == "unavailable" and "example script not found" in row["error"]


def test_configured_environment_reaches_the_trainer():
    fw = Interpreter("mxnet", sys.executable, options={"env": {"LD_LIBRARY_PATH": "/opt/cu11/lib"}})
    case = Case("mxnet", resolve_device_set("0", THREE_GPUS), 1)
    spec = frameworks.launch_spec(fw, case, JOB)
    assert (
        spec.environ["LD_LIBRARY_PATH"] == "/opt/cu11/lib" and spec.environ["CUDA_VISIBLE_DEVICES"] == "GPU-aaaa-0000"
    )
    assert spec.argv[-2:] == ["--devices", "1"]


def test_mxnet_finds_the_cuda11_libraries_of_its_own_venv(tmp_path, monkeypatch):
    """mxnet-cu117's CUDA 11 libraries come from the nvidia-*-cu11 wheels in its venv: no host configures the path."""
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "nvidia"
    for lib in ("cublas", "cuda_runtime", "cudnn"):
        (site / lib / "lib").mkdir(parents=True)
    (tmp_path / "venv" / "bin").mkdir()
    monkeypatch.setenv("LD_LIBRARY_PATH", "/usr/local/nvidia/lib64")
    case = Case("mxnet", resolve_device_set("0", THREE_GPUS), 1)
    spec = frameworks.launch_spec(Interpreter("mxnet", str(tmp_path / "venv" / "bin" / "python")), case, JOB)
    assert spec.environ["LD_LIBRARY_PATH"].split(":") == [
        *(str(site / lib / "lib") for lib in ("cublas", "cuda_runtime", "cudnn")),
        "/usr/local/nvidia/lib64",
    ]
    cpu_build = frameworks.launch_spec(Interpreter("mxnet", sys.executable), case, JOB)
    assert "LD_LIBRARY_PATH" not in cpu_build.environ
