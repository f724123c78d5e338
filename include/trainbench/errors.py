"""Errors a retry cannot heal: bad input, invalid results, a regression the run must fail on."""


class NoRetry(Exception):
    """Raising this fails the step at once; an orchestrator should not retry it."""
