"""Blocking on keyed block keys: which record pairs are worth comparing.

Each record carries one keyed 64-bit block key per blocking rule (0: no key, e.g. a
missing field). Two records of different parties become a candidate pair when they agree
on the key of any rule. Keys are keyed hashes, so the linkage service learns only which
records share a block, never the value behind it.

Pairs are produced for one slice of the first party's records at a time, so memory is
bounded by the slice, never by the product of the two party sizes, on the pool and on a
cluster alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BlockIndex",
    "block_limits",
    "candidate_pairs",
    "oversized_keys",
    "mix_keys",
    "rule_spans",
    "sorted_unique",
    "split_codes",
]


@dataclass(frozen=True)
class BlockIndex:
    """The second party's block keys, sorted once per rule for fast look-up.

    Attributes:
        sorted_keys: per rule, that party's non-zero keys in ascending order.
        order: per rule, the record index of each sorted key.
        oversized: per rule, keys whose block would exceed the pair limit (skipped).
        size: number of party B's records.
    """

    sorted_keys: tuple[np.ndarray, ...]
    order: tuple[np.ndarray, ...]
    oversized: tuple[np.ndarray, ...]
    size: int

    @classmethod
    def build(cls, keys_a: np.ndarray, keys_b: np.ndarray, max_block_pairs: int | Sequence[int]) -> BlockIndex:
        """Index party B's keys; find blocks bigger than ``max_block_pairs`` pairs.

        Args:
            keys_a: party A's keys, shape (records, columns).
            keys_b: party B's keys, shape (records, columns).
            max_block_pairs: a block with more pairs than this is skipped: it would cost
                more than it finds (e.g. a very common surname with no other key). One
                limit for every column, or one per column.
        """
        return cls.of_keys(keys_b, oversized_keys(keys_a, keys_b, max_block_pairs))

    @classmethod
    def of_keys(cls, keys_b: np.ndarray, oversized: Sequence[np.ndarray]) -> BlockIndex:
        """Index party B's keys (records, columns), skipping the given oversized keys per column.

        For when the oversized blocks were found elsewhere (:func:`oversized_keys`, on all
        of both parties' records) or frozen with a model.
        """
        sorted_keys, order = [], []
        for rule in range(keys_b.shape[1]):
            column = keys_b[:, rule]
            present = np.flatnonzero(column)
            rule_order = present[np.argsort(column[present], kind="stable")]
            sorted_keys.append(column[rule_order])
            order.append(rule_order.astype(np.int64))
        return cls(tuple(sorted_keys), tuple(order), tuple(oversized), len(keys_b))


def oversized_keys(
    keys_a: np.ndarray, keys_b: np.ndarray, max_block_pairs: int | Sequence[int]
) -> tuple[np.ndarray, ...]:
    """Per column, the keys whose block between the two parties has more pairs than the column's limit.

    >>> a = np.array([[5, 3], [6, 0], [6, 8]], dtype=np.uint64)
    >>> b = np.array([[5, 3], [6, 3], [6, 0]], dtype=np.uint64)
    >>> [keys.tolist() for keys in oversized_keys(a, b, [2, 1])]
    [[6], [3]]
    """
    limits = block_limits(max_block_pairs, keys_b.shape[1])
    oversized = []
    for rule in range(keys_b.shape[1]):
        common, pairs = _common_blocks(keys_a[:, rule], keys_b[:, rule])
        oversized.append(common[pairs > limits[rule]])
    return tuple(oversized)


def _common_blocks(column_a: np.ndarray, column_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-zero keys both parties hold on one rule, and how many pairs each one's block makes.

    >>> common, pairs = _common_blocks(np.array([5, 5, 0, 7], np.uint64), np.array([5, 6, 5, 0], np.uint64))
    >>> common.tolist(), pairs.tolist()
    ([5], [4])
    """
    values_a, counts_a = np.unique(column_a[column_a != 0], return_counts=True)
    values_b, counts_b = np.unique(column_b[column_b != 0], return_counts=True)
    common, index_a, index_b = np.intersect1d(values_a, values_b, assume_unique=True, return_indices=True)
    return common, counts_a[index_a].astype(np.int64) * counts_b[index_b]


def candidate_pairs(keys_a: np.ndarray, start: int, index: BlockIndex) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs for a slice of party A's records, deduplicated across rules.

    Args:
        keys_a: block keys of A's records in the slice, shape (slice records, rules).
        start: index of the slice's first record in party A.
        index: party B's block index.

    Returns:
        Two int64 arrays (A record, B record), sorted by A then B, each pair once.

    >>> a = np.array([[5, 0], [6, 9]], dtype=np.uint64)
    >>> b = np.array([[5, 9], [6, 1], [6, 9]], dtype=np.uint64)
    >>> candidate_pairs(a, 10, BlockIndex.build(a, b, 100))
    (array([10, 11, 11, 11]), array([0, 0, 1, 2]))
    """
    width = np.int64(max(index.size, 1))
    codes: list[np.ndarray] = []
    for rule, (sorted_keys, order, oversized) in enumerate(
        zip(index.sorted_keys, index.order, index.oversized, strict=True)
    ):
        column = keys_a[:, rule]
        usable = column != 0
        if len(oversized):
            usable &= ~np.isin(column, oversized)
        rows = np.flatnonzero(usable)
        left = np.searchsorted(sorted_keys, column[rows], side="left")
        right = np.searchsorted(sorted_keys, column[rows], side="right")
        counts = right - left
        if not counts.sum():
            continue
        a_index = np.repeat(rows, counts)
        # Position within each run of equal keys: 0..count-1, added to the run's start.
        run_starts = np.repeat(left - np.cumsum(counts) + counts, counts)
        b_index = order[np.arange(counts.sum()) + run_starts]
        codes.append((a_index + start) * width + b_index)
    if not codes:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    return split_codes(sorted_unique(np.concatenate(codes)), width)


def mix_keys(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: spreads every input bit over the output (vectorised).

    >>> mix_keys(np.array([1], dtype=np.uint64)).tolist()
    [6238072747940578789]
    """
    with np.errstate(over="ignore"):
        values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        mixed: np.ndarray = values ^ (values >> np.uint64(31))
        return mixed


def block_limits(max_block_pairs: int | Sequence[int], columns: int) -> list[int]:
    """The pair limit of each of ``columns`` block key columns, from one limit or one per column.

    >>> block_limits(5, 2), block_limits([5, 9], 2)
    ([5, 5], [5, 9])
    """
    if isinstance(max_block_pairs, int):
        return [max_block_pairs] * columns
    if len(max_block_pairs) != columns:
        raise ValueError(f"{len(max_block_pairs)} block pair limits for {columns} block key columns")
    return [int(limit) for limit in max_block_pairs]


def rule_spans(columns: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """Each rule's block key columns as ``(first, stop)``, from how many columns each takes.

    An exact rule takes one column, a similarity rule one per band.

    >>> rule_spans([1, 3, 1])
    ((0, 1), (1, 4), (4, 5))
    """
    spans = []
    first = 0
    for count in columns:
        spans.append((first, first + count))
        first += count
    return tuple(spans)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort and compare neighbours: faster than ``np.unique`` here)."""
    values = np.sort(values)
    if len(values) < 2:
        return values
    keep = np.empty(len(values), dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def split_codes(codes: np.ndarray, width: np.int64 | int) -> tuple[np.ndarray, np.ndarray]:
    """Undo ``a * width + b`` pair codes."""
    return codes // width, codes % width
