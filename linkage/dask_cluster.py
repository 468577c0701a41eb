"""Running pprl's tasks on a Dask distributed cluster (the optional ``dask`` extra).

What the engine and the encoder share: connecting to a scheduler with a clear error,
and :class:`Sealed`, a wrapper whose ``repr`` never shows what it holds. Dask writes a
failed task's description, arguments included, to the worker's log; CSV text, derived
keys and encodings travel to the workers sealed, so they can never end up there.
:class:`ScatteredTasks` runs tasks that each read an input of their own, scattered to
one worker, and survives losing that worker.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from linkage.errors import InputError, ServiceError

if TYPE_CHECKING:
    from distributed import Client, Future

__all__ = ["ScatteredTasks", "Sealed", "connect", "parallelism"]

T = TypeVar("T")
CONNECT_SECONDS = 30
# A task cancelled this many times (each time its input was lost with a worker) fails the job.
MAX_LOSSES = 3


class Sealed(Generic[T]):
    """A value that Dask may carry and pickle but never print.

    >>> Sealed(b"key material")
    <sealed>
    >>> Sealed(b"key material").value
    b'key material'
    """

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<sealed>"

    # A tuple: pickle skips __setstate__ for a false state, and the value may be one.
    def __getstate__(self) -> tuple[T]:
        return (self.value,)

    def __setstate__(self, state: tuple[T]) -> None:
        (self.value,) = state


@contextmanager
def connect(address: str) -> Iterator[Client]:
    """A client of the Dask scheduler at ``address``, closed (its data released) on exit.

    Raises:
        InputError: the ``dask`` extra is not installed.
        ServiceError: the scheduler cannot be reached within ``CONNECT_SECONDS``.
    """
    try:
        from distributed import Client  # an optional extra
    except ImportError as exc:
        raise InputError("--dask needs the dask extra: pip install 'pprl[dask]'") from exc
    try:
        client = Client(address, timeout=CONNECT_SECONDS)
    except (OSError, TimeoutError) as exc:
        raise ServiceError(
            f"cannot reach the Dask scheduler at {address} ({type(exc).__name__}); check the address "
            "(tcp://HOST:PORT or tls://HOST:PORT) and that the scheduler is running"
        ) from exc
    with client:
        yield client


def parallelism(client: Client) -> int:
    """How many tasks the cluster runs at once (its worker threads), at least 1."""
    threads: dict[str, int] = client.nthreads()
    return max(1, sum(threads.values()))


class ScatteredTasks:
    """Tasks with an input each, scattered (sealed) to one worker, not broadcast.

    Inputs are placed on the workers largest first, each on the worker with the fewest
    bytes per thread so far, so Dask runs each task where its input already is, and a
    worker holds only its own tasks' inputs. Scattered data cannot be recomputed: when a
    worker dies, Dask cancels the tasks whose input died with it; those inputs are cut
    again from the coordinator (``make_input``), scattered to a surviving worker and the
    tasks resubmitted, so a lost worker costs time, never a result.

    Args:
        client: a connected Dask client.
        make_input: the input of task ``number``, rebuilt on demand (it must be pure).
        sizes: each task's input size in bytes (or its share of the work), for placing them.
    """

    def __init__(self, client: Client, make_input: Callable[[int], Any], sizes: Sequence[int]) -> None:
        self._client = client
        self._make_input = make_input
        self._losses = [0] * len(sizes)
        threads = client.nthreads()
        load = [(0.0, address) for address in sorted(threads)]
        placement: dict[int, str] = {}
        for number in sorted(range(len(sizes)), key=lambda n: -sizes[n]):
            used, address = heapq.heappop(load)
            placement[number] = address
            heapq.heappush(load, (used + sizes[number] / max(threads[address], 1), address))
        self._inputs: list[Future[Any]] = [self._scatter(number, placement[number]) for number in range(len(sizes))]

    def _scatter(self, number: int, worker: str | None = None) -> Future[Any]:
        # Scattered one at a time, so the coordinator never holds more than one cut input.
        sealed = Sealed(self._make_input(number))
        future: Future[Any] = self._client.scatter(sealed, workers=[worker] if worker else None, hash=False)
        return future

    def run(
        self, work: Callable[..., Any], arguments: tuple[Any, ...], on_progress: Callable[[int, int], None] | None
    ) -> Iterator[tuple[int, Any]]:
        """Run ``work(sealed_input, *arguments)`` for every task; (task number, result) as they complete.

        Progress counts completed tasks; a task run again after a loss counts once.
        """
        from distributed import as_completed  # an optional extra, present with a client

        total = len(self._inputs)
        if on_progress:
            on_progress(0, total)
        for number, future in enumerate(self._inputs):
            if future.status != "finished":
                self._inputs[number] = self._scatter(number)
        pending = {self._submit(number, work, arguments): number for number in range(total)}
        queue = as_completed(list(pending))
        done = 0
        for future in queue:
            number = pending.pop(future)
            try:
                result = future.result()
            except CancelledError:
                # Its input died with a worker (a task is cancelled for nothing else while
                # this job runs): cut it again and run the task anew.
                self._losses[number] += 1
                if self._losses[number] > MAX_LOSSES:
                    raise
                self._client.cancel([self._inputs[number]])
                self._inputs[number] = self._scatter(number)
                retry = self._submit(number, work, arguments)
                pending[retry] = number
                queue.add(retry)
                continue
            del future
            done += 1
            if on_progress:
                on_progress(done, total)
            yield number, result

    def _submit(self, number: int, work: Callable[..., Any], arguments: tuple[Any, ...]) -> Future[Any]:
        return self._client.submit(work, self._inputs[number], *arguments, pure=False)

    def close(self) -> None:
        """Release every scattered input from the cluster."""
        self._client.cancel(self._inputs)
        self._inputs = []
