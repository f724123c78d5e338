"""Map the core's input errors onto Airflow's failure semantics."""

from __future__ import annotations

import functools

from airflow.sdk.exceptions import AirflowFailException

from trainbench.config import ConfigError


def fail_without_retry(func):
    """Bad configuration or trigger input will not heal on retry: fail the task at once, with the message."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            raise AirflowFailException(str(exc)) from None

    return wrapper
