"""The one configuration file (`trainbench.toml`) and per-run overrides of it.

`Settings`, a pydantic model, is the one source of what a run measures: the file's `[benchmark]` table,
the CLI's flags (`cli_flags`) and the DAG's Params (`settings_schema()`, the trigger form) are all derived
from it, so each setting has one default and one rule, and a bad value is refused alike everywhere, with the
same message from the CLI and the file (the form words its refusal as JSON Schema does).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticCustomError

from trainbench import frameworks
from trainbench.errors import ConfigError
from trainbench.frameworks import Interpreter
from trainbench.planning import DEFAULT_HOST, DEVICE_SET_HELP, DEVICE_SET_PATTERN, HOST_PATTERN

__all__ = ["Config", "ConfigError", "Measurement", "RegressionPolicy", "Settings", "load", "settings_schema"]

MAX_TIMEOUT_S = 7 * 24 * 3600.0  # a case that runs longer is stuck; inf would switch the timeout off
ENV_VAR = "TRAINBENCH_CONFIG"
DATABASE_URL_VAR = "TRAINBENCH_DATABASE_URL"  # overrides [paths] database_url: secrets stay out of the file
SECTIONS = (
    "benchmark",
    "measurement",
    "regression",
    "environment_change",
    "health",
    "alerts",
    "paths",
    "frameworks",
    "fleet",
)
PATH_KEYS = ("data_dir", "output_dir", "database_url")
FRAMEWORK_KEYS = ("base_python", "env", "python", "requirements", "script")
# What a run may override (the trigger form, the CLI's flags); the rest is the file's alone: timeout_s sets the
# train tasks' execution_timeout when the DAG is parsed, and a run with another seed would not compare with history.
PER_RUN = ("frameworks", "device_sets", "epochs", "batch_size", "repeats", "warmup", "train_images", "dataset")


def _finite(value: object) -> bool:
    """A real number (not a bool, NaN or infinity): what every numeric setting must be."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Accepts:
    """What a setting (or each item of a list setting) accepts, in words: its error messages, its CLI help
    and its trigger form description all say this."""

    text: str


def _distinct(values: tuple) -> tuple:
    """The form's `uniqueItems`, which pydantic has no constraint for."""
    twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if twice is not None:
        raise PydanticCustomError("distinct", "lists {twice} twice; name each once", {"twice": repr(twice)})
    return values


if typing.TYPE_CHECKING:
    FrameworkName = str
else:
    FrameworkName = Literal[frameworks.NAMES]
Framework = Annotated[FrameworkName, Accepts(f"one of {list(frameworks.NAMES)}")]
DeviceSet = Annotated[str, Strict(), StringConstraints(pattern=DEVICE_SET_PATTERN), Accepts(DEVICE_SET_HELP)]
Count = Annotated[int, Strict(), Field(ge=1), Accepts("an integer >= 1")]
Dataset = Literal["auto", "real", "synthetic"]
DATASETS = typing.get_args(Dataset)


class Settings(BaseModel):
    """What one benchmark run measures: the file's `[benchmark]`, overridden per run by the CLI or the DAG."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    frameworks: Annotated[tuple[Framework, ...], AfterValidator(_distinct)] = Field(
        frameworks.NAMES, min_length=1, json_schema_extra={"uniqueItems": True}, description="frameworks to benchmark"
    )
    device_sets: tuple[DeviceSet, ...] = Field(("all",), min_length=1, description="device sets to run on")
    epochs: Count = Field(10, description="training epochs")
    batch_size: Count = Field(128, description="global batch size")
    repeats: Count = Field(3, description="measured runs of every case, interleaved")
    warmup: Annotated[int, Strict(), Field(ge=0), Accepts("an integer >= 0")] = Field(
        1, description="warm-up runs per framework x device set, first, never counted in statistics"
    )
    train_images: Annotated[
        Annotated[int, Strict(), Field(ge=1)] | None, Accepts("an integer >= 1 or empty (the whole set)")
    ] = Field(None, description="train on the first N images only")
    dataset: Annotated[Dataset, Accepts(f"one of {list(DATASETS)}")] = Field(
        "auto", description="the data set (auto: real CIFAR-10 if present, else synthetic on a host without GPUs)"
    )
    seed: Annotated[int, Strict(), Field(ge=0, lt=2**32), Accepts("an integer from 0 to 2**32 - 1 (numpy's seeds)")] = (
        Field(0, description="data order and initialisation seed")
    )
    timeout_s: Annotated[
        float,
        Strict(),
        Field(gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False),
        Accepts(f"a number of seconds > 0 and <= {MAX_TIMEOUT_S:.0f} (a week)"),
    ] = Field(3600.0, description="a trainer running longer is killed and recorded as timeout")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_explain(exc)) from None

    def overridden(self, **changes: Any) -> Settings:
        """A validated copy with the given fields replaced."""
        return Settings(**{**self.as_dict(), **changes})

    def as_dict(self) -> dict:
        return self.model_dump(mode="json")


def _accepts(name: str, item: bool = False, model: type[BaseModel] | None = None) -> str:
    """The phrase `Accepts` gives the field `name` of `model` (a setting by default), or each of its items."""
    field = (model or Settings).model_fields[name]
    metadata = typing.get_args(field.annotation)[0].__metadata__ if item else field.metadata
    return next(m.text for m in metadata if isinstance(m, Accepts))


def is_list(name: str) -> bool:
    return typing.get_origin(Settings.model_fields[name].annotation) is tuple


def describe(name: str) -> str:
    """The setting's help: what it is and what it accepts (the CLI's --help, the trigger form)."""
    field = Settings.model_fields[name]
    if is_list(name):
        return f"{field.description}, each {_accepts(name, item=True)}"
    return f"{field.description}: {_accepts(name)}"


def _explain(exc: ValidationError) -> str:
    """Pydantic's errors as one line naming each setting, its bad value and what it accepts."""
    unknown = [e["loc"][0] for e in exc.errors() if e["type"] == "extra_forbidden"]
    problems = [f"unknown setting(s) {unknown}; accepted: {sorted(Settings.model_fields)}"] if unknown else []
    with_bad_items = {e["loc"][0] for e in exc.errors() if len(e["loc"]) > 1}
    for error in exc.errors():
        name, *item = error["loc"]
        value = error["input"]
        if error["type"] == "extra_forbidden" or (error["type"] == "too_short" and name in with_bad_items):
            continue
        elif item:
            problems.append(f"{name}: {value!r} is not accepted; accepted: {_accepts(str(name), item=True)}")
        elif error["type"] == "tuple_type":
            problems.append(f'{name} must be a list, got {value!r} (write ["{value}"] for one)')
        elif error["type"] == "too_short":
            problems.append(f"{name} is empty; name at least one, each {_accepts(str(name), item=True)}")
        elif error["type"] == "distinct":
            problems.append(f"{name} {error['msg']}")
        else:
            problems.append(f"{name} must be {_accepts(str(name))}, got {value!r}")
    return "; ".join(problems)


class _FormSchema(GenerateJsonSchema):
    """Plain JSON Schema, as Airflow's trigger form renders it: an optional value is `"type": ["null", ...]`."""

    def nullable_schema(self, schema):
        inner = self.generate_inner(schema["schema"])
        return {**inner, "type": ["null", inner["type"]]}


def settings_schema() -> dict[str, dict]:
    """JSON Schema per setting a run may override, for the DAG's Params (the UI trigger form); without a
    default, which is the configuration file's."""
    properties = Settings.model_json_schema(schema_generator=_FormSchema)["properties"]
    return {
        name: {k: v for k, v in properties[name].items() if k not in ("title", "default")}
        | {"description": describe(name)}
        for name in PER_RUN
    }


def _may_be_empty(name: str) -> bool:
    """TOML has no null, and a command line neither: there an empty value is none."""
    return type(None) in typing.get_args(Settings.model_fields[name].annotation)


def from_text(name: str, text: str) -> Any:
    """A setting's value as a command line gives it: JSON when it reads as JSON (`1`, `null`), else the text."""
    if text == "" and _may_be_empty(name):
        return None
    if is_list(name):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


class Section(BaseModel):
    """A table of the file other than `[benchmark]`: pydantic rules as `Settings` has, each field saying what it
    accepts (`Accepts`), and a refusal naming the table, the key, its value and what it accepts."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    table: typing.ClassVar[str]

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(f"[{self.table}] {_explain_section(type(self), exc, values)}") from None


def _explain_section(model: type[Section], exc: ValidationError, values: dict) -> str:
    """One problem per key (an item's error names its whole list), then the rules between keys."""
    keys = dict.fromkeys(str(e["loc"][0]) for e in exc.errors() if e["loc"])
    unknown = [k for k in keys if k not in model.model_fields]
    problems = [f"unknown key(s) {unknown}; accepted: {sorted(model.model_fields)}"] if unknown else []
    problems += [f"{k} must be {_accepts(k, model=model)}, got {values[k]!r}" for k in keys if k not in unknown]
    return "; ".join(problems + [e["msg"] for e in exc.errors() if not e["loc"]])


def _rule(message: str) -> PydanticCustomError:
    return PydanticCustomError("rule", message)


Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Flag = Annotated[bool, Strict(), Accepts("true or false")]
Share = Annotated[Number, Field(gt=0, lt=1), Accepts("a number in (0, 1)")]
NonNegative = Annotated[Number, Field(ge=0), Accepts("a finite number >= 0")]


class Measurement(Section):
    """How devices are checked and sampled; see docs/measurement.md."""

    table = "measurement"
    idle_threshold_mib: Annotated[
        Number, Field(ge=0, le=2**20), Accepts("a finite number >= 0 and <= 1048576 (1 TiB)")
    ] = 64.0
    idle_wait_s: Annotated[Number, Field(ge=0, le=86400), Accepts("a finite number >= 0 and <= 86400 (a day)")] = 120.0
    memory_sample_ms: Annotated[Number, Field(gt=0, le=60000), Accepts("a finite number > 0 and <= 60000")] = 5.0
    max_cv: NonNegative = 0.05  # a case whose repeats vary more (coefficient of variation) is noisy: no verdict
    lock_clocks: Flag = False  # lock each GPU of a case to its base clock while it runs (root; restored after)


class RegressionPolicy(Section):
    """When a change against history is flagged; see trainbench.checks.regression."""

    table = "regression"
    threshold: Share = 0.05
    alpha: Share = 0.05
    lookback_runs: Count = 8
    min_history_runs: Count = 2
    fail_on_regression: Flag = False


Repeats = Annotated[int, Strict(), Field(ge=2), Accepts("an integer >= 2")]


class EnvironmentChangePolicy(Section):
    """How a host's environment change is judged and how long it is measured: what counts as a change (threshold),
    the false-alarm rate over all looks (alpha) and the repeats allowed; see trainbench.checks.environment_change
    (which calls it its Design) and benchmarks/ab_power.py."""

    table = "environment_change"
    threshold: Share = 0.05  # a change inside +-threshold is "no change"
    alpha: Share = 0.05  # the chance that any look's interval misses the change, over all looks
    min_repeats: Repeats = 3
    cap: Repeats = 10  # repeats of one sequential measurement at most (a confirmation may take as many again)

    @model_validator(mode="after")
    def _min_within_cap(self) -> EnvironmentChangePolicy:
        if self.min_repeats > self.cap:
            raise _rule(f"min_repeats {self.min_repeats} exceeds cap {self.cap}")
        return self

    @property
    def looks(self) -> int:
        """How many times a sequential measurement may look at its data (alpha is spent over them)."""
        return self.cap - self.min_repeats + 1


THROTTLE_REASONS = (  # NVML's clock-event reasons that slow a GPU below what it was asked for
    "sw_power_cap",
    "hw_slowdown",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
)
if typing.TYPE_CHECKING:
    ThrottleReason = str
else:
    ThrottleReason = Literal[THROTTLE_REASONS]


class Health(Section):
    """When a repeat's numbers are kept out (`tainted`) and a host stops measuring (quarantined); see
    trainbench.measure.health."""

    table = "health"
    # a repeat spending more of its time under a taint reason is tainted
    max_throttle_share: Annotated[Number, Field(ge=0, lt=1), Accepts("a number in [0, 1)")] = 0.05
    # Not sw_power_cap by default: a board at full load sits at its power limit by design, so that bit is set
    # for much of a healthy repeat on many GPUs; it is recorded in every row all the same.
    taint_reasons: Annotated[tuple[ThrottleReason, ...], Accepts(f"a list of {list(THROTTLE_REASONS)}")] = (
        THROTTLE_REASONS[1:]
    )


Email = Annotated[str, Strict(), StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$")]
Text = Annotated[str, Strict(), Accepts("a string")]


class Alerts(Section):
    """Who hears about a run's findings; see trainbench.workflows.alerts.  Secrets live in Airflow connections only."""

    table = "alerts"
    email_to: Annotated[tuple[Email, ...], Accepts("a list of email addresses")] = ()  # empty: no email
    email_from: Text = "trainbench@localhost"
    smtp_conn_id: Text = "trainbench_smtp"  # Airflow connection: host, port, login, password; extra {"starttls": true}
    webhook_conn_id: Text = "trainbench_webhook"  # Airflow connection holding a Slack-compatible webhook URL
    base_url: Text = ""  # Airflow's address as users open it, for links; empty: [api] base_url of Airflow
    # a weekly run not finished this long after its slot is late
    late_after_hours: Annotated[Number, Field(gt=0, le=168), Accepts("a number of hours > 0 and <= 168 (a week)")] = (
        12.0
    )


SECTION_MODELS = (Measurement, RegressionPolicy, EnvironmentChangePolicy, Health, Alerts)


@dataclass(frozen=True)
class Config:
    path: Path
    settings: Settings
    data_dir: Path
    output_dir: Path
    database_url: str = dataclasses.field(repr=False)  # may hold a password; shown only through shown_url
    interpreters: dict[str, Interpreter]
    hosts: tuple[str, ...] = (DEFAULT_HOST,)  # [fleet] hosts: one Celery queue (and worker) per host
    retry_delay_s: float = 300.0  # [fleet] retry_delay_s: before a case's task retries (busy GPU, lost worker)
    measurement: Measurement = Measurement()
    regression: RegressionPolicy = RegressionPolicy()
    environment_change: EnvironmentChangePolicy = EnvironmentChangePolicy()
    health: Health = Health()
    alerts: Alerts = Alerts()

    def interpreter(self, name: str) -> Interpreter:
        """The interpreter `name`'s trainer runs in; a variant (`Framework.interpreter_of`) runs in its base's."""
        fw = frameworks.REGISTRY.get(name)
        key = fw.base if fw is not None else name
        if key not in self.interpreters:
            raise ConfigError(f"unknown framework {name!r}; accepted: {list(frameworks.NAMES)}")
        return self.interpreters[key]


def check_run_conf(conf: dict, accepted) -> None:
    """A run's conf names only settings it can override: a typo ({"epoch": 50}) would otherwise be ignored
    and a full default benchmark run in its place."""
    unknown = sorted(set(conf) - set(accepted))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in the run's conf; accepted: {sorted(accepted)}")


def default_path() -> Path:
    """$TRAINBENCH_CONFIG, else ./trainbench.toml, else the project's own file."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    here = Path.cwd() / "trainbench.toml"
    return here if here.is_file() else Path(__file__).resolve().parents[2] / "trainbench.toml"


def _section(path: Path, raw: dict, cls: type[Section]):
    try:
        return cls(**raw.get(cls.table, {}))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _read(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc}") from None


def _known(path: Path, where: str, table: dict, accepted) -> None:
    unknown = sorted(set(table) - set(accepted))
    if unknown:
        raise ConfigError(f"{path}: {where}: unknown key(s) {unknown}; accepted: {sorted(accepted)}")


def _check_schema(path: Path, raw: dict) -> None:
    """Every section and key known, and of its type; the values themselves are checked where they are used."""
    unknown = [s for s in raw if s not in SECTIONS]
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; accepted: {list(SECTIONS)}")
    for name in SECTIONS:
        if not isinstance(raw.get(name, {}), dict):
            raise ConfigError(f"{path}: {name} must be a section ([{name}]), got {raw[name]!r}")
    _known(path, "[benchmark]", raw.get("benchmark", {}), list(Settings.model_fields))
    for section in SECTION_MODELS:
        _known(path, f"[{section.table}]", raw.get(section.table, {}), list(section.model_fields))
    paths = raw.get("paths", {})
    _known(path, "[paths]", paths, PATH_KEYS)
    for key, value in paths.items():
        if not isinstance(value, str):
            raise ConfigError(f"{path}: [paths] {key} must be a string, got {value!r}")
    sections = raw.get("frameworks", {})
    for name in sections:
        if name in frameworks.REGISTRY and name not in frameworks.BASES:
            base = frameworks.REGISTRY[name].base
            raise ConfigError(
                f"{path}: [frameworks.{name}]: {name} is a variant of {base} and runs in its interpreter; "
                f"configure [frameworks.{base}] instead"
            )
    unknown = sorted(set(sections) - set(frameworks.BASES))
    if unknown:
        raise ConfigError(f"{path}: unknown [frameworks.*] section(s) {unknown}; accepted: {list(frameworks.BASES)}")
    for name, section in sections.items():
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: frameworks.{name} must be a section ([frameworks.{name}]), got {section!r}")
        _known(path, f"[frameworks.{name}]", section, FRAMEWORK_KEYS)
        for key, value in section.items():
            if key == "env":
                if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                    raise ConfigError(
                        f'{path}: [frameworks.{name}] env must be a table of strings (env = {{ NAME = "value" }}), '
                        f"got {value!r}"
                    )
            elif not isinstance(value, str):
                raise ConfigError(f"{path}: [frameworks.{name}] {key} must be a string, got {value!r}")


def _database_url(path: Path, url: str) -> str:
    """The URL, if SQLAlchemy can parse it and knows its dialect (never echoed: it may hold a password).

    A relative SQLite path is taken relative to the configuration file, as every other path in it is, not
    to whatever folder a worker happens to start in.
    """
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError as exc:
        raise ConfigError(f"{path}: [paths] database_url (or ${DATABASE_URL_VAR}): unknown database: {exc}") from None
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise ConfigError(
            f"{path}: [paths] database_url (or ${DATABASE_URL_VAR}) is not a SQLAlchemy URL "
            "(like sqlite:////abs/path/results.db or postgresql+psycopg://user@host/db)"
        ) from None
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:" and not os.path.isabs(database):
        return parsed.set(database=str(path.resolve().parent / database)).render_as_string(hide_password=False)
    return url


SECRET_QUERY_KEY = re.compile(r"pass|pwd|secret|token|key", re.IGNORECASE)  # ?password=, ?sslpassword=, ?token=


def shown_url(url: str) -> str:
    """The URL as it may be printed, logged, stored in XCom or written to a report: its password hidden, in the
    userinfo and in any query parameter that may hold one."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    hidden = {k: "***" for k in parsed.query if SECRET_QUERY_KEY.search(k)}
    return parsed.update_query_dict(hidden).render_as_string(hide_password=True).replace("%2A%2A%2A", "***")


def load(path: str | os.PathLike | None = None) -> Config:
    path = Path(path) if path else default_path()
    _check_file(path)
    raw = _read(path)
    _check_schema(path, raw)
    base = path.resolve().parent
    values = {k: None if v == "" and _may_be_empty(k) else v for k, v in raw.get("benchmark", {}).items()}
    try:
        settings = Settings(**values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: [benchmark] {exc}") from None
    paths = raw.get("paths", {})
    output_dir = base / paths.get("output_dir", "output")
    sections = raw.get("frameworks", {})
    interpreters = {  # variants have none of their own: Config.interpreter gives them their base's
        name: _interpreter(base, frameworks.REGISTRY[name], sections.get(name, {})) for name in frameworks.BASES
    }
    return Config(
        path=path.resolve(),
        hosts=_hosts(path, raw.get("fleet", {})),
        retry_delay_s=_retry_delay(path, raw.get("fleet", {})),
        measurement=_section(path, raw, Measurement),
        regression=_section(path, raw, RegressionPolicy),
        environment_change=_section(path, raw, EnvironmentChangePolicy),
        health=_section(path, raw, Health),
        alerts=_section(path, raw, Alerts),
        settings=settings,
        data_dir=base / paths.get("data_dir", "data"),
        output_dir=output_dir,
        database_url=_database_url(
            path,
            os.environ.get(DATABASE_URL_VAR) or paths.get("database_url") or f"sqlite:///{output_dir / 'results.db'}",
        ),
        interpreters=interpreters,
    )


def _check_file(path: Path) -> None:
    """The configuration path names a readable file; else say what it is instead."""
    try:
        path.resolve(strict=True)
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {path} not found (set ${ENV_VAR} or run from the project folder)"
        ) from None
    except RuntimeError:
        raise ConfigError(f"configuration file {path} is a symbolic link loop; point it at a file") from None
    if path.is_dir():
        raise ConfigError(f"configuration file {path} is a folder; name the trainbench.toml inside it") from None
    if not path.is_file():
        raise ConfigError(f"configuration file {path} is not a regular file") from None


def _interpreter(base: Path, fw: frameworks.Framework, section: dict) -> Interpreter:
    """The framework's section, with the registry's defaults for what it leaves out; paths relative to the file."""
    options = dict(section)
    python = options.pop("python", fw.default_interpreter())
    requirements = options.pop("requirements", fw.default_requirements())
    if options.get("script"):
        options["script"] = str(base / options["script"])
    return Interpreter(
        name=fw.name,
        python=str(base / python) if "/" in python else python,  # else a command on PATH, or "" for none
        requirements=str(base / requirements) if requirements else None,
        options=options,
    )


def _hosts(path: Path, fleet: dict) -> tuple[str, ...]:
    """`[fleet] hosts`: the GPU hosts by queue name; each runs one worker, `airflow celery worker -q <host> -c 1`."""
    unknown = sorted(set(fleet) - {"hosts", "retry_delay_s"})
    if unknown:
        raise ConfigError(f"{path}: unknown [fleet] key(s) {unknown}; accepted: ['hosts', 'retry_delay_s']")
    hosts = fleet.get("hosts", [DEFAULT_HOST])
    if not isinstance(hosts, list) or not hosts or len(set(hosts)) != len(hosts):
        raise ConfigError(f"{path}: [fleet] hosts must be a non-empty list of distinct names, got {hosts!r}")
    bad = [h for h in hosts if not isinstance(h, str) or not re.match(HOST_PATTERN, h)]
    if bad:
        raise ConfigError(f"{path}: [fleet] host name(s) {bad} are not queue names (letters, digits, _ and -)")
    return tuple(hosts)


def _retry_delay(path: Path, fleet: dict) -> float:
    value = fleet.get("retry_delay_s", 300.0)
    if not _finite(value) or not 0 <= value <= 86400:
        raise ConfigError(f"{path}: [fleet] retry_delay_s must be a number of seconds from 0 to 86400, got {value!r}")
    return float(value)
