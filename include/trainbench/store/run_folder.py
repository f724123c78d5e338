"""A run's folder under `output/runs/<run id>/`: its settings (`run.json`) and one raw JSON per result.

The raw JSON is written before the database row, so a database outage loses nothing:
`pipeline.collect` loads whatever the database is missing from here.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from trainbench.errors import ConfigError
from trainbench.result import Result

REPORT_PAGE = "report.html"  # every published benchmark run's
ENVIRONMENT_CHANGE_PAGE = "environment_change.html"  # a before/after run's, or a run that measured a new environment
PAGES = (REPORT_PAGE, ENVIRONMENT_CHANGE_PAGE)  # the pages of a run folder a person opens in a browser
MAX_KEY_IN_NAME = 120  # with "__<env key>.json" well under the 255 bytes of a file name
RUN_ID = re.compile(r"[A-Za-z0-9_.:+-]{1,200}")
RUN_ID_HELP = (
    "accepted: 1 to 200 of A-Z a-z 0-9 _ . : + - , not starting with '.' "
    "(like Airflow's manual__2026-11-26T23:35:25.702386+00:00 or cli__20261126T233525)"
)


def check_run_id(run_id: str) -> str:
    """The run id, if it can name a run's folder as it is (one folder per id); else a ConfigError."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id) or run_id.startswith("."):
        shown = repr(run_id) if not isinstance(run_id, str) or len(run_id) <= 40 else repr(run_id[:40]) + "..."
        raise ConfigError(f"run id {shown} is not usable; {RUN_ID_HELP}")
    return run_id


def run_dir(output_dir: Path, run_id: str) -> Path:
    """`runs/<run id>`: the id itself, so distinct ids never share a folder (bad ids are refused).

    Folders of earlier versions (":" became "_") are still found, through the run id their run.json records.
    """
    folder = output_dir / "runs" / check_run_id(run_id)
    if not folder.exists():
        legacy = output_dir / "runs" / re.sub(r"[^A-Za-z0-9_.+-]", "_", run_id)
        if legacy != folder and _recorded_id(legacy) == run_id:
            return legacy
    return folder


def _recorded_id(folder: Path) -> str | None:
    try:
        return json.loads((folder / "run.json").read_text()).get("run_id")
    except (OSError, ValueError):
        return None


def raw_path(output_dir: Path, run_id: str, case_key: str, env_key: str) -> Path:
    """`raw/<case key>__<env key>.json`; a case key too long for a file name (6 or more GPU UUIDs) keeps its
    start and gets a hash of the whole in place of the rest (the JSON inside holds the full key)."""
    if len(case_key) > MAX_KEY_IN_NAME:
        digest = hashlib.blake2b(case_key.encode(), digest_size=8).hexdigest()
        case_key = f"{case_key[: MAX_KEY_IN_NAME - 17]}-{digest}"
    return run_dir(output_dir, run_id) / "raw" / f"{case_key}__{env_key}.json"


@contextlib.contextmanager
def measuring(output_dir: Path, run_id: str) -> Iterator[None]:
    """Held while this process measures the run on this host: a second process measuring the same run id
    here at once would replace rows and share the devices, so it is refused (the lock dies with its holder)."""
    folder = run_dir(output_dir, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".measuring", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise ConfigError(
                f"run {run_id!r} is being measured on this host by {holder}; wait for it to end or choose another "
                "--run-id"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def publishing(output_dir: Path, run_id: str) -> Iterator[None]:
    """Held while a process reads the run's rows and writes its reports: two tasks stopped at once each
    publish, and the one that read fewer rows must not write its reports last."""
    folder = run_dir(output_dir, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    with locked(folder / ".publishing"):
        yield


@contextlib.contextmanager
def locked(path: Path | str) -> Iterator[None]:
    """Held while this process holds the exclusive lock of the file `path`: processes take turns (the lock dies
    with its holder)."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def replace_file(path: Path, data: bytes, what: str) -> None:
    """Write `path` whole through a temporary file (a reader never sees half of it); a failure (a full disk)
    names the file and what was being written, where the bare error says only "No space left on device"."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, f"{exc.strerror} (writing {what})", str(path)) from exc


def write_raw(output_dir: Path, result: Result) -> Path:
    path = raw_path(output_dir, result.run_id, result.case_key, result.env_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, result.to_json().encode(), f"the raw result of {result.case_key}")
    return path


def raw_results(output_dir: Path, run_id: str) -> list[Result]:
    return [Result.from_json(p.read_text()) for p in sorted((run_dir(output_dir, run_id) / "raw").glob("*.json"))]


def write_settings(output_dir: Path, run_id: str, settings: dict) -> None:
    folder = run_dir(output_dir, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    replace_file(
        folder / "run.json", json.dumps({"run_id": run_id, "settings": settings}, indent=1).encode(), "the settings"
    )


def read_settings(output_dir: Path, run_id: str) -> dict:
    """The settings start_run kept beside the raw results ({} when the run was never started here)."""
    saved = run_dir(output_dir, run_id) / "run.json"
    return json.loads(saved.read_text())["settings"] if saved.is_file() else {}


def point_latest(output_dir: Path, run_id: str) -> Path:
    """`output/latest` becomes a link to the run's folder, swapped atomically: readers see one run, whole."""
    latest = output_dir / "latest"
    if latest.is_dir() and not latest.is_symlink():
        shutil.rmtree(latest)  # the folder of copies that earlier versions kept
    tmp = output_dir / f".latest.{os.getpid()}.{threading.get_ident()}"
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(run_dir(output_dir, run_id), output_dir), tmp)
    os.replace(tmp, latest)
    return latest
