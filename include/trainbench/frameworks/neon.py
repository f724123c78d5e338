"""neon 2.6.0 (discontinued 2019), measured as the original log ran it: neon's own `examples/cifar10_conv.py`,
unchanged, `-b cpu|gpu|mgpu -e N -z 128`, in a legacy CPython of its own. The harness adapts to neon:

- its interpreter: `create` builds `.envs/neon` from CPython 3.8, 3.7 or 3.6 (`NEON_PYTHON`, else PATH, else
  pyenv's versions) with `envs/neon.txt`, and installs neon from `NEON_SOURCE` (a git URL, a tarball, a source
  folder or a folder holding one tarball), keeping the source for its example; what it could not do is written
  beside the venv, and the rows say it;
- its data: `-w` names a folder made for the exact bytes of the data set (`neon_data.workdir`): links to the
  batches, or the first `train_images` in five equal batches (neon stacks their label lists), and neon's ZCA
  cache, which neon never invalidates, computed there once by the example itself (`-e 0`) before anything is
  measured;
- its output: `NeonOutput` reads both streams as they arrive, every completed epoch bar whatever the redraws,
  and cuts the phases at neon's own log lines (`-v`: the backend is ready) and epoch times.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

from trainbench.frameworks.base import Framework, Interpreter, LaunchSpec, Unavailable, Unsupported, device_environ
from trainbench.measure import protocol
from trainbench.measure.protocol import TrainerReport
from trainbench.planning import Case, TrainingJob

LEGACY_PYTHONS = ("3.8", "3.7", "3.6")
SOURCE_URL = "git+https://github.com/NervanaSystems/neon@v2.6.0"
EXAMPLE = Path("examples") / "cifar10_conv.py"
BOOTSTRAP = Path(__file__).resolve().parents[3] / "envs" / "neon-bootstrap.txt"
SETUP_TIMEOUT_S = 900

NEON_EPOCH = re.compile(
    r"Epoch\s+(\d+)\s+\[Train\s*\|[^|]*\|\s*(\d+)/(\d+)\s+batches,\s*([-\d.naif]+)\s+cost,\s*([\d.]+)s\]"
)
NEON_ERROR = re.compile(r"Misclassification error\s*=\s*([\d.]+)\s*%")
NEON_READY = re.compile(r"neon\.backends - INFO - Backend: ")


class SetupError(Exception):
    """The neon interpreter cannot be built here; the message says what to install or set."""


def missing_note(python: str) -> Path:
    """Where `create` writes why it could not build the interpreter at `python` (`.envs/neon.missing`)."""
    return Path(python).parent.parent.with_suffix(".missing")


def legacy_python() -> str:
    """A CPython neon runs on: `NEON_PYTHON`, else the newest of 3.8, 3.7, 3.6 on PATH or among pyenv's versions."""
    chosen = os.environ.get("NEON_PYTHON")
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    candidates = [chosen] if chosen else []
    for v in () if chosen else LEGACY_PYTHONS:
        candidates += [shutil.which(f"python{v}") or ""]
        candidates += sorted(map(str, pyenv.glob(f"{v}.*/bin/python{v}")), reverse=True)
    for python in filter(None, candidates):
        version = _python_version(python)
        if version in LEGACY_PYTHONS:
            return python
        if chosen:
            raise SetupError(
                f"NEON_PYTHON={chosen} is Python {version or '(not runnable)'}; neon needs 3.8, 3.7 or 3.6"
            )
    raise SetupError(
        f"no CPython 3.8, 3.7 or 3.6 found (python3.8/3.7/3.6 on PATH, or under {pyenv}): install one "
        "(`pyenv install 3.8.18`) or set NEON_PYTHON to one, then run `make envs`"
    )


def _python_version(python: str) -> str | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def fetch_source(source: str, dest: Path) -> None:
    """neon's source tree into `dest`: from a git URL (`git+URL@tag`), a tarball, or a folder (its tree, or the
    one `neon-*.tar.gz` it holds)."""
    path = Path(source)
    if source.startswith("git+"):
        url, _, ref = source.removeprefix("git+").rpartition("@")
        cmd = ["git", "clone", "--quiet", "--depth", "1", "--branch", ref, url, str(dest)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=SETUP_TIMEOUT_S)
        if out.returncode != 0:
            raise SetupError(
                f"neon's source not reachable: `git clone {url}` at {ref} failed ({out.stderr.strip()[-300:]}): "
                "set NEON_SOURCE to a copy of neon v2.6.0 (its tarball, or a folder), then run `make envs`"
            )
    elif path.is_dir() and (path / "setup.py").is_file():
        shutil.copytree(path, dest, symlinks=True)
    elif path.is_dir() and len(tarballs := sorted(path.glob("neon-*.tar.gz"))) == 1:
        fetch_source(str(tarballs[0]), dest)
    elif path.is_file() and tarfile.is_tarfile(path):
        staging = Path(tempfile.mkdtemp(prefix=".neon-source-", dir=dest.parent))
        try:
            with tarfile.open(path) as tar:
                tar.extractall(staging, filter="data")
            (top,) = [p for p in staging.iterdir() if p.is_dir()] or [staging]
            top.rename(dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    else:
        raise SetupError(
            f"NEON_SOURCE={source} is neither a git URL (git+https://...@tag), a tarball, nor a folder holding "
            "neon's source or its one neon-*.tar.gz"
        )
    if not (dest / EXAMPLE).is_file():
        raise SetupError(f"NEON_SOURCE={source} holds no {EXAMPLE}: not neon's source tree")


def create(interpreter: Interpreter, log: Callable[[str], None]) -> None:
    """Build the neon venv at `interpreter.python`, or leave none and say why (in `missing_note`): neon is one
    framework of several, so a host without a legacy Python or without neon's source measures the others."""
    root = Path(interpreter.python).parent.parent
    note = missing_note(interpreter.python)
    note.unlink(missing_ok=True)
    try:
        base = legacy_python()
        source = os.environ.get("NEON_SOURCE") or SOURCE_URL
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        fetch_source(source, root / "src")
        log(f"neon: creating {root} from {base} and {interpreter.requirements}")
        subprocess.run([base, "-m", "venv", str(root)], check=True, timeout=SETUP_TIMEOUT_S)
        pip = [interpreter.python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        run = partial(subprocess.run, check=True, timeout=SETUP_TIMEOUT_S)
        run([*pip, "-r", str(BOOTSTRAP)])  # the venv's own pip would build Pillow from source
        run([*pip, "-r", str(interpreter.requirements)])
        # neon's setup.py appends `git rev-parse HEAD` to its version: its own clone's, never an enclosing checkout's
        git_env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(root)}
        run([*pip, "--no-deps", "--no-build-isolation", "."], cwd=root / "src", env=git_env)
        log(f"neon: installed from {source}; its example is {root / 'src' / EXAMPLE}")
    except (SetupError, subprocess.SubprocessError, OSError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        why = str(exc) if isinstance(exc, SetupError) else f"{type(exc).__name__}: {exc}"
        note.parent.mkdir(parents=True, exist_ok=True)
        note.write_text(why + "\n")
        log(f"neon: not created, its rows will be unavailable: {why}")


class NeonOutput:
    """What neon prints, from both streams as it arrives (the progress bar and the test error may go to either).

    A redraw of the bar is progress; an epoch is its completed bar (`16/16 batches`), kept with the moment it
    arrived. images/s is batches x batch size / the epoch's seconds (neon wraps its last batch around, so that
    is the work done). Phases: `ready` when neon's log names its backend, `data` when the first epoch began
    (its bar's arrival less its seconds: loading, contrast normalisation and whitening are data, not training).
    """

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self._report = TrainerReport()
        self._lock = threading.Lock()

    def feed(self, stream: str, line: str, t: float) -> dict | None:
        with self._lock:
            report = self._report
            if "ready" not in report.marks and NEON_READY.search(line):
                report.marks["ready"] = t
            if error := NEON_ERROR.search(line):
                report.summary = {"framework": "neon", "test_accuracy": 1 - float(error.group(1)) / 100, "t": t}
            m = NEON_EPOCH.search(line)
            if m is None or m[2] != m[3] or any(e["epoch"] == int(m[1]) + 1 for e in report.epochs):
                return None
            batches, seconds = int(m[3]), float(m[5])
            images = batches * self.batch_size
            event = {"epoch": int(m[1]) + 1, "seconds": seconds, "loss": float(m[4]), "images": images, "t": t}
            event["images_per_s"] = images / seconds if seconds > 0 else 0.0
            why = protocol.problem({"event": "epoch", **event})
            if why is not None:
                report.errors.append(f"neon's epoch {event['epoch']} bar: {why}")
                return None
            report.epochs.append(event)
            return event

    def report(self, stdout_lines: list[str]) -> TrainerReport:
        report = self._report
        report.epochs.sort(key=lambda e: e["epoch"])
        if report.epochs and "ready" in report.marks:
            first = report.epochs[0]
            report.marks["data"] = max(report.marks["ready"], first["t"] - first["seconds"])
        return report


def launch(interpreter: Interpreter, case: Case, job: TrainingJob) -> LaunchSpec:
    """The original log's command lines, `-b cpu` and `-b gpu -i 0` (the set's GPU, the only one visible), with `-e`
    and `-z`; `-r` the seed, `-w` the folder made for the data, `-v` for the phases' log lines. Its `-b mgpu` and a
    data-parallel CPU set are `unsupported`; a GPU without neon's kernels or pycuda says so when it fails."""
    python = interpreter.python
    if not python:
        raise Unavailable(
            "no neon interpreter configured: set [frameworks.neon] python to an interpreter with neon, "
            "or remove the setting and run `make envs`"
        )
    note = missing_note(python)
    if not Path(python).exists() and note.is_file():
        raise Unavailable(f"{python} missing: `make envs` could not create it: {note.read_text().strip()}")
    script = interpreter.options.get("script") or str(Path(python).parent.parent / "src" / EXAMPLE)
    if not Path(script).is_file():
        raise Unavailable(
            f"neon's example script not found at {script!r}: run `make envs`, or set [frameworks.neon] script "
            "to neon's examples/cifar10_conv.py"
        )
    from trainbench.frameworks import neon_data  # numpy: never imported where a DAG file is parsed
    from trainbench.trainers import cifar10

    ds = case.device_set
    if ds.kind == "cpu" and ds.workers > 1:
        raise Unsupported(f"{ds.text}: neon's CPU backend has no data-parallel mode (it trains in one process)")
    if ds.workers > 1:
        raise Unsupported(
            f"{ds.text}: the original log's `-b mgpu -m {ds.workers}` needs neon's multi-GPU backend, a closed "
            "add-on that was never part of neon's open source"
        )
    if job.train_images and job.train_images % neon_data.TRAIN_BATCHES:
        raise Unsupported(
            f"train_images {job.train_images}: neon's CIFAR-10 loader stacks five equally long training "
            "batches, so it trains a multiple of 5 images"
        )
    backend = ["-b", "cpu"] if ds.kind == "cpu" else ["-b", "gpu", "-i", "0"]
    data = cifar10.batches_dir(job.data_dir)
    folder = neon_data.workdir(job) if cifar10.is_present(data) else None
    argv = [python, script, *backend, "-e", str(job.epochs), "-z", str(job.batch_size), "-r", str(job.seed)]
    argv += ["-w", str(folder or Path(data).parent), "-v"]
    return LaunchSpec(
        argv,
        device_environ(case),
        reader=partial(NeonOutput, job.batch_size),
        prepare=None if folder is None else partial(neon_data.prepare, python, script, folder, job),
    )


FRAMEWORK = Framework(
    name="neon",
    title="Neon",
    distributions=("nervananeon", "neon"),
    modules=("neon",),
    launch=launch,
    create=create,
)
