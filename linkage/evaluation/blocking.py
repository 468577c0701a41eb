"""Blocking analysis: what each rule proposes, what it adds, where the blocks are big.

What a data team needs to choose blocking rules, with or without known truth: per rule
(in protocol order) the candidate pairs it proposes alone, those no earlier rule proposed
(the cumulative count is Splink's "cumulative comparisons to be scored from blocking
rules"), the blocks skipped as oversized and the pairs they would have made; the largest
blocks of any rule; and, given each record's true person, pair completeness rule by rule.
Only block keys and their counts are read: nothing here needs the secret, so the linkage
service could run it too.

Candidates are streamed over slices of records, as the engine makes them, so memory is
bounded by a slice; only counts are kept.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from linkage.encodings import Encodings
from linkage.matching.anonlink_bridge import clk_dataset, clk_dice_pairs
from linkage.matching.block import BlockIndex, candidate_pairs, rule_spans, sorted_unique, split_codes
from linkage.protocol import Protocol

__all__ = ["BlockingAnalysis", "LargeBlock", "RuleCoverage", "analyse_blocking", "true_pair_indices"]

SLICE_RECORDS = 20_000
LARGEST_BLOCKS = 10

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class RuleCoverage:
    """What one blocking rule contributes, in protocol order.

    Attributes:
        rule: the rule as the protocol names it (``clk_prefilter >= 0.6`` for the CLK scan).
        candidates: the pairs the rule proposes on its own.
        added: those no earlier rule proposed.
        cumulative: candidates of this rule and every earlier one.
        cumulative_share: ``cumulative`` over every candidate.
        oversized_blocks: blocks skipped because they would make more than the rule's limit.
        oversized_pairs: the pairs those blocks would have made.
        true_pairs: true pairs the rule proposes on its own (``None`` without truth).
        true_added: true pairs no earlier rule proposed.
        pair_completeness: true pairs this rule and every earlier one propose, over all
            true pairs.
    """

    rule: str
    candidates: int
    added: int
    cumulative: int
    cumulative_share: float
    oversized_blocks: int
    oversized_pairs: int
    true_pairs: int | None = None
    true_added: int | None = None
    pair_completeness: float | None = None


@dataclass(frozen=True)
class LargeBlock:
    """One of the largest blocks: its rule (a similarity rule's band) and sizes, never its key.

    Attributes:
        parties: the two parties.
        rule: the rule, with ``band N`` for a similarity rule.
        records: how many records of each party hold the key.
        pairs: the pairs the block makes.
        skipped: whether it is over the rule's limit, so skipped.
    """

    parties: tuple[str, str]
    rule: str
    records: tuple[int, int]
    pairs: int
    skipped: bool


@dataclass(frozen=True)
class BlockingAnalysis:
    """Blocking of every pair of parties, rule by rule.

    Attributes:
        rules: per rule, in protocol order (the CLK prefilter, if any, last).
        largest_blocks: the largest blocks of any rule, largest first.
        candidate_pairs: pairs compared.
        total_pairs: every pair of records of different parties.
        reduction_ratio: the share of ``total_pairs`` not compared.
        candidates_per_record: candidates per record of the largest party.
        true_pairs: pairs of records of the same person (``None`` without truth).
        true_pairs_kept: those among the candidates.
        pair_completeness: ``true_pairs_kept`` over ``true_pairs``.
        true_pairs_skipped: true pairs that share a block key only in blocks skipped as
            oversized: what the pair limits cost.
    """

    rules: tuple[RuleCoverage, ...]
    largest_blocks: tuple[LargeBlock, ...]
    candidate_pairs: int
    total_pairs: int
    reduction_ratio: float
    candidates_per_record: float
    true_pairs: int | None = None
    true_pairs_kept: int | None = None
    pair_completeness: float | None = None
    true_pairs_skipped: int | None = None


def true_pair_indices(people_a: np.ndarray, people_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of records of two parties that belong to the same known person.

    >>> [x.tolist() for x in true_pair_indices(np.array([3, -1, 5, 3]), np.array([5, 3, 9]))]
    [[0, 2, 3], [1, 0, 1]]
    """
    order_b = np.argsort(people_b, kind="stable")
    sorted_b = people_b[order_b]
    known = np.flatnonzero(people_a >= 0)
    low = np.searchsorted(sorted_b, people_a[known], "left")
    counts = np.searchsorted(sorted_b, people_a[known], "right") - low
    index_a = np.repeat(known, counts)
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return index_a, order_b[np.repeat(low, counts) + offsets]


def _skipped_only(keys_a: np.ndarray, keys_b: np.ndarray, index: BlockIndex, people: Sequence[np.ndarray]) -> int:
    """True pairs that share some key, but every key they share is in a block skipped as oversized."""
    index_a, index_b = true_pair_indices(people[0], people[1])
    a, b = keys_a[index_a], keys_b[index_b]
    shares = ((a == b) & (a != 0)).any(axis=1)
    usable = np.zeros(len(a), dtype=bool)
    for column in range(a.shape[1]):
        equal = (a[:, column] == b[:, column]) & (a[:, column] != 0)
        usable |= equal & ~np.isin(a[:, column], index.oversized[column])
    return int((shares & ~usable).sum())


def _rule_names(protocol: Protocol) -> list[str]:
    names = [rule.name for rule in protocol.blocking]
    if protocol.clk_prefilter is not None:
        names.append(f"clk_prefilter >= {protocol.clk_prefilter}")
    return names


def _column_names(protocol: Protocol) -> list[str]:
    return [
        rule.name if rule.columns == 1 else f"{rule.name} band {band + 1}"
        for rule in protocol.blocking
        for band in range(rule.columns)
    ]


def _largest_blocks(
    keys_a: np.ndarray, keys_b: np.ndarray, index: BlockIndex, names: Sequence[str], parties: tuple[str, str]
) -> list[LargeBlock]:
    """The largest blocks of each column shared by both parties (a few per column)."""
    out = []
    for column, name in enumerate(names):
        values_a, counts_a = np.unique(keys_a[:, column][keys_a[:, column] != 0], return_counts=True)
        values_b, counts_b = np.unique(keys_b[:, column][keys_b[:, column] != 0], return_counts=True)
        common, at_a, at_b = np.intersect1d(values_a, values_b, assume_unique=True, return_indices=True)
        pairs = counts_a[at_a].astype(np.int64) * counts_b[at_b]
        for position in np.argsort(-pairs, kind="stable")[:LARGEST_BLOCKS]:
            out.append(
                LargeBlock(
                    parties=parties,
                    rule=name,
                    records=(int(counts_a[at_a][position]), int(counts_b[at_b][position])),
                    pairs=int(pairs[position]),
                    skipped=bool(np.isin(common[position], index.oversized[column])),
                )
            )
    return out


def _oversized(keys_a: np.ndarray, keys_b: np.ndarray, index: BlockIndex, column: int) -> tuple[int, int]:
    """How many blocks of a column are skipped, and the pairs they would make."""
    skipped = index.oversized[column]
    if not len(skipped):
        return 0, 0
    values_a, counts_a = np.unique(keys_a[:, column][np.isin(keys_a[:, column], skipped)], return_counts=True)
    values_b, counts_b = np.unique(keys_b[:, column][np.isin(keys_b[:, column], skipped)], return_counts=True)
    return len(skipped), int((counts_a.astype(np.int64) * counts_b).sum())


def _agreement(
    keys_a: np.ndarray, keys_b: np.ndarray, index: BlockIndex, spans: Sequence[tuple[int, int]]
) -> np.ndarray:
    """Per pair (rows of ``keys_a`` and ``keys_b``) and rule: whether the pair shares a usable key of the rule."""
    agree = np.zeros((len(keys_a), len(spans)), dtype=bool)
    for rule, (first, stop) in enumerate(spans):
        for column in range(first, stop):
            shared = (keys_a[:, column] == keys_b[:, column]) & (keys_a[:, column] != 0)
            if len(index.oversized[column]):
                shared[shared] = ~np.isin(keys_a[shared, column], index.oversized[column])
            agree[:, rule] |= shared
    return agree


def analyse_blocking(
    protocol: Protocol,
    encodings: Sequence[Encodings],
    people: Sequence[np.ndarray] | None = None,
    *,
    on_progress: ProgressCallback | None = None,
) -> BlockingAnalysis:
    """Analyse the protocol's blocking of these encodings, rule by rule, with or without truth.

    Args:
        protocol: the protocol the encodings were made under.
        encodings: one loaded encodings file per party.
        people: per party, each record's true person (an integer; -1 unknown), from
            :func:`linkage.evaluation.scores.record_people`; ``None`` without truth.
        on_progress: called with (slices done, slices).

    Returns:
        The analysis; its truth fields are ``None`` without ``people``.
    """
    spans = rule_spans(rule.columns for rule in protocol.blocking)
    names = _rule_names(protocol)
    columns = _column_names(protocol)
    prefilter = protocol.clk_prefilter
    rules = len(names)
    proposed = np.zeros(rules, dtype=np.int64)
    added = np.zeros(rules, dtype=np.int64)
    true_proposed = np.zeros(rules, dtype=np.int64)
    true_added = np.zeros(rules, dtype=np.int64)
    oversized = np.zeros((rules, 2), dtype=np.int64)
    largest: list[LargeBlock] = []
    candidates = kept = actual = total = skipped_only = 0
    sizes = [item.header.record_count for item in encodings]
    slices = sum(-(-sizes[a] // SLICE_RECORDS) for a, _ in itertools.combinations(range(len(sizes)), 2))
    done = 0
    for a, b in itertools.combinations(range(len(encodings)), 2):
        keys_a = np.asarray(encodings[a].records["block"]).reshape(sizes[a], -1)
        keys_b = np.asarray(encodings[b].records["block"]).reshape(sizes[b], -1)
        index = BlockIndex.build(keys_a, keys_b, protocol.block_limits)
        parties = (encodings[a].header.party, encodings[b].header.party)
        largest += _largest_blocks(keys_a, keys_b, index, columns, parties)
        for rule, (first, stop) in enumerate(spans):
            for column in range(first, stop):
                oversized[rule] += _oversized(keys_a, keys_b, index, column)
        if people is not None:
            skipped_only += _skipped_only(keys_a, keys_b, index, (people[a], people[b]))
        clks_b = clk_dataset(np.ascontiguousarray(encodings[b].records["clk"])) if prefilter is not None else None
        for start in range(0, sizes[a], SLICE_RECORDS):
            stop_at = min(start + SLICE_RECORDS, sizes[a])
            index_a, index_b = candidate_pairs(keys_a[start:stop_at], start, index)
            agree = _agreement(keys_a[index_a], keys_b[index_b], index, spans)
            if clks_b is not None and prefilter is not None:
                clks_a = clk_dataset(np.ascontiguousarray(encodings[a].records["clk"][start:stop_at]))
                dice_a, dice_b = clk_dice_pairs(clks_a, clks_b, prefilter)
                width = sizes[b]
                blocked = index_a * width + index_b
                scanned = (dice_a + start) * width + dice_b
                codes = sorted_unique(np.concatenate([blocked, scanned]))
                index_a, index_b = split_codes(codes, width)
                both = np.zeros((len(codes), rules), dtype=bool)
                both[np.searchsorted(codes, blocked), :-1] = agree
                both[:, -1] = np.isin(codes, scanned)
                agree = both
            first_rule = np.argmax(agree, axis=1)
            proposed += agree.sum(axis=0)
            added += np.bincount(first_rule, minlength=rules)
            candidates += len(index_a)
            if people is not None:
                person = people[a][index_a]
                true = (person == people[b][index_b]) & (person >= 0)
                kept += int(true.sum())
                true_proposed += agree[true].sum(axis=0)
                true_added += np.bincount(first_rule[true], minlength=rules)
            done += 1
            if on_progress:
                on_progress(done, slices)
        if people is not None:
            actual += len(true_pair_indices(people[a], people[b])[0])
        total += sizes[a] * sizes[b]
    cumulative = np.cumsum(added)
    truth = people is not None
    completeness = np.cumsum(true_added) / actual if actual else np.ones(rules)
    coverage = tuple(
        RuleCoverage(
            rule=names[rule],
            candidates=int(proposed[rule]),
            added=int(added[rule]),
            cumulative=int(cumulative[rule]),
            cumulative_share=float(cumulative[rule] / candidates) if candidates else 0.0,
            oversized_blocks=int(oversized[rule, 0]),
            oversized_pairs=int(oversized[rule, 1]),
            true_pairs=int(true_proposed[rule]) if truth else None,
            true_added=int(true_added[rule]) if truth else None,
            pair_completeness=float(completeness[rule]) if truth else None,
        )
        for rule in range(rules)
    )
    return BlockingAnalysis(
        rules=coverage,
        largest_blocks=tuple(heapq.nlargest(LARGEST_BLOCKS, largest, key=lambda block: block.pairs)),
        candidate_pairs=candidates,
        total_pairs=total,
        reduction_ratio=1.0 - candidates / total if total else 0.0,
        candidates_per_record=candidates / max(max(sizes, default=0), 1),
        true_pairs=actual if truth else None,
        true_pairs_kept=kept if truth else None,
        pair_completeness=(kept / actual if actual else 1.0) if truth else None,
        true_pairs_skipped=skipped_only if truth else None,
    )
