"""The Benchmarks pages' own app (FastAPI's TestClient, Airflow's login stubbed) on a real SQLite results database
written by the store: they keep each run's figures between views (issue 29), so an unchanged run is never read again,
yet a new run, a re-measured case and a run another process replaced are shown at the very next view; and what they
say where a figure is missing."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from trainbench.result import Result
from trainbench.store.results import ResultStore
from trainbench_ui import queries
from trainbench_ui.access import require_user
from trainbench_ui.app import create_app

from conftest import write_config

START = dt.datetime(2026, 1, 5, 3, tzinfo=dt.UTC)


def save_week(db: ResultStore, week: int, walls: dict[str, list[float]], env_key: str = "driver-550") -> str:
    run_id = f"scheduled__week{week:02d}"
    db.save_run(run_id, {}, logical_date=START + dt.timedelta(weeks=week))
    for ds, values in walls.items():
        for rep, wall in enumerate(values, 1):
            db.save(result(run_id, ds, rep, wall, env_key, START + dt.timedelta(weeks=week, minutes=rep)))
    return run_id


def result(run_id: str, ds: str, rep: int, wall: float, env_key: str, started: dt.datetime) -> Result:
    return Result(
        run_id,
        f"gpu__pytorch__{ds}__r{rep}",
        env_key,
        "pytorch",
        ds,
        rep,
        "ok",
        host="gpu",
        wall_s=wall,
        images_per_s=50_000 / wall,
        started_at=started,
        environment={"driver_version": env_key.split("-")[1], "framework_packages": {"torch": "2.11.0"}},
    )


@pytest.fixture
def pages(tmp_path, monkeypatch):
    """The app, the store writing its database, and the statements that read result rows, as the app sends them."""
    config = write_config(tmp_path)
    monkeypatch.setenv("TRAINBENCH_CONFIG", str(config))
    db = ResultStore(f"sqlite:///{tmp_path / 'output' / 'results.db'}")
    for week in range(3):
        save_week(db, week, {"0": [10.0 + week, 10.1 + week, 10.2 + week], "0,1": [6.0, 6.1, 6.2]})
    app = create_app()
    app.dependency_overrides[require_user] = lambda: "tester"
    reads: list[str] = []

    def read(conn, cursor, statement, *rest):
        reads.append(statement)

    engine = queries.engine(str(db.engine.url))
    sa.event.listen(engine, "before_cursor_execute", read)
    yield TestClient(app, root_path="/trainbench"), db, reads
    sa.event.remove(engine, "before_cursor_execute", read)


def row_reads(reads: list[str]) -> list[str]:
    """The statements that fetched result rows (not the runs' revisions, dates or fingerprints)."""
    return [s for s in reads if "results.images_per_s" in s and "GROUP BY" not in s]


def medians(client: TestClient, figure: str = "y") -> dict[str, float]:
    """Per run, the history chart's median wall time of pytorch on GPU 0 (or its `figure`: lo, hi)."""
    data = client.get("/api/history").json()
    (chart,) = [c for c in data["charts"] if c["device_set"] == "0"]
    return {data["runs"][p["x"]]["run"]: p[figure] for s in chart["series"] for p in s["points"]}


def test_an_unchanged_run_is_read_once_and_a_new_or_re_measured_one_is_shown_at_the_next_view(pages):
    client, db, reads = pages
    first = medians(client)
    assert first == {"scheduled__week00": 10.1, "scheduled__week01": 11.1, "scheduled__week02": 12.1}
    assert len(row_reads(reads)) == 1

    reads.clear()
    assert medians(client) == first and client.get("/api/compare").status_code == 200
    assert row_reads(reads) == []  # both views from the kept figures: no result row read again

    new = save_week(db, 3, {"0": [13.0, 13.1, 13.2]})
    reads.clear()
    assert medians(client) == {**first, new: 13.1}
    (read,) = row_reads(reads)
    assert "IN (" in read  # the new run's rows alone

    # A case re-measured: its row replaced (the newest row, so SQLite may hand the new row the old one's id)
    db.save(result(new, "0", 3, 16.0, "driver-550", START + dt.timedelta(weeks=3, hours=2)))
    assert medians(client, "hi")[new] == 16.0
    db.save(result(new, "0", 2, 15.0, "driver-550", START + dt.timedelta(weeks=3, hours=3)))
    assert medians(client)[new] == 15.0
    compared = client.get("/api/compare").json()["cases"]
    (case,) = [c for c in compared if c["device_set"] == "0"]
    assert case["environments"][0]["wall"]["max"] == 16.0


def test_a_run_replaced_whole_by_another_process_is_shown_at_the_next_view(pages):
    client, db, reads = pages
    assert medians(client)["scheduled__week01"] == 11.1
    replaced = [
        result("scheduled__week01", "0", rep, wall, "driver-550", START + dt.timedelta(weeks=1, hours=5))
        for rep, wall in ((1, 20.0), (2, 20.5))
    ]
    db.replace_rows("scheduled__week01", replaced)
    assert medians(client)["scheduled__week01"] == 20.25
    filtered = client.get("/api/history", params={"device_set": "0,1"}).json()
    assert [r["run"] for r in filtered["runs"]] == ["scheduled__week00", "scheduled__week02"]


def test_a_one_epoch_case_says_why_it_has_no_images_per_s(pages):
    """Issue 27, item 14: "-" alone reads as a figure lost; a run of one epoch has no steady state to measure."""
    client, db, reads = pages
    one_epoch = result("scheduled__week05", "0", 1, 4.0, "driver-550", START + dt.timedelta(weeks=5))
    one_epoch.images_per_s = None
    db.save_run("scheduled__week05", {"epochs": 1}, logical_date=START + dt.timedelta(weeks=5))
    db.save(one_epoch)
    db.set_state("scheduled__week05", "published")
    page = client.get("/").text
    assert "its runs trained one epoch, which pays for warm-up; steady state starts at epoch 2" in page
    (case,) = client.get("/api/latest").json()[0]["cases"]
    assert case["ips"] is None and case["ips_missing"].startswith("no steady-state images/s")
