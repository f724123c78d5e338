"""The deployment users run, started for real (tests/deployment.py): CeleryExecutor on PostgreSQL and Redis,
api-server, scheduler, DAG processor, triggerer, a default worker and two "GPU host" workers on their own
queues; triggered through the REST API with a JWT as the UI does, backfilled, and broken on purpose."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import statistics
import time
import urllib.parse

import psutil
import pytest

from trainbench.store.results import ENVIRONMENT_CHANGE, ResultStore

from conftest import ENVS, ROOT, slow_python, write_config
from deployment import Deployment
from receivers import Mailbox, running_mailbox, running_webhook

pytestmark = pytest.mark.integration
HOSTS = ("host_a", "host_b")
CONF = {
    "frameworks": ["pytorch"],
    "device_sets": ["cpu"],
    "epochs": 1,
    "train_images": 256,
    "repeats": 2,
    "dataset": "synthetic",
}


LATE_AFTER_HOURS = 0.01  # 36 s: the week's slot the scheduler runs on unpausing is long past
SLOW_START_S = 5  # host_b's pytorch interpreter waits this long before it trains: a slower host


@pytest.fixture(scope="module")
def mailbox():
    with running_mailbox() as box:
        yield box


@pytest.fixture(scope="module")
def webhook():
    with running_webhook() as hook:
        yield hook


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, mailbox, webhook):
    home = tmp_path_factory.mktemp("deployment")
    slow = slow_python(home / "slow-python", SLOW_START_S)
    d = Deployment(
        home,
        HOSTS,
        neon_script=ROOT / "tests/fixtures/crashing_trainer.py",
        host_frameworks={"host_b": {"pytorch": {"python": str(slow)}}},
        alerts={"email_to": ["gpu-team@example.com"], "late_after_hours": LATE_AFTER_HOURS},
        connections={"trainbench_smtp": f"smtp://127.0.0.1:{mailbox.port}", "trainbench_webhook": webhook.url},
    )
    try:
        yield d.up()
    finally:
        d.down()


def mails(box: Mailbox, run_id: str) -> list[str]:
    """The alert emails about `run_id` that arrived: subject and plain-text body."""
    return [
        f"{m['Subject']}\n{m.get_body(('plain',)).get_content()}".replace("\r\n", "\n")
        for m in box.messages
        if run_id in m["Subject"]
    ]


def rows(d: Deployment, run_id: str) -> list[dict]:
    store = ResultStore(d.results.url)
    try:
        return store.current_rows(run_id)
    finally:
        store.engine.dispose()


def spans(tis: list[dict], prefix: str) -> list[tuple[dt.datetime, dt.datetime]]:
    return sorted(
        (dt.datetime.fromisoformat(t["start_date"]), dt.datetime.fromisoformat(t["end_date"]))
        for t in tis
        if t["task_id"].startswith(prefix) and t["start_date"] and t["end_date"]
    )


def test_unpausing_runs_the_missed_slot_which_skips_itself_and_is_never_announced_late(deployment, mailbox):
    """Unpausing the DAG makes the scheduler run the latest weekly slot; days late, it skips itself (`on_time`).
    Its deadline passed long ago, so the scheduler hands the deadline's callback to the triggerer, which finds the
    run started days after its slot and stays quiet: no false "run late" alarm with a report link that 404s."""
    d = deployment
    (scheduled,) = d.wait_for("the slot's run", lambda: [r for r in d.runs() if r["run_type"] == "scheduled"])
    run_id = scheduled["dag_run_id"]
    assert d.finished(run_id) == "success"  # on_time skipped it: a late week is never measured by surprise
    d.wait_for(
        "the deadline's callback", lambda: f"run {run_id} started" in (d.home / "triggerer.log").read_text(), 180
    )
    assert "it skips itself (on_time), never late" in (d.home / "triggerer.log").read_text()
    assert mails(mailbox, run_id) == []


def test_rest_trigger_runs_each_case_on_its_host_one_at_a_time(deployment):
    d = deployment
    run_id = d.trigger(CONF)
    assert d.finished(run_id) == "success", d.logs()
    tis = d.task_instances(run_id)
    for host in HOSTS:
        assert {t["queue"] for t in tis if t["task_id"].startswith(f"{host}.")} == {host}
        host_spans = spans(tis, f"{host}.")
        assert len(host_spans) == 6, host_spans  # pre-flight, discover, prepare, plan, two cases
        for (_, end), (start, _) in zip(host_spans, host_spans[1:]):
            assert end <= start, f"two tasks of {host} overlapped: {host_spans}"
    found = rows(d, run_id)
    assert sorted((r["host"], r["repeat"], r["status"]) for r in found) == [
        (h, rep, "ok") for h in HOSTS for rep in (1, 2)
    ]
    assert all(r["environment"]["worker_host"] == r["host"] and r["wall_s"] > 0 for r in found)


def test_two_hosts_are_shown_apart_with_their_own_medians_never_pooled(deployment):
    """host_b starts its trainer later: report.md, report.html, the CSV tables and the Benchmarks page each show the
    two hosts' cases apart, every median and summary line from one host's repeats."""
    d = deployment
    run_id = d.trigger({**CONF, "epochs": 2, "repeats": 3, "warmup": 0})
    assert d.finished(run_id) == "success", d.logs()
    found = rows(d, run_id)
    walls = {h: sorted(r["wall_s"] for r in found if r["host"] == h) for h in HOSTS}
    medians = {h: statistics.median(w) for h, w in walls.items()}
    assert medians["host_b"] - medians["host_a"] > SLOW_START_S / 2, walls  # the slowed host is the slower one
    pooled = statistics.median(walls["host_a"] + walls["host_b"])
    assert f"{pooled:,.2f}" not in {f"{m:,.2f}" for m in medians.values()}

    folder = run_folder_of(d, run_id)
    report = (folder / "report.md").read_text()
    for h in HOSTS:
        assert f"## PyTorch on `{h}`" in report
        assert f"| {h} | pytorch | cpu | 3 | {medians[h]:.2f} s ({walls[h][0]:.2f}-{walls[h][-1]:.2f}) |" in report
    page = (folder / "report.html").read_text()
    summary = page[page.index("<h2>Summary</h2>") : page.index("<h2>Results</h2>")]
    lines = re.findall(r"<h3>Host (\w+)</h3>\s*<ul><li>cpu: fastest <b>pytorch</b>, ([\d.,]+) s", summary)
    assert lines == [(h, f"{medians[h]:,.2f}") for h in HOSTS], summary
    results_table = page[page.index("<h2>Results</h2>") :]
    assert all(f"<tr><td>{h}</td><td>pytorch</td><td>cpu</td>" in results_table for h in HOSTS)
    with (folder / "cases.csv").open() as f:
        cases = {r["host"]: r for r in csv.DictReader(f)}
    assert {h: float(cases[h]["wall_median"]) for h in HOSTS} == pytest.approx(medians)
    with (folder / "results.csv").open() as f:
        assert sorted(r["host"] for r in csv.DictReader(f)) == sorted(HOSTS * 3)

    body = d.page("/trainbench/api/latest")
    assert body.startswith("["), body[:1000]
    latest = {h["host"]: h for h in json.loads(body)}
    for h in HOSTS:
        assert latest[h]["run_id"] == run_id
        (case,) = latest[h]["cases"]
        assert case["wall"] == pytest.approx(medians[h]) and case["wall_spread"] == pytest.approx(
            [walls[h][0], walls[h][-1]]
        )
    html = d.page("/trainbench/")
    assert all(f'<section class="host" data-host="{h}"><h2>Host {h}</h2>' in html for h in HOSTS)
    compared = json.loads(d.page("/trainbench/api/compare"))["cases"]
    assert sorted(c["host"] for c in compared) == sorted(HOSTS)  # one case per host, never one pooled


def test_a_typo_in_a_rest_trigger_fails_the_run_before_anything_runs(deployment, mailbox, webhook):
    """... and the failed run is announced by the DAG's failure callback, run by the Dag processor."""
    d = deployment
    run_id = d.trigger({**CONF, "epoch": 50})
    assert d.finished(run_id) == "failed"
    states = {t["task_id"]: t["state"] for t in d.task_instances(run_id)}
    assert states["check_conf"] == "failed"
    assert not [t for t, s in states.items() if t.endswith((".discover_devices", ".train")) and s == "success"]
    assert rows(d, run_id) == [] and run_state(d, run_id) == "refused"
    (mail,) = d.wait_for("the failed-run email", lambda: mails(mailbox, run_id), timeout_s=120)
    assert "1 run failed" in mail and f"/dags/cifar10_benchmark/runs/{urllib.parse.quote(run_id, safe='')}" in mail
    assert "refused before measuring anything: unknown key(s) ['epoch']" in mail and "/trainbench/runs/" not in mail
    assert d.wait_for("the failed-run webhook", lambda: [p for p in webhook.posts if run_id in json.dumps(p)])


def test_a_host_that_fails_its_preflight_stops_only_its_own_cases_and_is_announced(deployment, mailbox, webhook):
    """host_b's pytorch interpreter is gone: its pre-flight (the host doctor) quarantines it for the run, its
    cases are unavailable naming the failed check, host_a measures as usual, and the quarantine is alerted."""
    d = deployment
    broken = {"pytorch": {"python": str(d.home / "no-such-python")}}
    write_config(d.home, interpreters=broken, name="trainbench-host_b.toml", **d.common)
    try:
        run_id = d.trigger(CONF)
        assert d.finished(run_id) == "success", d.logs()
    finally:
        write_config(
            d.home,
            interpreters={"pytorch": {"python": str(d.home / "slow-python")}},
            name="trainbench-host_b.toml",
            **d.common,
        )
    found = rows(d, run_id)
    assert sorted((r["host"], r["status"]) for r in found) == [("host_a", "ok")] * 2 + [("host_b", "unavailable")] * 2
    for r in found:
        if r["host"] == "host_b":
            assert "host host_b quarantined in this run: doctor:" in r["error"] and "pytorch" in r["error"], r["error"]
    tis = {t["task_id"]: t for t in d.task_instances(run_id) if t["map_index"] in (-1, None)}
    assert tis["host_b.preflight"]["state"] == tis["host_a.preflight"]["state"] == "success"
    report = (run_folder_of(d, run_id) / "report.md").read_text()
    assert "## Quarantined hosts\n\n- `host_b` stopped measuring in this run: doctor: frameworks:" in report
    (mail,) = d.wait_for("the quarantine email", lambda: mails(mailbox, run_id), timeout_s=120)
    assert "host quarantined · host_b" in mail and "doctor:" in mail and "host_a" not in mail.split("\n")[0]
    assert d.wait_for("the quarantine webhook", lambda: [p for p in webhook.posts if run_id in json.dumps(p)])


def test_backfill_runs_its_weeks_one_after_another(deployment):
    d = deployment
    d.api(
        "POST",
        "/api/v2/backfills",
        {
            "dag_id": "cifar10_benchmark",
            "from_date": "2026-11-09T00:00:00Z",
            "to_date": "2026-11-16T03:00:00Z",
            "max_active_runs": 1,
            "reprocess_behavior": "completed",
            "run_backwards": False,
            "dag_run_conf": CONF,
        },
    )
    manual = d.trigger(CONF)  # at once: its cases may interleave with the backfill's, never overlap them
    backfill = d.wait_for("the backfill's runs", lambda: [r for r in d.runs() if r["run_type"] == "backfill"])
    assert sorted(r["logical_date"][:16] for r in backfill) == ["2026-11-09T03:00", "2026-11-16T03:00"]
    assert {d.finished(r["dag_run_id"], timeout_s=900) for r in backfill} == {"success"}, d.logs()
    assert d.finished(manual, timeout_s=900) == "success", d.logs()
    every = [t for run in [manual, *(r["dag_run_id"] for r in backfill)] for t in d.task_instances(run)]
    for host in HOSTS:
        host_spans = spans(every, f"{host}.train")
        assert len(host_spans) == 6, host_spans  # two repeats of each of three runs
        for (_, end), (start, _) in zip(host_spans, host_spans[1:]):
            assert end <= start, f"two trainers of {host} overlapped: {host_spans}"
    done = sorted(
        (dt.datetime.fromisoformat(r["start_date"]), dt.datetime.fromisoformat(r["end_date"]))
        for r in d.runs()
        if r["run_type"] == "backfill"
    )
    assert done[0][1] <= done[1][0], f"backfill runs overlapped: {done}"
    for r in backfill:
        assert [row["status"] for row in rows(d, r["dag_run_id"])] == ["ok"] * 4


def run_state(d: Deployment, run_id: str) -> str | None:
    store = ResultStore(d.results.url)
    try:
        return store.run_state(run_id)
    finally:
        store.engine.dispose()


def run_folder_of(d: Deployment, run_id: str):
    from trainbench.store import run_folder

    return run_folder.run_dir(d.home / "output", run_id)


def test_cancelling_a_run_records_its_running_repeats_and_publishes_what_it_has(deployment, mailbox):
    d = deployment
    run_id = d.trigger({**CONF, "epochs": 5, "train_images": 2048, "repeats": 1})
    trainers = [d.wait_for(f"a trainer on {h}", lambda h=h: trainer_of(d, f"worker-{h}"), timeout_s=300) for h in HOSTS]
    d.wait_for("2 s of training on each host", lambda: all(time.time() - t.create_time() > 2 for t in trainers))
    d.api("PATCH", f"/api/v2/dags/cifar10_benchmark/dagRuns/{urllib.parse.quote(run_id)}", {"state": "failed"})
    for trainer in trainers:
        trainer.wait(timeout=30)
    found = d.wait_for("the stopped repeats' rows", lambda: len(rows(d, run_id)) == 2 and rows(d, run_id), 120)
    assert sorted((r["host"], r["status"]) for r in found) == [(h, "killed") for h in HOSTS]
    assert all(r["error"].startswith("killed by Airflow") and r["wall_s"] > 2 for r in found)
    folder = run_folder_of(d, run_id)
    assert len(list((folder / "raw").glob("*.json"))) == 2
    report = folder / "report.md"  # each stopped task publishes: the last holds both (the first may hold one)
    d.wait_for(
        "the report of both stopped repeats", lambda: report.is_file() and report.read_text().count("(killed)") == 2
    )
    assert d.run(run_id)["state"] == "failed" and run_state(d, run_id) == "stopped"  # never `running` for ever
    text = report.read_text()  # says it was stopped, and what never ran on each host (issue 27, item 2)
    planned = re.search(r"stopped in Airflow while measuring: it was never judged against history; 2 of (\d+)", text)
    assert planned and text.count("- never ran on") == int(planned[1]) - 2, text[:2000]
    (mail,) = d.wait_for("the stopped-run email", lambda: mails(mailbox, run_id), timeout_s=120)
    assert "1 run failed" in mail and "stopped while measuring" in mail


def test_a_stopped_case_fails_its_run_after_the_rest_is_published(deployment):
    d = deployment
    run_id = d.trigger({**CONF, "epochs": 4, "train_images": 2048})
    trainer = d.wait_for("a trainer on host_a", lambda: trainer_of(d, "worker-host_a"), timeout_s=300)
    d.wait_for("2 s of training", lambda: time.time() - trainer.create_time() > 2)
    running = d.wait_for(
        "the running case",
        lambda: [t for t in d.task_instances(run_id) if t["task_id"] == "host_a.train" and t["state"] == "running"],
    )
    path = f"/api/v2/dags/cifar10_benchmark/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/host_a.train"
    d.api("PATCH", f"{path}/{running[0]['map_index']}", {"new_state": "failed"})
    assert d.finished(run_id, timeout_s=900) == "failed", d.logs()
    states = {t["task_id"]: t["state"] for t in d.task_instances(run_id) if t["map_index"] in (-1, None)}
    assert states["publish"] == "success" and states["check_complete"] == "failed"
    found = rows(d, run_id)
    assert sorted(r["status"] for r in found) == ["killed", "ok", "ok", "ok"]
    assert "(killed)" in (run_folder_of(d, run_id) / "report.md").read_text()


PYTORCH_TRAINER = str(ROOT / "include" / "trainbench" / "trainers" / "pytorch_train.py")


def ours(script: str) -> list[psutil.Process]:
    """The processes running this checkout's `script` (its absolute path is in their command line)."""
    return [p for p in psutil.process_iter(["cmdline"]) if script in (p.info["cmdline"] or [])]


def trainer_of(d: Deployment, worker: str) -> psutil.Process | None:
    """The trainer process a worker's task started (it runs in a session of its own, under the task)."""
    root = d.procs[worker].pid
    for p in ours(PYTORCH_TRAINER):
        try:
            if root in {a.pid for a in p.parents()}:
                return p
        except psutil.NoSuchProcess:
            continue
    return None


def test_faults_lose_nothing_and_duplicate_nothing(deployment):
    """A host's worker killed mid-case, the results database down mid-case, a trainer that crashes."""
    d = deployment
    run_id = d.trigger({**CONF, "frameworks": ["pytorch", "neon"], "epochs": 3, "train_images": 2560})
    victim = d.wait_for("a trainer on host_a", lambda: trainer_of(d, "worker-host_a"), timeout_s=300)
    d.kill("worker-host_a")
    victim.wait(timeout=10)  # the trainer dies with its task: no orphan
    d.restart("worker-host_a")
    measuring = d.wait_for("a trainer on host_b", lambda: trainer_of(d, "worker-host_b"), timeout_s=300)
    d.results.stop()
    measuring.wait(timeout=120)  # the case ends while the database is down: its row waits in its raw JSON
    time.sleep(2)  # not a wait for anything: the outage lasts on after the case ended
    d.results.start()
    assert d.finished(run_id, timeout_s=900) == "success", d.logs()
    found = rows(d, run_id)
    assert sorted((r["host"], r["framework"], r["repeat"], r["status"]) for r in found) == sorted(
        [(h, "pytorch", rep, "ok") for h in HOSTS for rep in (1, 2)]
        + [(h, "neon", rep, "crashed") for h in HOSTS for rep in (1, 2)]
    )
    store = ResultStore(d.results.url)
    assert len(store.rows(run_id)) == 8  # exactly one row per case x repeat, whatever was retried
    store.engine.dispose()
    crashed = [r for r in found if r["status"] == "crashed"]
    assert all("simulated trainer crash" in r["error"] for r in crashed)
    tries = {(t["task_id"], t["map_index"]): t["try_number"] for t in d.task_instances(run_id)}
    assert max(n for (task, _), n in tries.items() if task == "host_a.train") >= 2, tries
    assert max(n for (task, _), n in tries.items() if task == "host_b.train") >= 2, tries
    assert not ours(PYTORCH_TRAINER)  # no orphan of this checkout's (another checkout may be training beside it)


def test_an_upgrade_seen_by_the_watch_is_measured_before_and_after_on_its_host(deployment, mailbox):
    """The watch reads both hosts; then host_b's pytorch interpreter is replaced by one whose trainers start 5 s
    later still (an upgrade that slows it) and host_a's jax interpreter by another (a change no case measured there
    depends on): the watch announces both, the asset-triggered before/after DAG measures host_b's case on host_b,
    its old interpreter alongside, and finds its wall time slower with an interval holding the injected ratio;
    host_a measures nothing and is never alerted."""
    d = deployment
    baseline = d.trigger({**CONF, "repeats": 3, "epochs": 2})  # steady images/s needs a second epoch
    assert d.finished(baseline) == "success", d.logs()
    for dag in ("environment_watch", "environment_change"):
        d.api("PATCH", f"/api/v2/dags/{dag}", {"is_paused": False})
    first = d.trigger({}, dag="environment_watch")
    assert d.finished(first, dag="environment_watch") == "success", d.logs()

    slower = slow_python(d.home / "slower-python", 2 * SLOW_START_S)
    write_config(d.home, interpreters={"pytorch": {"python": str(slower)}}, name="trainbench-host_b.toml", **d.common)
    other_jax = {"jax": {"python": str(ENVS / "pytorch" / "bin" / "python")}}
    write_config(d.home, interpreters=other_jax, **d.common)
    changed = d.trigger({}, dag="environment_watch")
    assert d.finished(changed, dag="environment_watch") == "success", d.logs()

    store = ResultStore(d.results.url)
    try:

        def before_after() -> list[dict]:  # the earlier tests' runs in new environments hold verdicts of their own
            return [v for run in store.run_ids(ENVIRONMENT_CHANGE) for v in store.environment_verdicts(run)]

        d.wait_for("host_b's before/after verdicts", lambda: len(before_after()) == 2, 900)
        runs = store.run_ids(ENVIRONMENT_CHANGE)
        reports = [run_folder_of(d, run) / "environment_change.md" for run in runs]
        d.wait_for("the before/after reports", lambda: all(p.is_file() for p in reports), timeout_s=300)
        verdicts = before_after()
        measured = [r for run in runs for r in store.results(run)]
    finally:
        store.engine.dispose()
    assert all(r.environment["worker_host"] == r.host for r in measured) and {r.host for r in measured} == {"host_b"}
    found = {(v["host"], v["metric"]): v for v in verdicts}
    assert set(found) == {("host_b", "wall_s"), ("host_b", "images_per_s")}
    wall = found[("host_b", "wall_s")]
    injected = 1 + SLOW_START_S / statistics.median(wall["before"])  # the old interpreter, measured alongside
    assert wall["verdict"] == "slower", wall["detail"]
    assert 1 + wall["low"] <= injected <= 1 + wall["high"], (injected, wall["detail"])
    assert "frameworks.pytorch.interpreter" in wall["changed"] and "alternating with the new" in wall["detail"]
    text = "".join(p.read_text() for p in reports)
    assert "1 of 1 case slower (pytorch | cpu: wall time +" in text, text
    assert re.search(r"## host_a, [^\n]*frameworks\.jax\.interpreter [^\n]*\n\nno case measured\n", text), text
    alerted = d.wait_for("the before/after alert", lambda: [m for run in runs for m in mails(mailbox, run)], 120)
    (slower,) = [m for m in alerted if "environment change · host_b · pytorch | cpu" in m]
    assert "wall time +" in slower and "95 % interval" in slower and "frameworks.pytorch.interpreter" in slower
    (link,) = re.findall(r"^report: (\S+)$", slower, re.MULTILINE)
    assert link.endswith("/environment_change.html"), link  # the page a before/after run writes, served
    assert "1 of 1 case slower (pytorch | cpu: wall time +" in d.page(urllib.parse.urlsplit(link).path)
    assert not [m for m in alerted if "environment change · host_a" in m]
