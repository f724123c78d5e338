"""The assets trainbench's DAGs announce and schedule on, named in one place."""

from __future__ import annotations

from airflow.sdk import Asset

RESULTS = Asset(name="trainbench_results", uri="trainbench://results")  # a weekly run's published results
ENVIRONMENT_VERDICTS = Asset(name="trainbench_environment_verdicts", uri="trainbench://environment/verdicts")


def environment(host: str) -> Asset:
    """A host's environment: the environment watch emits an event on it when the host's environment changed."""
    return Asset(name=f"trainbench_environment_{host}", uri=f"trainbench://environment/{host}")
