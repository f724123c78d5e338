"""Command line of the core: the same pipeline as the DAG, without Airflow.

python -m trainbench devices
python -m trainbench plan --device-sets cpu cpu:2
python -m trainbench run --epochs 1 --train-images 2000 --device-sets cpu cpu:2 --repeats 1
python -m trainbench results --format csv
python -m trainbench doctor
python -m trainbench gpu-check
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import sys
import time
from pathlib import Path

from trainbench import config as config_mod
from trainbench import fingerprint
from trainbench.errors import ConfigError
from trainbench.planning import DEFAULT_HOST
from trainbench.reports import tables
from trainbench.store import run_folder
from trainbench.store.results import ResultStore, open_existing
from trainbench.workflows import harness, pipeline


def _settings_flags(p: argparse.ArgumentParser, defaults: config_mod.Settings) -> None:
    """A flag per setting a run may override, derived from the model: its help says what the setting is and
    accepts, its default is the configuration's; the model checks the value, with the file's messages."""
    for name in config_mod.PER_RUN:
        default = getattr(defaults, name)
        shown = " ".join(default) if isinstance(default, tuple) else "empty" if default is None else default
        p.add_argument(
            f"--{name.replace('_', '-')}",
            nargs="+" if config_mod.is_list(name) else None,
            type=functools.partial(config_mod.from_text, name),
            default=default,
            help=f"{config_mod.describe(name)} (default: {shown})".replace("%", "%%"),
        )


def settings_of(cfg: config_mod.Config, args: argparse.Namespace) -> config_mod.Settings:
    """The run's settings: the configuration's, overridden by the flags."""
    return cfg.settings.overridden(**{name: getattr(args, name) for name in config_mod.PER_RUN})


def cmd_devices(cfg, args) -> int:
    print(json.dumps(pipeline.discover_devices(), indent=2))
    return 0


def this_host() -> str:
    """The fleet host this CLI measures for: $TRAINBENCH_HOST, as a worker declares it, else the default host;
    planned for another host, every case would be recorded `unavailable`."""
    return fingerprint.worker_host() or DEFAULT_HOST


def cmd_plan(cfg, args) -> int:
    settings = settings_of(cfg, args)
    dataset = {"kind": settings.dataset, "data_dir": str(cfg.data_dir)}
    for spec in pipeline.plan_matrix(settings, pipeline.discover_devices(), dataset, this_host()):
        print(spec.case.label)
    return 0


def cmd_run(cfg, args) -> int:
    import sqlalchemy.exc
    from tqdm import tqdm

    settings = settings_of(cfg, args)
    run_id = run_folder.check_run_id(args.run_id or f"cli__{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}")
    inventory = pipeline.discover_devices()
    dataset = pipeline.prepare_dataset(cfg, settings, inventory)
    specs = pipeline.plan_matrix(settings, inventory, dataset, this_host())
    step = "recording the run"
    with run_folder.measuring(cfg.output_dir, run_id):  # until published: a second `run` of the id is refused
        try:
            pipeline.check_unmeasured(cfg, run_id, this_host())
            pipeline.start_run(cfg, run_id, settings)
            with tqdm(specs, unit="case", file=sys.stderr) as bar:
                for spec in bar:
                    step = f"measuring and storing {spec.case.label}"
                    bar.set_description(spec.case.label)
                    harness.run_case(cfg, run_id, spec, log=bar.write, resume=True)
            try:
                step = "collecting and validating the run's results"
                pipeline.collect(cfg, run_id)
                pipeline.validate_results(cfg, run_id, specs)
            except pipeline.ValidationFailed as exc:
                print(f"trainbench: the run's results failed validation; nothing published:\n{exc}", file=sys.stderr)
                return 1
            step = "judging and publishing the run"
            pipeline.detect_regressions(cfg, run_id)
            published = pipeline.publish(cfg, run_id)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            print(_database_lost(cfg, run_id, step, exc), file=sys.stderr)
            return 2
    print(Path(published["markdown"]).read_text())
    print(json.dumps(published, indent=2))
    return 0


def _database_lost(cfg, run_id: str, step: str, exc: Exception) -> str:
    """The results database failed mid-run: the step and case it failed in, and that nothing measured is lost."""
    raw = run_folder.run_dir(cfg.output_dir, run_id) / "raw"
    return (
        f"trainbench: the results database failed while {step} ({one_line(exc)}). Each case measured so far is "
        f"kept as raw JSON in {raw}: once the database is back, `trainbench run --run-id {run_id}` (with the same "
        "settings) stores them without training them again and measures the rest."
    )


def cmd_doctor(cfg, args) -> int:
    from trainbench.workflows import doctor

    started = time.perf_counter()
    checks = doctor.run(cfg, this_host(), settings=settings_of(cfg, args))
    for check in checks:
        print(check.line())
    fails, warns = (sum(c.status == s for c in checks) for s in (doctor.FAIL, doctor.WARN))
    ready = doctor.can_measure(checks)
    verdict = "can measure" if ready else "cannot measure"
    print(f"{this_host()}: {verdict} ({fails} failed, {warns} warnings, {time.perf_counter() - started:.1f} s)")
    return 0 if ready else 1


def cmd_gpu_check(cfg, args) -> int:
    from trainbench.workflows import gpu_check

    return gpu_check.main(cfg, this_host())


def _run_id(store: ResultStore, run_id: str) -> str:
    """A stored run's id as given, or "latest": the benchmark run of the newest logical date that has results."""
    if run_id != "latest":
        known = store.run_ids()
        if run_id not in known:
            newest = ", ".join(known[-5:][::-1]) or "none yet"
            raise ConfigError(f"no run {run_id!r} in the results database; newest runs: {newest} (or latest)")
        return run_id
    latest = store.latest_run_id()
    if latest is None:
        raise ConfigError("no published benchmark run with results yet (a running or invalid run is never latest)")
    return latest


def cmd_results(cfg, args) -> int:
    store = open_existing(cfg.database_url)
    rows = store.rows(_run_id(store, args.run_id) if args.run_id else None)
    if args.format == "csv":
        sys.stdout.write(tables.csv_text(rows))
    elif args.format == "json":
        print(json.dumps(rows, default=str, indent=1))
    else:
        print(" | ".join(tables.CSV_COLUMNS))
        for r in rows:
            print(
                " | ".join(
                    ""
                    if r.get(c) is None
                    else str(r[c]).splitlines()[0]
                    if c == "error"
                    else f"{r[c]:.3f}"
                    if isinstance(r[c], float)
                    else str(r[c])
                    for c in tables.CSV_COLUMNS
                )
            )
    return 0


def cmd_import_log(cfg, args) -> int:
    from trainbench.store import imported_logs

    store = pipeline.store(cfg)
    try:
        run_id = imported_logs.import_log(store, args.path)
    except ValueError as exc:  # empty or unparsable (or not text): the message names the file and line
        raise ConfigError(" ".join(str(exc).split())) from None
    print(f"{run_id}: {len(store.rows(run_id))} imported rows in {config_mod.shown_url(cfg.database_url)}")
    return 0


def cmd_report(cfg, args) -> int:
    print(json.dumps(pipeline.publish(cfg, _run_id(open_existing(cfg.database_url), args.run_id)), indent=2))
    return 0


def cmd_envs(cfg, args) -> int:
    from trainbench.frameworks import interpreters

    interpreters.ensure(cfg.interpreter(name) for name in args.frameworks or cfg.settings.frameworks)
    return 0


def build_parser(defaults: config_mod.Settings | None = None) -> argparse.ArgumentParser:
    """The command line; `defaults`: the configuration's settings, which the settings flags override."""
    defaults = defaults or config_mod.Settings()
    p = argparse.ArgumentParser(prog="trainbench", description="Training benchmarks across device sets.")
    p.add_argument("--config", help=f"configuration file (default: ${config_mod.ENV_VAR} or ./trainbench.toml)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("devices", help="show this host's devices").set_defaults(func=cmd_devices)
    plan = sub.add_parser("plan", help="list the cases a run would measure")
    _settings_flags(plan, defaults)
    plan.set_defaults(func=cmd_plan)
    run = sub.add_parser("run", help="run the benchmark here, without Airflow")
    _settings_flags(run, defaults)
    run.add_argument("--run-id")
    run.set_defaults(func=cmd_run)
    res = sub.add_parser("results", help="print stored results")
    res.add_argument("--run-id", help='a run id, or "latest"; default: every run')
    res.add_argument("--format", choices=("csv", "json", "table"), default="table")
    res.set_defaults(func=cmd_results)
    env = sub.add_parser("envs", help="create the frameworks' interpreters that are missing")
    env.add_argument("--frameworks", nargs="+", help="default: the frameworks the configuration enables")
    env.set_defaults(func=cmd_envs)
    imp = sub.add_parser(
        "import-log", help="load a hand-made log in the original log's format (shown beside runs, never judged on)"
    )
    imp.add_argument("path")
    imp.set_defaults(func=cmd_import_log)
    doc = sub.add_parser("doctor", help="check this host is ready to measure (exit status 1 when it cannot)")
    _settings_flags(doc, defaults)
    doc.set_defaults(func=cmd_doctor)
    sub.add_parser(
        "gpu-check", help="GPU acceptance: doctor, then pytorch, pytorch-graph and jax on one GPU against their goals"
    ).set_defaults(func=cmd_gpu_check)
    rep = sub.add_parser("report", help="(re)write a run's reports")
    rep.add_argument("--run-id", required=True, help='a run id, or "latest"')
    rep.set_defaults(func=cmd_report)
    return p


def one_line(exc: BaseException) -> str:
    """A configuration, filesystem or database error as the one line the CLI prints."""
    import sqlalchemy.exc

    if isinstance(exc, OSError) and exc.strerror:
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        return f"{exc.strerror}: {where}" if where else exc.strerror
    if isinstance(exc, sqlalchemy.exc.SQLAlchemyError):
        first = next((l.strip() for l in str(exc).splitlines() if l.strip()), type(exc).__name__)
        return f"results database: {first}"
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    import sqlalchemy.exc

    try:
        cfg = config_mod.load(_config_path(argv))
        args = build_parser(cfg.settings).parse_args(argv)
        return args.func(cfg, args)
    except (ConfigError, OSError, sqlalchemy.exc.SQLAlchemyError) as exc:
        print(f"trainbench: {one_line(exc)}", file=sys.stderr)
        return 2


def _config_path(argv: list[str] | None) -> str | None:
    """--config, read before the other flags: their defaults (and --help) are the configuration's."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config")
    return first.parse_known_args(argv)[0].config
