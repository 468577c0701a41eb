"""The auto threshold: expected F1 of what the one-to-one solver keeps, not of pairs one by one."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.matching.threshold import choose_threshold, greedy_pairs, partner_share


def pairwise_threshold(probability):
    """The threshold before the fix: the best expected F1 of the pairs taken one by one."""
    ordered = np.sort(probability)[::-1]
    true_positives = np.cumsum(ordered)
    f1 = 2 * true_positives / (true_positives + np.arange(1, len(ordered) + 1) + ordered.sum() - true_positives)
    return float(ordered[int(np.argmax(f1))])


def solved_f1(record_a, record_b, probability, is_match, threshold, matches):
    accepted = probability >= threshold
    kept = greedy_pairs(record_a[accepted], record_b[accepted], probability[accepted])
    true_positives = int(is_match[accepted][kept].sum())
    precision = true_positives / max(int(kept.sum()), 1)
    recall = true_positives / matches
    return precision, recall, 2 * precision * recall / (precision + recall)


def one_to_one_world(seed):
    """Every record of both parties has a partner, as in FEBRL4; one in ten true pairs has weak evidence.

    Each record also has two non-matching candidates, of a weight at most its true pair's
    (so that the true pair keeps both records, as on real data above the weak tail).
    """
    rng = np.random.default_rng(seed)
    size = 2000
    strong = rng.random(size) > 0.1
    true_p = np.where(strong, 1 - rng.random(size) * 1e-4, 0.01 + 0.39 * rng.random(size))
    junk_a = np.repeat(np.arange(size), 2)
    junk_b = (junk_a + rng.integers(1, size, len(junk_a))) % size
    junk_p = np.minimum(0.001 + 0.05 * rng.random(len(junk_a)), 0.9 * np.minimum(true_p[junk_a], true_p[junk_b]))
    keep = junk_p >= 0.001
    record_a = np.concatenate([np.arange(size), junk_a[keep]])
    record_b = np.concatenate([np.arange(size), junk_b[keep]])
    probability = np.concatenate([true_p, junk_p[keep]])
    is_match = np.concatenate([np.ones(size, bool), np.zeros(int(keep.sum()), bool)])
    # The pairwise prior, as the engine fits it: expected matches equal the sum of the posteriors.
    prior = probability.sum() / size / size
    return size, record_a, record_b, probability, is_match, prior


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000))
def test_weak_but_unrivalled_true_pairs_are_kept_when_every_record_has_a_partner(seed):
    size, record_a, record_b, probability, is_match, prior = one_to_one_world(seed)
    parties = np.zeros(len(probability), np.int8), np.ones(len(probability), np.int8)
    chosen = choose_threshold(*parties, record_a, record_b, probability, [size, size], {(0, 1): prior})
    old = pairwise_threshold(probability)
    precision, recall, f1 = solved_f1(record_a, record_b, probability, is_match, chosen, size)
    _, old_recall, old_f1 = solved_f1(record_a, record_b, probability, is_match, old, size)
    # Taken one by one, pairs at 0.3 look like non-matches; the solver keeps only true ones there.
    assert old > 0.4
    assert chosen < 0.1
    assert precision == 1.0
    assert recall > old_recall + 0.05
    assert f1 > old_f1


def test_without_partners_to_expect_the_threshold_stays_where_pairs_one_by_one_put_it():
    # Few records have a partner (the prior implies 0.1%): exclusivity changes nothing, and
    # the threshold is the pairwise one.
    rng = np.random.default_rng(3)
    probability = np.concatenate([np.full(100, 0.99), rng.random(400) * 0.6])
    record = np.arange(len(probability))
    size = 500_000
    parties = np.zeros(len(probability), np.int8), np.ones(len(probability), np.int8)
    prior = probability.sum() / size / size
    chosen = choose_threshold(*parties, record, record, probability, [size, size], {(0, 1): prior})
    assert abs(chosen - pairwise_threshold(probability)) < 0.02


def test_greedy_keeps_the_strongest_pair_of_each_record():
    record_a = np.array([0, 0, 1, 1, 2])
    record_b = np.array([0, 1, 1, 2, 2])
    kept = greedy_pairs(record_a, record_b, np.array([0.5, 0.9, 0.8, 0.4, 0.3]))
    assert kept.tolist() == [False, True, False, True, False]


def test_partner_share_counts_records_without_candidates():
    # Two of ten records have overwhelming evidence of a partner; the rest none at all.
    assert abs(partner_share(np.array([1e9, 1e9]), 10, 0.2) - 0.2) < 1e-6
