"""Group matched pairs into entities.

anonlink's probabilistic greedy solver walks the pairs from the strongest down and merges
two groups when enough of the pairs between them are accepted, never putting two records
of one party in the same entity. A person seen by three agencies becomes one entity.

A Fellegi-Sunter weight is a sum of per-level weights, so many pairs share one (every
pair agreeing exactly on every field, say), and the greedy order among them decides which
of a record's candidates it is linked to. Those ties are broken by the pairs' similarity
(:func:`with_tie_break`: the closer pair first), then by the records (the engine passes
each record's rank in content order, so the order of the input files changes nothing). Both
depend on the pair's two records alone, as the stable mapping needs
(``docs/privacy-unit.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from linkage.matching.anonlink_bridge import greedy_groups

__all__ = ["Entity", "MERGE_SHARE", "TIE_BREAK", "solve_entities", "with_tie_break"]

# Two groups merge when at least this share of the record pairs between them was accepted:
# with three parties, A-B and B-C accepted but A-C just below the threshold still make one
# entity, while one weak link between two large groups does not.
MERGE_SHARE = 0.5

# The weight a unit of similarity adds to a pair's solving strength. A similarity is a sum
# of at most a few dozen Dice coefficients, so it moves a weight by under 1e-7: it orders
# pairs of equal weight (which differ from one another by whole level weights, or by term
# frequencies) and no others, and it stays far above float64's resolution of a weight
# (1e-14), so Dice differences of 1/1000 still count.
TIE_BREAK = 2.0**-30


def with_tie_break(weights: np.ndarray, similarity: np.ndarray) -> np.ndarray:
    """The solver's strength of each pair: its match weight, ties ordered by its similarity.

    Args:
        weights: match weights (log2 Bayes factors); the match probability is computed
            from these, never from the result.
        similarity: each pair's similarity (:func:`linkage.matching.compare.compare_and_measure`).

    >>> strength = with_tie_break(np.array([5.0, 5.0, 4.0]), np.array([3.1, 3.4, 9.0]))
    >>> np.argsort(-strength).tolist()
    [1, 0, 2]
    """
    return weights + TIE_BREAK * similarity


@dataclass(frozen=True)
class Entity:
    """One person: their records as (party index, record index), sorted."""

    records: tuple[tuple[int, int], ...]


def solve_entities(
    party_a: np.ndarray,
    party_b: np.ndarray,
    record_a: np.ndarray,
    record_b: np.ndarray,
    strength: np.ndarray,
) -> list[Entity]:
    """Solve accepted pairs into entities with at most one record per party each.

    Args:
        party_a: party index of each pair's first record (lower than ``party_b``).
        party_b: party index of each pair's second record.
        record_a: record index of the first record in its party.
        record_b: record index of the second record.
        strength: how strongly each pair is believed to match (higher first; see
            :func:`with_tie_break`); ties go to the lower records.

    Returns:
        Entities of two or more records, in a deterministic order (by their first record).

    >>> solve_entities(np.array([0, 0, 1]), np.array([1, 2, 2]), np.array([0, 0, 5]),
    ...                np.array([5, 3, 3]), np.array([9.0, 8.0, 7.0]))
    [Entity(records=((0, 0), (1, 5), (2, 3)))]
    """
    if not len(strength):
        return []
    # Strongest first; ties broken by the records, so that the result is one (the engine
    # passes ranks in content order, so it does not depend on the input's order either).
    order = np.lexsort((record_b, record_a, party_b, party_a, -strength))
    groups = greedy_groups(
        strength[order], party_a[order], party_b[order], record_a[order], record_b[order], MERGE_SHARE
    )
    entities = [Entity(tuple(sorted((int(p), int(r)) for p, r in group))) for group in groups if len(group) > 1]
    entities.sort(key=lambda entity: entity.records)
    return entities
