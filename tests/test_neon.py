"""neon for real: its own example, unchanged, in the legacy interpreter `make envs` built, through the harness."""

import csv
import io
import os
import pickletools
import re
import subprocess
import sys
import time

import pytest

from trainbench import config, frameworks
from trainbench.devices import Inventory
from trainbench.frameworks import interpreters, neon, neon_data
from trainbench.measure import environ, runner
from trainbench.planning import Case, TrainingJob, resolve_device_set
from trainbench.trainers import cifar10
from trainbench.workflows import pipeline

from conftest import BIN, ENVS, ROOT, write_config

PYTHON = ENVS / "neon" / "bin" / "python"
EXAMPLE = ENVS / "neon" / "src" / "examples" / "cifar10_conv.py"
CPU = Inventory(gpus=(), cpu_model="test", cpu_count=2)
# The example's own model, built by the example itself: its fit() reports the parameters and stops.
COUNT_PARAMETERS = """
import runpy, sys
from neon.models import Model

def fit(self, dataset, cost, optimizer, num_epochs, callbacks):
    self.initialize(dataset, cost)
    found = [layer.get_params() for layer in self.layers_to_optimize]
    params = [p for g in found for p in ([g] if isinstance(g, tuple) else g)]
    print("PARAMETERS", sum(w.size for (w, _), _ in params))
    raise SystemExit(0)

Model.fit = fit
script, data = sys.argv[1:]
sys.argv = [script, "-b", "cpu", "-e", "1", "-z", "128", "-w", data]
runpy.run_path(script, run_name="__main__")
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    return cifar10.write_synthetic(str(tmp_path_factory.mktemp("neon")), seed=0, train_images=1000, test_images=500)


def launch(job: TrainingJob, device_set: str = "cpu", interpreter=None) -> frameworks.LaunchSpec:
    interpreter = interpreter or frameworks.Interpreter("neon", str(PYTHON))
    return frameworks.launch_spec(interpreter, Case("neon", resolve_device_set(device_set, CPU), 1), job)


def test_make_envs_built_a_legacy_cpython_with_neon_from_its_source():
    found = interpreters.probe(str(PYTHON), ("nervananeon", "numpy"), environ.trainer_environ({}))
    assert found["python"].rsplit(".", 1)[0] in neon.LEGACY_PYTHONS, found
    assert found["packages"] == {"nervananeon": "2.6.0", "numpy": "1.19.5"}
    assert EXAMPLE.is_file()


def test_the_synthetic_set_is_written_as_the_real_files_are(data):
    """Python 2 strings as keys, arrays rebuilt by numpy.core: what neon's loader (numpy 1.19, latin1) reads."""
    batch = os.path.join(data, "data_batch_1")
    with open(batch, "rb") as f:
        raw = f.read()
    strings = {arg for op, arg, _ in pickletools.genops(raw) if op.name == "SHORT_BINSTRING"}
    assert {"batch_label", "labels", "data", "filenames"} <= strings
    assert b"numpy._core" not in raw and b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    read = (
        "import pickle, sys\n"
        "d = pickle.load(open(sys.argv[1], 'rb'), encoding='latin1')\n"
        "print(sorted(d), d['data'].dtype, d['data'].shape, len(d['labels']), type(d['batch_label']).__name__)"
    )
    for python in (PYTHON, ENVS / "mxnet" / "bin" / "python"):  # numpy 1.19 and 1.23
        out = subprocess.run([str(python), "-c", read, batch], capture_output=True, text=True, check=True).stdout
        assert out.split() == [
            "['batch_label',",
            "'data',",
            "'filenames',",
            "'labels']",
            "uint8",
            "(200,",
            "3072)",
            "200",
            "str",
        ]


def test_the_example_builds_the_spec_network(data):
    out = subprocess.run(
        [str(PYTHON), "-c", COUNT_PARAMETERS, str(EXAMPLE), os.path.dirname(data)],
        capture_output=True,
        text=True,
        env=environ.trainer_environ({}),
        timeout=300,
    )
    assert "PARAMETERS 420096" in out.stdout, out.stderr[-2000:]


def test_neon_works_on_a_folder_private_to_its_data(data, tmp_path):
    """Each data set (and each number of images) gets its own folder, so neon's ZCA cache never outlives its data;
    a subset holds the first N images in five equal batches."""
    job = TrainingJob(data_dir=data, epochs=1, batch_size=128, seed=0, train_images=500)
    folder = neon_data.workdir(job)
    assert neon_data.workdir(job) == folder != neon_data.workdir(TrainingJob(data, 1, 128, 0, train_images=1000))
    other = cifar10.write_synthetic(str(tmp_path), seed=1, train_images=1000, test_images=500)
    assert neon_data.workdir(TrainingJob(other, 1, 128, 0, train_images=500)).name != folder.name
    neon_data.prepare(str(PYTHON), str(EXAMPLE), folder, job, log=lambda line: None)
    train, test = cifar10.load(str(folder / cifar10.DIRNAME), cache=False)
    first, first_test = cifar10.load(data, 500, 500, cache=False)
    assert (train.images == first.images).all() and (train.labels == first.labels).all()
    assert len(test.labels) == 500 and (test.images == first_test.images).all()
    assert (folder / neon_data.ZCA_CACHE).stat().st_size > 3072 * 3072 * 4


def capture(spec: frameworks.LaunchSpec, lines: list) -> runner.ProcessResult:
    def on_line(stream: str, line: str) -> None:
        lines.append((stream, line, time.time()))

    return runner.run(spec.argv, env=environ.trainer_environ(spec.environ), timeout_s=600, on_line=on_line)


def test_neon_output_read_as_it_arrives_keeps_every_epoch(data):
    """Real output, both streams: the bar is redrawn many times an epoch (each redraw a line, for the
    runner's universal newlines) and the test error is printed on stderr; every epoch and the accuracy are read."""
    job = TrainingJob(data_dir=data, epochs=2, batch_size=8, seed=0, train_images=1000)
    spec = launch(job)
    spec.prepare(lambda line: None)
    lines: list = []
    proc = capture(spec, lines)
    assert proc.returncode == 0, proc.stderr_tail[-20:]
    redraws = [line for _, line, _ in lines if re.search(r"Epoch 0 +\[Train", line)]
    assert len(redraws) > 10  # neon redraws every ~0.1 s
    assert any(s == "stderr" and "Misclassification error" in line for s, line, _ in lines)
    reader = spec.reader()
    shown = [e for s, line, t in lines if (e := reader.feed(s, line, t))]
    report = reader.report(proc.stdout_lines)
    assert [e["epoch"] for e in report.epochs] == [e["epoch"] for e in shown] == [1, 2]
    for e in report.epochs:
        assert e["images"] == 125 * 8 and e["images_per_s"] == pytest.approx(1000 / e["seconds"])
    error = re.search(r"Misclassification error = ([\d.]+)%", "\n".join(line for _, line, _ in lines))
    assert report.summary["test_accuracy"] == pytest.approx(1 - float(error[1]) / 100)
    assert report.marks["ready"] < report.marks["data"] < report.epochs[0]["t"] < report.summary["t"]


@pytest.mark.integration
def test_neon_beside_mxnet_through_the_cli(tmp_path):
    """The original comparison: neon and MXNet on the same device sets, one run; neon's cpu:2 says why not."""
    cfg_file = write_config(tmp_path, frameworks=["neon", "mxnet"], device_sets=["cpu", "cpu:2"], train_images=1280)
    env = {**os.environ, "TRAINBENCH_CONFIG": str(cfg_file)}
    out = subprocess.run(
        [str(BIN / "python"), "-m", "trainbench", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    rows = {(r["framework"], r["device_set"]): r for r in pipeline.store(config.load(cfg_file)).rows()}
    assert {k: r["status"] for k, r in rows.items()} == {
        ("neon", "cpu"): "ok",
        ("neon", "cpu:2"): "unsupported",
        ("mxnet", "cpu"): "ok",
        ("mxnet", "cpu:2"): "ok",
    }
    ok = rows[("neon", "cpu")]
    assert [e["epoch"] for e in ok["epochs"]] == [1, 2] and ok["images_per_s"] > 0
    assert 0 <= ok["test_accuracy"] <= 1 and ok["epochs"][1]["loss"] < ok["epochs"][0]["loss"]
    assert ok["phases"]["data"] > 0 and ok["phases"]["steady_training"] > 0
    assert "no data-parallel mode" in rows[("neon", "cpu:2")]["error"]
    assert "neon | cpu | r1: epoch 2 " in out.stdout + out.stderr
    table = subprocess.run(
        [str(BIN / "python"), "-m", "trainbench", "results", "--format", "csv"], env=env, capture_output=True, text=True
    ).stdout
    (neon_cpu,) = [
        r for r in csv.DictReader(io.StringIO(table)) if r["framework"] == "neon" and r["device_set"] == "cpu"
    ]
    assert float(neon_cpu["test_accuracy"]) == pytest.approx(ok["test_accuracy"])
    report = (config.load(cfg_file).output_dir / "latest" / "report.md").read_text()
    assert "$ time python cifar10_conv.py -b cpu -e 2 -z 128 -r 0 -w " in report


def neon_source() -> str:
    """What `make test` exports (.ci/run: the shared vendor folder); the same default when pytest runs alone."""
    return os.environ.get("NEON_SOURCE") or str(ROOT.parent / "shared" / "vendor")


def test_envs_builds_neon_from_the_source_it_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("NEON_SOURCE", neon_source())
    python = tmp_path / "neon" / "bin" / "python"
    it = frameworks.Interpreter("neon", str(python), requirements=str(ROOT / "envs" / "neon.txt"))
    assert interpreters.ensure([it], log=lambda line: None) == {"neon": f"{python} (created)"}
    found = interpreters.probe(str(python), ("nervananeon",), environ.trainer_environ({}))
    assert found["packages"] == {"nervananeon": "2.6.0"}
    version = subprocess.run(
        [str(python), "-c", "import neon; print(neon.__version__)"], capture_output=True, text=True
    )
    assert version.stdout.strip() == "2.6.0"  # never suffixed with the commit of the checkout around .envs/


@pytest.mark.parametrize(
    "variable, value, why",
    [
        ("NEON_PYTHON", "{python}", "NEON_PYTHON={python} is Python 3.11; neon needs 3.8, 3.7 or 3.6"),
        ("NEON_SOURCE", "{tmp}/nowhere", "NEON_SOURCE={tmp}/nowhere is neither a git URL (git+https://...@tag), a"),
    ],
)
def test_without_a_legacy_python_or_neon_source_neon_rows_say_what_to_install(
    tmp_path, monkeypatch, variable, value, why
):
    monkeypatch.setenv("NEON_SOURCE", neon_source())
    monkeypatch.setenv(variable, value.format(python=sys.executable, tmp=tmp_path))
    python = tmp_path / "neon" / "bin" / "python"
    it = frameworks.Interpreter("neon", str(python), requirements=str(ROOT / "envs" / "neon.txt"))
    assert interpreters.ensure([it], log=lambda line: None) == {"neon": f"{python} (not created)"}
    assert not (tmp_path / "neon").exists()
    with pytest.raises(frameworks.Unavailable) as caught:
        launch(TrainingJob(data_dir="/data", epochs=1, batch_size=128, seed=0), interpreter=it)
    expected = why.format(python=sys.executable, tmp=tmp_path)
    assert str(caught.value).startswith(f"{python} missing: `make envs` could not create it: {expected}")
