import numpy as np

from linkage.protocol import FieldSpec
from linkage.score import Comparison, choose_threshold, decode_patterns, encode_patterns, estimate_u, fit_em


def comparisons():
    return [
        Comparison(FieldSpec("a", "category", 1, 1), ("different", "exact")),
        Comparison(FieldSpec("b", "category", 1, 1), ("different", "close", "exact")),
        Comparison(FieldSpec("c", "category", 1, 1), ("different", "exact")),
    ]


def sample(rng, n, probabilities):
    return np.stack([rng.choice(len(p), n, p=p) for p in probabilities], axis=1).astype(np.int8)


def test_em_recovers_a_known_mixture():
    rng = np.random.default_rng(3)
    true_m = [np.array([0.05, 0.95]), np.array([0.05, 0.15, 0.8]), np.array([0.1, 0.9])]
    true_u = [np.array([0.9, 0.1]), np.array([0.85, 0.1, 0.05]), np.array([0.7, 0.3])]
    matches = sample(rng, 20_000, true_m)
    non_matches = sample(rng, 80_000, true_u)
    levels = np.concatenate([matches, non_matches])
    codes = encode_patterns(levels, comparisons())
    distinct, counts = np.unique(codes, return_counts=True)
    u = estimate_u(sample(rng, 200_000, true_u), comparisons())
    model = fit_em(decode_patterns(distinct, comparisons()), counts, comparisons(), u, total_pairs=100_000)
    assert abs(model.prior - 0.2) < 0.01
    for fitted, expected in zip(model.m, true_m, strict=True):
        assert np.allclose(fitted, expected, atol=0.02)
    probability = model.probabilities(levels)
    assert probability[:20_000].mean() > 0.85 and probability[20_000:].mean() < 0.05


def test_patterns_round_trip():
    levels = np.array([[0, 2, 1], [2, 3, 2], [1, 0, 0]], dtype=np.int8)  # 2 or 3 is "missing"
    assert np.array_equal(decode_patterns(encode_patterns(levels, comparisons()), comparisons()), levels)


def test_missing_is_neutral():
    rng = np.random.default_rng(1)
    u = estimate_u(sample(rng, 1000, [np.array([0.5, 0.5])] * 2 + [np.array([0.5, 0.5])]), comparisons()[:1] * 3)
    model = fit_em(
        np.array([[1, 1, 1]], dtype=np.int8),
        np.array([10]),
        comparisons()[:1] * 3,
        u,
        total_pairs=100,
        max_iterations=1,
    )
    with_missing = model.match_weights(np.array([[1, 1, 2]], dtype=np.int8))
    without = model.match_weights(np.array([[1, 1, 0]], dtype=np.int8))
    assert with_missing > without


def test_threshold_is_between_the_modes():
    probabilities = np.concatenate([np.full(100, 0.99), np.full(1000, 0.01), [0.6, 0.4]])
    assert 0.4 < choose_threshold(probabilities) <= 0.99
