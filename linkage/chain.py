"""Hash chains for append-only records (the audit log, a privacy ledger): tamper evidence at rest.

Each row stores the hash of the row before it and a hash of its own content together with
that previous hash; a separate head remembers the last row's key and hash and how many rows
there are. Editing a row breaks its hash; deleting, inserting or reordering a row breaks the
link of the row after it; deleting the last rows disagrees with the head.

This is evidence, not prevention: whoever can write the database can also recompute every
hash and the head. Record the head :func:`verify_chain` reports (``pprl audit --verify``
prints it) somewhere else to anchor the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["GENESIS", "ChainCheck", "ChainHead", "ChainRow", "chain_digest", "verify_chain"]

GENESIS = "0" * 64


def chain_digest(previous: str, values: Sequence[object]) -> str:
    """The hash of a row: SHA-256 of the previous row's hash and the row's values as JSON.

    >>> chain_digest(GENESIS, [1, "admin", None])[:16]
    '380007140367ef87'
    """
    canonical = json.dumps([previous, *values], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChainRow:
    """A stored row: its key (id or number), the stored previous hash, its stored hash, its values."""

    key: int
    previous: str | None
    digest: str | None
    values: Sequence[object]


@dataclass(frozen=True)
class ChainHead:
    """What the head remembers: the last row's key and hash, and the number of rows."""

    key: int
    digest: str
    rows: int


@dataclass(frozen=True)
class ChainCheck:
    """The outcome of checking one chain.

    Attributes:
        name: what was checked, e.g. ``the audit log``.
        rows: the rows found.
        head: the hash of the last row (record it elsewhere to anchor the chain).
        problem: what is wrong, empty when the chain holds.
        first_bad: the key of the first row found wrong, if any.
    """

    name: str
    rows: int
    head: str
    problem: str = ""
    first_bad: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the chain holds."""
        return not self.problem


def verify_chain(name: str, rows: Iterable[ChainRow], head: ChainHead | None) -> ChainCheck:
    """Check a chain's rows, in order, against each other and against its head.

    Args:
        name: what the chain is, for messages.
        rows: the rows in chain order.
        head: the stored head (``None``: no row was ever appended).

    >>> first = chain_digest(GENESIS, ["a"])
    >>> second = chain_digest(first, ["b"])
    >>> rows = [ChainRow(1, GENESIS, first, ["a"]), ChainRow(2, first, second, ["b"])]
    >>> verify_chain("log", rows, ChainHead(2, second, 2)).ok
    True
    >>> verify_chain("log", rows[:1], ChainHead(2, second, 2)).problem
    'log: the head says 2 rows ending with row 2, but 1 rows end with row 1: rows were deleted from the end'
    """
    expected = GENESIS
    count = 0
    last_key: int | None = None
    for row in rows:
        count += 1
        if row.previous != expected:
            return ChainCheck(
                name,
                count,
                expected,
                f"{name}: row {row.key} does not follow the row before it: a row was deleted, inserted or reordered",
                row.key,
            )
        if row.digest != chain_digest(expected, row.values):
            return ChainCheck(
                name, count, expected, f"{name}: row {row.key} does not match its hash: it was edited", row.key
            )
        expected = row.digest
        last_key = row.key
    if head is None:
        if count:
            return ChainCheck(name, count, expected, f"{name}: {count} rows but no head: the head was deleted")
        return ChainCheck(name, 0, expected)
    if head.rows != count or head.digest != expected or (count and head.key != last_key):
        return ChainCheck(
            name,
            count,
            expected,
            f"{name}: the head says {head.rows} rows ending with row {head.key}, but {count} rows end with row "
            f"{last_key}: rows were deleted from the end",
            last_key,
        )
    return ChainCheck(name, count, expected)
