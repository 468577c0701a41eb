"""Resident memory of a benchmark and its child processes, sampled in a background thread."""

from __future__ import annotations

import threading
import time

import psutil


class MemorySampler:
    """Samples, every 0.2 s, the resident memory of this process and of its descendants.

    Attributes:
        coordinator: the peak of this process alone.
        worker: the peak of the largest single descendant (a pool or Dask worker).
        total: the peak of this process and all its descendants together.
        cpu: CPU seconds (user and system) this process and its descendants spent while
            sampled, each from its first sample on: on a shared machine a truer measure of
            work than wall time (a descendant's last 0.2 s before it exits are missed).
    """

    def __init__(self) -> None:
        self.coordinator = self.worker = self.total = 0
        self.cpu = 0.0
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample_cpu(self, processes: list[psutil.Process]) -> None:
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            spent = times.user + times.system
            self._first.setdefault(process.pid, spent)
            self._last[process.pid] = spent
        self.cpu = sum(self._last[pid] - self._first[pid] for pid in self._last)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                own = me.memory_info().rss
                descendants = me.children(recursive=True)
                children = [child.memory_info().rss for child in descendants]
            except psutil.Error:
                time.sleep(0.2)
                continue
            self.coordinator = max(self.coordinator, own)
            self.worker = max(self.worker, *children, 0)
            self.total = max(self.total, own + sum(children))
            self._sample_cpu([me, *descendants])
            time.sleep(0.2)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        me = psutil.Process()
        self._sample_cpu([me, *me.children(recursive=True)])
