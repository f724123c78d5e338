"""Alerts with evidence, received by a real SMTP server and a real webhook receiver on 127.0.0.1."""

import asyncio
import dataclasses
import datetime as dt
import json
import time
import types

import pytest
import sqlalchemy as sa
from airflow.sdk import DAG
from airflow.serialization.decoders import decode_deadline_alert
from airflow.serialization.encoders import encode_deadline_alert
from airflow.serialization.enums import DagAttributeTypes as DAT
from airflow.serialization.enums import Encoding
from airflow.triggers.callback import CallbackTrigger

from trainbench import config, devices
from trainbench.result import Result
from trainbench.store.results import open_store
from trainbench.workflows import alerts, pipeline
from trainbench.workflows.alerts import DeliveryFailed, Links
from trainbench_airflow import notifiers

from conftest import write_config
from receivers import Mailbox, free_port, running_mailbox, running_webhook

RUN = "scheduled__2026-11-23T03:00:00+00:00"
BASE = "http://airflow.example:8080"
LINKS = Links.of(BASE, "cifar10_benchmark", RUN)
QUOTED = "scheduled__2026-11-23T03%3A00%3A00%2B00%3A00"
HEADINGS = (
    "regressed · gpu · pytorch | 0",
    "environment change · gpu · jax | 0",
    "tainted repeat · gpu · pytorch | 0,1",
    "host quarantined · gpu-b",
)
EVIDENCE = (
    # the regression: the change against history, what it rests on, and that the environment is the history's
    "environment changed: nothing: judged against earlier runs in the same environment",
    "wall time +7.2 %: 12.90 s against 12.03 s, the median of 5 earlier run(s)",
    "Mann-Whitney U, p = 0.004",
    # the driver upgrade: the change with its 95 % interval and what changed
    "images/s slower after the environment changed",
    "images/s -7.2 % [-9.4, -5.1] (after / before - 1, 95 % interval)",
    "environment changed: driver_version 550.54 → 560.35, jax 0.4.30 → 0.4.31",
    # the tainted repeat: why, and what it measured against the case's counted repeats
    "GPU-1 throttled by hw_slowdown for 30 % of the repeat",
    "this repeat 14.40 s, +20.0 % against the median 12.00 s of the case's 2 counted repeat(s)",
    # the quarantine
    "GPU-0: 2 new uncorrectable ECC errors",
)
LINK_LINES = (
    f"report: {BASE}/trainbench/runs/{QUOTED}/report.html",
    f"Benchmarks: {BASE}/trainbench/",
    f"DAG run: {BASE}/dags/cifar10_benchmark/runs/{QUOTED}",
)


@pytest.fixture
def cfg(tmp_path) -> config.Config:
    path = write_config(
        tmp_path,
        database_url=f"sqlite:///{tmp_path}/r.db",
        alerts={
            "email_to": ["gpu-team@example.com"],
            "email_from": "trainbench@example.com",
            "base_url": BASE,
            "late_after_hours": 6,
        },
    )
    return config.load(path)


@pytest.fixture
def mailbox():
    with running_mailbox() as box:
        yield box


@pytest.fixture
def webhook():
    with running_webhook() as hook:
        yield hook


def row(repeat: int, status: str = "ok", wall: float = 12.0, device_set: str = "0,1", error=None) -> Result:
    return Result(
        run_id=RUN,
        case_key=f"pytorch__{device_set}__r{repeat}",
        env_key="e1",
        framework="pytorch",
        device_set=device_set,
        repeat=repeat,
        status=status,
        host="gpu",
        wall_s=wall,
        error=error,
        started_at=dt.datetime(2026, 11, 23, 3, repeat, tzinfo=dt.UTC),
    )


def regression(verdict: str, run_id: str = RUN) -> dict:
    return {
        "host": "gpu",
        "framework": "pytorch",
        "device_set": "0",
        "env_key": "e1",
        "metric": "wall_s",
        "verdict": verdict,
        "current": 12.9,
        "baseline": 12.03,
        "change": 0.072,
        "p_value": 0.004,
        "history_runs": 5,
        "detail": "+7.2% against the median of 5 run(s) (bar 5.0%); Mann-Whitney U, p = 0.004",
    }


def environment_verdict(verdict: str, change: float, low: float, high: float) -> dict:
    return {
        "metric": "images_per_s",
        "verdict": verdict,
        "change": change,
        "low": low,
        "high": high,
        "before": [78000.0, 78100.0, 77900.0],
        "after": [72400.0, 72500.0, 72300.0],
        "baseline_run": "old",
        "repeats": 3,
        "changed": {"driver_version": ["550.54", "560.35"], "jax": ["0.4.30", "0.4.31"]},
        "changed_at": None,
        "detail": "confirmed by a second measurement",
    }


def findings(cfg: config.Config) -> None:
    """One of each finding in the run, beside what must not alert: a stable verdict, another run's regression,
    a "no change" verdict, ok repeats."""
    store = open_store(cfg.database_url)
    for run_id in (RUN, "older"):
        store.save_run(run_id, {})
    store.save_verdicts(RUN, [regression("regressed"), {**regression("stable"), "metric": "images_per_s"}])
    store.save_verdicts("older", [{**regression("regressed"), "framework": "mxnet"}])
    store.save_environment_verdicts(RUN, "gpu", "jax", "0", [environment_verdict("slower", -0.072, -0.094, -0.051)])
    store.save_environment_verdicts(RUN, "gpu", "mxnet", "0", [environment_verdict("no change", 0.001, -0.01, 0.01)])
    store.save(row(1))
    store.save(row(2, "tainted", 14.4, error="GPU-1 throttled by hw_slowdown for 30 % of the repeat"))
    store.save(row(3))
    store.quarantine(RUN, "gpu-b", "GPU-0: 2 new uncorrectable ECC errors")


def channels(cfg: config.Config, mailbox: Mailbox, url: str) -> list[alerts.Channel]:
    return [
        alerts.Smtp("127.0.0.1", mailbox.port, "", "", False, cfg.alerts.email_from, cfg.alerts.email_to),
        alerts.Webhook(url),
    ]


def slack_text(post: dict) -> str:
    return "\n".join(b["text"]["text"] for b in post["blocks"] if b["type"] in ("header", "section"))


def test_a_runs_findings_arrive_by_email_and_webhook_with_their_evidence(cfg, mailbox, webhook):
    findings(cfg)
    found = alerts.for_run(cfg, RUN, LINKS)
    assert [a.kind for a in found] == ["regressed", "environment_change", "tainted", "quarantined"]
    sent = alerts.deliver(open_store(cfg.database_url), RUN, found, channels(cfg, mailbox, webhook.url))
    assert sent == {"email": 4, "webhook": 4}

    (mail,) = mailbox.messages
    assert mail["Subject"] == (
        f"trainbench run {RUN}: 1 regressed, 1 environment change, 1 tainted repeat, 1 host quarantined"
    )
    assert (mail["From"], mail["To"]) == ("trainbench@example.com", "gpu-team@example.com")
    assert mail["Date"] and mail["Message-ID"].endswith("@example.com>")
    body = mail.get_body(("plain",)).get_content()
    for evidence in (*HEADINGS, *EVIDENCE, *LINK_LINES):
        assert evidence in body, evidence
    assert "mxnet" not in body and "stable" not in body and "no change" not in body

    (post,) = webhook.posts
    assert post["text"].startswith(mail["Subject"])
    shown = slack_text(post)
    for evidence in (*(f"*{h}*" for h in HEADINGS), *EVIDENCE):
        assert evidence in shown, evidence
    links = [e["text"] for b in post["blocks"] if b["type"] == "context" for e in b["elements"]]
    assert links == [
        f"<{LINKS.report}|report>",
        f"<{BASE}/trainbench/|Benchmarks>",
        f"<{BASE}/dags/cifar10_benchmark/runs/{QUOTED}|DAG run>",
    ]


def test_each_channel_is_sent_an_alert_once(cfg, mailbox, webhook):
    findings(cfg)
    store = open_store(cfg.database_url)
    both = channels(cfg, mailbox, webhook.url)
    alerts.deliver(store, RUN, alerts.for_run(cfg, RUN, LINKS), both)
    assert alerts.deliver(store, RUN, alerts.for_run(cfg, RUN, LINKS), both) == {"email": 0, "webhook": 0}
    assert (len(mailbox.messages), len(webhook.posts)) == (1, 1)

    store.quarantine(RUN, "gpu-c", "GPU-3: PCIe link x8 of x16")
    assert alerts.deliver(store, RUN, alerts.for_run(cfg, RUN, LINKS), both) == {"email": 1, "webhook": 1}
    later = mailbox.messages[1].get_body(("plain",)).get_content()
    assert "GPU-3: PCIe link x8 of x16" in later and "regressed" not in later
    assert "gpu-c" in slack_text(webhook.posts[1]) and "regressed" not in slack_text(webhook.posts[1])


def test_a_failed_channel_raises_records_nothing_and_is_sent_by_the_retry(cfg, mailbox, webhook):
    """Every channel is tried: the webhook delivers while email is down; the retry sends email only."""
    findings(cfg)
    store = open_store(cfg.database_url)
    found = alerts.for_run(cfg, RUN, LINKS)
    closed = free_port()
    down = [alerts.Smtp("127.0.0.1", closed, "", "", False, "a@b.c", ("d@e.f",)), alerts.Webhook(webhook.url)]
    with pytest.raises(DeliveryFailed, match=f"email to d@e.f via 127.0.0.1:{closed}: "):
        alerts.deliver(store, RUN, found, down)
    assert store.alerts_already_sent(RUN, "email") == set()
    assert store.alerts_already_sent(RUN, "webhook") == {a.key for a in found}
    assert alerts.deliver(store, RUN, found, channels(cfg, mailbox, webhook.url)) == {"email": 4, "webhook": 0}
    assert (len(mailbox.messages), len(webhook.posts)) == (1, 1)


@pytest.fixture
def refusing_webhook():
    """Answers as Slack does to a message it refuses."""
    with running_webhook(400, b"invalid_blocks") as hook:
        yield hook.url


def test_a_refused_or_unreachable_webhook_names_its_host_never_its_secret_url(cfg, refusing_webhook):
    findings(cfg)
    found = alerts.for_run(cfg, RUN, LINKS)
    store = open_store(cfg.database_url)
    with pytest.raises(DeliveryFailed) as refused:
        alerts.deliver(store, RUN, found, [alerts.Webhook(refusing_webhook)])
    port = refusing_webhook.split(":")[2].split("/")[0]
    assert str(refused.value) == f"webhook at 127.0.0.1:{port} answered HTTP 400: b'invalid_blocks'"
    closed = f"http://127.0.0.1:{free_port()}/services/T0/B0/s3cret-token"
    with pytest.raises(DeliveryFailed, match="unreachable") as unreachable:
        alerts.deliver(store, RUN, found, [alerts.Webhook(closed)])
    assert "s3cret" not in str(unreachable.value) + repr(alerts.Webhook(closed))
    assert store.alerts_already_sent(RUN, "webhook") == set()


def test_a_webhook_keeps_its_url_credentials_and_query_for_sending_and_shows_neither(cfg, webhook, monkeypatch):
    import base64

    secret_uri = f"http://bot:p%40ss-7f1c@127.0.0.1:{webhook.port}/hooks/T0?token=tok-7f1c"
    monkeypatch.setenv("AIRFLOW_CONN_TRAINBENCH_WEBHOOK", secret_uri)
    [hook] = notifiers.channels(cfg, print)
    findings(cfg)
    alerts.deliver(open_store(cfg.database_url), RUN, alerts.for_run(cfg, RUN, LINKS), [hook])
    assert webhook.requests == [
        {"path": "/hooks/T0?token=tok-7f1c", "authorization": "Basic " + base64.b64encode(b"bot:p@ss-7f1c").decode()}
    ]
    closed = secret_uri.replace(str(webhook.port), str(free_port()))
    with pytest.raises(DeliveryFailed, match="unreachable") as unreachable:
        alerts.Webhook(closed).send(alerts.for_run(cfg, RUN, LINKS))
    assert "7f1c" not in str(unreachable.value) and "bot" not in str(unreachable.value)


def test_an_alert_for_sixteen_gpus_is_recorded_on_postgresql_and_sent_once(postgres_url, webhook):
    from trainbench.store.results import ResultStore, metadata

    sixteen = ",".join(f"GPU-{i:02d}aaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee" for i in range(16))
    verdict = {
        "host": "gpu",
        "framework": "pytorch",
        "device_set": sixteen,
        "env_key": "e" * 16,
        "metric": "wall_s",
        "verdict": "regressed",
        "current": 12.0,
        "baseline": 10.0,
        "change": 0.2,
        "p_value": 0.01,
        "history_runs": 4,
        "detail": "",
    }
    alert = alerts.regressed(RUN, verdict, LINKS)
    assert (
        len(alert.key) <= 500 and alert.key != alerts.regressed(RUN, {**verdict, "metric": "images_per_s"}, LINKS).key
    )
    store = ResultStore(postgres_url)
    try:
        for _ in range(2):  # a retried task
            alerts.deliver(store, RUN, [alert], [alerts.Webhook(webhook.url)])
        assert len(webhook.posts) == 1 and store.alerts_already_sent(RUN, "webhook") == {alert.key}
    finally:
        metadata.drop_all(store.engine)
        with store.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS trainbench_schema_version"))


def test_a_slack_message_keeps_within_slacks_block_limit_and_escapes_its_markup():
    at = dt.datetime.now(dt.UTC)
    reason = "XID 79 <fallen off the bus> & reset"
    many = [alerts.quarantined(RUN, {"host": f"h{i}", "reason": reason, "at": at}, LINKS) for i in range(60)]
    message = alerts.slack_message(many)
    assert len(message["blocks"]) == alerts.SLACK_MAX_BLOCKS
    assert message["blocks"][-2]["text"]["text"] == "and 13 more: see the report"
    assert "detail: XID 79 &lt;fallen off the bus&gt; &amp; reset" in message["blocks"][1]["text"]["text"]


def set_connections(monkeypatch, mailbox: Mailbox | None, webhook_url: str | None) -> None:
    """Airflow reads a connection from AIRFLOW_CONN_<ID> before any other secrets backend."""
    if mailbox:
        monkeypatch.setenv("AIRFLOW_CONN_TRAINBENCH_SMTP", f"smtp://127.0.0.1:{mailbox.port}")
    if webhook_url:
        monkeypatch.setenv("AIRFLOW_CONN_TRAINBENCH_WEBHOOK", webhook_url)


def test_a_quarantine_is_announced_when_it_happens_and_a_failed_announcement_never_fails_the_task(
    cfg, mailbox, webhook, monkeypatch
):
    """Only the host's quarantine goes out then (the run's other findings wait for its alert task), once per channel
    however many of the host's cases announce it; an unreachable channel or database is logged, never raised."""
    findings(cfg)
    set_connections(monkeypatch, mailbox, webhook.url)
    logged: list[str] = []
    assert notifiers.announce_quarantine(cfg, RUN, "cifar10_benchmark", "gpu", logged.append) == {}  # not quarantined
    assert mailbox.messages == []
    for _ in range(2):
        notifiers.announce_quarantine(cfg, RUN, "cifar10_benchmark", "gpu-b", logged.append)
    (mail,) = mailbox.messages
    assert mail["Subject"].strip() == f"trainbench run {RUN}: 1 host quarantined"
    assert "GPU-0: 2 new uncorrectable ECC errors" in mail.get_body(("plain",)).get_content()
    assert len(webhook.posts) == 1
    store = open_store(cfg.database_url)
    store.quarantine(RUN, "gpu-c", "doctor: results database: unreachable")
    monkeypatch.setenv("AIRFLOW_CONN_TRAINBENCH_SMTP", f"smtp://127.0.0.1:{free_port()}")
    assert notifiers.announce_quarantine(cfg, RUN, "cifar10_benchmark", "gpu-c", logged.append) == {}
    assert "the quarantine of gpu-c could not be announced now" in logged[-1]
    assert len(webhook.posts) == 2 and "quarantined:gpu-c" in store.alerts_already_sent(RUN, "webhook")
    assert "quarantined:gpu-c" not in store.alerts_already_sent(RUN, "email")  # the run's alert task sends it
    broken = dataclasses.replace(cfg, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert notifiers.announce_quarantine(broken, RUN, "cifar10_benchmark", "gpu-c", logged.append) == {}
    assert "the quarantine of gpu-c could not be announced now" in logged[-1]


def test_the_dags_alert_task_builds_its_channels_from_airflow_connections(cfg, mailbox, webhook, monkeypatch):
    findings(cfg)
    set_connections(monkeypatch, mailbox, webhook.url)
    logged: list[str] = []
    assert notifiers.send_run_alerts(cfg, RUN, "cifar10_benchmark", logged.append) == {"email": 4, "webhook": 4}
    body = mailbox.messages[0].get_body(("plain",)).get_content()
    for evidence in (*HEADINGS, *EVIDENCE, *LINK_LINES):
        assert evidence in body, evidence
    assert len(webhook.posts) == 1


def test_a_missing_connection_or_recipient_turns_its_channel_off(cfg, mailbox, webhook, monkeypatch):
    logged: list[str] = []
    set_connections(monkeypatch, mailbox, None)
    assert [c.name for c in notifiers.channels(cfg, logged.append)] == ["email"]
    assert logged == ["alerts: no Airflow connection 'trainbench_webhook': that channel is off"]
    logged.clear()
    set_connections(monkeypatch, None, webhook.url)
    silent = config.load(write_config(cfg.path.parent, name="silent.toml"))
    assert [c.name for c in notifiers.channels(silent, logged.append)] == ["webhook"]
    assert logged == ["alerts: [alerts] email_to is empty: email is off"]


def test_smtp_and_webhook_connections_are_read_as_airflow_holds_them(cfg, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_TRAINBENCH_SMTP", "smtp://alice:p%40ss@mail.example.com:587?starttls=true")
    monkeypatch.setenv(
        "AIRFLOW_CONN_TRAINBENCH_WEBHOOK",
        json.dumps({"conn_type": "http", "host": "https://hooks.slack.com/services/T0/B0/XYZ"}),
    )
    smtp, hook = notifiers.channels(cfg, print)
    assert smtp == alerts.Smtp(
        "mail.example.com", 587, "alice", "p@ss", True, "trainbench@example.com", ("gpu-team@example.com",)
    )
    assert hook == alerts.Webhook("https://hooks.slack.com/services/T0/B0/XYZ")
    monkeypatch.setenv("AIRFLOW_CONN_TRAINBENCH_WEBHOOK", "https://hooks.slack.com/services/T0/B0/XYZ")
    assert notifiers.channels(cfg, print)[1] == hook


def test_a_failed_run_alert_is_sent_by_the_dags_failure_callback(cfg, mailbox, webhook, monkeypatch):
    set_connections(monkeypatch, mailbox, webhook.url)
    open_store(cfg.database_url)
    context = {
        "dag": DAG("cifar10_benchmark", schedule=None),
        "run_id": RUN,
        "reason": "task_failure",
        "ti": types.SimpleNamespace(task_id="gpu.train", map_index=3),
        "dag_run": types.SimpleNamespace(clear_number=0),
    }
    failed = notifiers.RunFailed(cfg)
    for _ in range(2):  # as the Dag processor calls it; a second call repeats nothing
        failed(context)
    (mail,) = mailbox.messages
    assert mail["Subject"] == f"trainbench run {RUN}: 1 run failed"
    body = mail.get_body(("plain",)).get_content()
    assert "the run failed (task_failure); last failed task: gpu.train[3]" in body
    assert f"DAG run: {BASE}/dags/cifar10_benchmark/runs/{QUOTED}" in body
    assert len(webhook.posts) == 1
    failed({**context, "dag_run": types.SimpleNamespace(clear_number=1)})  # cleared, and failed again
    assert len(mailbox.messages) == 2 and len(webhook.posts) == 2


def test_a_refused_run_is_announced_with_why_and_without_a_report_link(cfg, mailbox, webhook, monkeypatch):
    """Item 3 of issue 27: the failure callback's last failed task of a refused run is check_complete, which only
    repeats that the run was refused; the alert names the refusal itself, and a refused run has no report."""
    from trainbench.workflows import pipeline

    set_connections(monkeypatch, mailbox, webhook.url)
    pipeline.refuse_run(cfg, RUN, "unknown key(s) ['epoch'] in the run's conf; accepted: ['batch_size', ...]")
    context = {
        "dag": DAG("cifar10_benchmark", schedule=None),
        "run_id": RUN,
        "reason": "task_failure",
        "ti": types.SimpleNamespace(task_id="check_complete", map_index=-1),
        "dag_run": types.SimpleNamespace(clear_number=0),
    }
    notifiers.RunFailed(cfg)(context)
    (mail,) = mailbox.messages
    body = mail.get_body(("plain",)).get_content()
    assert "the run was refused before measuring anything: unknown key(s) ['epoch'] in the run's conf" in body
    assert "check_complete" not in body and "report:" not in body and "/trainbench/runs/" not in body
    assert f"DAG run: {BASE}/dags/cifar10_benchmark/runs/{QUOTED}" in body
    (post,) = webhook.posts
    assert "/trainbench/runs/" not in json.dumps(post) and "refused before measuring" in slack_text(post)


def run_deadline_callback(cfg: config.Config, state: str, run_type: str = "scheduled", **run: str) -> list:
    """As Airflow runs a missed deadline: the DAG's alert serialized, its callback awaited by the triggerer's
    CallbackTrigger with the run (and the API's other fields of it, `run`) in the context the scheduler adds."""
    alert = decode_deadline_alert(
        {Encoding.TYPE: DAT.DEADLINE_ALERT, Encoding.VAR: encode_deadline_alert(notifiers.deadline(cfg))}
    )
    context = {
        "dag_run": {"dag_run_id": RUN, "dag_id": "cifar10_benchmark", "logical_date": "2026-11-23T03:00:00Z"}
        | {"state": state, "run_type": run_type, **run},
        "deadline": {"id": "d1"},
    }
    trigger = CallbackTrigger(alert.callback.path, {**alert.callback.kwargs, "context": context})

    async def events():
        return [e.payload async for e in trigger.run()]

    return asyncio.run(events())


def test_a_late_run_is_alerted_by_the_deadline_callback(cfg, mailbox, webhook, monkeypatch):
    set_connections(monkeypatch, mailbox, webhook.url)
    monkeypatch.setenv("TRAINBENCH_CONFIG", str(cfg.path))
    store = open_store(cfg.database_url)
    store.save_run(RUN, {})
    for r in (row(1), row(2), row(3)):
        store.save(r)
    deadline = notifiers.deadline(cfg)
    assert deadline.interval == dt.timedelta(hours=6)
    assert deadline.reference == notifiers.DeadlineReference.DAGRUN_LOGICAL_DATE

    assert [e["state"] for e in run_deadline_callback(cfg, "running")] == ["running", "success"]
    (mail,) = mailbox.messages
    assert mail["Subject"] == f"trainbench run {RUN}: 1 run late"
    body = mail.get_body(("plain",)).get_content()
    assert "not finished 6 h after its slot 2026-11-23 03:00 UTC" in body
    assert "results stored so far, per host: gpu 3" in body
    assert f"report: {BASE}/trainbench/runs/{QUOTED}/report.html" in body
    assert "run late" in slack_text(webhook.posts[0])


def test_a_weekly_run_that_skips_itself_for_starting_days_late_is_never_announced_late(
    cfg, mailbox, webhook, monkeypatch
):
    """Unpausing the DAG runs the last missed slot, which `on_time` skips: no false alarm (its report link 404s)."""
    set_connections(monkeypatch, mailbox, webhook.url)
    monkeypatch.setenv("TRAINBENCH_CONFIG", str(cfg.path))
    unpaused = run_deadline_callback(cfg, "running", start_date="2026-11-26T09:00:00Z")
    assert [e["state"] for e in unpaused] == ["running", "success"]
    assert mailbox.messages == [] and webhook.posts == []
    on_time = run_deadline_callback(cfg, "running", start_date="2026-11-23T03:00:04Z")
    assert [e["state"] for e in on_time] == ["running", "success"] and len(mailbox.messages) == 1


def test_a_run_that_already_failed_is_not_late(cfg, mailbox, webhook, monkeypatch):
    set_connections(monkeypatch, mailbox, webhook.url)
    monkeypatch.setenv("TRAINBENCH_CONFIG", str(cfg.path))
    open_store(cfg.database_url)
    assert [e["state"] for e in run_deadline_callback(cfg, "failed")] == ["running", "success"]
    assert (mailbox.messages, webhook.posts) == ([], [])


def test_a_backfilled_or_manual_run_is_never_late(cfg, mailbox, webhook, monkeypatch):
    """A backfill of an old week passes its deadline as it is created: only a scheduled run has a slot to miss."""
    set_connections(monkeypatch, mailbox, webhook.url)
    monkeypatch.setenv("TRAINBENCH_CONFIG", str(cfg.path))
    open_store(cfg.database_url)
    for run_type in ("backfill", "manual"):
        assert [e["state"] for e in run_deadline_callback(cfg, "running", run_type)] == ["running", "success"]
    assert (mailbox.messages, webhook.posts) == ([], [])


def test_airflow_dags_test_runs_the_dag_without_its_deadline(cfg):
    """Airflow 3.3.2's dag.test() cannot finish a successful run of a DAG with a deadline; tests/test_dag_run.py runs
    the DAG that way, the deployment tests with the deadline."""
    assert notifiers.deadline(cfg, ["/venv/bin/airflow", "dags", "test", "cifar10_benchmark"]) is None
    assert notifiers.deadline(cfg, ["/venv/bin/airflow", "dag-processor"]) is not None


def test_an_smtp_password_is_never_sent_unencrypted(mailbox):
    plain = alerts.Smtp("127.0.0.1", mailbox.port, "alice", "s3cret", False, "a@b.c", ("d@e.f",))
    found = [alerts.failed_run(RUN, "task_failure", LINKS, "gpu.train")]
    with pytest.raises(DeliveryFailed, match='refusing to send the SMTP password unencrypted; set {"starttls": true}'):
        plain.send(found)
    assert mailbox.messages == []


def test_the_smtp_password_goes_only_over_starttls_to_a_server_whose_certificate_is_trusted(tmp_path, monkeypatch):
    """A server whose certificate the host does not trust gets nothing, not even the login; once the host trusts it
    (here through SSL_CERT_FILE, as OpenSSL reads it), the login and the message go over TLS."""
    found = [alerts.failed_run(RUN, "task_failure", LINKS, "gpu.train")]
    with running_mailbox(tls_folder=tmp_path) as box:
        smtp = alerts.Smtp("127.0.0.1", box.port, "alice", "s3cret", True, "a@b.c", ("d@e.f",))
        with pytest.raises(DeliveryFailed, match="CERTIFICATE_VERIFY_FAILED"):
            smtp.send(found)
        assert box.logins == [] and box.messages == []
        monkeypatch.setenv("SSL_CERT_FILE", str(box.cert))
        smtp.send(found)
    assert box.logins == [("alice", "s3cret", True)]
    (mail,) = box.messages
    assert "the run failed (task_failure)" in mail.get_body(("plain",)).get_content()


def test_a_failed_run_is_announced_even_when_the_results_database_is_down(cfg, mailbox, webhook, monkeypatch):
    """A database outage is a likely reason for the failure: the alert goes out without the record of what was sent."""
    set_connections(monkeypatch, mailbox, webhook.url)
    down = dataclasses.replace(cfg, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    context = {"dag": DAG("cifar10_benchmark", schedule=None), "run_id": RUN, "reason": "task_failure"}
    notifiers.RunFailed(down)(context)
    (mail,) = mailbox.messages
    assert "the run failed (task_failure)" in mail.get_body(("plain",)).get_content() and len(webhook.posts) == 1


def test_a_case_task_on_a_quarantined_host_announces_the_quarantine_at_once(tmp_path, mailbox, webhook, monkeypatch):
    from trainbench_airflow.operators import TrainCaseOperator

    path = write_config(tmp_path, alerts={"email_to": ["gpu-team@example.com"], "base_url": BASE})
    cfg = config.load(path)
    dataset = {"kind": "synthetic", "data_dir": str(tmp_path / "data")}
    (spec,) = pipeline.plan_matrix(cfg.settings, devices.discover().to_dict(), dataset)
    pipeline.start_run(cfg, RUN, cfg.settings)
    open_store(cfg.database_url).quarantine(RUN, spec.case.host, "GPU-0: XID 79 (see NVIDIA's XID catalogue)")
    monkeypatch.setenv("TRAINBENCH_CONFIG", str(path))
    set_connections(monkeypatch, mailbox, webhook.url)
    context = {"run_id": RUN, "ti": types.SimpleNamespace(try_number=1, dag_id="cifar10_benchmark")}
    assert TrainCaseOperator(task_id="train", spec=spec.to_dict()).execute(context)["status"] == "unavailable"
    (mail,) = mailbox.messages
    body = mail.get_body(("plain",)).get_content()
    assert "host quarantined · gpu" in body and "GPU-0: XID 79" in body and len(webhook.posts) == 1


class SlowChannel:
    """A channel that takes its time to send (a slow mail server): long enough for a second announcer to look
    whether the alert went out before the first has recorded it."""

    name = "slow"

    def __init__(self):
        self.messages: list[list[str]] = []

    def send(self, found) -> None:
        time.sleep(0.5)
        self.messages.append([a.key for a in found])


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_announcers_of_one_alert_at_once_send_it_once(tmp_path, backend, request):
    """A stopped case task and the DAG's failure callback announce the stopped run at the same moment (CI saw two
    emails): they take turns, and the second finds the alert recorded."""
    import threading

    url = f"sqlite:///{tmp_path}/results.db" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    open_store(url)
    alert = alerts.failed_run(f"{RUN}-{backend}", "stopped while measuring", Links.of(BASE, "cifar10_benchmark", RUN))
    channel, start = SlowChannel(), threading.Barrier(2)

    def announce() -> None:
        start.wait()
        alerts.deliver(open_store(url), alert.run_id, [alert], [channel])

    announcers = [threading.Thread(target=announce) for _ in range(2)]
    for t in announcers:
        t.start()
    for t in announcers:
        t.join(timeout=60)
    assert channel.messages == [[alert.key]]
