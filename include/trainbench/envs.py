"""Create each framework's own interpreter from its pinned requirement file.

Frameworks never share the orchestrator's interpreter: their pins conflict (MXNet needs
numpy<1.24, Airflow's pandas wants numpy 2).  A framework whose configured interpreter
already exists (a CUDA build on a GPU host, say) is left alone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from trainbench.config import Config


def venv_root(python: str) -> Path | None:
    """The venv a `<venv>/bin/python` path belongs to, or None for a bare command name."""
    path = Path(python)
    return path.parent.parent if path.parent.name == "bin" else None


def ensure(config: Config, frameworks, log=print) -> dict[str, str]:
    """Create the missing interpreters of the given frameworks; return what each one is."""
    done = {}
    for name in frameworks:
        fw = config.framework(name)
        root = venv_root(fw.python)
        if not fw.python:
            done[name] = "no interpreter configured"
        elif Path(fw.python).exists():
            done[name] = f"{fw.python} (exists)"
        elif root is None or not fw.requirements:
            done[name] = f"{fw.python} missing; no requirements file to create it from"
        else:
            log(f"{name}: creating {root} from {fw.requirements}")
            subprocess.run([fw.options.get("base_python", sys.executable), "-m", "venv", str(root)], check=True)
            subprocess.run([fw.python, "-m", "pip", "install", "--quiet", "-r", fw.requirements], check=True)
            done[name] = f"{fw.python} (created)"
        log(f"{name}: {done[name]}")
    return done
