"""What the Benchmarks pages keep between views: values computed from one run's rows, each kept with the run's
token (what changes whenever the run's rows do), so a view recomputes only the runs stored or re-measured since.

A weekly run's rows never change once published, and a year of them is what a view of history reads: kept, a view
costs what the new week costs. The token is read from the database on every view, so a new run, a re-measured case
or a run another process replaced is shown at once; a process's memory holds at most `capacity` entries (the least
recently read are dropped).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from typing import Any, TypeVar

K = TypeVar("K", bound=Hashable)
CAPACITY = 4096  # runs x filter combinations: a few years of weekly runs under a dozen filters


class PerRun:
    """Values by key (a run under some filters), each valid while its token is unchanged; safe across the server's
    threads."""

    def __init__(self, capacity: int = CAPACITY):
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, tuple[Hashable, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def kept(self, tokens: Mapping[K, Hashable]) -> tuple[dict[K, Any], list[K]]:
        """The values kept for `tokens`' keys under those tokens, and the keys whose value must be computed."""
        found: dict[K, Any] = {}
        missing: list[K] = []
        with self._lock:
            for key, token in tokens.items():
                entry = self._entries.get(key)
                if entry is not None and entry[0] == token:
                    self._entries.move_to_end(key)
                    found[key] = entry[1]
                else:
                    missing.append(key)
        return found, missing

    def keep(self, key: Hashable, token: Hashable, value: Any) -> None:
        with self._lock:
            self._entries[key] = (token, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
