"""Errors a retry cannot heal: bad input, invalid results, a regression the run must fail on."""


class NoRetry(Exception):
    """Raising this fails the step at once; an orchestrator should not retry it."""


class ConfigError(NoRetry, ValueError):
    """A value in the configuration, a CLI flag or a DAG Param is not acceptable."""
