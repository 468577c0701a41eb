"""Entity ids that last: carried over from one linkage of a project to the next.

An entity keeps its id while it keeps its records; when entities merge, the merged entity
keeps the oldest (smallest) id among them; when one splits, the part holding most of its
records keeps the id (ties: the part with the first record), the other parts get new ids.
Every id that goes is listed with the id that most of its records went to. Ids are never
reused.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["carry_ids"]


def carry_ids(
    groups: Sequence[Sequence[tuple[int, int]]], previous: Sequence[np.ndarray], next_entity: int
) -> tuple[tuple[np.ndarray, ...], int, dict[int, int | None]]:
    """Give each new entity an id, carried over from the entities its records were in.

    Args:
        groups: the new entities, as ``(party, record)`` lists.
        previous: per party, each record's entity id before (``-1``: a new record, or one
            whose entity is decided elsewhere); the ids of records not in ``groups`` are kept.
        next_entity: the first id never given out.

    Returns:
        Per party the entity id of each record, the next id never given out, and the ids
        that went, each with the id that most of its records now have.

    An old id goes to the new entity holding most of its records (ties: the entity with
    the first record); an entity heir to several keeps the oldest (smallest) and retires
    the rest into it; an entity heir to none gets a new id.

    Entities 5 and 6 merge (5 stays, 6 retires into it); a new record stays alone (new id 9):

    >>> ids, following, retired = carry_ids([[(0, 0), (1, 0)], [(1, 1)]], [np.array([5]), np.array([6, -1])], 9)
    >>> [i.tolist() for i in ids], following, retired
    ([[5], [5, 9]], 10, {6: 5})
    """
    ids = tuple(np.array(column, dtype=np.int64, copy=True) for column in previous)
    heirs: dict[int, tuple[int, tuple[int, int], int]] = {}
    for number, group in enumerate(groups):
        counts: dict[int, int] = {}
        for party, record in group:
            old = int(previous[party][record])
            if old >= 0:
                counts[old] = counts.get(old, 0) + 1
        first = min(group)
        for old, count in counts.items():
            best = heirs.get(old)
            # Most records first; then the group holding the first record.
            if best is None or (count, _negated(first)) > (best[0], _negated(best[1])):
                heirs[old] = (count, first, number)
    inherited: dict[int, list[int]] = {}
    for old, (_, _, number) in heirs.items():
        inherited.setdefault(number, []).append(old)
    chosen: dict[int, int] = {}
    order = sorted(range(len(groups)), key=lambda number: min(groups[number]))
    for number in order:
        if number in inherited:
            chosen[number] = min(inherited[number])
        else:
            chosen[number] = next_entity
            next_entity += 1
    for number, group in enumerate(groups):
        for party, record in group:
            ids[party][record] = chosen[number]
    gone: set[int] = set()
    for group in groups:
        for party, record in group:
            old = int(previous[party][record])
            if old >= 0:
                gone.add(old)
    retired: dict[int, int | None] = {}
    for old in sorted(gone):
        heir = chosen[heirs[old][2]]
        if heir != old:
            retired[old] = heir
    return ids, next_entity, retired


def _negated(record: tuple[int, int]) -> tuple[int, int]:
    return (-record[0], -record[1])
