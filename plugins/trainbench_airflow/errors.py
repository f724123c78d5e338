"""Map the core's errors onto Airflow's failure semantics."""

from __future__ import annotations

import functools

from airflow.sdk.exceptions import AirflowFailException

from trainbench.errors import NoRetry


def fail_without_retry(func):
    """Bad input, invalid results or a regression will not heal on retry: fail the task at once, with the message."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except NoRetry as exc:
            raise AirflowFailException(str(exc)) from None

    return wrapper
