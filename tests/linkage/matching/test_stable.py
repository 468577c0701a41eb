"""The stable mapping: what one person's records can move, on any graph of accepted pairs."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.matching.solve import Entity, solve_entities
from linkage.matching.stable import rows_bound, stable_entities


@st.composite
def accepted_pairs(draw, most_parties=4, records=6):
    """Accepted pairs among a few records of each of 2 to ``most_parties`` parties, with distinct strengths."""
    count = draw(st.integers(2, most_parties))
    nodes = [(p, r) for p in range(count) for r in range(records)]
    possible = [(a, b) for a in nodes for b in nodes if a[0] < b[0]]
    chosen = draw(st.lists(st.sampled_from(possible), unique=True, max_size=14))
    strengths = draw(st.lists(st.integers(0, 10_000), min_size=len(chosen), max_size=len(chosen), unique=True))
    return count, records, [(a, b, float(s)) for (a, b), s in zip(chosen, strengths, strict=True)]


def solve(count, records, pairs, removed=frozenset(), *, audit=True):
    kept = [(a, b, s) for a, b, s in pairs if a not in removed and b not in removed]
    arrays = [np.array(values, dtype=dtype) for values, dtype in _columns(kept)]
    return stable_entities(*arrays, [records] * count, audit=audit)


def _columns(kept):
    return (
        ([a[0] for a, _, _ in kept], np.int8),
        ([b[0] for _, b, _ in kept], np.int8),
        ([a[1] for a, _, _ in kept], np.int32),
        ([b[1] for _, b, _ in kept], np.int32),
        ([s for _, _, s in kept], np.float64),
    )


def table_rows(count, records, stable, removed=frozenset()):
    """The statistics table's rows: one per entity, one per record in none; by the records they hold."""
    rows = Counter(frozenset(entity.records) for entity in stable.entities)
    linked = {record for entity in stable.entities for record in entity.records}
    for record in ((p, r) for p in range(count) for r in range(records)):
        if record not in linked and record not in removed:
            rows[frozenset({record})] += 1
    return rows


def moved(before, after):
    return sum(((before - after) + (after - before)).values())


@st.composite
def graph_and_person(draw):
    count, records, pairs = draw(accepted_pairs())
    person = frozenset((p, r) for p in range(count) if (r := draw(st.integers(-1, records - 1))) >= 0)
    return count, records, pairs, person


@settings(max_examples=120, deadline=None)
@given(graph_and_person())
def test_one_person_moves_at_most_parties_squared_rows_where_their_clusters_are_unambiguous(case):
    count, records, pairs, person = case
    everyone = solve(count, records, pairs)
    ambiguous = {record for cluster in everyone.ambiguous for record in cluster}
    without = solve(count, records, pairs, person)
    distance = moved(table_rows(count, records, everyone), table_rows(count, records, without, person))
    assert distance <= everyone.worst_deletion, "the audit bounds every deletion of these records"
    if not person & ambiguous:
        assert distance <= rows_bound(count)


@settings(max_examples=100, deadline=None)
@given(accepted_pairs(most_parties=3))
def test_with_three_parties_or_fewer_the_stable_mapping_is_the_greedy_solvers(case):
    count, records, pairs = case
    arrays = [np.array(values, dtype=dtype) for values, dtype in _columns(pairs)]
    assert solve(count, records, pairs, audit=False).entities == solve_entities(*arrays)


def test_the_bound_is_reached_when_each_of_a_persons_records_joins_two_strangers():
    # Person X has a record at each of three parties; each sits between two other records
    # that were not accepted together: taking X away splits three rows into six.
    x = [(0, 0), (1, 0), (2, 0)]
    pairs = [
        (x[0], (1, 1), 9.0), (x[0], (2, 1), 8.0),
        (x[1], (2, 2), 7.0), ((0, 2), x[1], 6.0),
        ((0, 3), x[2], 5.0), ((1, 3), x[2], 4.0),
    ]  # fmt: skip
    everyone = solve(3, 4, pairs)
    assert everyone.entities[0] == Entity(((0, 0), (1, 1), (2, 1)))
    without = solve(3, 4, pairs, frozenset(x))
    assert moved(table_rows(3, 4, everyone), table_rows(3, 4, without, frozenset(x))) == rows_bound(3) == 9


def test_an_ambiguous_cluster_is_where_one_record_can_move_many_rows():
    # A chain a0-b0-a1-b1-...: the greedy solver pairs a_i with b_i (each pair stronger than
    # the next link); without a0, every pair shifts by one record. Every record of the chain
    # is in one cluster holding several records of each party.
    chain = [(i % 2, i // 2) for i in range(12)]
    pairs = [(min(a, b), max(a, b), float(100 - i)) for i, (a, b) in enumerate(zip(chain, chain[1:], strict=False))]
    everyone = solve(2, 6, pairs)
    assert everyone.ambiguous_clusters == 1 and everyone.ambiguous_records == 12
    assert everyone.entities == [Entity(((0, i), (1, i))) for i in range(6)]
    without = solve(2, 6, pairs, frozenset({(0, 0)}))
    distance = moved(table_rows(2, 6, everyone), table_rows(2, 6, without, frozenset({(0, 0)})))
    assert distance == 12 > rows_bound(2)
    assert everyone.worst_deletion >= distance


@pytest.mark.parametrize("parties", [2, 3, 5])
def test_rows_bound_is_the_parties_squared(parties):
    assert rows_bound(parties) == parties * parties
