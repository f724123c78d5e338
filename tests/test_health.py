"""GPU health: each fault injected through the NVML stand-in, what it makes of a repeat and of its host."""

import dataclasses
import html
import itertools
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from test_regression import history, results, rows
from trainbench import cases, config, devices
from trainbench.checks import validation
from trainbench.frameworks import Interpreter
from trainbench.measure import health
from trainbench.store.results import VALIDATED, ResultStore
from trainbench.workflows import harness, pipeline
from trainbench_ui import pages, queries

from conftest import write_config
from nvml_standin import Device, StandInNvml, log_host
from receivers import running_mailbox, running_webhook


def gpu(**faults) -> tuple[StandInNvml, Device]:
    dev = Device("GPU-dddd-3333", "H200", "00000000:04:00.0", **faults)
    return StandInNvml([dev]), dev


def test_a_healthy_snapshot_has_every_item_and_no_problem():
    nvml, dev = gpu()
    snap = health.snapshot(nvml, dev)
    assert snap == {
        "uuid": "GPU-dddd-3333",
        "ecc_volatile_corrected": 0,
        "ecc_aggregate_corrected": 0,
        "ecc_volatile_uncorrected": 0,
        "ecc_aggregate_uncorrected": 0,
        "retired_pages_single_bit": 0,
        "retired_pages_double_bit": 0,
        "retired_pages_pending": False,
        "remapped_rows_corrected": 0,
        "remapped_rows_uncorrected": 0,
        "remap_pending": False,
        "remap_failure": False,
        "pcie_gen": 5,
        "pcie_max_gen": 5,
        "pcie_width": 16,
        "pcie_max_width": 16,
        "temperature_c": snap["temperature_c"],
        "persistence_mode": True,
    }
    assert isinstance(snap["temperature_c"], int)
    assert health.problems(snap) == [] and health.new_faults(snap, snap) == []


def test_what_nvml_does_not_support_is_none_never_a_problem():
    calls = {"nvmlDeviceGetTotalEccErrors", "nvmlDeviceGetRetiredPages", "nvmlDeviceGetRemappedRows"}
    nvml, dev = gpu(unsupported=calls | {"nvmlDeviceGetCurrPcieLinkWidth", "nvmlDeviceRegisterEvents"})
    snap = health.snapshot(nvml, dev)
    assert snap["ecc_volatile_uncorrected"] is None and snap["retired_pages_double_bit"] is None
    assert snap["remapped_rows_corrected"] is None and snap["remap_failure"] is None and snap["pcie_width"] is None
    assert health.problems(snap) == [] and health.new_faults(snap, snap) == []
    watcher = health.XidWatcher(nvml, dev)
    watcher.poll()
    assert watcher.events is None and "Not Supported" in watcher.error


@pytest.mark.parametrize(
    "fault, problem",
    [
        ({"retirement_pending": True}, "page retirement pending: reset the GPU (nvidia-smi -r) or reboot"),
        ({"remapped_rows": (0, 1, True, False)}, "row remapping pending: reset the GPU"),
        ({"remapped_rows": (0, 0, False, True)}, "row remapping failed (no spare rows left): take the GPU out"),
        (
            {"ecc_uncorrected": 2},
            "2 uncorrectable ECC error(s) since the driver loaded: reset the GPU (nvidia-smi -r) or reboot; "
            "if it recurs, drain the host",
        ),
    ],
)
def test_problems_name_the_gpu_and_what_to_do(fault, problem):
    nvml, dev = gpu(**fault)
    (found,) = health.problems(health.snapshot(nvml, dev))
    assert found.startswith("GPU-dddd-3333: ") and problem in found


def test_uncorrectable_ecc_errors_before_the_last_reset_are_history_not_a_problem():
    nvml, dev = gpu(ecc_uncorrected_earlier=3)
    snap = health.snapshot(nvml, dev)
    assert snap["ecc_aggregate_uncorrected"] == 3 and snap["ecc_volatile_uncorrected"] == 0
    assert health.problems(snap) == []


def test_a_link_below_its_width_is_a_warning_and_a_fault_only_when_it_narrows_during_the_repeat():
    """Some platforms (VMs, bifurcated slots) train every link below NVML's maximum: that host measures consistently,
    so only a drop during a repeat says the link broke."""
    nvml, dev = gpu(pcie=(5, 5, 8, 16))
    snap = health.snapshot(nvml, dev)
    assert health.problems(snap) == [] and health.new_faults(snap, snap) == []
    (warning,) = health.warnings(snap)
    assert warning.startswith("GPU-dddd-3333: PCIe link x8 of x16: if this platform's slots are wider, reseat")
    assert health.new_faults(snap, {**snap, "pcie_width": 4}) == ["GPU-dddd-3333: PCIe link x4 of x16, down from x8"]


def test_pcie_generation_below_its_maximum_at_idle_is_no_problem_but_under_load_it_is_a_fault():
    nvml, dev = gpu(pcie=(1, 5, 16, 16))
    snap = health.snapshot(nvml, dev)
    assert health.problems(snap) == [] and health.new_faults(snap, snap) == []
    assert health.new_faults(snap, {**snap, "pcie_gen_under_load": 5}) == []
    assert health.new_faults(snap, {**snap, "pcie_gen_under_load": 3}) == ["GPU-dddd-3333: PCIe gen 3 of 5 under load"]


@pytest.mark.parametrize(
    "change, fault",
    [
        ({"ecc_uncorrected": 2}, "2 new uncorrectable ECC error(s)"),
        ({"retired_pages": (0, 1)}, "1 new retired page(s)"),
        ({"retirement_pending": True}, "page retirement pending"),
        ({"remapped_rows": (0, 1, False, False)}, "1 new remapped row(s)"),
        ({"remapped_rows": (0, 0, False, True)}, "row remapping failed"),
        ({"pcie": (5, 5, 4, 16)}, "PCIe link x4 of x16, down from x16"),
    ],
)
def test_new_faults_name_what_turned_bad(change, fault):
    nvml, dev = gpu()
    before = health.snapshot(nvml, dev)
    for name, value in change.items():
        setattr(dev, name, value)
    (found,) = health.new_faults(before, health.snapshot(nvml, dev))
    assert found.startswith(f"GPU-dddd-3333: {fault}")


def test_corrected_ecc_errors_and_old_retired_pages_are_no_new_fault():
    nvml, dev = gpu(retired_pages=(3, 1))
    before = health.snapshot(nvml, dev)
    dev.ecc_corrected = 40
    assert health.new_faults(before, health.snapshot(nvml, dev)) == []


def test_xid_events_are_drained_and_only_those_of_the_gpu_are_faults():
    """XIDs a trainer causes itself (43: stopped by the application) are kept but do not fault the GPU."""
    nvml, dev = gpu()
    watcher = health.XidWatcher(nvml, dev)
    watcher.poll()
    assert watcher.events == []
    dev.xids = [43, 79]
    watcher.poll()
    watcher.close()
    assert watcher.events == [43, 79] and dev.xids == []
    snap = health.snapshot(nvml, dev)
    assert health.new_faults(snap, {**snap, "xid_events": [43]}) == []
    assert health.new_faults(snap, {**snap, "xid_events": [43, 79]}) == [
        "GPU-dddd-3333: XID 79 (see NVIDIA's XID catalogue)"
    ]


NEON_OUTPUT = """\
import sys, time
time.sleep(0.5)
for epoch in range(2):
    print(f"Epoch {epoch}   [Train |####|   8/8   batches, 1.5{epoch} cost, 0.2{epoch}s]")
print("Misclassification error = 31.2%")
sys.exit(EXIT)
"""


def trainer(folder: Path, exit_status: int = 0) -> Path:
    """neon's example script as the harness reads it (the neon entry runs any script, on a GPU set too)."""
    script = folder / f"cifar10_conv_{exit_status}.py"
    script.write_text(NEON_OUTPUT.replace("EXIT", str(exit_status)))
    return script


@pytest.fixture
def host(tmp_path):
    """A GPU host (the original log's, GPU 2 measured) running a stand-in trainer that ends ok."""
    cfg = config.load(
        write_config(
            tmp_path,
            neon={"python": sys.executable, "script": str(trainer(tmp_path))},
            frameworks=["neon"],
            train_images=1280,  # neon trains multiples of 5
        )
    )
    cfg = dataclasses.replace(cfg, measurement=config.Measurement(idle_wait_s=0))
    nvml = log_host()
    inv = devices.discover(nvml=nvml).to_dict()
    dataset = {"kind": "synthetic", "data_dir": str(tmp_path / "data")}
    settings = cfg.settings.overridden(device_sets=["2", "cpu"])
    pipeline.start_run(cfg, RUN, cfg.settings)
    return SimpleNamespace(
        cfg=cfg,
        nvml=nvml,
        gpu=nvml.devices[2],
        specs=pipeline.plan_matrix(settings, inv, dataset),
        other=pipeline.plan_matrix(settings, inv, dataset, host="other"),
        db=ResultStore(cfg.database_url),
    )


RUN = "health-run"
WAIT = harness.runner.Launch.wait


def during(monkeypatch, change):
    """Apply `change` once the trainer runs (after the monitors read their baselines, before they stop)."""

    def wait(self):
        change()
        return WAIT(self)

    monkeypatch.setattr(harness.runner.Launch, "wait", wait)


def measure(h, spec, cfg=None):
    return harness.run_case(cfg or h.cfg, RUN, spec, log=lambda m: None, nvml=h.nvml)


def test_a_healthy_repeat_is_ok_with_its_health_in_the_row(host):
    gpu_spec, _ = host.specs
    r = measure(host, gpu_spec)
    assert r.status == "ok" and r.error is None
    (g,) = r.telemetry["gpus"]
    h = g["health"]
    assert h["faults"] == [] and h["throttle_share"] == {} and h["throttle_samples"] >= 2
    assert h["throttle_method"] == (
        "share of the telemetry samples without the gpu_idle bit (the GPU busy) with the reason's bit set; "
        "no share without such samples"
    )
    assert h["before"]["pcie_width"] == 16 and h["after"]["xid_events"] == [] and h["after"]["pcie_gen_under_load"] == 5
    assert host.db.quarantines(RUN) == []


@pytest.mark.parametrize(
    "fault, reason",
    [
        ({"ecc_uncorrected": 1}, "1 new uncorrectable ECC error(s)"),
        ({"retired_pages": (0, 1)}, "1 new retired page(s)"),
        ({"retirement_pending": True}, "page retirement pending"),
        ({"remapped_rows": (0, 0, False, True)}, "row remapping failed"),
        ({"xids": [79]}, "XID 79"),
        ({"pcie": (5, 5, 8, 16)}, "PCIe link x8 of x16"),
    ],
)
def test_a_fault_during_a_repeat_taints_it_and_quarantines_the_host(host, monkeypatch, fault, reason):
    during(monkeypatch, lambda: [setattr(host.gpu, k, v) for k, v in fault.items()])
    r = measure(host, host.specs[0])
    assert r.status == "tainted" and r.error.startswith(f"GPU health: GPU-cccc-2222: {reason}")
    (q,) = host.db.quarantines(RUN)
    assert q["host"] == "gpu" and q["reason"].startswith(f"GPU-cccc-2222: {reason}")
    (row,) = host.db.rows(RUN)
    assert row["status"] == "tainted" and row["error"] == r.error


@pytest.mark.parametrize(
    "fault, reason",
    [
        ({"retirement_pending": True}, "page retirement pending: reset the GPU"),
        ({"remapped_rows": (0, 0, False, True)}, "row remapping failed (no spare rows left)"),
        ({"ecc_uncorrected": 1}, "1 uncorrectable ECC error(s) since the driver loaded: reset the GPU"),
    ],
)
def test_a_gpu_unhealthy_before_the_repeat_is_not_measured_and_its_host_quarantined(host, monkeypatch, fault, reason):
    launched = []
    during(monkeypatch, lambda: launched.append(True))
    for k, v in fault.items():
        setattr(host.gpu, k, v)
    r = measure(host, host.specs[0])
    assert r.status == "unavailable" and r.error.startswith(f"GPU health: GPU-cccc-2222: {reason}")
    assert launched == [] and host.db.quarantined(RUN, "gpu").startswith(f"GPU-cccc-2222: {reason}")


def test_a_link_that_stays_below_its_width_is_measured_with_a_warning_and_quarantines_nothing(host):
    host.gpu.pcie = (5, 5, 8, 16)
    logged: list[str] = []
    r = harness.run_case(host.cfg, RUN, host.specs[0], log=logged.append, nvml=host.nvml)
    assert r.status == "ok" and r.telemetry["gpus"][0]["health"]["faults"] == []
    assert host.db.quarantines(RUN) == []
    assert any("GPU health warning (measured anyway): GPU-cccc-2222: PCIe link x8 of x16" in line for line in logged)


def test_each_repeat_is_judged_once(host, monkeypatch):
    judged = []
    judge = health.judge
    monkeypatch.setattr(health, "judge", lambda *a: judged.append(a) or judge(*a))
    during(monkeypatch, lambda: setattr(host.gpu, "xids", [79]))
    assert measure(host, host.specs[0]).status == "tainted"
    assert len(judged) == 1 and host.db.quarantined(RUN, "gpu").startswith("GPU-cccc-2222: XID 79")


def test_a_link_below_its_generation_is_measured_but_tainted_when_it_stays_there_under_load(host):
    """A link at a low generation before the repeat may only be saving power; it is a fault when load does not
    raise it."""
    host.gpu.pcie = (3, 5, 16, 16)
    r = measure(host, host.specs[0])
    assert r.status == "tainted" and r.error == "GPU health: GPU-cccc-2222: PCIe gen 3 of 5 under load"
    assert host.db.quarantined(RUN, "gpu") == "GPU-cccc-2222: PCIe gen 3 of 5 under load"


def test_thermal_throttling_beyond_the_share_taints_the_repeat_without_quarantine(host, monkeypatch, tmp_path):
    during(monkeypatch, lambda: setattr(host.gpu, "reasons", 0x40))
    r = measure(host, host.specs[0])
    share = r.telemetry["gpus"][0]["health"]["throttle_share"]["hw_thermal_slowdown"]
    assert r.status == "tainted" and share > 0.05
    assert r.error == f"GPU health: GPU-cccc-2222: hw_thermal_slowdown in {share * 100:.0f} % of samples (> 5 %)"
    assert host.db.quarantines(RUN) == []
    checked = validation.run_suite(host.db.rows(RUN), [r.case_key], tmp_path / "docs")
    assert checked.success, checked.summary()


def test_throttling_within_the_share_or_for_a_reason_not_configured_stays_ok(host, monkeypatch):
    calls = itertools.count()
    host.gpu.reasons = lambda t: 0x40 if next(calls) % 4 == 0 else 0
    lenient = dataclasses.replace(host.cfg, health=config.Health(max_throttle_share=0.5))
    r = measure(host, host.specs[0], lenient)
    assert r.status == "ok" and 0 < r.telemetry["gpus"][0]["health"]["throttle_share"]["hw_thermal_slowdown"] <= 0.5
    host.gpu.reasons = 0x4
    not_thermal = dataclasses.replace(host.cfg, health=config.Health(taint_reasons=("hw_thermal_slowdown",)))
    r = measure(host, host.specs[0], not_thermal)
    assert r.status == "ok" and r.telemetry["gpus"][0]["health"]["throttle_share"] == {"sw_power_cap": 1.0}


def test_throttle_shares_count_only_the_samples_the_gpu_was_busy(host):
    """Idle stretches (start-up, data loading) must not dilute a slowdown that held whenever the GPU worked."""
    calls = itertools.count()
    host.gpu.reasons = 0x40
    host.gpu.idle = lambda t: next(calls) % 4 != 0
    lenient = dataclasses.replace(host.cfg, health=config.Health(max_throttle_share=0.5))
    r = measure(host, host.specs[0], lenient)
    h = r.telemetry["gpus"][0]["health"]
    assert (
        h["throttle_share"] == {"hw_thermal_slowdown": 1.0} and h["throttle_idle_samples"] > 0 < h["throttle_samples"]
    )
    assert r.status == "tainted" and "hw_thermal_slowdown in 100 % of samples (> 50 %)" in r.error


def test_a_repeat_idle_throughout_has_no_throttle_share(host):
    host.gpu.idle = lambda t: True
    r = measure(host, host.specs[0])
    h = r.telemetry["gpus"][0]["health"]
    assert r.status == "ok" and h["throttle_share"] == {} and h["throttle_samples"] == 0
    assert h["throttle_idle_samples"] >= 2 and r.telemetry["gpus"][0]["throttle_reasons"] == ["gpu_idle"]


def test_a_failed_repeat_keeps_its_status_and_names_the_fault_too(host, monkeypatch, tmp_path):
    neon = Interpreter("neon", sys.executable, options={"script": str(trainer(tmp_path, 3))})
    crashing = dataclasses.replace(host.cfg, interpreters={**host.cfg.interpreters, "neon": neon})
    during(monkeypatch, lambda: setattr(host.gpu, "ecc_uncorrected", 2))
    r = measure(host, host.specs[0], crashing)
    assert r.status == "crashed" and r.error.startswith("exit status 3")
    assert r.error.endswith("\nGPU health: GPU-cccc-2222: 2 new uncorrectable ECC error(s)")
    assert host.db.quarantined(RUN, "gpu") == "GPU-cccc-2222: 2 new uncorrectable ECC error(s)"


def test_a_quarantined_host_measures_nothing_more_in_the_run_the_other_hosts_go_on(host, monkeypatch):
    during(monkeypatch, lambda: setattr(host.gpu, "xids", [79]))
    gpu_spec, cpu_spec = host.specs
    assert measure(host, gpu_spec).status == "tainted"
    launched = []
    during(monkeypatch, lambda: launched.append(True))
    for spec in (gpu_spec, cpu_spec):
        r = measure(host, spec)
        assert r.status == "unavailable"
        assert r.error == "host gpu quarantined in this run: GPU-cccc-2222: XID 79 (see NVIDIA's XID catalogue)"
    assert launched == []
    other_cpu = host.other[1]
    assert measure(host, other_cpu).status == "ok" and launched == [True]
    pipeline.start_run(host.cfg, "next-week", host.cfg.settings)
    assert harness.run_case(host.cfg, "next-week", gpu_spec, log=lambda m: None, nvml=host.nvml).status == "ok"


def test_tainted_repeats_are_shown_with_their_reason_and_never_counted(tmp_path):
    """Three tainted repeats at 4x the time would make the case's median and its verdict; they make neither."""
    cfg = config.load(write_config(tmp_path))
    db = ResultStore(cfg.database_url)
    past, order = history(n_runs=4)
    now = results(rows("now", [10.0, 10.1, 40.0, 40.0, 40.0]))
    why = "GPU health: GPU-cccc-2222: hw_thermal_slowdown in 80 % of samples (> 5 %)"
    for r in now[2:]:
        r.status, r.error = "tainted", why
    for run_id in [*order, "now"]:
        db.save_run(run_id, {})
        db.set_state(run_id, VALIDATED)
    for r in [*results(past), *now]:
        db.save(r)
    (summary,) = cases.summarize(db.current_results("now"), cfg.measurement.max_cv)
    assert [r.wall_s for r in summary.counted] == [10.0, 10.1] and len(summary.results) == 5
    verdicts = pipeline.detect_regressions(cfg, "now", log=lambda m: None)
    assert {v["verdict"] for v in verdicts} == {"stable"}
    assert [s["repeats"] for s in db.case_stats("now")] == [2]
    pipeline.publish(cfg, "now", verdicts)
    report = (cfg.output_dir / "runs" / "now" / "report.md").read_text()
    assert report.count(f"(tainted: shown, never in statistics or verdicts; {why})") == 3
    assert html.escape(why) in (cfg.output_dir / "runs" / "now" / "report.html").read_text()
    with queries.engine(cfg.database_url).connect() as conn:
        data = queries.latest_per_host(conn, queries.Filters())
    (case,) = data[0]["cases"]
    assert case["ok"] == 2 and case["repeats"] == 5
    page = pages.page(pages.Links("/b", "", lambda r: False), "", queries.Filters(), {}, data)
    assert '<span class="status tainted">tainted</span>' in page and html.escape(why) in page


def test_a_fault_measured_while_the_database_is_down_quarantines_the_host_when_the_retry_stores_it(host, monkeypatch):
    import sqlalchemy as sa

    down = dataclasses.replace(host.cfg, database_url="postgresql+psycopg://postgres@127.0.0.1:1/none")
    during(monkeypatch, lambda: setattr(host.gpu, "ecc_uncorrected", 1))
    with pytest.raises(sa.exc.OperationalError):
        measure(host, host.specs[0], down)
    assert host.db.quarantines(RUN) == []
    monkeypatch.undo()
    r = measure(host, host.specs[0])
    assert (
        r.status == "tainted" and host.db.quarantined(RUN, "gpu") == "GPU-cccc-2222: 1 new uncorrectable ECC error(s)"
    )


def test_a_fault_reaches_the_team_with_its_evidence(host, monkeypatch):
    """XID 79 during a repeat: the tainted row and the quarantine go out by email and webhook, as the DAG's alert
    task sends them (channels from Airflow connections), to a real SMTP server and HTTP receiver."""
    from trainbench_airflow import notifiers

    cfg = config.load(
        write_config(
            host.cfg.path.parent,
            neon={"python": sys.executable, "script": host.cfg.interpreter("neon").options["script"]},
            frameworks=["neon"],
            train_images=1280,
            alerts={"email_to": ["gpu-team@example.com"], "base_url": "http://airflow.example"},
            name="alerting.toml",
        )
    )
    cfg = dataclasses.replace(cfg, measurement=host.cfg.measurement)
    during(monkeypatch, lambda: setattr(host.gpu, "xids", [79]))
    assert measure(host, host.specs[0], cfg).status == "tainted"
    assert measure(host, host.specs[1], cfg).status == "unavailable"
    with running_mailbox() as box, running_webhook() as hook:
        monkeypatch.setenv("AIRFLOW_CONN_TRAINBENCH_SMTP", f"smtp://127.0.0.1:{box.port}")
        monkeypatch.setenv("AIRFLOW_CONN_TRAINBENCH_WEBHOOK", hook.url)
        assert notifiers.send_run_alerts(cfg, RUN, "cifar10_benchmark", print) == {"email": 2, "webhook": 2}
    (mail,) = box.messages
    body = mail.get_body(("plain",)).get_content()
    for evidence in (
        "tainted repeat · gpu · neon | 2",
        "host quarantined · gpu",
        "GPU-cccc-2222: XID 79",
        "http://airflow.example/trainbench/runs/health-run/report.html",
        "http://airflow.example/dags/cifar10_benchmark/runs/health-run",
    ):
        assert evidence in body, (evidence, body)
    (post,) = hook.posts
    assert "XID 79" in str(post) and "tainted repeat" in str(post)
