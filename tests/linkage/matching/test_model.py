import numpy as np

from linkage.matching.compare import Comparison, decode_patterns, encode_patterns, feature_levels, features_for
from linkage.matching.model import estimate_u, fit_em
from linkage.protocol import FieldSpec


def comparisons():
    return [
        Comparison(FieldSpec("a", "category", 1, 1), ("different", "exact")),
        Comparison(FieldSpec("b", "category", 1, 1), ("different", "close", "exact")),
        Comparison(FieldSpec("c", "category", 1, 1), ("different", "exact")),
    ]


def sample(rng, n, probabilities):
    return np.stack([rng.choice(len(p), n, p=p) for p in probabilities], axis=1).astype(np.int8)


def fit(levels, random_levels, features, total_pairs):
    codes = encode_patterns(feature_levels(levels, features), features)
    distinct, counts = np.unique(codes, return_counts=True)
    u = estimate_u(feature_levels(random_levels, features), features)
    return fit_em(decode_patterns(distinct, features), counts, features, u, total_pairs=total_pairs)


def test_em_recovers_a_known_mixture():
    rng = np.random.default_rng(3)
    true_m = [np.array([0.05, 0.95]), np.array([0.05, 0.15, 0.8]), np.array([0.1, 0.9])]
    true_u = [np.array([0.9, 0.1]), np.array([0.85, 0.1, 0.05]), np.array([0.7, 0.3])]
    levels = np.concatenate([sample(rng, 20_000, true_m), sample(rng, 80_000, true_u)])
    features = features_for(comparisons())
    model = fit(levels, sample(rng, 200_000, true_u), features, total_pairs=100_000)
    assert abs(model.prior - 0.2) < 0.01
    for fitted, expected in zip(model.m, true_m, strict=True):
        assert np.allclose(fitted[: len(expected)], expected, atol=0.02)
    probability = model.probabilities(feature_levels(levels, features))
    assert probability[:20_000].mean() > 0.85 and probability[20_000:].mean() < 0.05


def test_a_group_of_dependent_fields_is_weighed_once():
    # b and c always agree or disagree together among matches ("moved house").
    rng = np.random.default_rng(5)
    a = rng.choice(2, 30_000, p=[0.05, 0.95])
    moved = rng.random(30_000) < 0.2
    matches = np.stack([a, np.where(moved, 0, 2), np.where(moved, 0, 1)], axis=1).astype(np.int8)
    true_u = [np.array([0.9, 0.1]), np.array([0.9, 0.05, 0.05]), np.array([0.8, 0.2])]
    levels = np.concatenate([matches, sample(rng, 70_000, true_u)])
    random_levels = sample(rng, 200_000, true_u)
    independent = fit(levels, random_levels, features_for(comparisons()), 100_000)
    grouped_features = features_for(comparisons(), [["b", "c"]])
    grouped = fit(levels, random_levels, grouped_features, 100_000)
    mover = np.array([[1, 0, 0]], dtype=np.int8)
    # Independence counts "moved" twice; the group counts it once, so a mover keeps more weight.
    assert grouped.match_weights(feature_levels(mover, grouped_features)) > independent.match_weights(
        feature_levels(mover, features_for(comparisons()))
    )


def test_patterns_round_trip():
    features = features_for(comparisons(), [["b", "c"]])
    levels = feature_levels(np.array([[0, 2, 1], [2, 3, 2], [1, 0, 0]], dtype=np.int8), features)
    assert np.array_equal(decode_patterns(encode_patterns(levels, features), features), levels)


def test_missing_is_neutral():
    features = features_for(comparisons()[:1] * 3)
    rng = np.random.default_rng(1)
    u = estimate_u(feature_levels(sample(rng, 1000, [np.array([0.5, 0.5])] * 3), features), features)
    model = fit_em(np.array([[1, 1, 1]]), np.array([10]), features, u, total_pairs=100, max_iterations=1)
    assert model.level_weights()[2][2] == 0.0
    with_missing = model.match_weights(np.array([[1, 1, 2]]))
    without = model.match_weights(np.array([[1, 1, 0]]))
    assert with_missing > without


def test_per_rule_em_ignores_agreement_the_blocking_rule_forced():
    # Candidates blocked on field "a": namesakes (a agrees, b and c random) outnumber matches
    # ten to one. The session of that rule holds a out, so m of b and c comes from the pairs
    # that b and c separate, and is recovered.
    from linkage.matching.model import fit_em_by_rule

    rng = np.random.default_rng(7)
    true_m = [np.array([0.05, 0.95]), np.array([0.05, 0.15, 0.8]), np.array([0.1, 0.9])]
    true_u = [np.array([0.9, 0.1]), np.array([0.85, 0.1, 0.05]), np.array([0.7, 0.3])]
    matches = sample(rng, 2_000, true_m)
    namesakes = sample(rng, 20_000, true_u)
    namesakes[:, 0] = 1
    matches[:, 0] = 1
    levels = np.concatenate([matches, namesakes])
    features = features_for(comparisons())
    coded = feature_levels(levels, features)
    distinct, counts = np.unique(encode_patterns(coded, features), return_counts=True)
    patterns = decode_patterns(distinct, features)
    u = estimate_u(feature_levels(sample(rng, 200_000, true_u), features), features)
    model = fit_em_by_rule(patterns, counts, [(patterns, counts, frozenset({"a"}))], features, u, total_pairs=200_000)
    for fitted, expected in zip(model.m[1:], true_m[1:], strict=True):
        assert np.allclose(fitted[: len(expected)], expected, atol=0.02)
    probability = model.probabilities(coded)
    assert probability[:2_000].mean() > 0.6
    assert probability[2_000:].mean() < 0.05
