"""Candidate generation and scoring on Dask as a distributed hash join on block keys.

For each pair of parties the coordinator cuts the block-key space into partitions
(:func:`linkage.matching.block.partition_blocks`) and scatters each partition task's records to
one worker, never to all of them: a worker holds only the partitions it works on, and a
record travels once to each partition holding one of its usable blocks. Every candidate
pair comes out of exactly one partition, so the counts, scores and entities are those of
the pool's slice tasks.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from linkage.dask_cluster import ScatteredTasks, Sealed
from linkage.encodings import Encodings
from linkage.matching.block import SharedBlocks, partition_blocks, partition_pairs, shared_blocks
from linkage.matching.compare import Comparison, Feature, PartyFeatures, compare_pairs, encode_patterns, feature_levels
from linkage.matching.model import FellegiSunterModel
from linkage.matching.passes import key_columns, pattern_counts, weigh_pairs

__all__ = ["PARTITION_RECORDS", "PartitionInputs", "PartitionTasks", "partition_count", "partition_tasks"]

ProgressCallback = Callable[[int, int], None]


# On Dask, a partition task holds about this many records of both parties on average.
PARTITION_RECORDS = 40_000


@dataclass(frozen=True)
class PartitionInputs:
    """What one partition task reads, cut by the coordinator and scattered to one worker.

    Attributes:
        parties: the pair of parties.
        partition: this partition's number, of ``partitions``.
        partitions: how many partitions the pair's block-key space is cut into.
        records: both parties' records in the partition, only the fields compared and the keys.
        indices: those records' indices in their parties (ascending).
        frequencies: those records' term frequencies per name field, over all records of
            all parties (a partition alone would give other frequencies).
        oversized: per rule, the keys of oversized blocks.
    """

    parties: tuple[int, int]
    partition: int
    partitions: int
    records: tuple[np.ndarray, np.ndarray]
    indices: tuple[np.ndarray, np.ndarray]
    frequencies: tuple[list[np.ndarray], list[np.ndarray]]
    oversized: tuple[np.ndarray, ...]


def _partition_levels(
    inputs: PartitionInputs, comparisons: Sequence[Comparison]
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """The partition's keys, its candidate pairs (positions in its records) and their field levels."""
    keys = [np.asarray(records["block"]).reshape(len(records), -1) for records in inputs.records]
    local_a, local_b = partition_pairs(keys[0], keys[1], inputs.partition, inputs.partitions, inputs.oversized)
    features_a, features_b = (PartyFeatures.from_records(records, comparisons) for records in inputs.records)
    return keys, local_a, local_b, compare_pairs(features_a, features_b, local_a, local_b, comparisons)


def count_partition(
    sealed: Sealed[PartitionInputs],
    comparisons: Sequence[Comparison],
    features: Sequence[Feature],
    spans: Sequence[tuple[int, int]],
) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Pass 1 on Dask: what :func:`linkage.matching.tasks.count_slice` counts, for one block partition."""
    keys, local_a, local_b, levels = _partition_levels(sealed.value, comparisons)
    patterns = encode_patterns(feature_levels(levels, features), features)
    return pattern_counts(patterns, key_columns(keys[0]), key_columns(keys[1]), (local_a, local_b), spans)


def score_partition(
    sealed: Sealed[PartitionInputs],
    comparisons: Sequence[Comparison],
    features: Sequence[Feature],
    scoring: tuple[FellegiSunterModel, dict[tuple[int, int], float], float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pass 2 on Dask: :func:`linkage.matching.tasks.score_slice` for one block partition (indices in the parties)."""
    inputs = sealed.value
    _, local_a, local_b, levels = _partition_levels(inputs, comparisons)
    frequencies = ([f[local_a] for f in inputs.frequencies[0]], [f[local_b] for f in inputs.frequencies[1]])
    keep, weights, probability = weigh_pairs(levels, comparisons, features, scoring, inputs.parties, frequencies)
    return inputs.indices[0][local_a[keep]], inputs.indices[1][local_b[keep]], weights[keep], probability[keep]


def partition_count(routes: int, slots: int) -> int:
    """How many partitions to cut a pair of parties' block-key space into.

    ``routes`` counts (record, rule) pairs that route a record to a partition, about
    how many records the partitions hold together. Enough partitions that one holds about
    ``PARTITION_RECORDS`` records on average (a task's memory is bounded by its records
    and its candidates; a block's are bounded by ``max_block_pairs``), and at least four
    per worker thread, so that every worker has several tasks and a slow one does not
    hold up the end.

    >>> partition_count(1_000_000, 2), partition_count(10_000, 4)
    (25, 16)
    """
    return max(4 * slots, -(-routes // PARTITION_RECORDS))


@dataclass(frozen=True)
class PartitionTasks:
    """The partition tasks of a run on Dask: (party a, party b, partition, partitions) each, and their inputs."""

    tasks: list[tuple[int, int, int, int]]
    scattered: ScatteredTasks

    def run(
        self, stage: str, arguments: tuple[Any, ...], on_progress: ProgressCallback | None
    ) -> Iterator[tuple[tuple[int, int], Any]]:
        """One pass over every partition (a :data:`linkage.matching.engine.PassRunner`), results as tasks complete."""
        work = count_partition if stage == "count" else score_partition
        for number, result in self.scattered.run(work, arguments, on_progress):
            yield self.tasks[number][:2], result


def partition_tasks(
    client: Any,
    encodings: Sequence[Encodings],
    comparisons: Sequence[Comparison],
    frequencies: Sequence[Sequence[np.ndarray]],
    max_block_pairs: Sequence[int] | Mapping[tuple[int, int], tuple[np.ndarray, ...]],
    band_columns: Sequence[bool],
    slots: int,
) -> PartitionTasks:
    """Cut every pair of parties into block partitions and scatter each task's records to one worker.

    A record is shipped once to each partition holding one of its usable blocks, with
    its term frequencies (``frequencies``: per party, per name field, over all records of
    all parties; a partition alone would give others). Partitions with no record of one
    party make no pairs and no task. The coordinator keeps only each task's record
    indices, to cut its input again should a worker die with it. ``max_block_pairs`` may
    instead be a frozen model's oversized blocks per pair of parties
    (:data:`linkage.matching.tasks.FrozenBlocks`), which are then the blocks skipped.
    """
    records = [np.asarray(item.records) for item in encodings]
    fields = [
        (name, records[0].dtype[name])
        for name in dict.fromkeys(["block", *(n for c in comparisons for n in c.columns)])
    ]
    tasks: list[tuple[int, int, int, int]] = []
    cuts: list[tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]] = []
    for a, b in itertools.combinations(range(len(records)), 2):
        keys_a = np.asarray(records[a]["block"]).reshape(len(records[a]), -1)
        keys_b = np.asarray(records[b]["block"]).reshape(len(records[b]), -1)
        shared = (
            _frozen_shared(keys_a, keys_b, max_block_pairs[(a, b)])
            if isinstance(max_block_pairs, Mapping)
            else shared_blocks(keys_a, keys_b, max_block_pairs, band_columns)
        )
        partitions = partition_count(shared.routes, slots)
        cut = partition_blocks(keys_a, keys_b, shared, partitions)
        for partition, (rows_a, rows_b) in enumerate(zip(cut.records_a, cut.records_b, strict=True)):
            if len(rows_a) and len(rows_b):
                tasks.append((a, b, partition, partitions))
                cuts.append((rows_a.astype(np.int32), rows_b.astype(np.int32), cut.oversized))
    record_bytes = sum(dtype.itemsize for _, dtype in fields) + 4 + 8 * len(frequencies[0])

    def make_input(number: int) -> PartitionInputs:
        a, b, partition, partitions = tasks[number]
        rows_a, rows_b, oversized = cuts[number]
        return PartitionInputs(
            parties=(a, b),
            partition=partition,
            partitions=partitions,
            records=(_cut_fields(records[a], rows_a, fields), _cut_fields(records[b], rows_b, fields)),
            indices=(rows_a, rows_b),
            frequencies=([f[rows_a] for f in frequencies[a]], [f[rows_b] for f in frequencies[b]]),
            oversized=oversized,
        )

    sizes = [(len(rows_a) + len(rows_b)) * record_bytes for rows_a, rows_b, _ in cuts]
    return PartitionTasks(tasks, ScatteredTasks(client, make_input, sizes))


def _frozen_shared(keys_a: np.ndarray, keys_b: np.ndarray, oversized: tuple[np.ndarray, ...]) -> SharedBlocks:
    """:func:`shared_blocks` with the given blocks skipped, whatever the size of the others."""
    every = shared_blocks(keys_a, keys_b, np.iinfo(np.int64).max)
    rows_a = tuple(rows[~np.isin(keys_a[rows, rule], oversized[rule])] for rule, rows in enumerate(every.rows_a))
    rows_b = tuple(rows[~np.isin(keys_b[rows, rule], oversized[rule])] for rule, rows in enumerate(every.rows_b))
    return SharedBlocks(rows_a, rows_b, oversized)


def _cut_fields(records: np.ndarray, rows: np.ndarray, fields: list[tuple[str, np.dtype[Any]]]) -> np.ndarray:
    """The given records with only the given fields (no token or CLK: a task never reads them)."""
    out = np.empty(len(rows), dtype=fields)
    for name, _ in fields:
        out[name] = records[name][rows]
    return out
