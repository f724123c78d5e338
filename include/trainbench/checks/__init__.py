"""Checks on a run's results: Great Expectations validation against the plan (`validation`) and verdicts
against the history of earlier runs (`regression`)."""
