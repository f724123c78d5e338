import json
import tomllib

import jsonschema
import pytest

from trainbench import cli, config
from trainbench.config import ConfigError, Settings

from conftest import ROOT, write_config


def test_project_config_reproduces_the_original_log_on_a_gpu_host():
    cfg = config.load(ROOT / "trainbench.toml")
    s = cfg.settings
    assert (s.epochs, s.batch_size, s.device_sets) == (10, 128, ("all",))
    assert cfg.interpreter("pytorch").python.endswith(".envs/pytorch/bin/python")
    assert cfg.database_url == f"sqlite:///{ROOT / 'output' / 'results.db'}"


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    cfg = config.load(write_config(tmp_path))
    assert cfg.output_dir == tmp_path / "output"
    assert cfg.settings.train_images == 1024


@pytest.mark.parametrize(
    "change, message",
    [
        ({"frameworks": ["tensorflow"]}, "frameworks: 'tensorflow' is not accepted; accepted: one of ['neon', 'mxnet'"),
        ({"device_sets": ["0;1"]}, "device_sets: '0;1' is not accepted; accepted: \"all\""),
        ({"device_sets": ["cpu:0"]}, "device_sets: 'cpu:0' is not accepted"),
        ({"device_sets": []}, 'device_sets is empty; name at least one, each "all"'),
        ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
        ({"batch_size": -1}, "batch_size must be an integer >= 1"),
        ({"repeats": 1.5}, "repeats must be an integer >= 1"),
        ({"dataset": "imagenet"}, "dataset must be one of ['auto', 'real', 'synthetic']"),
        ({"train_images": 0}, "train_images must be an integer >= 1 or empty (the whole set), got 0"),
        ({"colour": "red"}, "unknown setting(s) ['colour']; accepted: ['batch_size', 'dataset'"),
    ],
)
def test_bad_overrides_name_the_value_and_what_is_accepted(change, message):
    with pytest.raises(ConfigError) as err:
        Settings().overridden(**change)
    assert message in str(err.value)


def test_overrides_keep_what_they_do_not_change():
    s = Settings().overridden(device_sets=["cpu", "cpu:2"], train_images=None)
    assert s.device_sets == ("cpu", "cpu:2") and s.epochs == 10 and s.train_images is None


def test_fleet_hosts_are_queue_names(tmp_path):
    assert config.load(write_config(tmp_path, hosts=["h100-a", "h100-b"])).hosts == ("h100-a", "h100-b")
    with pytest.raises(ConfigError, match=r"\[fleet\] host name\(s\) \['gpu 1'\] are not queue names"):
        config.load(write_config(tmp_path, hosts=["gpu 1"]))
    with pytest.raises(ConfigError, match=r"\[fleet\] hosts must be a non-empty list of distinct names"):
        config.load(write_config(tmp_path, hosts=["a", "a"]))


def test_a_variant_has_no_section_of_its_own(tmp_path):
    path = write_config(tmp_path)
    path.write_text(path.read_text() + '[frameworks.pytorch-graph]\npython = "/opt/torch/bin/python"\n')
    with pytest.raises(
        ConfigError, match=r"pytorch-graph is a variant of pytorch .* configure \[frameworks.pytorch\] instead"
    ):
        config.load(path)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "section, text, message",
    [
        ("benchmark", "timeout_s = inf", "timeout_s must be a number of seconds > 0 and <= 604800 (a week), got inf"),
        ("benchmark", "timeout_s = nan", "timeout_s must be a number of seconds > 0"),
        ("benchmark", "seed = -1", "seed must be an integer from 0 to 2**32 - 1 (numpy's seeds), got -1"),
        ("measurement", "max_cv = nan", "[measurement] max_cv must be a finite number >= 0, got nan"),
        ("measurement", "idle_wait_s = inf", "[measurement] idle_wait_s must be a finite number >= 0 and <= 86400"),
        ("measurement", "idle_wait_s = 1e300", "[measurement] idle_wait_s must be a finite number >= 0 and <= 86400"),
        ("measurement", "idle_threshold_mib = 1e300", "[measurement] idle_threshold_mib must be a finite number >= 0"),
        ("fleet", "retry_delay_s = inf", "[fleet] retry_delay_s must be a number of seconds from 0 to 86400"),
        ("health", "max_throttle_share = 1.5", "[health] max_throttle_share must be a number in [0, 1), got 1.5"),
        ("health", 'taint_reasons = ["gpu_idle"]', "[health] taint_reasons must be a list of ['sw_power_cap'"),
        ("alerts", 'email_to = "ops"', "[alerts] email_to must be a list of email addresses, got 'ops'"),
        ("alerts", "late_after_hours = 0", "[alerts] late_after_hours must be a number of hours > 0"),
        ("alerts", "late_after_hours = 1e300", "[alerts] late_after_hours must be a number of hours > 0 and <= 168"),
        ("alerts", 'webhook_url = "https://hooks"', "[alerts]: unknown key(s) ['webhook_url']"),
    ],
)
def test_settings_that_would_switch_a_safety_off_are_refused(tmp_path, section, text, message):
    path = write_config(tmp_path)
    lines = path.read_text().splitlines()
    lines = [l for l in lines if not l.startswith(text.split()[0] + " ")]
    if f"[{section}]" not in lines:
        lines.append(f"[{section}]")
    lines.insert(lines.index(f"[{section}]") + 1, text)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert message in str(err.value) and str(err.value).startswith(str(path))


def test_a_relative_sqlite_url_resolves_against_the_config_file(tmp_path, monkeypatch):
    path = write_config(tmp_path, database_url="sqlite:///db/results.db")
    monkeypatch.chdir("/")
    assert config.load(path).database_url == f"sqlite:///{tmp_path / 'db' / 'results.db'}"


def test_a_config_path_that_is_not_a_file_says_what_it_is(tmp_path):
    with pytest.raises(ConfigError, match="is a folder; name the trainbench.toml inside it"):
        config.load(tmp_path)
    loop = tmp_path / "loop.toml"
    loop.symlink_to(loop)
    with pytest.raises(ConfigError, match="is a symbolic link loop"):
        config.load(loop)
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "missing.toml")


def with_setting(tmp_path, name, value) -> str:
    """A configuration file whose [benchmark] sets `name` to `value` (TOML has no null: none is empty)."""
    path = write_config(tmp_path)
    lines = [l for l in path.read_text().splitlines() if not l.startswith(f"{name} = ")]
    lines.insert(lines.index("[benchmark]") + 1, f"{name} = {json.dumps('' if value is None else value)}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def on_the_command_line(value) -> list[str]:
    """The value as a shell passes it: a list as one word per item, else JSON (none is empty)."""
    if isinstance(value, list):
        return [str(v) for v in value]
    return ["" if value is None else value if isinstance(value, str) else json.dumps(value)]


@pytest.mark.parametrize(
    "name, value, accepted",
    [
        ("device_sets", ["0, 1"], False),
        ("device_sets", ["0,1"], True),
        ("device_sets", ["0;1"], False),
        ("device_sets", ["cpu:0"], False),
        ("device_sets", ["cpu", "cpu:2", "GPU-8f0c1a2b-0000"], True),
        ("frameworks", ["tensorflow"], False),
        ("frameworks", ["pytorch", "pytorch"], False),
        ("frameworks", ["pytorch-graph", "jax"], True),
        ("epochs", 0, False),
        ("epochs", True, False),
        ("epochs", 1, True),
        ("batch_size", -1, False),
        ("repeats", 1.5, False),
        ("warmup", -1, False),
        ("warmup", 0, True),
        ("dataset", "imagenet", False),
        ("dataset", "synthetic", True),
        ("train_images", 0, False),
        ("train_images", None, True),
        ("train_images", 2000, True),
    ],
)
def test_the_cli_the_trigger_form_and_the_file_accept_the_same_settings(tmp_path, name, value, accepted):
    """One rule per setting: the CLI's flags, the DAG's Params schema and [benchmark] agree, and where the CLI
    and the file refuse, they say the same words."""
    cfg = config.load(write_config(tmp_path))
    flag = f"--{name.replace('_', '-')}"
    try:
        from_cli = cli.settings_of(
            cfg, cli.build_parser(cfg.settings).parse_args(["run", flag, *on_the_command_line(value)])
        )
    except ConfigError as exc:
        from_cli = exc
    try:
        jsonschema.validate(value, config.settings_schema()[name])
        form_accepts = True
    except jsonschema.ValidationError:
        form_accepts = False
    try:
        from_file = config.load(with_setting(tmp_path, name, value)).settings
    except ConfigError as exc:
        from_file = exc
    assert (isinstance(from_cli, Settings), form_accepts, isinstance(from_file, Settings)) == (accepted,) * 3
    if accepted:
        assert (
            getattr(from_cli, name) == getattr(from_file, name) == (tuple(value) if isinstance(value, list) else value)
        )
    else:
        assert str(from_file).endswith(f"[benchmark] {from_cli}") and name in str(from_cli)


def test_each_default_is_written_once():
    """The model holds every default; the project's file, the CLI's flags and the trigger form take it from there."""
    with open(ROOT / "trainbench.toml", "rb") as f:
        assert tomllib.load(f)["benchmark"] == {}
    cfg = config.load(ROOT / "trainbench.toml")
    flags = cli.build_parser(cfg.settings).parse_args(["run"])
    schema = Settings.model_json_schema()["properties"]
    for name in config.PER_RUN:
        default = Settings.model_fields[name].default
        assert getattr(cfg.settings, name) == getattr(flags, name) == default
        assert schema[name]["default"] == Settings().as_dict()[name]
    assert Settings().epochs == 10


def test_the_project_file_sets_health_and_alerts_without_secrets():
    cfg = config.load(ROOT / "trainbench.toml")
    assert cfg.health == config.Health() and cfg.alerts == config.Alerts()
    assert cfg.alerts.smtp_conn_id == "trainbench_smtp" and cfg.alerts.email_to == ()


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        (config.Alerts, {"webhook_url": "https://hooks"}, "[alerts] unknown key(s) ['webhook_url']; accepted: ["),
        (
            config.EnvironmentChangePolicy,
            {"min_repeats": 5, "cap": 4},
            "[environment_change] min_repeats 5 exceeds cap 4",
        ),
        (config.RegressionPolicy, {"alpha": True}, "[regression] alpha must be a number in (0, 1), got True"),
    ],
)
def test_every_section_refuses_alike_from_code_as_from_the_file(section, values, message):
    """Each section is a pydantic model like Settings: built in code, it refuses with the file's words."""
    with pytest.raises(ConfigError) as refused:
        section(**values)
    assert str(refused.value).startswith(message)
