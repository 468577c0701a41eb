"""Blocking on keyed block keys: which record pairs are worth comparing.

Each record carries one keyed 64-bit block key per blocking rule (0: no key, e.g. a
missing field). Two records of different parties become a candidate pair when they agree
on the key of any rule. Keys are keyed hashes, so the linkage service learns only which
records share a block, never the value behind it.

Pairs are produced for one slice of the first party's records at a time, so memory is
bounded by the slice, never by the product of the two party sizes. On a cluster, pairs
are produced per partition of the block-key space instead (a hash join on block keys):
partition p of P holds every block (rule, key) whose mixed key is p modulo P, so a block
lies wholly in one partition and a worker needs only the records of its partitions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BlockIndex",
    "BlockPartitions",
    "block_limits",
    "candidate_pairs",
    "mix_keys",
    "SharedBlocks",
    "partition_blocks",
    "partition_of",
    "partition_pairs",
    "rule_spans",
    "shared_blocks",
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
        limits = block_limits(max_block_pairs, keys_b.shape[1])
        sorted_keys, order, oversized = [], [], []
        for rule in range(keys_b.shape[1]):
            column = keys_b[:, rule]
            present = np.flatnonzero(column)
            rule_order = present[np.argsort(column[present], kind="stable")]
            sorted_keys.append(column[rule_order])
            order.append(rule_order.astype(np.int64))
            common, pairs = _common_blocks(keys_a[:, rule], column)
            oversized.append(common[pairs > limits[rule]])
        return cls(tuple(sorted_keys), tuple(order), tuple(oversized), len(keys_b))


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


def partition_of(keys: np.ndarray, partitions: int) -> np.ndarray:
    """The partition of each block key: its bits mixed (:func:`mix_keys`), modulo ``partitions``.

    Keys are keyed hashes already; the mix keeps partitions even should a key's low bits
    ever be less random than its high ones.

    >>> partition_of(np.array([1, 2, 3], dtype=np.uint64), 4).tolist()
    [1, 2, 0]
    """
    return (mix_keys(np.asarray(keys, dtype=np.uint64)) % np.uint64(partitions)).astype(np.int64)


@dataclass(frozen=True)
class SharedBlocks:
    """The blocks two parties can form pairs in, and which records lie in them.

    Attributes:
        rows_a: per rule, party A's records whose key on that rule is usable: held by a
            record of party B too, in a block of at most the pair limit.
        rows_b: likewise for party B.
        oversized: per rule, the keys whose block exceeds the pair limit (skipped everywhere).
    """

    rows_a: tuple[np.ndarray, ...]
    rows_b: tuple[np.ndarray, ...]
    oversized: tuple[np.ndarray, ...]

    @property
    def routes(self) -> int:
        """How many (record, rule) routes there are: about the records all partitions hold together."""
        return sum(len(rows) for rows in self.rows_a + self.rows_b)


def shared_blocks(
    keys_a: np.ndarray,
    keys_b: np.ndarray,
    max_block_pairs: int | Sequence[int],
    banded: Sequence[bool] | None = None,
) -> SharedBlocks:
    """Find, per column, the records of each party whose key the other party shares in a usable block.

    A key no record of the other party holds (most keys of a selective rule) forms no
    pair, so its record need not be shipped anywhere for it.

    A band column (``banded``, a similarity rule's) routes a record only when it meets
    someone there with whom it shares no usable key of an earlier column: a record that
    matches well shares most of its bands with its match, and would otherwise travel to a
    partition per band for pairs its exact keys already make. Every pair is made in the
    partition of the first column it shares (:func:`partition_pairs`), and both its
    records are routed there.

    Args:
        keys_a: party A's keys, shape (records, columns).
        keys_b: party B's keys, shape (records, columns).
        max_block_pairs: as in :meth:`BlockIndex.build`.
        banded: per column, whether it is a band column (default: none is).

    >>> a = np.array([[5, 3], [6, 0], [8, 8]], dtype=np.uint64)
    >>> b = np.array([[5, 4], [6, 0], [6, 0], [9, 8]], dtype=np.uint64)
    >>> shared = shared_blocks(a, b, 1)  # block 6 has two pairs: oversized at a limit of 1
    >>> [r.tolist() for r in shared.rows_a], [r.tolist() for r in shared.rows_b], shared.routes
    ([[0], [2]], [[0], [3]], 4)
    >>> [o.tolist() for o in shared.oversized]
    [[6], []]
    >>> a[0, 1] = b[0, 1] = 7  # a band both first records hold; they meet in column 0 already
    >>> [r.tolist() for r in shared_blocks(a, b, 10).rows_a]
    [[0, 1], [0, 2]]
    >>> [r.tolist() for r in shared_blocks(a, b, 10, [False, True]).rows_a]
    [[0, 1], [2]]
    """
    columns = keys_a.shape[1]
    limits = block_limits(max_block_pairs, columns)
    bands = list(banded) if banded is not None else [False] * columns
    rows_a, rows_b, oversized = [], [], []
    for column in range(columns):
        common, pairs = _common_blocks(keys_a[:, column], keys_b[:, column])
        too_big = pairs > limits[column]
        oversized.append(common[too_big])
        usable = common[~too_big]
        rows_a.append(np.flatnonzero(np.isin(keys_a[:, column], usable)))
        rows_b.append(np.flatnonzero(np.isin(keys_b[:, column], usable)))
    for column in range(columns):
        if bands[column]:
            rows_a[column], rows_b[column] = _new_meetings(keys_a, keys_b, column, rows_a, rows_b, oversized)
    return SharedBlocks(tuple(rows_a), tuple(rows_b), tuple(oversized))


def _new_meetings(
    keys_a: np.ndarray,
    keys_b: np.ndarray,
    column: int,
    rows_a: Sequence[np.ndarray],
    rows_b: Sequence[np.ndarray],
    oversized: Sequence[np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Records of a column's usable blocks that meet someone there with no usable key of an earlier column shared."""
    local_a, local_b = keys_a[rows_a[column]], keys_b[rows_b[column]]
    index = BlockIndex.build(local_a[:, [column]], local_b[:, [column]], np.iinfo(np.int64).max)
    pair_a, pair_b = candidate_pairs(local_a[:, [column]], 0, index)
    # Column by column, only the pairs still new: most share an early exact key.
    for earlier in range(column):
        key = local_a[pair_a, earlier]
        shared = (key == local_b[pair_b, earlier]) & (key != 0)
        if len(oversized[earlier]):
            shared[shared] = ~np.isin(key[shared], oversized[earlier])
        pair_a, pair_b = pair_a[~shared], pair_b[~shared]
    return rows_a[column][np.unique(pair_a)], rows_b[column][np.unique(pair_b)]


@dataclass(frozen=True)
class BlockPartitions:
    """Which records of two parties each partition of their block-key space needs.

    Attributes:
        records_a: per partition, the ascending indices of party A's records it holds.
        records_b: likewise for party B.
        oversized: per rule, the keys whose block exceeds the pair limit (skipped everywhere).
    """

    records_a: tuple[np.ndarray, ...]
    records_b: tuple[np.ndarray, ...]
    oversized: tuple[np.ndarray, ...]


def partition_blocks(keys_a: np.ndarray, keys_b: np.ndarray, shared: SharedBlocks, partitions: int) -> BlockPartitions:
    """Route each record to the partitions of the usable blocks it lies in.

    A record goes to the partition of each of its usable keys (:func:`shared_blocks`):
    at most one partition per rule, so no partition ever needs all of a party.

    Args:
        keys_a: party A's keys, shape (records, rules).
        keys_b: party B's keys, shape (records, rules).
        shared: the two parties' usable blocks.
        partitions: how many partitions to cut the key space into.

    >>> a = np.array([[5, 0], [6, 9]], dtype=np.uint64)
    >>> b = np.array([[5, 9], [6, 1], [7, 9]], dtype=np.uint64)
    >>> cut = partition_blocks(a, b, shared_blocks(a, b, 100), 2)
    >>> [r.tolist() for r in cut.records_a], [r.tolist() for r in cut.records_b]
    ([[0, 1], [1]], [[0, 1], [0, 2]])
    """
    routes = []
    for keys, rows_per_rule in ((keys_a, shared.rows_a), (keys_b, shared.rows_b)):
        routes.append(
            [partition_of(keys[rows, rule], partitions) * len(keys) + rows for rule, rows in enumerate(rows_per_rule)]
        )
    return BlockPartitions(
        records_a=_by_partition(routes[0], len(keys_a), partitions),
        records_b=_by_partition(routes[1], len(keys_b), partitions),
        oversized=shared.oversized,
    )


def _by_partition(routes: list[np.ndarray], size: int, partitions: int) -> tuple[np.ndarray, ...]:
    """Split ``partition * size + record`` codes into each partition's sorted distinct records."""
    codes = sorted_unique(np.concatenate(routes)) if routes else np.zeros(0, dtype=np.int64)
    bounds = np.searchsorted(codes, np.arange(partitions + 1, dtype=np.int64) * max(size, 1))
    return tuple(codes[bounds[p] : bounds[p + 1]] - p * size for p in range(partitions))


def partition_pairs(
    keys_a: np.ndarray, keys_b: np.ndarray, partition: int, partitions: int, oversized: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """The candidate pairs that belong to one partition, among the records it holds.

    A pair sharing usable keys on several rules meets in several partitions; it belongs
    to the partition of the lowest-numbered rule it shares a usable key on, so that over
    all partitions every candidate of :func:`candidate_pairs` comes out exactly once.

    Args:
        keys_a: keys of party A's records in the partition, shape (records, rules).
        keys_b: keys of party B's records in the partition.
        partition: this partition's number.
        partitions: how many there are.
        oversized: per rule, the keys of oversized blocks (:class:`BlockPartitions`).

    Returns:
        Two int64 arrays of positions in ``keys_a`` and ``keys_b``, sorted by A then B.

    >>> a = np.array([[5, 0], [6, 9]], dtype=np.uint64)
    >>> b = np.array([[5, 9], [6, 1], [7, 9]], dtype=np.uint64)
    >>> none = (np.zeros(0, np.uint64),) * 2
    >>> partition_pairs(a, b, 0, 2, none), partition_pairs(a, b, 1, 2, none)
    ((array([0, 1]), array([0, 1])), (array([1, 1]), array([0, 2])))
    """
    local = []
    for keys in (keys_a, keys_b):
        masked = keys.copy()
        for rule in range(keys.shape[1]):
            column = masked[:, rule]
            column[(partition_of(column, partitions) != partition) | np.isin(column, oversized[rule])] = 0
        local.append(masked)
    # No limit here: oversized keys are masked already, and every other block is whole.
    index_a, index_b = candidate_pairs(local[0], 0, BlockIndex.build(local[0], local[1], np.iinfo(np.int64).max))
    keep = np.zeros(len(index_a), dtype=bool)
    # Rule by rule, only the pairs whose owner is still unknown: most are settled by an
    # early rule, and gathering every rule's keys for every pair took most of the time.
    pending = np.arange(len(index_a))
    for rule in range(keys_a.shape[1]):
        column = keys_a[index_a[pending], rule]
        shared = (column == keys_b[index_b[pending], rule]) & (column != 0)
        if len(oversized[rule]):
            shared[shared] = ~np.isin(column[shared], oversized[rule])
        keep[pending[shared]] = partition_of(column[shared], partitions) == partition
        pending = pending[~shared]
    return index_a[keep], index_b[keep]


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
