import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from linkage.matching.block import BlockIndex, candidate_pairs, oversized_keys

keys = arrays(np.uint64, st.tuples(st.integers(0, 40), st.integers(1, 3)), elements=st.integers(0, 6))


@st.composite
def two_parties(draw):
    """Two parties' block keys under the same rules, and a limit on a block's pairs (one, or one per column)."""
    a = draw(keys)
    b = draw(arrays(np.uint64, st.tuples(st.integers(0, 40), st.just(a.shape[1])), elements=st.integers(0, 6)))
    one = st.integers(1, 50)
    return a, b, draw(one | st.lists(one, min_size=a.shape[1], max_size=a.shape[1]))


def brute_force(a, b, limits):
    pairs = set()
    for rule in range(a.shape[1]):
        limit = limits if isinstance(limits, int) else limits[rule]
        values_a, counts_a = np.unique(a[:, rule], return_counts=True)
        values_b, counts_b = np.unique(b[:, rule], return_counts=True)
        sizes = dict(zip(values_a, counts_a, strict=True))
        sizes_b = dict(zip(values_b, counts_b, strict=True))
        for i, j in itertools.product(range(len(a)), range(len(b))):
            key = a[i, rule]
            if key and key == b[j, rule] and sizes[key] * sizes_b[key] <= limit:
                pairs.add((i, j))
    return pairs


@settings(max_examples=60, deadline=None)
@given(two_parties())
def test_candidates_are_exactly_the_pairs_sharing_a_block(parties):
    a, b, limit = parties
    index = BlockIndex.build(a, b, limit)
    found = set()
    # Slices of A give the same pairs as the whole.
    for start in range(0, len(a), 7):
        ia, ib = candidate_pairs(a[start : start + 7], start, index)
        found |= set(zip(ia.tolist(), ib.tolist(), strict=True))
    assert found == brute_force(a, b, limit)


def test_zero_keys_never_block():
    a = np.zeros((3, 2), dtype=np.uint64)
    ia, _ = candidate_pairs(a, 0, BlockIndex.build(a, a.copy(), 100))
    assert len(ia) == 0


@settings(max_examples=60, deadline=None)
@given(two_parties())
def test_oversized_blocks_found_beforehand_give_the_same_candidates(parties):
    """On Dask no worker holds all of a first party: its blocks over the limit are found first, on all records."""
    a, b, limit = parties
    built = BlockIndex.build(a, b, limit)
    given_oversized = BlockIndex.of_keys(b, oversized_keys(a, b, limit))
    for start in range(0, len(a), 7):
        expected = candidate_pairs(a[start : start + 7], start, built)
        found = candidate_pairs(a[start : start + 7], start, given_oversized)
        assert all(np.array_equal(x, y) for x, y in zip(found, expected, strict=True))
