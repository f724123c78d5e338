"""Execution variants: registry entries of their own that share their framework's interpreter, trainer and network.

`pytorch-graph` (torch.compile on the CPU; a CUDA graph of the whole step on GPUs) beside `pytorch` (eager), and
`mxnet-hybrid` (hybridize(static_alloc, static_shape)) beside `mxnet` (imperative Gluon).  On the same seed and
data order a variant computes the same training as its eager sibling: its first-epoch mean loss agrees within
LOSS_TOLERANCE (measured on this CPU: 0.00004 for pytorch-graph, 0 for mxnet-hybrid).
"""

import os
import subprocess
import sys

import pytest

from trainbench import cases, config, frameworks, reports
from trainbench.devices import Inventory
from trainbench.frameworks import interpreters
from trainbench.measure import outcome, runner
from trainbench.planning import Case, TrainingJob, resolve_device_set
from trainbench.result import Result
from trainbench.store.results import ResultStore

from conftest import BIN, ENVS, write_config

CPU = Inventory(gpus=(), cpu_model="test", cpu_count=2)
VARIANTS = {"pytorch-graph": "pytorch", "mxnet-hybrid": "mxnet"}
LOSS_TOLERANCE = 2e-3  # absolute, on a first-epoch mean cross-entropy of about 2.5
JOB = TrainingJob(data_dir="/data/cifar-10-batches-py", epochs=2, batch_size=128, seed=0)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return config.load(write_config(tmp_path_factory.mktemp("cfg")))


def train(cfg, framework, device_set, data, epochs=2, images=1024):
    case = Case(framework, resolve_device_set(device_set, CPU), 1)
    job = TrainingJob(data_dir=data, epochs=epochs, batch_size=128, seed=0, train_images=images)
    spec = frameworks.launch_spec(cfg.interpreter(framework), case, job)
    r = runner.run(spec.argv, env={**os.environ, **spec.environ}, timeout_s=600)
    report = spec.reader().report(r.stdout_lines)
    assert outcome.classify(r, report, frameworks.REGISTRY[framework].modules) == ("ok", None), r.stderr_tail
    return report


@pytest.mark.parametrize("variant, base", VARIANTS.items())
def test_a_variant_is_its_own_entry_sharing_the_base_interpreter(cfg, variant, base):
    fw, of = frameworks.REGISTRY[variant], frameworks.REGISTRY[base]
    assert fw.interpreter_of == base and fw.base == base and of.base == base
    assert (fw.trainer, fw.distributions, fw.modules) == (of.trainer, of.distributions, of.modules)
    assert cfg.interpreter(variant) is cfg.interpreter(base) and variant not in cfg.interpreters
    assert fw.default_interpreter() == of.default_interpreter() == f".envs/{base}/bin/python"
    flag = variant.split("-")[1]
    for device_set in ("cpu", "cpu:2"):
        case = Case(variant, resolve_device_set(device_set, CPU), 1)
        argv = frameworks.launch_spec(cfg.interpreter(variant), case, JOB).argv
        eager = frameworks.launch_spec(cfg.interpreter(base), Case(base, case.device_set, 1), JOB).argv
        assert argv == [*eager, "--variant", flag]
    assert Case(variant, resolve_device_set("cpu", CPU), 1).key == f"gpu__{variant}__cpu__r1"


def test_variants_are_accepted_by_settings_and_the_form_and_share_the_base_section(tmp_path):
    cfg = config.load(write_config(tmp_path, frameworks=["pytorch", "pytorch-graph", "mxnet", "mxnet-hybrid"]))
    assert cfg.settings.frameworks == ("pytorch", "pytorch-graph", "mxnet", "mxnet-hybrid")
    enum = config.settings_schema()["frameworks"]["items"]["enum"]
    assert {"pytorch-graph", "mxnet-hybrid"} <= set(enum)
    assert cfg.interpreter("pytorch-graph").python == str(ENVS / "pytorch" / "bin" / "python")
    with pytest.raises(config.ConfigError, match="unknown framework 'tensorflow-xla'"):
        cfg.interpreter("tensorflow-xla")


def test_make_envs_never_creates_an_interpreter_for_a_variant(cfg):
    seen: list[str] = []
    done = interpreters.ensure((cfg.interpreter(n) for n in ("pytorch", "pytorch-graph")), log=seen.append)
    assert list(done) == ["pytorch"] and len(seen) == 1 and "pytorch-graph" not in seen[0]


def test_an_unsupported_variant_is_recorded_as_such():
    text = "variant graph does not support 2 GPUs with NCCL (2, 7, 8): capturing DDP's all-reduce ..."
    assert outcome.UNSUPPORTED_TEXT.search(text)


@pytest.fixture(scope="module")
def first_epochs(cfg, synthetic_data):
    names = [*VARIANTS, *VARIANTS.values()]
    return {fw: train(cfg, fw, "cpu", synthetic_data) for fw in names}


@pytest.mark.parametrize("variant, base", VARIANTS.items())
def test_a_variant_trains_the_same_network_as_its_eager_sibling(first_epochs, variant, base):
    fast, eager = first_epochs[variant], first_epochs[base]
    assert fast.start["parameters"] == fast.summary["parameters"] == eager.summary["parameters"] == 420_096
    assert fast.summary["variant"] == variant.split("-")[1] and eager.summary["variant"] == "eager"
    if variant == "pytorch-graph":
        assert fast.summary["compiled_ops"] >= 10 and eager.summary["compiled_ops"] == 0
    assert abs(fast.losses[0] - eager.losses[0]) < LOSS_TOLERANCE, (fast.losses, eager.losses)
    assert fast.losses[1] < fast.losses[0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_variant_is_data_parallel_over_two_cpu_workers(cfg, synthetic_data, variant):
    report = train(cfg, variant, "cpu:2", synthetic_data)
    assert report.summary["devices"] == 2 and report.summary["parameters"] == 420_096
    if variant == "pytorch-graph":  # the network itself is compiled, not left eager behind DDP
        assert report.summary["compiled_ops"] >= 10, report.summary
    assert report.losses[1] < report.losses[0]


def test_variants_run_through_the_cli_side_by_side(tmp_path):
    path = write_config(tmp_path)
    names = ["pytorch", "pytorch-graph", "mxnet", "mxnet-hybrid"]
    args = ["--frameworks", *names, "--device-sets", "cpu", "--epochs", "2", "--train-images", "512"]
    proc = subprocess.run(
        [str(BIN / "python"), "-m", "trainbench", "--config", str(path), "run", *args, "--repeats", "1"]
        + ["--run-id", "variants-test"],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = config.load(path)
    rows = {r["framework"]: r for r in ResultStore(cfg.database_url).rows("variants-test")}
    assert sorted(rows) == sorted(names)
    for name, row in rows.items():
        assert row["status"] == "ok" and row["parameters"] == 420_096 and row["device_set"] == "cpu", row
        assert ("--variant" in row["command"]) == (name in VARIANTS)
    report = (cfg.output_dir / "runs" / "variants-test" / "report.md").read_text()
    titles = [f"## {frameworks.title(n)}" for n in names]
    assert all(t in report for t in titles), report[:2000]
    assert "--variant graph" in report and "--variant hybrid" in report
    side_by_side = report.split("## Variants beside their eager sibling")[1]
    assert "| gpu | pytorch-graph | cpu | 1 |" in side_by_side and "| gpu | mxnet-hybrid | cpu | 1 |" in side_by_side
    assert side_by_side.count("spread unknown (1 repeat)") == 2
    page = (cfg.output_dir / "runs" / "variants-test" / "report.html").read_text()
    assert "<h2>Variants beside their eager sibling</h2>" in page and page.count("spread unknown (1 repeat)") == 2


def row(framework, repeat, images_per_s, first_epoch_s=1.0, **extra):
    return Result(
        run_id="r",
        case_key=f"{framework}__cpu__r{repeat}",
        env_key=framework,
        framework=framework,
        device_set="cpu",
        host="gpu",
        repeat=repeat,
        status="ok",
        images_per_s=images_per_s,
        phases={"first_epoch": first_epoch_s},
        **extra,
    )


def pairs(results):
    return reports.rows.variant_pairs(cases.summarize(results, max_cv=0.05))


def test_a_speed_up_is_claimed_only_when_every_pairing_of_repeats_agrees():
    eager = [row("pytorch", 1, 100.0), row("pytorch", 2, 104.0), row("pytorch", 0, 1.0, warmup=True)]
    clear = [row("pytorch-graph", 1, 130.0, 20.0), row("pytorch-graph", 2, 126.0, 22.0)]
    (pair,) = pairs(eager + clear)
    assert (pair["variant"], pair["base"], pair["repeats"], pair["verdict"]) == (
        "pytorch-graph",
        "pytorch",
        2,
        "faster",
    )
    assert pair["speedup"] == pytest.approx(128 / 102) and pair["speedup_low"] == pytest.approx(126 / 104)
    assert (pair["base_first_epoch_s"], pair["variant_first_epoch_s"]) == (1.0, 21.0)
    overlapping = [row("pytorch-graph", 1, 103.0), row("pytorch-graph", 2, 99.0)]
    assert pairs(eager + overlapping)[0]["verdict"] == "within the repeats' spread"
    slower = [row("pytorch-graph", 1, 80.0), row("pytorch-graph", 2, 82.0)]
    assert pairs(eager + slower)[0]["verdict"] == "slower"
    assert pairs(clear) == []  # no eager sibling measured: nothing to set beside


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
