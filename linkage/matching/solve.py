"""Group matched pairs into entities.

anonlink's probabilistic greedy solver walks the pairs from the strongest down and merges
two groups when enough of the pairs between them are accepted, never putting two records
of one party in the same entity. A person seen by three agencies becomes one entity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from linkage.matching.anonlink_bridge import greedy_groups

__all__ = ["Entity", "MERGE_SHARE", "solve_entities"]

# Two groups merge when at least this share of the record pairs between them was accepted:
# with three parties, A-B and B-C accepted but A-C just below the threshold still make one
# entity, while one weak link between two large groups does not.
MERGE_SHARE = 0.5


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
        strength: how strongly each pair is believed to match (higher first).

    Returns:
        Entities of two or more records, in a deterministic order (by their first record).

    >>> solve_entities(np.array([0, 0, 1]), np.array([1, 2, 2]), np.array([0, 0, 5]),
    ...                np.array([5, 3, 3]), np.array([9.0, 8.0, 7.0]))
    [Entity(records=((0, 0), (1, 5), (2, 3)))]
    """
    if not len(strength):
        return []
    # Strongest first; ties broken by the records, so the result never depends on input order.
    order = np.lexsort((record_b, record_a, party_b, party_a, -strength))
    groups = greedy_groups(
        strength[order], party_a[order], party_b[order], record_a[order], record_b[order], MERGE_SHARE
    )
    entities = [Entity(tuple(sorted((int(p), int(r)) for p, r in group))) for group in groups if len(group) > 1]
    entities.sort(key=lambda entity: entity.records)
    return entities
