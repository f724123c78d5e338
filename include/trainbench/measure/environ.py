"""The environment a trainer runs in: what the system and the frameworks need, never the harness's secrets.

Under Airflow the harness's environment holds connections (`AIRFLOW_CONN_*`), the Fernet key, the
results database URL with its password; a trainer is third-party code reading a data folder, so it
gets a minimal environment instead of a copy:

- kept from the harness: `PATH`, `HOME`, `USER`, `LOGNAME`, `SHELL`, `TERM`, `TZ`, `LANG`, `LANGUAGE`,
  `LC_*`, `TMPDIR`/`TMP`/`TEMP`, `LD_LIBRARY_PATH`, and the variables the frameworks and their
  libraries read: `CUDA_*`, `CUBLAS_*`, `CUDNN_*`, `NVIDIA_*`, `NCCL_*`, `TORCH_*`, `PYTORCH_*`,
  `XLA_*`, `JAX_*`, `TF_*`, `MXNET_*`, `OMP_*`, `KMP_*`, `MKL_*`, `OPENBLAS_*`, `GOMP_*`, and `PYTHON*`
  except `PYTHONPATH`, `PYTHONHOME`, `PYTHONSTARTUP` and `PYTHONUSERBASE` (they would put the
  harness's packages into the framework's own interpreter);
- added: the launch spec's variables (device selection, thread counts, `[frameworks.<name>] env`, where
  a legacy interpreter may set `PYTHONPATH` deliberately);
- never, from either: a name holding `AIRFLOW`, `SECRET`, `PASSWORD`, `PASSWD`, `TOKEN`, `CREDENTIAL`,
  `API_KEY`, `PRIVATE_KEY`, or `TRAINBENCH_DATABASE_URL`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

KEEP_NAMES = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TZ", "LANG", "LANGUAGE", "TMPDIR", "TMP", "TEMP"}
    | {"LD_LIBRARY_PATH"}
)
KEEP_PREFIXES = (
    "LC_",
    "CUDA_",
    "CUBLAS_",
    "CUDNN_",
    "NVIDIA_",
    "NCCL_",
    "TORCH_",
    "PYTORCH_",
    "XLA_",
    "JAX_",
    "TF_",
    "MXNET_",
    "OMP_",
    "KMP_",
    "MKL_",
    "OPENBLAS_",
    "GOMP_",
    "PYTHON",
)
DROP_NAMES = frozenset({"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "TRAINBENCH_DATABASE_URL"})
NEVER = re.compile(r"AIRFLOW|SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|API_?KEY|PRIVATE_?KEY", re.I)


def _inherited(name: str) -> bool:
    return (name in KEEP_NAMES or name.startswith(KEEP_PREFIXES)) and name not in DROP_NAMES and not NEVER.search(name)


def trainer_environ(extra: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The trainer's environment: the kept part of `base` (default: this process's) plus `extra`, minus secrets."""
    base = os.environ if base is None else base
    kept = {k: v for k, v in base.items() if _inherited(k)}
    return {**kept, **{k: str(v) for k, v in extra.items() if not NEVER.search(k)}}
