"""The stable mapping: entities whose change, when one person's records go, is bounded.

With a model fitted on the records being linked, whether two records match depends on
everyone (m and u, priors, the ``auto`` threshold, which blocks are too large): one
person's records can move other people's entities anywhere. With a frozen model
(:mod:`linkage.matching.frozen`) a pair is accepted on its two records alone, and the
entities are built from the accepted pairs like this:

1. the clusters are the connected components of the accepted pairs;
2. a cluster with at most one record per party is one entity;
3. a cluster holding two records of one party (an *ambiguous* cluster) is solved by the
   greedy solver (:mod:`linkage.matching.solve`) on its own pairs.

The greedy solver never looks beyond a cluster either (it merges the groups of the two
records of an accepted pair, and both lie in the pair's cluster), so for two or three
parties this is exactly the greedy solver's result: the record-level results and the
statistics side can share one linkage. With four or more parties the greedy solver may
split an unambiguous cluster (its merge rule); the stable mapping keeps it whole.

Taking one person's records away removes their accepted pairs and nothing else, so only
the clusters that held their records change, each into the pieces left of it. Where
those clusters are unambiguous (at most P records, P parties), a cluster's rows change by
at most P (its one row out, at most P - 1 pieces in), and a person with one record per
party touches at most P clusters: at most P² rows of the statistics table change
(:func:`rows_bound`; the proof and its limits are in ``docs/privacy-unit.md``). An
ambiguous cluster can instead fall apart into as many entities as the removed records had
accepted links, which no fixed rule bounds; :class:`StableLinkage` counts them and bounds,
for the records at hand, the rows any one deletion can move.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from linkage.matching.solve import Entity, solve_entities
from linkage.protocol import person_rows

__all__ = ["StableLinkage", "rows_bound", "stable_entities"]

# Ambiguous clusters up to this size are checked subset by subset for the worst deletion;
# larger ones get the crude bound of twice their size.
_EXACT_CLUSTER = 12


def rows_bound(parties: int) -> int:
    """Rows of the statistics table one person can move when no cluster is ambiguous: P².

    The protocol's ``rows_per_person`` defaults to it (:func:`linkage.protocol.person_rows`).

    >>> rows_bound(3), rows_bound(2)
    (9, 4)
    """
    return person_rows(parties)


@dataclass(frozen=True)
class StableLinkage:
    """The stable mapping of one run, and how far its bound holds on these records.

    Attributes:
        entities: the entities: clusters of two or more records with at most one per
            party, and the greedy solver's entities within ambiguous clusters.
        ambiguous: the clusters holding two records of one party, as their records
            ``(party, record)``.
        worst_deletion: an upper bound, for these records, of the rows of the statistics
            table that taking away any one set of records with at most one per party (any
            one person) moves. At most :func:`rows_bound` when no cluster is ambiguous.
    """

    entities: list[Entity]
    ambiguous: list[tuple[tuple[int, int], ...]]
    worst_deletion: int

    @property
    def ambiguous_clusters(self) -> int:
        """How many clusters are ambiguous."""
        return len(self.ambiguous)

    @property
    def ambiguous_records(self) -> int:
        """How many records the ambiguous clusters hold."""
        return sum(len(cluster) for cluster in self.ambiguous)


def _components(first: np.ndarray, second: np.ndarray, count: int) -> np.ndarray:
    """The smallest node of each node's connected component (nodes ``0..count-1``).

    >>> _components(np.array([0, 3]), np.array([1, 4]), 5).tolist()
    [0, 0, 2, 3, 3]
    """
    labels = np.arange(count)
    while True:
        low = np.minimum(labels[first], labels[second])
        moved = labels.copy()
        np.minimum.at(moved, first, low)
        np.minimum.at(moved, second, low)
        moved = moved[moved]  # a label is a node: follow it to its own label
        if np.array_equal(moved, labels):
            return labels
        labels = moved


def stable_entities(
    party_a: np.ndarray,
    party_b: np.ndarray,
    record_a: np.ndarray,
    record_b: np.ndarray,
    strength: np.ndarray,
    sizes: Sequence[int],
    *,
    audit: bool = True,
) -> StableLinkage:
    """The stable mapping of the accepted pairs (see the module's description).

    Args:
        party_a: party index of each accepted pair's first record.
        party_b: party index of its second record.
        record_a: record index of the first record in its party.
        record_b: record index of the second record.
        strength: each pair's match weight (the greedy solver's order in ambiguous clusters).
        sizes: records per party.
        audit: bound the worst deletion of each ambiguous cluster subset by subset (without,
            ``worst_deletion`` counts such a cluster at twice its size).

    Returns:
        The entities (sorted by their first record) and what the bound can rest on.

    A path of three parties' records is one entity, though its ends were not accepted:

    >>> stable = stable_entities(np.array([0, 1]), np.array([1, 2]), np.array([0, 5]),
    ...                          np.array([5, 3]), np.array([9.0, 7.0]), [2, 6, 4])
    >>> stable.entities, stable.ambiguous
    ([Entity(records=((0, 0), (1, 5), (2, 3)))], [])

    Two records of party 0 in one cluster make it ambiguous; the greedy solver splits it:

    >>> stable = stable_entities(np.array([0, 0, 1]), np.array([1, 2, 2]), np.array([0, 1, 5]),
    ...                          np.array([5, 3, 3]), np.array([9.0, 8.0, 7.0]), [2, 6, 4])
    >>> stable.entities
    [Entity(records=((0, 0), (1, 5))), Entity(records=((0, 1), (2, 3)))]
    >>> stable.ambiguous
    [((0, 0), (0, 1), (1, 5), (2, 3))]
    """
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    first = offsets[np.asarray(party_a, dtype=np.int64)] + np.asarray(record_a, dtype=np.int64)
    second = offsets[np.asarray(party_b, dtype=np.int64)] + np.asarray(record_b, dtype=np.int64)
    nodes, inverse = np.unique(np.concatenate([first, second]), return_inverse=True)
    edges = inverse.reshape(2, -1)
    labels = _components(edges[0], edges[1], len(nodes))
    party = np.searchsorted(offsets, nodes, side="right") - 1
    order = np.lexsort((nodes, party, labels))
    # A cluster is ambiguous when two of its records, next to each other in this order, share a party.
    twice = (labels[order][1:] == labels[order][:-1]) & (party[order][1:] == party[order][:-1])
    ambiguous_label = np.zeros(len(nodes), dtype=bool)
    ambiguous_label[labels[order][1:][twice]] = True
    clusters = np.split(order, np.flatnonzero(np.diff(labels[order])) + 1) if len(order) else []
    ambiguous = [members for members in clusters if ambiguous_label[labels[members[0]]]]
    groups = [members.tolist() for members in clusters if not ambiguous_label[labels[members[0]]]]
    worst = [len(group) for group in groups]
    if ambiguous:
        # One cluster's pairs at a time, in the order of the whole run's (the solver's ties
        # are broken by the records, so a cluster alone is solved as within the whole).
        inside = np.zeros(len(nodes), dtype=bool)
        inside[np.concatenate(ambiguous)] = True
        chosen = np.flatnonzero(inside[edges[0]])
        links = _Links(party, edges[0][chosen], edges[1][chosen], np.asarray(strength, dtype=np.float64)[chosen])
        for members in ambiguous:
            cluster = members.tolist()
            groups += [sorted(group) for group in links.resolve(cluster) if len(group) > 1]
            worst.append(links.worst_deletion(cluster) if audit else 2 * len(cluster))

    def records(group: Iterable[int]) -> tuple[tuple[int, int], ...]:
        return tuple(sorted((int(party[i]), int(nodes[i] - offsets[party[i]])) for i in group))

    entities = sorted((Entity(records(group)) for group in groups), key=lambda entity: entity.records)
    # A person has at most one record per party, in at most that many clusters; a record in
    # no cluster moves one row.
    largest = sorted(worst, reverse=True)[: len(sizes)]
    largest += [1] * (len(sizes) - len(largest))
    return StableLinkage(
        entities=entities,
        ambiguous=sorted(records(members.tolist()) for members in ambiguous),
        worst_deletion=sum(largest),
    )


class _Links:
    """The accepted pairs of the ambiguous clusters, to resolve them and bound their deletions."""

    def __init__(self, party: np.ndarray, first: np.ndarray, second: np.ndarray, strength: np.ndarray) -> None:
        self.party = party
        self.neighbours: dict[int, set[int]] = {}
        self.strength: dict[tuple[int, int], float] = {}
        for a, b, weight in zip(first.tolist(), second.tolist(), strength.tolist(), strict=True):
            self.neighbours.setdefault(a, set()).add(b)
            self.neighbours.setdefault(b, set()).add(a)
            self.strength[(min(a, b), max(a, b))] = weight

    def pieces(self, nodes: Iterable[int]) -> list[set[int]]:
        """The connected pieces of a set of nodes, through the pairs among them."""
        left, pieces = set(nodes), []
        while left:
            piece = {left.pop()}
            frontier = list(piece)
            while frontier:
                for other in self.neighbours[frontier.pop()] & left:
                    left.discard(other)
                    piece.add(other)
                    frontier.append(other)
            pieces.append(piece)
        return pieces

    def resolve(self, nodes: Iterable[int]) -> list[frozenset[int]]:
        """The rows the stable mapping makes of these nodes: one per entity, one per record left alone."""
        rows: list[frozenset[int]] = []
        for piece in self.pieces(nodes):
            if len({int(self.party[i]) for i in piece}) == len(piece):
                rows.append(frozenset(piece))
                continue
            pairs = sorted((a, b) for a in piece for b in self.neighbours[a] & piece if a < b)
            solved = solve_entities(
                np.array([self.party[a] for a, _ in pairs]),
                np.array([self.party[b] for _, b in pairs]),
                np.array([a for a, _ in pairs]),
                np.array([b for _, b in pairs]),
                np.array([self.strength[pair] for pair in pairs]),
            )
            grouped = [frozenset(node for _, node in entity.records) for entity in solved]
            alone = piece - set().union(*grouped)
            rows += grouped + [frozenset({node}) for node in alone]
        return rows

    def worst_deletion(self, cluster: list[int]) -> int:
        """The most rows that deleting records of the cluster (at most one per party) moves.

        Checked for every such set of records up to a cluster of ``_EXACT_CLUSTER``;
        beyond, twice the cluster's size (every row out, as many in).
        """
        if len(cluster) > _EXACT_CLUSTER:
            return 2 * len(cluster)
        before = set(self.resolve(cluster))
        worst = 0
        for size in range(1, len(cluster) + 1):
            for removed in itertools.combinations(cluster, size):
                if len({int(self.party[i]) for i in removed}) < size:
                    continue
                after = set(self.resolve(set(cluster) - set(removed)))
                worst = max(worst, len(before ^ after))
        return worst
