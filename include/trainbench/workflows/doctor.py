"""Is this host ready to measure?  The checks a fleet host must pass before its numbers are worth keeping.

`run` checks the host as the run will use it (its device sets, frameworks and data set), in seconds: a missing
CUDA build, an interpreter blind to its GPUs or an unhealthy GPU is found before a week of `unavailable`,
`crashed` or poisoned rows.  `preflight` is the DAG's first task per host: a host that cannot measure is
quarantined for the run, so its cases become `unavailable` naming the failed check while the other hosts go on.
A framework that cannot run here only warns (its rows are `unavailable`); no usable framework at all fails.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from trainbench import frameworks
from trainbench.config import Config, Settings, shown_url
from trainbench.devices import Inventory, discover, load_nvml
from trainbench.errors import ConfigError
from trainbench.fingerprint import HOST_VAR
from trainbench.frameworks import interpreters
from trainbench.frameworks.base import device_environ
from trainbench.measure import environ, health
from trainbench.planning import DEFAULT_HOST, Case, DeviceSet, TrainingJob, plan
from trainbench.trainers import cifar10
from trainbench.workflows import pipeline

PASS, WARN, FAIL = "pass", "warn", "fail"
STATUSES = (PASS, WARN, FAIL)
PROBE_TIMEOUT_S = 40.0  # importing torch on a cold GPU host takes 4-6 s; the doctor's whole budget is 60 s
SHOWN_SETS = 6  # "all" on an 8-GPU host is 255 sets: the line names the first few
NO_NVML = ("ImportError", "ModuleNotFoundError", "NVMLError_LibraryNotFound")  # no NVIDIA stack: a CPU host
NO_BINDINGS = ("ImportError", "ModuleNotFoundError")
# Where the kernel driver shows NVIDIA devices: with any of them, missing NVML is a broken GPU host, not a CPU host.
NVIDIA_DEVICE_PATHS = ("/dev/nvidia0", "/proc/driver/nvidia")
LOCK_FILE = Path(__file__).resolve().parents[3] / "requirements.lock"
# One interpreter start per framework: its version, whether it is a CUDA build, how many GPUs it sees (the
# launch's CUDA_VISIBLE_DEVICES applies) and, where multi-GPU sets need it, its NCCL.
PROBE = (
    interpreters.VERSION_OF
    + """
import json, sys
def dist(*names):
    for n in names:
        try: return f"{n} {version(n)}"
        except Exception: pass
base = sys.argv[1]
if base == "pytorch":
    import torch
    found = {"version": torch.__version__, "cuda": torch.version.cuda and f"CUDA {torch.version.cuda}"}
    found["gpus"] = torch.cuda.device_count() if torch.version.cuda else 0
    if found["gpus"]:
        nccl = torch.distributed.is_nccl_available() and torch.cuda.nccl.version()
        found["nccl"] = nccl and ".".join(map(str, nccl))
elif base == "jax":
    import jax
    try: gpus = len(jax.devices("gpu"))
    except RuntimeError: gpus = 0
    found = {"version": jax.__version__, "cuda": dist("jax-cuda13-plugin", "jax-cuda12-plugin"), "gpus": gpus,
             "nccl": dist("nvidia-nccl-cu13", "nvidia-nccl-cu12")}
elif base == "mxnet":
    import mxnet as mx
    cuda = mx.runtime.Features().is_enabled("CUDA")
    found = {"version": mx.__version__, "gpus": mx.context.num_gpus() if cuda else 0,
             "cuda": cuda and (dist("mxnet-cu117", "mxnet-cu116", "mxnet-cu112", "mxnet-cu110") or "CUDA")}
elif base == "neon":
    import neon
    found = {"version": neon.__version__, "cuda": None, "gpus": 0}  # its GPU backend is pycuda's, tried per case
else:
    for module in sys.argv[2:]: __import__(module)
    found = {"version": dist(*sys.argv[2:]), "cuda": None, "gpus": 0}
print(json.dumps(found))
"""
)


@dataclass(frozen=True)
class Check:
    """One line of the doctor's answer: what was checked, how it went, what was found, and what to do if not pass."""

    name: str
    status: str
    detail: str
    fix: str = ""
    # a failure of the run's settings on this host (GPUs it lacks), not of the host: the pre-flight fails the run
    # saying so, where a host's own failure quarantines it
    of_the_run: bool = False

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"check {self.name!r}: status {self.status!r}; accepted: {list(STATUSES)}")

    def line(self) -> str:
        text = f"{self.status.upper():<4}  {self.name}: {self.detail}"
        return f"{text} -> {self.fix}" if self.fix and self.status != PASS else text

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def can_measure(checks: list[Check]) -> bool:
    return not any(c.status == FAIL for c in checks)


def run(config: Config, host: str | None = None, nvml=None, settings: Settings | None = None) -> list[Check]:
    """Every check of this host for a run of `settings` (default: the configuration's); `nvml` replaces the NVML
    library (tests without GPUs)."""
    settings = settings or config.settings
    host = host or DEFAULT_HOST
    nvml_check, nvml, inventory = _nvml(nvml, settings)
    planned, cases = _device_sets(settings, inventory, host, nvml_check.status == PASS or nvml_check.of_the_run)
    checks = [_fleet_host(config, host), nvml_check, planned]
    if inventory.gpus:
        used = {u for c in cases for u in c.device_set.gpu_uuids}
        checks += [_health(nvml, i, used) for i in range(len(inventory.gpus))]
        checks += [_persistence(inventory), _accounting(inventory)]
        if config.measurement.lock_clocks:
            checks.append(_clock_locking())
    checks += _frameworks(config, settings, inventory, cases)
    return [*checks, _dataset(config, settings, bool(inventory.gpus)), _output(config), _database(config)]


def preflight(config: Config, run_id: str, host: str, settings: Settings | None = None, nvml=None) -> dict:
    """The checks as a host's first task: a host that cannot measure is quarantined for the run (its cases then
    become `unavailable` naming the check), and nothing is raised, so the other hosts' tasks go on.  A run asking
    for GPUs the host does not have is the run's mistake: a ConfigError, the host stays as it is.  A host that
    passes is released from an earlier quarantine of the run: its tasks were cleared after a repair."""
    import sqlalchemy.exc

    from trainbench.store.results import open_store

    checks = run(config, host, nvml, settings)
    failed = [c for c in checks if c.status == FAIL]
    if failed and all(c.of_the_run for c in failed):
        raise ConfigError(
            f"the run asks host {host} for devices it does not have: "
            + "; ".join(f"{c.name}: {c.detail}" for c in failed)
            + f"; {failed[-1].fix}"
        )
    quarantined = None
    if failed:
        reason = "doctor: " + "; ".join(f"{c.name}: {c.detail}" for c in failed)
        try:
            quarantined = open_store(config.database_url).quarantine(run_id, host, reason)
        except sqlalchemy.exc.SQLAlchemyError:  # the database check failed: the cases cannot store rows either
            pass
    else:
        open_store(config.database_url).lift_quarantine(run_id, host)
    return {
        "host": host,
        "can_measure": not failed,
        "failed": [c.name for c in failed],
        "quarantined": quarantined,
        "checks": [c.to_dict() for c in checks],
    }


def _fleet_host(config: Config, host: str) -> Check:
    """The DAG plans only the hosts `[fleet] hosts` names: a worker declaring another name never gets a case."""
    if host in config.hosts:
        return Check("fleet host", PASS, f"{host}, one of [fleet] hosts")
    return Check(
        "fleet host",
        WARN,
        f"{host!r} is not in [fleet] hosts {list(config.hosts)}: the DAG plans no case for it",
        f"set ${HOST_VAR} to this host's queue name, or add {host!r} to [fleet] hosts in {config.path}",
    )


def _names_gpus(text: str) -> bool:
    return text != "all" and not text.startswith("cpu")


def _nvml(nvml, settings: Settings) -> tuple[Check, object | None, Inventory]:
    """NVML and the driver: absent on a CPU host is fine, present but failing never is."""
    name = "nvml"
    error = None
    if nvml is None:
        nvml, error = load_nvml()
    try:
        inventory = discover(nvml, error)
    except Exception as exc:  # pynvml.NVMLError and its subclasses: initialised, then failing
        return (
            Check(name, FAIL, f"NVML answers but fails: {type(exc).__name__}: {exc}", _DRIVER_FIX),
            None,
            discover(None, str(exc)),
        )
    named = [d for d in settings.device_sets if _names_gpus(d)]
    if inventory.gpus:
        models = sorted({g.name for g in inventory.gpus})
        detail = (
            f"driver {inventory.driver_version}, CUDA {inventory.cuda_driver_version}, "
            f"{len(inventory.gpus)} GPU(s): {', '.join(models)}"
        )
        return Check(name, PASS, detail), nvml, inventory
    if error and not error.startswith(NO_NVML):
        return Check(name, FAIL, f"NVML present but failing: {error}", _DRIVER_FIX), None, inventory
    shown = [p for p in NVIDIA_DEVICE_PATHS if os.path.exists(p)]
    if error and shown:
        detail = f"NVIDIA devices ({', '.join(shown)}) but no NVML: {error}"
        return (
            Check(name, FAIL, detail, _bindings_fix() if error.startswith(NO_BINDINGS) else _DRIVER_FIX),
            None,
            inventory,
        )
    if named:
        detail = f"no GPU visible ({error or 'NVML shows none'}), but device sets {named} name GPUs"
        fix = f"{_DRIVER_FIX}; or measure this host with cpu device sets"
        return Check(name, FAIL, detail, fix, of_the_run=not shown), None, inventory
    return Check(name, PASS, f"CPU host: no NVML ({error or 'no GPU'})"), None, inventory


_DRIVER_FIX = "check `nvidia-smi`; after a driver upgrade, reboot (or reload the nvidia modules)"


def _bindings_fix() -> str:
    """The pin this checkout was tested with, where its lock file is at hand (a GPU host may run from a copy)."""
    try:
        lines = LOCK_FILE.read_text().splitlines()
    except OSError:
        lines = []
    pin = next((line.strip() for line in lines if line.startswith("nvidia-ml-py==")), "nvidia-ml-py")
    return f"`{sys.executable} -m pip install {pin}` (NVML's Python bindings, as requirements.lock pins them)"


def _device_sets(settings: Settings, inventory: Inventory, host: str, devices_known: bool) -> tuple[Check, list[Case]]:
    """`devices_known`: NVML answered (or the host has no NVIDIA device), so a device set it lacks is the run's."""
    try:
        cases = plan(settings.frameworks, settings.device_sets, 1, inventory, host, 0)
    except (ConfigError, LookupError) as exc:
        fix = "name device sets this host has (`python -m trainbench devices`)"
        return Check("device sets", FAIL, str(exc), fix, of_the_run=devices_known), []
    sets = list(dict.fromkeys(c.device_set.text for c in cases))
    shown = ", ".join(sets) if len(sets) <= SHOWN_SETS else f"{len(sets)} sets: {', '.join(sets[:SHOWN_SETS])}, ..."
    return Check("device sets", PASS, f"{shown} ({len(cases)} cases per repeat)"), cases


def _health(nvml, index: int, used: set[str]) -> Check:
    """Fails only for a GPU the run's cases use: a sick GPU no device set touches cannot poison a row, so the
    host's other GPUs go on measuring while it waits for repair."""
    name = f"gpu {index} health"
    snap = health.snapshot(nvml, nvml.nvmlDeviceGetHandleByIndex(index))
    problems, warnings = health.problems(snap), health.warnings(snap)
    found, shows = "; ".join(problems + warnings), f"`nvidia-smi -q -i {index}` shows the GPU"
    if problems and snap["uuid"] in used:
        return Check(name, FAIL, found, f"drain this host and do what each problem says ({shows})")
    if problems:
        detail = f"{found}; no device set of this run uses it"
        return Check(name, WARN, detail, f"do what each problem says before a run uses it ({shows})")
    if warnings:
        return Check(name, WARN, found, f"do what each warning says ({shows})")
    return Check(name, PASS, f"{snap['uuid']}: no problem NVML reports")


def _persistence(inventory: Inventory) -> Check:
    off = [g.index for g in inventory.gpus if g.persistence_mode is False]
    if off:
        return Check(
            "persistence mode",
            WARN,
            f"off on GPU(s) {off}: the driver initialises each GPU at every launch, adding start-up time",
            "`nvidia-smi -pm 1` as root (or run nvidia-persistenced)",
        )
    return Check("persistence mode", PASS, "on")


def _accounting(inventory: Inventory) -> Check:
    """Accounting mode gives the per-process memory peak the sampled figure is checked against; the sampler turns
    it on per case where it runs as root."""
    off = [g.index for g in inventory.gpus if not g.accounting_mode]
    if not off:
        return Check("accounting mode", PASS, "on")
    if os.geteuid() == 0:
        return Check("accounting mode", PASS, f"off on GPU(s) {off}; turned on for each case (running as root)")
    return Check(
        "accounting mode",
        WARN,
        f"off on GPU(s) {off} and not root: memory is sampled only, with no accounting figure to check it against",
        "`nvidia-smi -am 1` as root (it stays on until reboot)",
    )


def _clock_locking() -> Check:
    if os.geteuid() == 0:
        return Check("clock locking", PASS, "[measurement] lock_clocks: running as root, NVML may lock clocks")
    return Check(
        "clock locking",
        WARN,
        "[measurement] lock_clocks is on but this process is not root: every case runs unlocked (recorded as refused)",
        "run the worker as root, or set [measurement] lock_clocks = false",
    )


def _frameworks(config: Config, settings: Settings, inventory: Inventory, cases: list[Case]) -> list[Check]:
    """One probe per interpreter, in parallel; each framework with the variants that share its interpreter."""
    bases: dict[str, list[str]] = {}
    for name in settings.frameworks:
        bases.setdefault(frameworks.REGISTRY[name].base, []).append(name)
    gpu_cases = [c for c in cases if c.device_set.kind == "gpu"]
    multi_gpu = any(c.device_set.workers > 1 for c in gpu_cases)
    gpus = inventory.gpus if gpu_cases else ()
    with ThreadPoolExecutor(len(bases)) as pool:
        found = list(pool.map(lambda b: _framework(config, b, bases[b], gpus, multi_gpu), bases))
    usable = [name for c, base in zip(found, bases) if c.status == PASS for name in bases[base]]
    if usable:
        return [*found, Check("frameworks", PASS, f"usable: {', '.join(usable)}")]
    why = "; ".join(f"{c.name}: {c.detail}" for c in found)  # the quarantine's reason: say it in the run's rows
    return [
        *found,
        Check("frameworks", FAIL, f"no framework of the run can measure here ({why})", "see the lines above"),
    ]


def _framework(config: Config, base: str, names: list[str], gpus: tuple, multi_gpu: bool) -> Check:
    fw = frameworks.REGISTRY[base]
    interpreter = config.interpreter(base)
    check = f"framework {base}"
    unavailable = f"{', '.join(names)} rows will be unavailable"
    where = f"[frameworks.{base}] python in {config.path}"
    create = f"create it with `make envs`, or set {where}"
    if not interpreter.python:
        return Check(check, WARN, f"no interpreter configured; {unavailable}", create)
    if why := interpreters.unusable(interpreter.python):
        return Check(check, WARN, f"{why}; {unavailable}", create)
    if gpus:
        ds = DeviceSet("all", "gpu", len(gpus), *zip(*((g.uuid, g.name, g.index) for g in gpus)))
    else:
        ds = DeviceSet("cpu", "cpu", 1)
    case = Case(base, ds, 1)
    try:
        launch_env = frameworks.launch_spec(interpreter, case, TrainingJob("", 1, 1, 0)).environ
    except frameworks.Unavailable as exc:
        return Check(check, WARN, f"{exc}; {unavailable}", create)
    except frameworks.Unsupported:  # not on every GPU at once (neon's closed multi-GPU backend): the probe still runs
        launch_env = {**device_environ(case), **interpreter.environ}
    argv = [interpreter.python, "-c", PROBE, base, *fw.modules]
    env = environ.trainer_environ(launch_env)
    try:
        out = interpreters.ask(argv, env, PROBE_TIMEOUT_S)
    except OSError as exc:
        return Check(check, WARN, f"{interpreter.python} cannot start: {exc.strerror or exc}; {unavailable}", create)
    if out.returncode is None:
        detail = f"{interpreter.python} took over {PROBE_TIMEOUT_S:.0f} s to import {base}; {unavailable}"
        return Check(check, WARN, detail, "look for a hung driver or a slow file system")
    found = interpreters.last_json_line(out.stdout) if out.returncode == 0 else None
    if found is not None and (bad := _odd_answer(found)):
        return Check(
            check, WARN, f"{interpreter.python}'s probe answered {bad}; {unavailable}", f"reinstall it, or {create}"
        )
    if found is None:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return Check(
            check,
            WARN,
            f"{interpreter.python} cannot import {base}: {last}; {unavailable}",
            f"reinstall it, or {create}",
        )
    problems = []
    if gpus and not found.get("cuda"):
        problems.append("a build without CUDA on a GPU host")
    elif gpus and found.get("gpus", 0) < len(gpus):
        problems.append(f"sees {found.get('gpus', 0)} of the {len(gpus)} GPUs NVML shows")
    if gpus and multi_gpu and "nccl" in found and not found["nccl"]:
        problems.append("no NCCL, which the multi-GPU sets need")
    shown = ", ".join(str(found[k]) for k in ("cuda", "nccl") if found.get(k))
    what = f"{interpreter.python}: {fw.title} {found.get('version')}" + (f" ({shown})" if shown else "")
    if problems:
        return Check(
            check,
            WARN,
            f"{what}: {'; '.join(problems)}; its GPU rows will fail",
            f"install the CUDA build of {base} there, or set {where} to an interpreter that has it",
        )
    seen = f", sees {found['gpus']} GPU(s)" if gpus else ""
    return Check(check, PASS, f"{what}{seen}; runs {', '.join(names)}")


def _odd_answer(found: dict) -> str | None:
    """What in a framework probe's answer is not what the probe prints (a wrapper or a damaged install)."""
    gpus = found.get("gpus")
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        return f"gpus = {gpus!r}, not a count of GPUs"
    return None


def _dataset(config: Config, settings: Settings, gpu_host: bool) -> Check:
    """The data set `pipeline.prepare_dataset` will choose, by its rules, read and checked as a trainer reads it."""
    try:
        chosen = pipeline.choose_dataset(config, settings, gpu_host)
    except pipeline.NoRealData as exc:
        return Check("data set", FAIL, exc.what, pipeline.REAL_DATA_HELP)
    kind, folder = chosen["kind"], chosen["data_dir"]
    if kind == "synthetic" and not cifar10.is_present(folder):
        return Check("data set", PASS, f"synthetic, written to {folder} by the run's first step")
    fix = (
        f"delete {folder}: the run writes it again"
        if kind == "synthetic"
        else "replace the damaged file: " + pipeline.REAL_DATA_HELP
    )
    try:
        train, test = cifar10.load(folder, settings.train_images)
    except (cifar10.DataError, OSError) as exc:
        return Check("data set", FAIL, str(exc), fix)
    return Check(
        "data set", PASS, f"{kind}, {len(train.labels)} training and {len(test.labels)} test images in {folder}"
    )


def _output(config: Config) -> Check:
    folder = config.output_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check(
            "output folder",
            FAIL,
            f"{folder} is not writable: {exc.strerror or exc}",
            f"make it a folder this user can write, or set [paths] output_dir in {config.path}",
        )
    return Check("output folder", PASS, f"{folder} writable, {shutil.disk_usage(folder).free / 2**30:.0f} GiB free")


def _database(config: Config) -> Check:
    """Reachable and at the newest migration: opened as the run's first step opens it (which migrates it)."""
    import alembic.util
    import sqlalchemy.exc
    from alembic.runtime.migration import MigrationContext

    from trainbench.store.results import VERSION_TABLE, open_store

    url = shown_url(config.database_url)
    where = f"[paths] database_url in {config.path} (or $TRAINBENCH_DATABASE_URL)"
    try:
        engine = open_store(config.database_url).engine
        with engine.connect() as conn:
            current = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
    except OSError as exc:  # an SQLite file's folder that cannot be made
        return Check("results database", FAIL, f"{url}: {exc.strerror or exc}", f"make its folder writable, or {where}")
    except sqlalchemy.exc.SQLAlchemyError as exc:
        first = next((l.strip() for l in str(exc).splitlines() if l.strip()), type(exc).__name__)
        return Check("results database", FAIL, f"{url}: {first}", f"check the server, its credentials and {where}")
    except alembic.util.CommandError as exc:
        return Check(
            "results database",
            FAIL,
            f"{url}: cannot migrate it: {exc}",
            "a newer trainbench migrated it: update trainbench on this host",
        )
    return Check("results database", PASS, f"{url}: reachable, migrations at head ({current})")
