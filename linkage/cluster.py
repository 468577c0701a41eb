"""Running pprl's tasks on a Dask distributed cluster (the optional ``dask`` extra).

What the engine and the encoder share: connecting to a scheduler with a clear error,
and :class:`Sealed`, a wrapper whose ``repr`` never shows what it holds. Dask writes a
failed task's description, arguments included, to the worker's log; CSV text, derived
keys and encodings travel to the workers sealed, so they can never end up there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Generic, TypeVar

from linkage.errors import InputError, ServiceError

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["Sealed", "connect", "parallelism"]

T = TypeVar("T")
CONNECT_SECONDS = 30


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
        from distributed import Client  # noqa: PLC0415 - an optional extra
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
    return max(1, sum(client.nthreads().values()))
