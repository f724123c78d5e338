"""Alerts with evidence: what a run found that somebody must hear about without opening a page.

Kinds: `regressed` (a regression verdict), `environment_change` (a before/after verdict other than "no change"),
`tainted` (a repeat measured on an unhealthy or throttled GPU), `quarantined` (a host stopped for the rest of the
run), `failed_run` and `late_run`.  Each names its host, its case, the change with its interval, what changed in
the environment and links to the run's report, the Benchmarks page and the DAG run.

A run's alerts go out as one message per channel (SMTP, a Slack-compatible webhook: plain values, built by the
caller from wherever it keeps secrets).  `deliver` sends a channel only what it has not delivered for the run and
records that only once the channel took it: a retried task never sends twice, and a failed delivery raises (the
task retries) and is sent by the next try.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import email.utils
import hashlib
import json
import smtplib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

import sqlalchemy.exc

from trainbench import cases
from trainbench.cases import Spread
from trainbench.checks import environment_change
from trainbench.checks.regression import METRIC_NAMES
from trainbench.config import Config
from trainbench.reports.markdown import changed_text
from trainbench.result import Result
from trainbench.store import run_folder
from trainbench.store.results import ALERT_KEY_LENGTH, ResultStore, open_store

REGRESSED, ENVIRONMENT_CHANGE, TAINTED, QUARANTINED = "regressed", "environment_change", "tainted", "quarantined"
FAILED_RUN, LATE_RUN = "failed_run", "late_run"
KINDS = (REGRESSED, ENVIRONMENT_CHANGE, TAINTED, QUARANTINED, FAILED_RUN, LATE_RUN)
TITLES = {
    REGRESSED: "regressed",
    ENVIRONMENT_CHANGE: "environment change",
    TAINTED: "tainted repeat",
    QUARANTINED: "host quarantined",
    FAILED_RUN: "run failed",
    LATE_RUN: "run late",
}
SLACK_MAX_BLOCKS = 50  # Slack refuses a message with more
SAME_ENVIRONMENT = "nothing: judged against earlier runs in the same environment"


class DeliveryFailed(Exception):
    """A channel did not take the message; nothing was recorded as sent, so a retry sends it."""


@dataclass(frozen=True)
class Links:
    """Where a person follows an alert: the run's report, the Benchmarks page and the run in Airflow."""

    report: str
    benchmarks: str
    dag_run: str

    @classmethod
    def of(cls, base_url: str, dag_id: str, run_id: str, page: str = run_folder.REPORT_PAGE) -> Links:
        """`page`: the run folder's page the report link opens (`run_folder.PAGES`)."""
        base, run = base_url.rstrip("/"), urllib.parse.quote(run_id, safe="")
        return cls(f"{base}/trainbench/runs/{run}/{page}", f"{base}/trainbench/", f"{base}/dags/{dag_id}/runs/{run}")

    def shown(self) -> list[tuple[str, str]]:
        """(name, address) of each link there is (a refused run has no report)."""
        named = (("report", self.report), ("Benchmarks", self.benchmarks), ("DAG run", self.dag_run))
        return [(name, url) for name, url in named if url]


@dataclass(frozen=True)
class Alert:
    """One finding and its evidence; `key` tells it apart from the run's other alerts on every try."""

    kind: str
    run_id: str
    host: str  # "" for the whole run
    case: str  # "pytorch | 0"; "" for a host or the whole run
    finding: str
    change: str  # the change with its interval, or the figure the finding rests on
    environment: str  # what changed in the environment
    detail: str
    links: Links
    key: str

    def __post_init__(self):
        """A key naming 16 GPU UUIDs overflows its column on PostgreSQL, and an unrecorded alert is re-sent on
        every retry: a long key keeps its start and ends in a hash of the whole."""
        if len(self.key) > ALERT_KEY_LENGTH:
            digest = hashlib.blake2b(self.key.encode(), digest_size=16).hexdigest()
            object.__setattr__(self, "key", f"{self.key[: ALERT_KEY_LENGTH - 33]}#{digest}")

    @property
    def title(self) -> str:
        return " · ".join(p for p in (TITLES[self.kind], self.host, self.case) if p)

    def lines(self) -> list[str]:
        fields = (("finding", self.finding), ("change", self.change), ("environment changed", self.environment))
        return [f"{name}: {value}" for name, value in (*fields, ("detail", self.detail)) if value]


def _case(row: Mapping) -> str:
    return f"{row['framework']} | {row['device_set']}"


def _figure(metric: str, value: float | None) -> str:
    if value is None:
        return "none"
    return f"{value:.2f} s" if metric == "wall_s" else f"{value:,.0f} images/s"


def regressed(run_id: str, verdict: Mapping, links: Links) -> Alert:
    """A regression verdict: its change against the history's median (a test's p-value, not an interval, is what
    the regression judge decides on; `trainbench.checks.regression`)."""
    metric = verdict["metric"]
    change = (
        f"{METRIC_NAMES[metric]} {100 * verdict['change']:+.1f} %: {_figure(metric, verdict['current'])} against "
        f"{_figure(metric, verdict['baseline'])}, the median of {verdict['history_runs']} earlier run(s)"
    )
    return Alert(
        REGRESSED,
        run_id,
        verdict.get("host") or "",
        _case(verdict),
        f"{METRIC_NAMES[metric]} regressed against history",
        change,
        SAME_ENVIRONMENT,
        verdict["detail"] or "",
        links,
        f"{REGRESSED}:{verdict.get('host') or ''}:{_case(verdict)}:{verdict['env_key']}:{metric}",
    )


def environment_changed(run_id: str, verdict: Mapping, links: Links) -> Alert:
    """A before/after verdict: the change after / before - 1 with its 95 % interval, and what the watch saw change."""
    metric = verdict["metric"]
    interval = environment_change.change_text(verdict["change"], verdict["low"], verdict["high"]) or "not computed"
    return Alert(
        ENVIRONMENT_CHANGE,
        run_id,
        verdict["host"],
        _case(verdict),
        f"{METRIC_NAMES[metric]} {verdict['verdict']} after the environment changed",
        f"{METRIC_NAMES[metric]} {interval} (after / before - 1, 95 % interval)",
        changed_text(verdict["changed"] or {}) or "nothing named",
        verdict["detail"] or "",
        links,
        f"{ENVIRONMENT_CHANGE}:{verdict['host']}:{_case(verdict)}:{metric}",
    )


def tainted(run_id: str, result: Result, counted_wall: Spread, links: Links) -> Alert:
    """A tainted repeat: why (its error), and its wall time against its case's counted repeats of the run."""
    case = f"{result.framework} | {result.device_set}"
    change = f"this repeat {_figure('wall_s', result.wall_s)}"
    if result.wall_s is not None and counted_wall.median:
        change += (
            f", {100 * (result.wall_s / counted_wall.median - 1):+.1f} % against the median "
            f"{_figure('wall_s', counted_wall.median)} of the case's {counted_wall.n} counted repeat(s)"
        )
    return Alert(
        TAINTED,
        run_id,
        result.host or "",
        case,
        f"repeat {result.repeat} measured on an unhealthy or throttled GPU: kept out of statistics and verdicts",
        change,
        "",
        result.error or "no reason recorded",
        links,
        f"{TAINTED}:{result.host or ''}:{case}:{result.repeat}:{int(result.warmup)}",
    )


def quarantined(run_id: str, quarantine: Mapping, links: Links) -> Alert:
    at = quarantine["at"]
    return Alert(
        QUARANTINED,
        run_id,
        quarantine["host"],
        "",
        f"stopped measuring at {cases.utc(at):%Y-%m-%d %H:%M} UTC: its further cases of the run are unavailable",
        "",
        "",
        quarantine["reason"],
        links,
        f"{QUARANTINED}:{quarantine['host']}",
    )


def failed_run(run_id: str, reason: str, links: Links, failed_task: str = "", clear_number: int = 0) -> Alert:
    """`clear_number`: how often the run was cleared; a run that fails again after a clear is announced again."""
    return Alert(
        FAILED_RUN,
        run_id,
        "",
        "",
        f"the run failed ({reason})" + (f"; last failed task: {failed_task}" if failed_task else ""),
        "",
        "",
        "",
        links,
        f"{FAILED_RUN}:{clear_number}",
    )


def refused_run(run_id: str, reason: str, links: Links) -> Alert:
    """A run refused before measuring (its conf): why, and links without a report, which it never has."""
    return Alert(
        FAILED_RUN,
        run_id,
        "",
        "",
        f"the run was refused before measuring anything: {reason}",
        "",
        "",
        "",
        dataclasses.replace(links, report=""),
        f"{FAILED_RUN}:refused",
    )


def late_run(run_id: str, slot: dt.datetime, hours: float, rows: Iterable[Mapping], links: Links) -> Alert:
    """A run not finished `hours` after its slot, with how far each host got (results stored so far)."""
    per_host: dict[str, int] = {}
    for r in rows:
        per_host[r.get("host") or "?"] = per_host.get(r.get("host") or "?", 0) + 1
    stored = ", ".join(f"{host} {n}" for host, n in sorted(per_host.items())) or "none"
    return Alert(
        LATE_RUN,
        run_id,
        "",
        "",
        f"not finished {hours:g} h after its slot {cases.utc(slot):%Y-%m-%d %H:%M} UTC",
        "",
        "",
        f"results stored so far, per host: {stored}",
        links,
        LATE_RUN,
    )


def for_run(config: Config, run_id: str, links: Links) -> list[Alert]:
    """What the run found: regressed verdicts, environment verdicts other than "no change", tainted repeats and
    quarantined hosts, in that order."""
    store = open_store(config.database_url)
    found = [regressed(run_id, v, links) for v in cases.listed(store.verdicts(run_id)) if v["verdict"] == REGRESSED]
    found += [
        environment_changed(run_id, v, links)
        for v in cases.listed(store.environment_verdicts(run_id))
        if v["verdict"] != environment_change.NO_CHANGE
    ]
    found += [
        tainted(run_id, r, summary.wall, links)
        for summary in cases.summarize(store.current_results(run_id), config.measurement.max_cv)
        for r in summary.results
        if r.status == TAINTED
    ]
    return found + [quarantined(run_id, q, links) for q in store.quarantines(run_id)]


def subject(alerts: Sequence[Alert]) -> str:
    """ "trainbench run scheduled__2026-11-23: 1 regressed, 2 tainted repeats"."""
    counts: dict[str, int] = {}
    for a in alerts:
        counts[a.kind] = counts.get(a.kind, 0) + 1
    named = ", ".join(f"{n} {TITLES[kind]}{'s' if n > 1 else ''}" for kind, n in counts.items())
    return f"trainbench run {alerts[0].run_id}: {named}"


def _link_lines(links: Links) -> list[str]:
    return [f"{name}: {url}" for name, url in links.shown()]


def email_text(alerts: Sequence[Alert]) -> str:
    blocks = ["\n".join([a.title, *(f"  {line}" for line in a.lines())]) for a in alerts]
    return "\n\n".join([*blocks, "\n".join(_link_lines(alerts[0].links))]) + "\n"


def _mrkdwn(text: str) -> str:
    """Slack reads &, < and > as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(alerts: Sequence[Alert]) -> dict:
    """Slack's incoming-webhook form: `text` (notifications, clients without blocks) and `blocks`, at most
    SLACK_MAX_BLOCKS of them: past that the report holds the rest."""
    links = alerts[0].links
    room = SLACK_MAX_BLOCKS - 3
    shown = alerts if len(alerts) <= room + 1 else alerts[:room]
    blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": subject(alerts)[:150]}}]
    blocks += [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _mrkdwn("\n".join([f"*{a.title}*", *a.lines()]))[:3000]},
        }
        for a in shown
    ]
    if len(shown) < len(alerts):
        more = f"and {len(alerts) - len(shown)} more: see the report"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": more}})
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"<{url}|{name}>"} for name, url in links.shown()],
        }
    )
    text = "\n".join([subject(alerts), *(a.title for a in alerts), *_link_lines(links)])
    return {"text": _mrkdwn(text), "blocks": blocks}


class Channel(Protocol):
    @property
    def name(self) -> str: ...

    def send(self, alerts: Sequence[Alert]) -> None: ...


@dataclass(frozen=True)
class Smtp:
    host: str
    port: int
    login: str
    password: str = dataclasses.field(repr=False)
    starttls: bool
    sender: str
    to: tuple[str, ...]
    timeout_s: float = 30.0
    name: str = "email"

    def send(self, alerts: Sequence[Alert]) -> None:
        message = EmailMessage()
        message["Subject"] = subject(alerts)
        message["From"] = self.sender
        message["To"] = ", ".join(self.to)
        message["Date"] = email.utils.formatdate(usegmt=True)  # mail without them reads as spam to many filters
        message["Message-ID"] = email.utils.make_msgid(domain=self.sender.rpartition("@")[2] or None)
        message.set_content(email_text(alerts))
        implicit_tls = self.port == SMTPS_PORT
        if self.login and not (implicit_tls or self.starttls):
            raise DeliveryFailed(
                f"email via {self.host}:{self.port}: refusing to send the SMTP password unencrypted; set "
                f'{{"starttls": true}} in the connection\'s extra, or use port {SMTPS_PORT} (implicit TLS)'
            )
        try:
            tls = ssl.create_default_context()  # verifies the server (smtplib's own default does not)
            with (
                smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_s, context=tls)
                if implicit_tls
                else smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
            ) as smtp:
                if self.starttls and not implicit_tls:
                    smtp.starttls(context=tls)
                if self.login:
                    smtp.login(self.login, self.password)
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryFailed(f"email to {', '.join(self.to)} via {self.host}:{self.port}: {exc}") from None


SMTPS_PORT = 465  # SMTP over implicit TLS (RFC 8314)


@dataclass(frozen=True)
class Webhook:
    url: str = dataclasses.field(
        repr=False
    )  # a webhook's URL is its secret (path, query, userinfo): errors name its host only
    timeout_s: float = 30.0
    name: str = "webhook"

    def __post_init__(self):
        if urllib.parse.urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError("a webhook URL must start with https:// (or http://)")

    def send(self, alerts: Sequence[Alert]) -> None:
        """POST the message; credentials in the URL's userinfo go as HTTP Basic auth (urllib sends none of its
        own), its query as it is."""
        parts = urllib.parse.urlsplit(self.url)
        where = parts.netloc.rpartition("@")[2]
        headers = {"Content-Type": "application/json"}
        if parts.username is not None:
            user, password = urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        request = urllib.request.Request(
            parts._replace(netloc=where).geturl(),
            data=json.dumps(slack_message(alerts)).encode(),
            headers=headers,
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise DeliveryFailed(f"webhook at {where} answered HTTP {exc.code}: {exc.read()[:200]!r}") from None
        except OSError as exc:
            raise DeliveryFailed(f"webhook at {where} unreachable: {getattr(exc, 'reason', exc)}") from None


def deliver(
    store: ResultStore | None, run_id: str, alerts: Sequence[Alert], channels: Iterable[Channel]
) -> dict[str, int]:
    """Send each channel the run's alerts it has not delivered yet, in one message, and record them once it took
    them.  Every channel is tried; then DeliveryFailed names those that failed.  Returns alerts sent per channel.
    Without the record (`store` None, or the database unreachable: often why a run failed or is late) every alert
    is sent: better twice than never."""
    sent: dict[str, int] = {}
    failed: list[str] = []
    with contextlib.ExitStack() as turn:
        if store is not None:  # the run's deliveries one at a time; without the database, at once
            with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
                turn.enter_context(store.delivering(run_id))
        for channel in channels:
            new = [a for a in alerts if a.key not in _already_sent(store, run_id, channel.name)]
            if new:
                try:
                    channel.send(new)
                except DeliveryFailed as exc:
                    failed.append(str(exc))
                    continue
                _record_sent(store, run_id, channel.name, [a.key for a in new])
            sent[channel.name] = len(new)
    if failed:
        raise DeliveryFailed("; ".join(failed))
    return sent


def _already_sent(store: ResultStore | None, run_id: str, channel: str) -> set[str]:
    try:
        return store.alerts_already_sent(run_id, channel) if store is not None else set()
    except sqlalchemy.exc.SQLAlchemyError:
        return set()


def _record_sent(store: ResultStore | None, run_id: str, channel: str, keys: list[str]) -> None:
    if store is not None:
        with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
            store.mark_alerts_sent(run_id, channel, keys)
