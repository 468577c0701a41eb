"""What a task of either pass computes from its candidate pairs, on the pool or on Dask.

Pass 1 counts the pairs' patterns of agreement levels (all the EM needs); pass 2 weighs
the pairs under the fitted model. Slice tasks on the pool and on Dask
(:mod:`linkage.matching.tasks`) share these, so both give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from linkage.matching.compare import (
    Comparison,
    Feature,
    decode_patterns,
    encode_patterns,
    feature_levels,
    rejected,
)
from linkage.matching.model import FellegiSunterModel, tf_adjustments
from linkage.matching.solve import with_tie_break

__all__ = ["count_patterns", "key_columns", "pattern_counts", "weigh_pairs"]


def pattern_counts(
    patterns: np.ndarray,
    columns_a: np.ndarray,
    columns_b: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray],
    spans: Sequence[tuple[int, int]],
) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Distinct patterns and their counts, overall and among the pairs agreeing on each rule's key.

    ``spans`` are each rule's key columns (:func:`linkage.matching.block.rule_spans`): a
    pair agrees on a similarity rule when it shares any of its band keys. The keys come
    column by column (``columns_a``, ``columns_b``: each party's block keys, shape
    (columns, records), from :func:`key_columns`) and are gathered one column at a time
    for the ``pairs`` (index_a, index_b): gathering whole rows of 60-odd band columns for
    millions of pairs took more time and memory than scoring them.

    >>> keys_a = np.array([[5, 1, 7], [6, 0, 8]], dtype=np.uint64)
    >>> keys_b = np.array([[5, 2, 7], [6, 0, 9]], dtype=np.uint64)
    >>> pairs = np.array([0, 1]), np.array([0, 1])
    >>> counted = pattern_counts(np.array([3, 3]), key_columns(keys_a), key_columns(keys_b), pairs, [(0, 1), (1, 3)])
    >>> distinct, counts, per_rule = counted
    >>> distinct.tolist(), counts.tolist(), [(d.tolist(), c.tolist()) for d, c in per_rule]
    ([3], [2], [([3], [2]), ([3], [1])])
    """
    index_a, index_b = pairs
    distinct, _, counts = count_patterns(patterns)
    per_rule = []
    for first, stop in spans:
        agree = np.zeros(len(patterns), dtype=bool)
        for column in range(first, stop):
            key = columns_a[column][index_a]
            agree |= (key == columns_b[column][index_b]) & (key != 0)
        rule_distinct, _, rule_counts = count_patterns(patterns[agree])
        per_rule.append((rule_distinct, rule_counts))
    return distinct, counts, per_rule


def key_columns(keys: np.ndarray) -> np.ndarray:
    """Block keys (records, columns) as contiguous columns (columns, records), for :func:`pattern_counts`."""
    return np.ascontiguousarray(np.asarray(keys).T)


def weigh_pairs(
    levels: np.ndarray,
    comparisons: Sequence[Comparison],
    features: Sequence[Feature],
    scoring: tuple[FellegiSunterModel, dict[tuple[int, int], float], float],
    parties: tuple[int, int],
    frequencies: tuple[list[np.ndarray], list[np.ndarray]],
    similarity: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which pairs reach the probability floor, and every pair's weight and probability.

    ``frequencies`` are each pair's two records' term frequencies, per name field;
    ``similarity`` each pair's similarity, which breaks ties between equal match weights
    in the weight returned (:func:`linkage.matching.solve.with_tie_break`), not in the
    probability.
    """
    model, priors, floor = scoring
    patterns = encode_patterns(feature_levels(levels, features), features)
    distinct, inverse, _ = count_patterns(patterns)
    weights = model.match_weights(decode_patterns(distinct, features))[inverse]
    weights += tf_adjustments(model, comparisons, levels, frequencies[0], frequencies[1])
    probability = model.probabilities_of(weights, priors[parties])
    # Never linked, and counted as a non-match when the threshold is chosen.
    probability[rejected(levels, comparisons)] = 0.0
    return probability >= floor, with_tie_break(weights, similarity), probability


def count_patterns(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct pattern codes, each pair's index among them, and their counts.

    Codes are small integers (a product of a few level counts), so counting in a table
    is far quicker than sorting millions of candidates.

    >>> [part.tolist() for part in count_patterns(np.array([4, 1, 4]))]
    [[1, 4], [1, 0, 1], [1, 2]]
    """
    if not len(codes) or int(codes.max()) >= 1 << 26:
        distinct, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
        return distinct, inverse, counts
    table = np.bincount(codes)
    distinct = np.flatnonzero(table)
    lookup = np.zeros(len(table), dtype=np.int64)
    lookup[distinct] = np.arange(len(distinct))
    return distinct, lookup[codes], table[distinct]
