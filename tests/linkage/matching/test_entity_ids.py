"""Entity ids carried over: merges keep the oldest, splits the largest part (the doctest shows a merge)."""

from __future__ import annotations

import numpy as np

from linkage.matching.entity_ids import carry_ids


def test_carry_ids_split_keeps_the_id_with_the_larger_part():
    previous = [np.array([7, 7]), np.array([7])]
    ids, following, retired = carry_ids([[(0, 0)], [(0, 1), (1, 0)]], previous, 10)
    assert [column.tolist() for column in ids] == [[10, 7], [7]]
    assert following == 11 and retired == {}


def test_carry_ids_gives_new_entities_new_ids_in_record_order():
    ids, following, retired = carry_ids([[(1, 0)], [(0, 0)]], [np.array([-1]), np.array([-1])], 3)
    assert [column.tolist() for column in ids] == [[3], [4]]
    assert following == 5 and retired == {}
