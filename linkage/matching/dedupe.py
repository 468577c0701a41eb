"""Duplicates within a party: one person under two client ids of one agency (link-and-dedupe).

The solver allows one record per party per entity, so an agency that holds one person
twice makes two entities of them. With ``dedupe`` (``pprl link --dedupe``), a state also
compares each party's records with its own, under the same frozen model's m and u but
with a prior of its own per party (:func:`within_prior`: fitted on the party's own
candidate pairs when the model is, and frozen with it), and:

* the records of a party joined by accepted pairs are one *duplicate group*, which the
  entity solver treats as one record (its pair with another party's record is the
  strongest of its members' pairs), so a person's duplicates join the same entity;
* :func:`duplicate_groups` is the deduplication report: per party, the groups of tokens
  that are likely the same client, for the agency to check and merge in its own system.

Within a party, blocks are counted on its own records: a block with more than the
protocol's ``max_block_pairs`` pairs within the party is skipped (bands too), frozen when the party's
first records are linked (:func:`within_oversized`), as the model's cross-party blocks are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from linkage.matching.block import BlockIndex, candidate_pairs, sorted_unique, split_codes
from linkage.matching.compare import (
    Comparison,
    Feature,
    PartyFeatures,
    compare_and_measure,
    decode_patterns,
    encode_patterns,
    feature_levels,
)
from linkage.matching.frozen import FrozenModel
from linkage.matching.link_state import AcceptedPairs, LinkState
from linkage.matching.model import FellegiSunterModel, fit_prior
from linkage.matching.passes import count_patterns, weigh_pairs

__all__ = ["duplicate_groups", "merge_duplicates", "within_oversized", "within_pairs", "within_prior"]


def within_oversized(keys: np.ndarray, max_block_pairs: int) -> tuple[np.ndarray, ...]:
    """Per block key column, the keys whose block within one party has more than ``max_block_pairs`` pairs.

    One limit for every column, bands included: the skipped blocks are frozen in the state
    but a link from scratch counts them again, so a limit that the blocks of a growing list
    cross (a band's few dozen pairs) would make a batch and a link from scratch differ.

    >>> [k.tolist() for k in within_oversized(np.array([[5, 1], [5, 2], [5, 0]], np.uint64), 2)]
    [[5], []]
    """
    out = []
    for rule in range(keys.shape[1]):
        column = keys[:, rule]
        values, counts = np.unique(column[column != 0], return_counts=True)
        out.append(values[counts.astype(np.int64) * (counts - 1) // 2 > max_block_pairs])
    return tuple(out)


def within_pairs(
    party: int,
    keys: np.ndarray,
    index: BlockIndex,
    changed: np.ndarray,
    oversized: tuple[np.ndarray, ...],
    scoring: tuple[PartyFeatures, Sequence[Comparison], Sequence[Feature], FrozenModel, float | None],
) -> tuple[AcceptedPairs, int, float | None]:
    """The accepted pairs within one party that hold a changed record, how many were compared, and the prior.

    Args:
        party: the party's index.
        keys: its block keys, (records, rules).
        index: its block index (no block skipped; ``oversized`` is applied here).
        changed: the records to compare with every other record of the party.
        oversized: per rule, the keys skipped within the party.
        scoring: the party's features, the comparisons, the features, the frozen model,
            the prior of a pair within the party; ``None`` fits it on these candidates
            (:func:`within_prior`; pass every record as changed).

    Returns:
        The accepted pairs, the candidates compared, and the prior they were weighed
        with (``None`` when it was to be fitted but there was no candidate).
    """
    features, comparisons, feature_list, model, prior = scoring
    empty = AcceptedPairs.empty()
    if not len(changed):
        return empty, 0, prior
    local, other = candidate_pairs(keys[changed], 0, replace(index, oversized=oversized))
    first = changed[local]
    distinct = first != other
    low, high = np.minimum(first, other)[distinct], np.maximum(first, other)[distinct]
    width = max(len(keys), 1)
    record_a, record_b = split_codes(sorted_unique(low * width + high), width)
    if not len(record_a):
        return empty, 0, prior
    levels, similarity = compare_and_measure(features, features, record_a, record_b, comparisons)
    if prior is None:
        prior = within_prior(model.model, levels, feature_list, len(keys))
    keep, weights, _ = weigh_pairs(
        levels,
        comparisons,
        feature_list,
        (model.model, {(party, party): prior}, model.threshold),
        (party, party),
        ([], []),
        similarity,
    )
    count = int(keep.sum())
    pairs = AcceptedPairs(
        party_a=np.full(count, party, dtype=np.int8),
        party_b=np.full(count, party, dtype=np.int8),
        record_a=record_a[keep],
        record_b=record_b[keep],
        weight=weights[keep],
    )
    return pairs, len(record_a), prior


def within_prior(model: FellegiSunterModel, levels: np.ndarray, features: Sequence[Feature], records: int) -> float:
    """The chance that two records of one party are the same client, fitted on its candidate pairs.

    m and u stay the model's; only the prior is fitted (EM, as each pair of parties' prior
    is), over the ``records * (records - 1) / 2`` pairs within the party, of which the
    compared candidates (their ``levels``) are those that could be duplicates. How often an
    agency holds a client twice has nothing to do with how many clients two agencies
    share: under the overall prior (that of pairs across parties), the realistic synth's two
    large agencies, with 3% of their clients held twice, were weighed as if they held seven
    and four times as many duplicates, and household members passed as duplicates.

    The prior is at least one pair in all of the party's (``2 / (records * (records - 1))``)
    and at most one half, as every prior: a first quarter may hold no duplicate, and EM then
    drives the prior to nothing, which, frozen, would let no later duplicate through however
    alike.
    """
    total = max(records * (records - 1) // 2, 1)
    patterns = encode_patterns(feature_levels(levels, features), features)
    distinct, _, counts = count_patterns(patterns)
    # Never above fit_prior's own cap of one half (a party of two records has a single pair).
    return min(max(fit_prior(model, decode_patterns(distinct, features), counts, total), 1 / total), 0.5)


def merge_duplicates(
    pairs: AcceptedPairs, offsets: np.ndarray, labels_of: Callable[[np.ndarray, np.ndarray, int], np.ndarray]
) -> tuple[AcceptedPairs, np.ndarray]:
    """Cross-party pairs between duplicate groups, and each record's group (its smallest record, as a node).

    A group stands for its records: a pair of two groups is the strongest pair between
    their members. Nodes are records numbered over all parties (``offsets``).
    """
    total = int(offsets[-1])
    within = pairs.party_a == pairs.party_b
    first = offsets[pairs.party_a[within].astype(np.int64)] + pairs.record_a[within]
    second = offsets[pairs.party_b[within].astype(np.int64)] + pairs.record_b[within]
    group = labels_of(first, second, total)
    cross = pairs.take(~within)
    party_a, party_b = cross.party_a.astype(np.int64), cross.party_b.astype(np.int64)
    record_a = group[offsets[party_a] + cross.record_a] - offsets[party_a]
    record_b = group[offsets[party_b] + cross.record_b] - offsets[party_b]
    # The strongest pair of each pair of groups: sort by groups, then weight downwards, keep the first.
    order = np.lexsort((-cross.weight, record_b, record_a, party_b, party_a))
    keys = np.stack([party_a, party_b, record_a, record_b])[:, order]
    first_of = np.ones(len(order), dtype=bool)
    if len(order) > 1:
        first_of[1:] = np.any(keys[:, 1:] != keys[:, :-1], axis=0)
    chosen = order[first_of]
    merged = AcceptedPairs(
        party_a=cross.party_a[chosen],
        party_b=cross.party_b[chosen],
        record_a=record_a[chosen],
        record_b=record_b[chosen],
        weight=cross.weight[chosen],
    )
    return merged, group


def duplicate_groups(state: LinkState) -> list[tuple[str, list[bytes]]]:
    """The deduplication report: per party, each group of its tokens likely to be one client.

    Groups of two or more records joined by accepted pairs within the party, as
    ``(party, tokens)``, in party then token order. Empty unless the state dedupes.
    """
    pairs = state.pairs
    within = pairs.party_a == pairs.party_b
    out: list[tuple[str, list[bytes]]] = []
    for index, party in enumerate(state.parties):
        mine = within & (pairs.party_a == index)
        if not mine.any():
            continue
        neighbours: dict[int, set[int]] = {}
        for a, b in zip(pairs.record_a[mine].tolist(), pairs.record_b[mine].tolist(), strict=True):
            neighbours.setdefault(a, set()).add(b)
            neighbours.setdefault(b, set()).add(a)
        seen: set[int] = set()
        for start in sorted(neighbours):
            if start in seen:
                continue
            group, frontier = {start}, [start]
            while frontier:
                for other in neighbours[frontier.pop()] - group:
                    group.add(other)
                    frontier.append(other)
            seen |= group
            tokens = state.records[index]["token"]
            out.append((party, [tokens[record].tobytes() for record in sorted(group)]))
    return out
