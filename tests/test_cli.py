"""The CLI's answers to mistakes: one line naming what is wrong and what is accepted, exit status 2."""

from __future__ import annotations

import pytest

from trainbench import cli, config
from trainbench.store.results import ResultStore

from conftest import write_config


@pytest.mark.parametrize("command", [["report", "--run-id", "cli__typo"], ["results", "--run-id", "cli__typo"]])
def test_an_unknown_run_id_is_an_error_naming_the_runs_there_are(tmp_path, capsys, command):
    cfg_path = write_config(tmp_path)
    store = ResultStore(config.load(cfg_path).database_url)
    store.save_run("cli__real", {})
    assert cli.main(["--config", str(cfg_path), *command]) == 2
    err = capsys.readouterr().err
    assert err == "trainbench: no run 'cli__typo' in the results database; newest runs: cli__real (or latest)\n"
    assert not (tmp_path / "output" / "runs" / "cli__typo").exists()
