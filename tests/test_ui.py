"""The Benchmarks page inside the Airflow UI, end to end: a real `airflow api-server` with the trainbench_ui
plugin, a results database filled by two real runs of the cifar10_benchmark DAG (`airflow dags test`, short CPU
runs), and headless Chromium driven over the DevTools protocol (a cookie holds the JWT, as after a login in the
UI); the same browser opens the HTML report the DAG published, from its file.  Screenshots go to the test's
folder and, for the record, to output/screenshots/.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from trainbench import config as config_mod
from trainbench.result import Result
from trainbench.store import run_folder
from trainbench.store.results import ResultStore, results, runs
from trainbench.workflows import pipeline

from conftest import BIN, ROOT, dags_test, write_config

pytestmark = pytest.mark.integration

WEEKS = ("2026-01-05T03:00:00+00:00", "2026-01-12T03:00:00+00:00")  # the runs' logical dates
CONF = {"frameworks": ["pytorch"], "device_sets": ["cpu", "cpu:2"], "epochs": 2, "train_images": 256, "repeats": 2}
SCREENSHOTS = ROOT / "output" / "screenshots"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """End a process started in a session of its own, and everything it started."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Server:
    """`airflow api-server` (one worker) on SQLite with the project's plugins, SimpleAuthManager user admin."""

    def __init__(self, home: Path, config: Path):
        self.home, self.port = home, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__API__BASE_URL": self.base,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "TRAINBENCH_CONFIG": str(config),
        }
        self.proc: subprocess.Popen | None = None
        self.token = ""

    def migrate(self) -> None:
        proc = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"], env=self.env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    def start(self) -> None:
        with open(self.home / "api-server.log", "w") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "airflow"), "api-server", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        passwords = self.home / "simple_auth_manager_passwords.json.generated"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the api-server exited:\n{self.log()}"
            with contextlib.suppress(OSError, urllib.error.URLError):
                if passwords.is_file() and self.request("/api/v2/monitor/health", auth=False)[0] == 200:
                    break
            time.sleep(1)
        else:
            raise AssertionError(f"the api-server did not answer within 300 s:\n{self.log()}")
        secret = json.loads(passwords.read_text())["admin"]
        status, body, _ = self.request(
            "/auth/token", auth=False, method="POST", body={"username": "admin", "password": secret}
        )
        assert status == 201 or status == 200, body
        self.token = json.loads(body)["access_token"]

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)

    def log(self) -> str:
        path = self.home / "api-server.log"
        return path.read_text()[-4000:] if path.is_file() else ""

    def request(
        self, path: str, auth: bool = True, method: str = "GET", body: dict | None = None, headers: dict | None = None
    ) -> tuple[int, str, dict]:
        """(status, body, headers) of a request; redirects are not followed."""
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if auth:
            all_headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, method=method, data=data, headers=all_headers)
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=60) as response:
                return response.status, response.read().decode(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), dict(exc.headers)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Browser:
    """Headless Chromium driven over the Chrome DevTools protocol (websockets), one page."""

    def __init__(self, folder: Path):
        from websockets.sync.client import connect

        profile = folder / "chromium-profile"
        profile.mkdir(parents=True)
        self.log = open(folder / "chromium.log", "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--window-size=1400,1000",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().count("\n") >= 1):
            assert self.proc.poll() is None, f"chromium exited: {(folder / 'chromium.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port within 60 s"
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:
            page = next(t for t in json.loads(response.read()) if t["type"] == "page")
        self.closing = contextlib.ExitStack()
        self.ws = self.closing.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30))
        self.next_id = 0

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=120))
            if message.get("id") == self.next_id:
                assert "error" not in message, f"{method}: {message['error']}"
                return message["result"]

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 60):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if value := self.evaluate(expression):
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {expression} on {self.evaluate('location.href')}")

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")

    def click(self, x: float, y: float, count: int = 1) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=count)

    def drag(self, x0: float, x1: float, y: float) -> None:
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x0, y=y)
        self.send("Input.dispatchMouseEvent", type="mousePressed", x=x0, y=y, button="left", clickCount=1)
        for step in range(1, 6):
            x = x0 + (x1 - x0) * step / 5
            self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y, button="left", buttons=1)
        self.send("Input.dispatchMouseEvent", type="mouseReleased", x=x1, y=y, button="left", clickCount=1)

    def screenshot(self, path: Path, whole_page: bool = False) -> Path:
        options: dict = {"captureBeyondViewport": False}
        if whole_page:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
            options = {"captureBeyondViewport": True, "clip": clip}
        data = self.send("Page.captureScreenshot", format="png", **options)["data"]
        path.write_bytes(base64.b64decode(data))
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SCREENSHOTS / path.name)
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.closing.close()
        _stop(self.proc)
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Two DAG runs in the api-server's own Airflow home (the pages link to them) and a fresh results database,
    then the api-server with the plugin on top of both."""
    folder = tmp_path_factory.mktemp("ui")
    config = write_config(folder, dataset="synthetic")
    home = folder / "airflow"
    home.mkdir()
    srv = Server(home, config)
    try:
        srv.migrate()
        for week in WEEKS:
            proc = dags_test(srv.env, CONF, logical_date=week)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        srv.config = config_mod.load(config)
        srv.runs = tuple(ResultStore(srv.config.database_url).run_ids())  # `dags test` names them after "now"
        assert len(srv.runs) == 2 and all(run.startswith("manual__") for run in srv.runs), srv.runs
        _mark_regression(srv.config, srv.runs[1])
        srv.start()
        yield srv
    finally:
        srv.stop()


def _mark_regression(cfg: config_mod.Config, run_id: str) -> None:
    """Two short runs give no verdict but "insufficient history"; mark one so the charts have a regression to show."""
    store = ResultStore(cfg.database_url)
    row = next(r for r in store.current_rows(run_id) if r["device_set"] == "cpu" and not r["warmup"])
    found = [{k: v[k] for k in v if k != "run_id"} for v in store.verdicts() if v["run_id"] == run_id]
    found = [v for v in found if not (v["device_set"] == "cpu" and v["metric"] == "wall_s")]
    found.append(
        dict(
            host=row["host"],
            framework="pytorch",
            device_set="cpu",
            env_key=row["env_key"],
            metric="wall_s",
            verdict="regressed",
            current=1.2,
            baseline=1.0,
            change=0.2,
            p_value=0.01,
            history_runs=1,
            detail="marked by tests/test_ui.py",
        )
    )
    store.save_verdicts(run_id, found)


def test_anonymous_requests_get_no_data(server):
    for path in (
        "/trainbench/",
        "/trainbench/history",
        "/trainbench/api/latest",
        f"/trainbench/runs/{server.runs[0]}/report.html",
    ):
        status, body, _ = server.request(path, auth=False)
        assert status == 401, (path, status, body)
        assert "pytorch" not in body
    status, body, headers = server.request("/trainbench/?host=gpu", auth=False, headers={"Accept": "text/html"})
    assert status == 303 and headers["location"].startswith("/auth/login?next="), (status, headers)
    assert urllib.parse.unquote(headers["location"]).endswith("/trainbench/?host=gpu")
    status, _, _ = server.request("/trainbench/api/latest", auth=False, headers={"Authorization": "Bearer nonsense"})
    assert status in (401, 403)
    status, _, _ = server.request("/trainbench/", auth=False, headers={"Cookie": "_token=nonsense"})
    assert status in (401, 403)
    for code in ("/trainbench/charts/chart.js", "/trainbench/charts/chart.css", "/trainbench/static/style.css"):
        assert server.request(code, auth=False)[0] == 200, code  # code, no data


def test_a_client_with_a_bearer_token(server):
    status, body, _ = server.request("/api/v2/plugins")
    assert status == 200, body
    plugin = next(p for p in json.loads(body)["plugins"] if p["name"] == "trainbench_ui")
    assert plugin["external_views"][0]["name"] == "Benchmarks"
    assert plugin["external_views"][0]["href"] == "/trainbench/"

    status, body, _ = server.request("/trainbench/api/latest")
    assert status == 200, body
    (host,) = json.loads(body)
    assert host["host"] == "gpu" and host["run_id"] == server.runs[1]
    assert {(c["framework"], c["device_set"]) for c in host["cases"]} == {("pytorch", "cpu"), ("pytorch", "cpu:2")}
    for case in host["cases"]:
        assert case["ok"] == case["repeats"] == 2 and case["statuses"] == ["ok"]
        lo, hi = case["wall_spread"]
        assert lo <= case["wall"] <= hi and case["user"] > 0 and case["ips"] > 0
        assert case["devices"] and all(d["methods"] and d["used"] > 0 for d in case["devices"])

    status, body, _ = server.request("/trainbench/api/latest?variant=default")
    assert {(c["framework"], c["device_set"]) for c in json.loads(body)[0]["cases"]} == {
        ("pytorch", "cpu"),
        ("pytorch", "cpu:2"),
    }
    status, body, _ = server.request("/trainbench/api/latest?variant=graph")  # no pytorch-graph runs were seeded
    assert status == 200 and json.loads(body) == [], body

    status, body, _ = server.request("/trainbench/api/history")
    history = json.loads(body)
    assert [r["run"] for r in history["runs"]] == list(server.runs)
    assert all(len(s["points"]) == 2 for c in history["charts"] for s in c["series"])

    status, body, headers = server.request(
        f"/trainbench/runs/{urllib.parse.quote(server.runs[1], safe='')}/report.html"
    )
    assert status == 200 and headers["content-type"].startswith("text/html") and "<html" in body.lower()
    for bad in ("..%2F..%2Fetc%2Fpasswd", "..", "%2E%2E", "nope"):
        assert server.request(f"/trainbench/runs/{bad}/report.html")[0] == 404, bad


@pytest.fixture
def browser(server, tmp_path):
    if CHROMIUM is None:
        pytest.fail(
            "chromium is not installed; make test installs it: apt-get install -y --no-install-recommends chromium"
        )
    b = Browser(tmp_path)
    try:
        # What a login in the Airflow UI leaves in the browser: the JWT in the `_token` cookie.
        b.send("Network.setCookie", name="_token", value=server.token, url=server.base + "/", httpOnly=True)
        yield b
    finally:
        b.close()


def test_the_pages_in_a_browser(server, browser, tmp_path):
    base = server.base + "/trainbench"
    browser.goto(base + "/")
    rows = browser.evaluate(
        "[...document.querySelectorAll('main tr.case')].map(r => [...r.cells].map(c => c.innerText.trim()))"
    )
    assert [r[:3] for r in rows] == [["pytorch", "cpu:2", "ok"], ["pytorch", "cpu", "ok"]], rows
    assert server.runs[1] in browser.evaluate("document.querySelector('p.run').innerText")
    links = browser.evaluate("[...document.querySelectorAll('p.run a')].map(a => a.getAttribute('href'))")
    assert links == [
        f"/trainbench/runs/{urllib.parse.quote(server.runs[1], safe='')}/report.html",
        f"/dags/cifar10_benchmark/runs/{urllib.parse.quote(server.runs[1], safe='')}",
    ]
    browser.screenshot(tmp_path / "ui-latest.png")

    browser.goto(base + "/history")
    assert browser.wait_for("document.body.dataset.chartsRendered") == "2"
    points = browser.evaluate(
        "[...document.querySelectorAll('figure.chart')].map(f => f.querySelectorAll('svg circle.pt').length)"
    )
    assert points == [2, 2]
    assert browser.evaluate("document.querySelectorAll('svg path.mark.regressed').length") == 1

    # hover a point: its values show
    box = browser.evaluate(
        "(() => { const r = document.querySelector('figure.chart svg circle.pt').getBoundingClientRect();"
        " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
    )
    browser.send("Input.dispatchMouseEvent", type="mouseMoved", x=box[0], y=box[1])
    tip = browser.wait_for("(t => t && !t.hidden && t.innerText)(document.querySelector('figure.chart .tooltip'))")
    assert server.runs[0] in tip and "wall" in tip and "2 repeats" in tip
    browser.screenshot(tmp_path / "ui-history.png")

    # drag across the newer half of the first chart: zoomed to one run; a double-click resets
    plot = browser.evaluate(
        "(() => { const r = document.querySelector('figure.chart svg').getBoundingClientRect();"
        " return [r.x, r.y, r.width, r.height]; })()"
    )
    x, y, w, h = plot
    browser.drag(x + w * 0.7, x + w * 0.99, y + h * 0.5)
    first_chart = "document.querySelector('figure.chart')"
    browser.wait_for(f"{first_chart}.querySelectorAll('circle.pt').length === 1")
    assert browser.evaluate(f"{first_chart}.querySelector('circle.pt').dataset.run") == server.runs[1]
    assert browser.evaluate(f"{first_chart}.classList.contains('zoomed')")
    browser.click(x + w * 0.5, y + h * 0.5, count=2)
    browser.wait_for(f"{first_chart}.querySelectorAll('circle.pt').length === 2")

    # filters: query parameters, as the form submits them
    browser.goto(base + "/?device_set=cpu")
    assert browser.evaluate("document.querySelectorAll('main tr.case').length") == 1
    assert browser.evaluate("document.querySelector('select[name=device_set]').value") == "cpu"
    browser.goto(base + "/history?framework=pytorch&device_set=cpu%3A2")
    assert browser.wait_for("document.body.dataset.chartsRendered") == "1"
    browser.goto(base + "/?date_from=2099-01-01")
    assert browser.evaluate("document.querySelectorAll('main tr.case').length") == 0
    assert "No results match" in browser.evaluate("document.querySelector('main').innerText")

    browser.goto(base + "/compare")
    cases = browser.evaluate(
        "[...document.querySelectorAll('table.compare tbody.case')].map(b => [b.dataset.host, b.dataset.deviceSet,"
        " b.querySelectorAll('tr.env').length])"
    )
    assert cases == [["gpu", "cpu:2", 1], ["gpu", "cpu", 1]], cases  # both runs measured in one environment
    assert "torch" in browser.evaluate("document.querySelector('table.compare td.env').innerText")
    browser.screenshot(tmp_path / "ui-compare.png")

    # inside the Airflow UI: the nav entry's page embeds ours
    browser.goto(server.base + "/plugin/benchmarks")
    browser.wait_for("!!document.querySelector('iframe[src*=\"/trainbench/\"]')", timeout_s=120)
    browser.wait_for(
        "(f => f && f.contentDocument && f.contentDocument.querySelectorAll('tr.case').length === 2)"
        "(document.querySelector('iframe'))",
        timeout_s=60,
    )
    shot = browser.screenshot(tmp_path / "ui-in-airflow.png")
    assert shot.stat().st_size > 10_000


def test_the_report_of_a_dag_run_in_a_browser(server, browser, tmp_path):
    """report.html as the DAG published it, opened from its file: every chart drawn offline, values on hover."""
    report = run_folder.run_dir(server.config.output_dir, server.runs[1]) / "report.html"
    assert (server.config.output_dir / "latest").resolve() == report.parent.resolve()
    browser.goto((server.config.output_dir / "latest" / "report.html").as_uri())
    figures = browser.evaluate("document.querySelectorAll('figure.chart').length")
    assert figures == 8  # wall time, images/s, memory, phases, speed-up, efficiency, history of cpu and cpu:2
    assert browser.wait_for("document.body.dataset.chartsRendered") == str(figures)
    assert browser.evaluate("document.querySelectorAll('figure.chart svg.chart').length") == figures
    assert browser.evaluate("performance.getEntriesByType('resource').length") == 0  # nothing fetched
    bars = browser.evaluate(
        "[...document.querySelectorAll('figure.chart')].map(f => f.querySelectorAll('svg.bars rect.bar').length)"
    )
    assert bars[:3] == [2, 2, 2] and bars[3] == 12 and bars[4:6] == [1, 1], bars  # phases: 6 per case
    points = browser.evaluate(
        "[...document.querySelectorAll('figure.chart')].map(f => f.querySelectorAll('svg.history circle.pt').length)"
    )
    assert points == [0] * 6 + [2, 2], points

    def box(element: str) -> list[float]:
        """Scrolled into the middle of the viewport: the element's box (x, y, width, height)."""
        return browser.evaluate(
            f"(e => {{ e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect();"
            f" return [r.x, r.y, r.width, r.height]; }})({element})"
        )

    def hover(element: str) -> str:
        x, y, w, h = box(element)
        browser.send("Input.dispatchMouseEvent", type="mouseMoved", x=x + w / 2, y=y + h / 2)
        return browser.wait_for(
            f"(t => t && !t.hidden && t.innerText)({element}.closest('figure').querySelector('.tooltip'))"
        )

    bar = "document.querySelector('figure.chart svg.bars rect.bar')"
    wall = browser.evaluate(f"+{bar}.dataset.value")
    tip = hover(bar)
    assert tip.startswith("pytorch | CPU") and f"{wall:,.2f} s" in tip and "2 repeats, min" in tip, tip
    tip = hover("document.querySelector('figure.chart svg.history circle.pt')")
    assert server.runs[0] in tip and "wall" in tip and "2 repeats" in tip, tip

    # the history zooms as on the page: drag across the newer half, double-click to reset
    history = "document.querySelectorAll('figure.chart')[6]"
    x, y, w, h = box(f"{history}.querySelector('svg')")
    browser.drag(x + w * 0.7, x + w * 0.99, y + h * 0.5)
    browser.wait_for(f"{history}.querySelectorAll('circle.pt').length === 1")
    assert browser.evaluate(f"{history}.querySelector('circle.pt').dataset.run") == server.runs[1]
    browser.click(x + w * 0.5, y + h * 0.5, count=2)
    browser.wait_for(f"{history}.querySelectorAll('circle.pt').length === 2")

    hover(bar)
    browser.screenshot(tmp_path / "report-html-hover.png")
    shot = browser.screenshot(tmp_path / "report-html.png", whole_page=True)
    assert shot.stat().st_size > 50_000


def test_hostile_query_input_is_answered_with_a_4xx_never_a_500(server):
    status, body, _ = server.request(f"/trainbench/runs/{'r' * 5000}/report.html")
    assert status == 404 and "accepted: 1 to 200 of" in body
    many = "&".join(f"gpu=g{i}" for i in range(3000))
    for page in ("/trainbench/", "/trainbench/api/history"):
        status, body, _ = server.request(f"{page}?{many}")
        assert status == 400 and "gpu is given 3000 different values; at most 50 are accepted" in body, body[:300]
    for page in ("/trainbench/?date_to=9999-12-31", "/trainbench/api/latest?date_to=9999-12-31&date_from=0001-01-01"):
        assert server.request(page)[0] == 200, page
    status, body, _ = server.request("/trainbench/api/history?date_from=last%20week")
    assert status == 400 and "date_from 'last week' is not a date; accepted: YYYY-MM-DD" in body, body[:300]
    status, body, _ = server.request("/trainbench/history?date_from=last%20week")  # a person sees all, and why
    assert status == 200 and "date_from &#39;last week&#39; is not a date; accepted: YYYY-MM-DD; ignored" in body


def test_a_run_still_running_is_never_shown_as_latest_and_every_verdict_is(server):
    """A newer run with partial rows is named as still running; the latest stays the newest published run."""
    store = ResultStore(server.config.database_url)
    partial = "manual__2026-01-19T03:00:00+00:00"
    row = next(r for r in store.current_rows(server.runs[1]) if not r["warmup"])
    copied = Result.from_dict({**row, "run_id": partial})
    store.save_run(partial, {}, logical_date=dt.datetime(2026, 1, 19, 3, tzinfo=dt.UTC))
    store.save(copied)
    try:
        status, body, _ = server.request("/trainbench/api/latest")
        (host,) = json.loads(body)
        assert host["run_id"] == server.runs[1]
        (pending,) = host["unpublished"]
        assert {k: pending[k] for k in ("run_id", "run_at", "state", "rows")} == {
            "run_id": partial,
            "run_at": "2026-01-19T03:00:00+00:00",
            "state": "running",
            "rows": 1,
        }
        assert pending["last_row_at"].startswith(row["started_at"].strftime("%Y-%m-%dT%H:%M"))
        status, page, _ = server.request("/trainbench/")
        started = row["started_at"].strftime("%Y-%m-%d %H:%M")
        assert f"Newer run <code>{partial}</code> still running (1 row so far, the last started {started} UTC)" in page
        others = {v["verdict"] for v in store.verdicts() if v["run_id"] == server.runs[1]} - {"regressed"}
        assert others and others <= {"inconclusive", "insufficient history", "stable"}
        for verdict in others:  # verdicts that are not a change are shown too
            assert f'class="verdict {verdict.replace(" ", "-")}"' in page, verdict
    finally:
        with store.engine.begin() as conn:
            conn.execute(results.delete().where(results.c.run_id == partial))
            conn.execute(runs.delete().where(runs.c.run_id == partial))


def test_the_environments_of_each_case_side_by_side_in_a_browser(server, browser, tmp_path):
    """A newer run in an upgraded environment (torch bumped, 20 % faster): per case, both environments oldest first,
    what changed and the change with its range; each case of each host on its own rows."""
    store = ResultStore(server.config.database_url)
    upgraded = "manual__2026-01-19T03:00:00+00:00"
    store.save_run(upgraded, {}, logical_date=dt.datetime(2026, 1, 19, 3, tzinfo=dt.UTC))
    for row in store.current_rows(server.runs[1]):
        env = {**row["environment"], "framework_packages": {"torch": "9.9.9"}}
        faster = {"wall_s": row["wall_s"] * 0.8, "images_per_s": row["images_per_s"] * 1.25}
        key = f"{row['env_key']}-upgraded"  # a new environment per case, as a fingerprint's key is
        store.save(Result.from_dict({**row, **faster, "run_id": upgraded, "env_key": key, "environment": env}))
    try:
        browser.goto(server.base + "/trainbench/compare")
        cases = browser.evaluate(
            "[...document.querySelectorAll('table.compare tbody.case')].map(b => [b.dataset.deviceSet,"
            " [...b.querySelectorAll('tr.env')].map(r => r.querySelector('td.env').innerText.split('\\n')[0])])"
        )
        assert [(ds, len(envs)) for ds, envs in cases] == [("cpu:2", 2), ("cpu", 2)], cases
        assert all(envs[1] == "torch 9.9.9" for _, envs in cases)  # a CPU host: no driver to name
        changed = browser.evaluate("[...document.querySelectorAll('td.changed')].map(t => t.innerText.trim())")
        assert [bool(re.fullmatch(r"torch \S+ → 9\.9\.9", c)) for c in changed] == [False, True] * 2, changed
        readings = browser.evaluate("[...document.querySelectorAll('td.reading')].map(t => t.innerText.trim())")
        assert readings[1] and readings[3], readings  # the upgraded environment's row reads a direction or why not
        browser.screenshot(tmp_path / "ui-compare-upgrade.png", whole_page=True)
    finally:
        with store.engine.begin() as conn:
            conn.execute(results.delete().where(results.c.run_id == upgraded))
            conn.execute(runs.delete().where(runs.c.run_id == upgraded))


def test_a_run_folder_serves_its_pages_and_nothing_else(tmp_path):
    """report.html and a before/after run's environment_change.html are served; the folder's other files (raw JSON,
    CSV, settings) are not, with the pages that are named."""
    from fastapi import HTTPException

    from trainbench_ui.app import report_path

    folder = tmp_path / "runs" / "r1"
    folder.mkdir(parents=True)
    for name in ("report.html", "environment_change.html", "results.csv"):
        (folder / name).write_text(name)
    assert report_path(tmp_path, "r1").read_text() == "report.html"
    assert report_path(tmp_path, "r1", "environment_change.html").read_text() == "environment_change.html"
    with pytest.raises(HTTPException) as refused:
        report_path(tmp_path, "r1", "results.csv")
    assert refused.value.status_code == 404
    assert (
        refused.value.detail
        == "no page 'results.csv' in a run's folder; accepted: report.html, environment_change.html"
    )


def test_a_history_axis_names_only_the_runs_its_case_was_in(browser, tmp_path):
    """Issue 27, item 20: the runs share one axis, but a case measured in the first and third week only names those
    two weeks under its chart, not the week it was not in."""
    cfg = config_mod.load(write_config(tmp_path))
    db = ResultStore(cfg.database_url)
    days = ("2026-01-05", "2026-01-12", "2026-01-19")
    for week, day in enumerate(days):
        run, at = f"scheduled__{day}", dt.datetime.fromisoformat(f"{day}T03:00:00+00:00")
        db.save_run(run, {}, logical_date=at)
        for ds in ("cpu",) if week == 1 else ("cpu", "cpu:2"):
            for rep in (1, 2):
                key = f"gpu__pytorch__{ds.replace(':', '')}__r{rep}"
                db.save(Result(run, key, "e1", "pytorch", ds, rep, "ok", host="gpu", wall_s=10.0 + rep, started_at=at))
        db.set_state(run, "validated")
    pipeline.publish(cfg, f"scheduled__{days[-1]}")
    browser.goto((run_folder.run_dir(cfg.output_dir, f"scheduled__{days[-1]}") / "report.html").as_uri())
    browser.wait_for("document.body.dataset.chartsRendered")
    axes = browser.evaluate(
        "[...document.querySelectorAll('figure.chart svg.history')].map(s => [s.closest('figure').innerText,"
        " [...s.querySelectorAll('g.axes text')].filter(t => t.getAttribute('y') === '236').map(t => t.textContent)])"
    )
    by_case = {("cpu:2" if "cpu:2" in title else "cpu"): labels for title, labels in axes}
    assert by_case == {"cpu": list(days), "cpu:2": [days[0], days[2]]}, axes
