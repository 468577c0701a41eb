import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.matching.solve import solve_entities


@st.composite
def candidate_sets(draw):
    parties = draw(st.integers(2, 5))
    size = draw(st.integers(1, 8))
    count = draw(st.integers(0, 60))
    party_a, party_b, record_a, record_b, strength = [], [], [], [], []
    for _ in range(count):
        a, b = sorted(draw(st.lists(st.integers(0, parties - 1), min_size=2, max_size=2, unique=True)))
        party_a.append(a)
        party_b.append(b)
        record_a.append(draw(st.integers(0, size - 1)))
        record_b.append(draw(st.integers(0, size - 1)))
        strength.append(draw(st.floats(-5, 30, allow_nan=False)))
    return tuple(np.array(x) for x in (party_a, party_b, record_a, record_b, strength))


@settings(max_examples=150, deadline=None)
@given(candidate_sets())
def test_never_two_records_of_one_party_in_an_entity(candidates):
    entities = solve_entities(*candidates)
    seen = set()
    for entity in entities:
        parties = [p for p, _ in entity.records]
        assert len(parties) == len(set(parties)) >= 2
        assert not seen & set(entity.records)  # a record is in one entity at most
        seen |= set(entity.records)


@settings(max_examples=100, deadline=None)
@given(candidate_sets(), st.randoms())
def test_same_input_same_output_whatever_the_order(candidates, random):
    order = list(range(len(candidates[0])))
    random.shuffle(order)
    shuffled = tuple(x[order] if len(x) else x for x in candidates)
    assert solve_entities(*candidates) == solve_entities(*shuffled)


def test_a_person_seen_by_three_agencies_is_one_entity():
    entities = solve_entities(
        np.array([0, 1, 0]), np.array([1, 2, 2]), np.array([4, 2, 4]), np.array([2, 9, 9]), np.array([20.0, 18.0, 1.0])
    )
    assert [e.records for e in entities] == [((0, 4), (1, 2), (2, 9))]
