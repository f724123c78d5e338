"""The environment a framework's interpreter runs in: what the system and the frameworks need, never the
harness's secrets.

Under Airflow the harness's environment holds connections (`AIRFLOW_CONN_*`), the Fernet key, the
results database URL with its password; a trainer (and the version probe before it) is third-party code
reading a data folder, so it gets an allow-list of named variables instead of a copy:

- kept from the harness, by exact name only (`ALLOWED`): the system's (`PATH`, `HOME`, locale, temporary
  folder, `LD_LIBRARY_PATH`) and the documented knobs of CUDA, NCCL, the frameworks and their thread pools;
  a prefix such as `TF_` would also pass `TF_VAR_db_pass`, so none is used;
- added: the launch spec's variables (device selection, thread counts, `[frameworks.<name>] env`, where
  a site may set anything else its interpreter needs, `PYTHONPATH` for a legacy one included);
- never, from either: a name holding `AIRFLOW`, `SECRET`, `PASSWORD`, `PASSWD`, `PASS`, `TOKEN`, `AUTH`,
  `CREDENTIAL`, `API_KEY` or `PRIVATE_KEY`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

SYSTEM = {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TZ", "LANG", "LANGUAGE", "TMPDIR", "TMP", "TEMP"}
LOCALE = {
    f"LC_{c}"
    for c in ("ALL", "CTYPE", "NUMERIC", "TIME", "COLLATE", "MONETARY", "MESSAGES", "PAPER", "NAME", "ADDRESS")
}
LIBRARIES = {"LD_LIBRARY_PATH", "LD_PRELOAD"}
CUDA = {
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "CUDA_HOME",
    "CUDA_PATH",
    "CUDA_CACHE_PATH",
    "CUDA_CACHE_MAXSIZE",
    "CUDA_LAUNCH_BLOCKING",
    "CUDA_MODULE_LOADING",
    "CUBLAS_WORKSPACE_CONFIG",
    "CUDNN_LOGINFO_DBG",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "NCCL_DEBUG",
    "NCCL_SOCKET_IFNAME",
    "NCCL_P2P_DISABLE",
    "NCCL_P2P_LEVEL",
    "NCCL_IB_DISABLE",
    "NCCL_SHM_DISABLE",
    "NCCL_ALGO",
    "NCCL_PROTO",
}
FRAMEWORKS = {
    "TORCH_HOME",
    "TORCH_CUDA_ARCH_LIST",
    "TORCHINDUCTOR_CACHE_DIR",
    "PYTORCH_CUDA_ALLOC_CONF",
    "PYTORCH_NO_CUDA_MEMORY_CACHING",
    "XLA_FLAGS",
    "XLA_PYTHON_CLIENT_PREALLOCATE",
    "XLA_PYTHON_CLIENT_MEM_FRACTION",
    "XLA_PYTHON_CLIENT_ALLOCATOR",
    "JAX_PLATFORMS",
    "JAX_ENABLE_X64",
    "JAX_COMPILATION_CACHE_DIR",
    "MXNET_ENGINE_TYPE",
    "MXNET_CUDNN_AUTOTUNE_DEFAULT",
    "MXNET_GPU_MEM_POOL_TYPE",
    "MXNET_HOME",
    "TF_CPP_MIN_LOG_LEVEL",
}
THREADS = {
    "OMP_NUM_THREADS",
    "OMP_PROC_BIND",
    "OMP_PLACES",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "KMP_AFFINITY",
    "KMP_BLOCKTIME",
    "GOMP_SPINCOUNT",
}
PYTHON = {"PYTHONHASHSEED", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING", "PYTHONWARNINGS"}
ALLOWED = frozenset(SYSTEM | LOCALE | LIBRARIES | CUDA | FRAMEWORKS | THREADS | PYTHON)
NEVER = re.compile(r"AIRFLOW|SECRET|PASS|TOKEN|AUTH|CREDENTIAL|API_?KEY|PRIVATE_?KEY", re.I)


def trainer_environ(extra: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A framework interpreter's environment: the allowed part of `base` (default: this process's) plus `extra`,
    minus anything named like a secret."""
    base = os.environ if base is None else base
    kept = {k: v for k, v in base.items() if k in ALLOWED and not NEVER.search(k)}
    return {**kept, **{k: str(v) for k, v in extra.items() if not NEVER.search(k)}}
