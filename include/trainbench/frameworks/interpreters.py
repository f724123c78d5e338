"""Each framework's own interpreter: created from its pinned requirements, and probed for versions.

Frameworks never share the orchestrator's interpreter: their pins conflict (MXNet needs
numpy<1.24, Airflow's pandas wants numpy 2).  A framework whose configured interpreter
already exists (a CUDA build on a GPU host, say) is left alone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from trainbench.frameworks import REGISTRY
from trainbench.frameworks.base import Interpreter

# Python 3.6 and 3.7 (neon's legacy interpreters) have no importlib.metadata: pkg_resources answers there.
VERSION_OF = (
    "try:\n"
    "    import importlib.metadata as m\n"
    "    def version(d): return m.version(d)\n"
    "except ImportError:\n"
    "    import pkg_resources\n"
    "    def version(d): return pkg_resources.get_distribution(d).version\n"
)
PROBE = VERSION_OF + (
    "import json, platform, sys\n"
    "def v(d):\n"
    "    try: return version(d)\n"
    "    except Exception: return None\n"
    "print(json.dumps({'python': platform.python_version(), 'packages': {d: v(d) for d in sys.argv[1:]}}))"
)


def venv_root(python: str) -> Path | None:
    """The venv a `<venv>/bin/python` path belongs to, or None for a bare command name."""
    path = Path(python)
    return path.parent.parent if path.parent.name == "bin" else None


def ensure(interpreters: Iterable[Interpreter], log: Callable[[str], None] = print) -> dict[str, str]:
    """Create the missing interpreters (a framework's own `create`, else a venv from its requirements); return
    what each one is."""
    done: dict[str, str] = {}
    for it in interpreters:
        if it.name in done:  # a framework and its variants share one interpreter
            continue
        root = venv_root(it.python)
        if not it.python:
            done[it.name] = "no interpreter configured"
        elif Path(it.python).exists():
            done[it.name] = f"{it.python} (exists)"
        elif root is None or not it.requirements or not Path(it.requirements).is_file():
            done[it.name] = f"{it.python} missing; no requirements file to create it from"
        elif (create := REGISTRY[it.name].create) is not None:
            create(it, log)
            done[it.name] = f"{it.python} ({'created' if Path(it.python).exists() else 'not created'})"
        else:
            log(f"{it.name}: creating {root} from {it.requirements}")
            subprocess.run([it.options.get("base_python", sys.executable), "-m", "venv", str(root)], check=True)
            subprocess.run([it.python, "-m", "pip", "install", "--quiet", "-r", it.requirements], check=True)
            done[it.name] = f"{it.python} (created)"
        log(f"{it.name}: {done[it.name]}")
    return done


def probe(python: str, distributions: tuple[str, ...], env: dict[str, str], timeout_s: float = 60) -> dict:
    """Installed versions of the framework's distributions in its interpreter, without importing the framework.

    `env` is the interpreter's whole environment: the trainer's (`measure.environ`), never the harness's, since
    a `sitecustomize` in that interpreter runs before the probe does.
    """
    try:
        out = ask([python, "-c", PROBE, *distributions], env, timeout_s)
    except OSError as exc:
        return {"python": None, "packages": {}, "error": f"{type(exc).__name__}: {exc}"}
    if out.returncode is None:
        return {"python": None, "packages": {}, "error": f"{python} answered nothing within {timeout_s:.0f} s"}
    if out.returncode != 0:
        return {"python": None, "packages": {}, "error": out.stderr.strip()[-500:]}
    found = last_json_line(out.stdout)
    if found is None or not isinstance(found.get("packages"), dict):
        return {"python": None, "packages": {}, "error": f"no JSON line in the probe's output: {out.stdout[-300:]!r}"}
    found["packages"] = {k: v for k, v in found["packages"].items() if v}
    return found


def unusable(python: str) -> str | None:
    """Why the interpreter `python` (a path, or a command on PATH) cannot be started, in words, or None."""
    path = python if os.sep in python else shutil.which(python)
    if path is None:
        return f"interpreter {python} not found"
    try:
        os.stat(path)
    except FileNotFoundError:
        return f"interpreter {python} not found"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"interpreter {python} is a symbolic link loop"
        return f"interpreter {python} cannot be read: {exc.strerror}"
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        return f"interpreter {python} is not an executable file (chmod +x, or name its bin/python)"
    return None


@dataclass(frozen=True)
class Answer:
    returncode: int | None  # None: it ran past its time
    stdout: str
    stderr: str


def ask(argv: list[str], env: dict[str, str], timeout_s: float) -> Answer:
    """Run a short probe: its output goes to files, not pipes, and its whole process group is killed once it
    ends, so a child it leaves running neither keeps the caller waiting for the pipe to close nor outlives it."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, start_new_session=True)
        try:
            returncode: int | None = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.seek(0)
        err.seek(0)
        return Answer(returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def last_json_line(text: str) -> dict | None:
    """The last line of `text` that is a JSON object: a banner or warning printed at start-up is ignored."""
    for line in reversed(text.splitlines()):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    return None
