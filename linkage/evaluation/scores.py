"""Measure linkage quality against known truth (synthetic or clerically reviewed data).

Pairwise measures count record pairs of different parties: a true pair is two records of
the same person; a predicted pair is two records in the same entity. Cluster measures
compare whole entities. Blocking is analysed in :mod:`linkage.evaluation.blocking`.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linkage.encodings import Encodings
from linkage.errors import InputError
from linkage.matching.engine import LinkResult
from linkage.matching.solve import solve_entities
from linkage.token_files import read_keymap, read_rows

__all__ = [
    "ClusterScores",
    "PairwiseScores",
    "cluster_scores",
    "pairwise_scores",
    "read_truth",
    "threshold_curve",
    "true_pairs",
]

Record = tuple[str, str]  # (party, client id)


@dataclass(frozen=True)
class PairwiseScores:
    """Pairwise precision, recall and F1."""

    precision: float
    recall: float
    f1: float
    true_positives: int
    false_positives: int
    false_negatives: int


@dataclass(frozen=True)
class ClusterScores:
    """Entity-level measures.

    Attributes:
        true_entities: people with records in two or more of the evaluated parties.
        predicted_entities: entities of two or more records.
        exact: predicted entities that are exactly one true person's records.
        exact_share: ``exact`` over ``true_entities`` (share of people reproduced exactly).
    """

    true_entities: int
    predicted_entities: int
    exact: int
    exact_share: float


def read_truth(path: Path) -> dict[Record, str]:
    """``party,client_id,person_id`` rows as {(party, client id): person id}."""
    return {(party, client): person for party, client, person in read_rows(path, ("party", "client_id", "person_id"))}


def _pairs_of(group: Sequence[Record]) -> Iterable[tuple[Record, Record]]:
    for a, b in itertools.combinations(sorted(group), 2):
        if a[0] != b[0]:
            yield a, b


def true_pairs(
    truth: Mapping[Record, str], parties: Iterable[str]
) -> tuple[set[tuple[Record, Record]], list[list[Record]]]:
    """True cross-party pairs and true clusters (two or more records) among these parties."""
    wanted = set(parties)
    people: dict[str, list[Record]] = defaultdict(list)
    for record, person in truth.items():
        if record[0] in wanted:
            people[person].append(record)
    clusters = [sorted(group) for group in people.values() if len({p for p, _ in group}) > 1]
    pairs = {pair for group in clusters for pair in _pairs_of(group)}
    return pairs, clusters


def client_clusters(result: LinkResult, outs: Sequence[Path]) -> list[list[Record]]:
    """The linked entities as ``(party, client id)`` records, through the key map in each party's folder."""
    keymaps = [read_keymap(out / "keymap.csv") for out in outs]
    return [
        [(result.parties[p], keymaps[p][result.tokens[p][r].tobytes().hex()]) for p, r in entity.records]
        for entity in result.entities
    ]


def resolve_entities(
    entities: Mapping[str, Sequence[tuple[str, str]]], keymaps: Mapping[str, Mapping[str, str]]
) -> list[list[Record]]:
    """Entities of two or more records, with tokens mapped to client ids via the key maps."""
    out = []
    for entity_id, members in entities.items():
        records = []
        for party, token in members:
            if party not in keymaps:
                raise InputError(f"entity {entity_id} has a record of party {party!r}; pass --keymap {party}=FILE")
            if token not in keymaps[party]:
                raise InputError(
                    f"entity {entity_id}: token not in {party}'s key map; pass the key map written "
                    "with the encodings that were linked"
                )
            records.append((party, keymaps[party][token]))
        if len(records) > 1:
            out.append(sorted(records))
    return out


def _scores(predicted: set[tuple[Record, Record]], actual: set[tuple[Record, Record]]) -> PairwiseScores:
    true_positives = len(predicted & actual)
    false_positives = len(predicted) - true_positives
    false_negatives = len(actual) - true_positives
    precision = true_positives / len(predicted) if predicted else 1.0
    recall = true_positives / len(actual) if actual else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PairwiseScores(precision, recall, f1, true_positives, false_positives, false_negatives)


def pairwise_scores(
    predicted_clusters: Sequence[Sequence[Record]], actual: set[tuple[Record, Record]]
) -> PairwiseScores:
    """Pairwise precision, recall and F1 of predicted clusters against true pairs.

    >>> a, b, c = ("x", "1"), ("y", "1"), ("z", "1")
    >>> pairwise_scores([[a, b, c]], {(a, b)}).precision
    0.3333333333333333
    """
    predicted = {pair for group in predicted_clusters for pair in _pairs_of(group)}
    return _scores(predicted, actual)


def cluster_scores(predicted: Sequence[Sequence[Record]], actual: Sequence[Sequence[Record]]) -> ClusterScores:
    """How many true people were reproduced exactly as one entity."""
    actual_set = {tuple(sorted(group)) for group in actual}
    exact = sum(1 for group in predicted if tuple(sorted(group)) in actual_set)
    return ClusterScores(
        true_entities=len(actual_set),
        predicted_entities=len(predicted),
        exact=exact,
        exact_share=exact / len(actual_set) if actual_set else 1.0,
    )


def record_people(
    encodings: Sequence[Encodings], keymaps: Mapping[str, Mapping[str, str]], truth: Mapping[Record, str]
) -> list[np.ndarray]:
    """Per party, an integer person id per record (-1: not in the truth file)."""
    person_ids: dict[str, int] = {}
    out = []
    for item in encodings:
        party = item.header.party
        if party not in keymaps:
            raise InputError(f"no key map for party {party!r}; pass --keymap {party}=FILE")
        ids = np.full(item.header.record_count, -1, dtype=np.int64)
        for index, token in enumerate(np.ascontiguousarray(item.records["token"])):
            client = keymaps[party].get(token.tobytes().hex())
            person = truth.get((party, client)) if client is not None else None
            if person is not None:
                ids[index] = person_ids.setdefault(person, len(person_ids))
        out.append(ids)
    return out


def _person(people: Sequence[np.ndarray], party: np.ndarray, record: np.ndarray) -> np.ndarray:
    out = np.empty(len(record), dtype=np.int64)
    for index, ids in enumerate(people):
        mask = party == index
        out[mask] = ids[record[mask]]
    return out


def threshold_curve(
    party_a: np.ndarray,
    party_b: np.ndarray,
    record_a: np.ndarray,
    record_b: np.ndarray,
    weight: np.ndarray,
    probability: np.ndarray,
    people: Sequence[np.ndarray],
    thresholds: Sequence[float],
) -> list[tuple[float, PairwiseScores]]:
    """Pairwise scores after solving, at each probability threshold."""
    actual = {(a, b) for group in _people_groups(people) for a, b in itertools.combinations(group, 2)}
    out = []
    for threshold in thresholds:
        keep = probability >= threshold
        entities = solve_entities(party_a[keep], party_b[keep], record_a[keep], record_b[keep], weight[keep])
        predicted = {pair for entity in entities for pair in itertools.combinations(entity.records, 2)}
        out.append((threshold, _scores(predicted, actual)))  # type: ignore[arg-type]
    return out


def _people_groups(people: Sequence[np.ndarray]) -> list[list[tuple[int, int]]]:
    groups: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for party, ids in enumerate(people):
        for record in np.flatnonzero(ids >= 0):
            groups[int(ids[record])].append((party, int(record)))
    return [sorted(group) for group in groups.values() if len(group) > 1]
