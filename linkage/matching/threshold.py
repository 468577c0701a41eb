"""Choose the match threshold from the model, without labels, for the entities the solver keeps.

The model's posterior of a pair is calibrated over all pairs, one pair at a time. The
solver then keeps at most one record per party in an entity, strongest pairs first, and
that changes what a pair's posterior means: a pair whose two records have no stronger
candidate is a match far more often than its posterior says, because the non-matches
with as much evidence mostly lose their records to their own true matches first. On
FEBRL4 every candidate the solver kept at posteriors from 0.01 to 0.55 was a true match,
so maximising the expected F1 of the pairs taken one by one stopped at 0.55 and left 43
true pairs out.

So the expected F1 is computed for the pairs the solver keeps, with each kept pair's
chance of being a match under one-to-one matching between the two parties
(:func:`exclusive_chances`): record a of party A has a partner in party B with chance rho,
the partner equally likely to be any of B's records a priori, so

    P(a's partner is b | data) = c o_ab / ((1 - rho) + c sum_b' o_ab'),  c = rho / rho_0,

where o_ab is the pair's posterior odds under the pairwise prior, whose implied rho_0 is
the prior times B's size. rho is fitted by EM over A's records (the share of them that
have a partner), and the same is done from B's side; a pair's chance is the smaller of
the two. The threshold maximises 2 E[TP] / (kept + E[matches]) over the kept pairs.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["choose_threshold", "exclusive_chances", "greedy_pairs", "partner_share"]

_MAX_SHARE = 1.0 - 1e-6


def greedy_pairs(record_a: np.ndarray, record_b: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """Which pairs one-to-one greedy matching keeps, strongest first (ties by the records).

    A pair is kept when neither of its records is in a stronger kept pair, as the
    solver keeps pairs between two parties. Kept at any threshold, a pair stays kept at
    every lower one: lowering the threshold only adds weaker pairs after it.

    >>> greedy_pairs(np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([0.9, 0.8, 0.7])).tolist()
    [True, False, False]
    """
    order = np.lexsort((record_b, record_a, -strength))
    used_a = np.zeros(int(record_a.max(initial=-1)) + 1, dtype=bool)
    used_b = np.zeros(int(record_b.max(initial=-1)) + 1, dtype=bool)
    kept = np.zeros(len(strength), dtype=bool)
    for index, a, b in zip(order.tolist(), record_a[order].tolist(), record_b[order].tolist(), strict=True):
        if not used_a[a] and not used_b[b]:
            used_a[a] = used_b[b] = kept[index] = True
    return kept


def partner_share(odds_sums: np.ndarray, records: int, share: float, iterations: int = 200) -> float:
    """The share of a party's records that have a partner in the other, fitted by EM.

    Args:
        odds_sums: per record with candidates, the sum of its candidates' posterior odds
            under the pairwise prior.
        records: the party's records (those without candidates count as without partner).
        share: the share the pairwise prior implies (prior times the other party's size).
        iterations: at most this many EM steps.

    >>> round(partner_share(np.array([1e6, 1e6, 1e-3]), 4, 0.5), 3)
    0.5
    """
    implied = min(max(share, 1e-12), _MAX_SHARE)
    fitted = implied
    for _ in range(iterations):
        scaled = fitted / implied * odds_sums
        new = min(float((scaled / ((1.0 - fitted) + scaled)).sum()) / max(records, 1), _MAX_SHARE)
        if abs(new - fitted) <= 1e-9:
            return new
        fitted = new
    return fitted


def exclusive_chances(
    record_a: np.ndarray, record_b: np.ndarray, probability: np.ndarray, sizes: tuple[int, int], prior: float
) -> tuple[np.ndarray, float]:
    """Each pair's chance of being a match under one-to-one matching between two parties.

    Args:
        record_a: the pairs' records in party A.
        record_b: in party B.
        probability: their posteriors under the pairwise ``prior``.
        sizes: the two parties' record counts.
        prior: the pairwise prior of this pair of parties.

    Returns:
        The chances, and the expected number of matches between the two parties.
    """
    odds = probability / np.maximum(1.0 - probability, 1e-12)
    chances = []
    matches = []
    for records, size, other in ((record_a, sizes[0], sizes[1]), (record_b, sizes[1], sizes[0])):
        sums = np.bincount(records, weights=odds, minlength=size)
        implied = min(prior * other, _MAX_SHARE)
        share = partner_share(sums[sums > 0], size, implied)
        scale = share / implied
        chances.append(scale * odds / ((1.0 - share) + scale * sums[records]))
        matches.append(share * size)
    return np.minimum(chances[0], chances[1]), (matches[0] + matches[1]) / 2


def choose_threshold(
    party_a: np.ndarray,
    party_b: np.ndarray,
    record_a: np.ndarray,
    record_b: np.ndarray,
    probability: np.ndarray,
    sizes: Sequence[int],
    priors: Mapping[tuple[int, int], float],
    strength: np.ndarray | None = None,
) -> float:
    """The probability threshold that maximises the expected F1 of the pairs the solver keeps.

    Args:
        party_a: each candidate's first party.
        party_b: its second party.
        record_a: its record in the first party.
        record_b: in the second.
        probability: its posterior under its pair of parties' prior.
        sizes: every party's record count.
        priors: the pairwise prior of each pair of parties.
        strength: the order the solver takes the pairs in (default: by probability),
            such as match weights whose ties are broken by similarity.

    Returns:
        The threshold (0.5 with no candidates).

    Four records each with one candidate, where the prior says 40% of them have a partner:
    a lone pair at 0.3 is more likely a match than not (taken one by one, only the pair at
    0.99 would be).

    >>> one = np.zeros(4, np.int8); two = np.ones(4, np.int8)
    >>> p = np.array([0.99, 0.3, 0.2, 0.01])
    >>> choose_threshold(one, two, np.array([0, 1, 2, 3]), np.array([0, 1, 2, 3]), p, [4, 4], {(0, 1): 0.1})
    0.3
    """
    if not len(probability):
        return 0.5
    kept_probability, kept_chance = [], []
    expected = 0.0
    for a, b in itertools.combinations(range(len(sizes)), 2):
        mine = np.flatnonzero((party_a == a) & (party_b == b))
        if not len(mine):
            continue
        chances, matches = exclusive_chances(
            record_a[mine], record_b[mine], probability[mine], (sizes[a], sizes[b]), priors[(a, b)]
        )
        order_by = probability[mine] if strength is None else strength[mine]
        kept = greedy_pairs(record_a[mine], record_b[mine], order_by)
        kept_probability.append(probability[mine][kept])
        kept_chance.append(chances[kept])
        expected += matches
    strength = np.concatenate(kept_probability)
    chance = np.concatenate(kept_chance)
    order = np.argsort(-strength, kind="stable")
    true_positives = np.cumsum(chance[order])
    f1 = 2 * true_positives / (np.arange(1, len(order) + 1) + max(expected, float(true_positives[-1])))
    # The same probability may stand for several pairs: the threshold keeps them all.
    last = np.r_[strength[order][1:] != strength[order][:-1], True]
    best = int(np.argmax(np.where(last, f1, -1.0)))
    return float(strength[order][best])
