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
    """

    def __init__(self) -> None:
        self.coordinator = self.worker = self.total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                own = me.memory_info().rss
                children = [child.memory_info().rss for child in me.children(recursive=True)]
            except psutil.Error:
                time.sleep(0.2)
                continue
            self.coordinator = max(self.coordinator, own)
            self.worker = max(self.worker, *children, 0)
            self.total = max(self.total, own + sum(children))
            time.sleep(0.2)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
