"""Monitors that sample a running trainer: host RSS of its process tree, and GPU telemetry.

Each monitor is explicit about its units and method: memory in MiB, power in W, energy in
J, clocks in MHz.  The GPU monitor reads device-wide memory used (NVML v1 query for both
the idle baseline and the peaks, so the two are comparable) and reports the original
log's figure, peak minus idle, per device.
"""

from __future__ import annotations

import threading
import time

import psutil

MIB = 2 ** 20


class _Sampler:
    """A daemon thread calling `sample()` every `interval_s` until stopped."""

    interval_s = 0.05

    def start(self, pid: int) -> None:
        self.pid = pid
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=type(self).__name__, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self.samples += 1
            self._stop.wait(self.interval_s)

    def _join(self) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        raise NotImplementedError


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class HostRssMonitor(_Sampler):
    """Peak resident memory of the whole process tree (ru_maxrss only knows the largest child)."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.pids: set[int] = set()

    def sample(self) -> None:
        total = 0
        for p in process_tree(self.pid):
            try:
                total += p.memory_info().rss
                self.pids.add(p.pid)
            except psutil.NoSuchProcess:
                pass
        self.peak_bytes = max(self.peak_bytes, total)

    def stop(self) -> dict:
        self._join()
        return {"host_peak_rss_mib": self.peak_bytes / MIB, "host_rss_samples": self.samples,
                "tree_pids": sorted(self.pids)}
