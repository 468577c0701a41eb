"""Weigh the evidence of compared pairs: the Fellegi-Sunter model, fitted without labels.

The weight of each level is log2(m/u): m, the chance of that level among true matches,
is estimated by expectation-maximisation over the candidate pairs, without labels; u, its
chance among non-matches, from random pairs, which are almost all non-matches. This is
the approach of Splink and of Fellegi and Sunter (1969), applied to encodings. Agreeing
on a rare name weighs more than on a common one (term-frequency adjustment), and the
match threshold can be chosen from the model itself (:mod:`linkage.matching.threshold`).

Under a salt, u of a salted field is estimated among random pairs that share the salt
(:func:`same_salt_pairs`), and its exact agreement is not adjusted for the value's share
(:func:`tf_fields`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from linkage.matching.compare import Comparison, Feature

__all__ = [
    "FellegiSunterModel",
    "TF_KINDS",
    "estimate_u",
    "fit_em",
    "fit_em_by_rule",
    "fit_prior",
    "same_salt_pairs",
    "shared_salt_pairs",
    "term_frequencies",
    "tf_adjustments",
    "tf_fields",
    "value_fingerprints",
]


_U_PSEUDO_SHARE = 1e-6
_U_PRIOR_PAIRS = 10
# m comes from a few thousand expected matches: a larger pseudo-count keeps a level never
# seen among them (a disagreeing sex, say) from counting as proof of a non-match.
_M_PSEUDO_SHARE = 1e-3
_MIN_SESSION_PAIRS = 100


def _level_frequencies(
    levels: np.ndarray, weights: np.ndarray, features: Sequence[Feature], pseudo_share: float
) -> tuple[np.ndarray, ...]:
    """Weighted share of each level per feature, the neutral level excluded (left at 1)."""
    return tuple(
        _shares(np.bincount(levels[:, column], weights=weights, minlength=feature.size), feature, pseudo_share)
        for column, feature in enumerate(features)
    )


def _shares(counts: np.ndarray, feature: Feature, pseudo_share: float) -> np.ndarray:
    """Share of each level of one feature from its (weighted) counts, the neutral level left at 1."""
    weighed = np.ones(feature.size, dtype=bool)
    weighed[feature.neutral] = False
    # A pseudo-count keeps every level possible, so no weight is infinite.
    observed = counts[weighed] + pseudo_share * counts[weighed].sum() / weighed.sum() + 1e-12
    shares = np.ones(feature.size)
    shares[weighed] = observed / observed.sum()
    return shares


def same_salt_pairs(
    salts_a: np.ndarray, salts_b: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` pairs drawn uniformly among the pairs whose two records share a salt.

    >>> salts_a, salts_b = np.array([1, 2], np.uint64), np.array([2, 2, 3], np.uint64)
    >>> a, b = same_salt_pairs(salts_a, salts_b, 50, np.random.default_rng(0))
    >>> sorted(set(a.tolist())), sorted(set(b.tolist()))
    ([1], [0, 1])
    """
    order = np.argsort(salts_b, kind="stable")
    ordered = salts_b[order]
    low = np.searchsorted(ordered, salts_a, "left")
    width = np.searchsorted(ordered, salts_a, "right") - low
    if not width.any():
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    # A record of the first side weighs as many pairs as the second side has records of its salt.
    index_a = rng.choice(len(salts_a), size=count, p=width / width.sum())
    offsets = (rng.random(count) * width[index_a]).astype(np.intp)
    return index_a, order[low[index_a] + offsets]


def shared_salt_pairs(
    salts_a: np.ndarray, salts_b: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """About ``count`` pairs drawn uniformly among the pairs that share at least one of several salts.

    Each salt (a column) gets a share of ``count`` in proportion to how many pairs share
    it, and its pairs are drawn with :func:`same_salt_pairs`; a pair sharing two salts
    can be drawn through either (under date parts, such a pair shares the whole date,
    which the caller leaves out anyway).

    >>> a = np.array([[1, 5], [2, 6]], np.uint64); b = np.array([[1, 9], [3, 6]], np.uint64)
    >>> index_a, index_b = shared_salt_pairs(a, b, 40, np.random.default_rng(0))
    >>> sorted({(int(x), int(y)) for x, y in zip(index_a, index_b)})
    [(0, 0), (1, 1)]
    """
    weights = []
    for column in range(salts_a.shape[1]):
        values, counts_a = np.unique(salts_a[:, column], return_counts=True)
        counts_b = np.zeros(len(values), dtype=np.int64)
        present, where = np.unique(salts_b[:, column], return_counts=True)
        found = np.isin(present, values)
        counts_b[np.searchsorted(values, present[found])] = where[found]
        weights.append(float((counts_a * counts_b).sum()))
    total = sum(weights)
    parts_a, parts_b = [np.zeros(0, dtype=np.intp)], [np.zeros(0, dtype=np.intp)]
    for column, weight in enumerate(weights):
        if weight:
            index_a, index_b = same_salt_pairs(
                salts_a[:, column], salts_b[:, column], max(1, round(count * weight / total)), rng
            )
            parts_a.append(index_a)
            parts_b.append(index_b)
    return np.concatenate(parts_a), np.concatenate(parts_b)


def estimate_u(
    levels: np.ndarray,
    features: Sequence[Feature],
    falling: Sequence[int] = (),
    counted: Mapping[int, np.ndarray] | None = None,
) -> tuple[np.ndarray, ...]:
    """Estimate u, per feature level, from random pairs (nearly all non-matches).

    A few pseudo-pairs that disagree on everything (code 0) are added: where random
    pairs are too few to tell, e.g. a salted field when hardly any pair shares a salt,
    u leans towards "non-matches disagree" instead of rating every level alike.

    Args:
        levels: feature levels of random pairs.
        features: what is weighed.
        falling: features whose u is made to fall with closer agreement (:func:`_falling`):
            the CLK fallback, whose top levels random true matches can dominate.
        counted: per feature (by index), the counts of its levels that the random pairs
            are expected to hold, counted over all pairs instead of sampled (a date's:
            :func:`linkage.matching.compare.date_level_counts`); they replace that
            feature's counts among ``levels``.
    """
    prior = np.zeros((_U_PRIOR_PAIRS, len(features)), dtype=levels.dtype)
    u = _level_frequencies(
        np.concatenate([levels, prior]), np.ones(len(levels) + len(prior)), features, _U_PSEUDO_SHARE
    )
    if counted:
        u = tuple(
            _shares(counted[index] + np.bincount(prior[:, index], minlength=feature.size), feature, _U_PSEUDO_SHARE)
            if index in counted
            else shares
            for index, (shares, feature) in enumerate(zip(u, features, strict=True))
        )
    return tuple(
        _falling(shares, feature) if index in falling else shares
        for index, (shares, feature) in enumerate(zip(u, features, strict=True))
    )


def _falling(u: np.ndarray, feature: Feature) -> np.ndarray:
    """Make u of a single field's levels fall from level to level (closer agreement, rarer).

    Random pairs hold a few true matches, and among the rare top levels of a noisy filter
    (a diffused CLK) those few can outnumber the non-matches, rating the closest agreement
    as likelier among non-matches than the next one down. A non-match is never likelier
    to agree more closely: each level's u is capped at the one below, then all renormalised.
    Groups, whose codes are not ordered, are left as they are.

    >>> from linkage.matching.compare import Feature
    >>> _falling(np.array([0.9, 0.09, 0.0, 0.01, 1.0]), Feature("clk", (0,), (5,), 4)).round(3).tolist()
    [0.909, 0.091, 0.0, 0.0, 1.0]
    """
    if len(feature.members) != 1:
        return u
    out = u.copy()
    weighed = [code for code in range(feature.size) if code != feature.neutral]
    for below, above in itertools.pairwise(weighed):
        out[above] = min(out[above], out[below])
    out[weighed] /= out[weighed].sum()
    return out


@dataclass(frozen=True)
class FellegiSunterModel:
    """Fitted m and u per feature level, and the prior chance that two records match.

    Attributes:
        features: what is weighed.
        m: per feature, P(level | match); 1 at the neutral level.
        u: per feature, P(level | non-match); 1 at the neutral level.
        prior: chance that a pair of records (of all pairs) is a match.
        iterations: EM iterations run.
        term_frequencies: adjust exact name agreement for how common the name is
            (:func:`tf_adjustments`). A frozen model (:mod:`linkage.matching.frozen`) does
            not: the shares are counted over everyone linked, so with them one person's
            records would move the weights of every pair that shares their names.
    """

    features: tuple[Feature, ...]
    m: tuple[np.ndarray, ...]
    u: tuple[np.ndarray, ...]
    prior: float
    iterations: int
    term_frequencies: bool = True

    def level_weights(self) -> tuple[np.ndarray, ...]:
        """log2(m/u) per feature level (0 at the neutral level)."""
        return tuple(np.log2(m / u) for m, u in zip(self.m, self.u, strict=True))

    def match_weights(self, levels: np.ndarray) -> np.ndarray:
        """Sum of level weights per pair: log2 of the Bayes factor for "same person"."""
        total = np.zeros(len(levels))
        for column, weights in enumerate(self.level_weights()):
            total += weights[levels[:, column]]
        return total

    def probabilities(self, levels: np.ndarray, prior: float | None = None) -> np.ndarray:
        """Posterior probability that each pair is a match."""
        return self.probabilities_of(self.match_weights(levels), prior)

    def probabilities_of(self, weights: np.ndarray, prior: float | None = None) -> np.ndarray:
        """Posterior probability of a match for given match weights."""
        return _posterior(weights, self.prior if prior is None else prior)


TF_KINDS = frozenset({"name"})
_TF_CLIP = 8.0


def tf_fields(comparisons: Sequence[Comparison]) -> list[int]:
    """Positions of the comparisons whose exact agreement is adjusted for the value's share.

    Name fields, unless salted. A salted filter says which value a record holds only
    within its salt, so a share could only be counted there, among the few hundred
    records of one year of birth, where the pair's own two records outweigh how common
    the name is: a name held by no one else in the lists had a share of 2 in some 340
    within its year (70 times its share in the lists), and its agreement weighed about
    2 bits less than an average name's instead of about 4 more. On the realistic synth (seed 7)
    the hardened model's kept pairs at match probabilities 0.02 to 0.47 were two thirds
    true matches against a mean probability of 0.19, and the `auto` threshold left them
    out. A salted field's agreement now weighs its u among pairs sharing the salt, the
    same for every name, as a frozen model's does for every field.

    >>> from linkage.protocol import FieldSpec
    >>> name = FieldSpec("given", "name", 64, 10)
    >>> tf_fields([Comparison(name, ("no", "yes")), Comparison(name, ("no", "yes"), salted=True)])
    [0]
    """
    return [
        position
        for position, comparison in enumerate(comparisons)
        if comparison.field.kind in TF_KINDS and not comparison.salted
    ]


def value_fingerprints(filters: np.ndarray) -> np.ndarray:
    """A 64-bit fingerprint of each packed filter (equal filters, equal fingerprints).

    Args:
        filters: packed filters, shape (records, words), uint64.
    """
    out = np.zeros(len(filters), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in range(filters.shape[1]):
            out = (out ^ filters[:, column]) * np.uint64(0x100000001B3) + np.uint64(column + 1)
    return out


def term_frequencies(fingerprints: Sequence[np.ndarray]) -> list[np.ndarray]:
    """For every record of every party, the share of all records with the same value.

    >>> [f.tolist() for f in term_frequencies([np.array([1, 2], np.uint64), np.array([1, 1], np.uint64)])]
    [[0.75, 0.25], [0.75, 0.75]]
    """
    total = sum(len(party) for party in fingerprints)
    return [counts / total for counts in _counts_of(fingerprints)]


def _counts_of(keys: Sequence[np.ndarray]) -> list[np.ndarray]:
    """For every key of every party, how many keys of all parties equal it."""
    distinct, counts = np.unique(np.concatenate(keys), return_counts=True)
    return [counts[np.searchsorted(distinct, party)] for party in keys]


def tf_adjustments(
    model: FellegiSunterModel,
    comparisons: Sequence[Comparison],
    levels: np.ndarray,
    frequencies_a: Sequence[np.ndarray],
    frequencies_b: Sequence[np.ndarray],
) -> np.ndarray:
    """Term-frequency adjustment of each pair's weight, as Splink makes it for names.

    Agreeing on a rare name is stronger evidence than agreeing on a common one: where a
    name field agrees exactly, its weight log2(m/u) becomes log2(m/f), f the share of
    records with that value (the larger of the two sides'), clipped to +-8 bits. Salted
    fields are not adjusted (:func:`tf_fields`).

    Args:
        model: the fitted model (its u of the exact level).
        comparisons: the field comparisons.
        levels: field levels of the pairs, shape (pairs, fields).
        frequencies_a: per field of :func:`tf_fields`, the value share of each pair's first record.
        frequencies_b: the same for the second record.
    """
    out = np.zeros(len(levels))
    if not model.term_frequencies:
        return out
    for column, position in enumerate(tf_fields(comparisons)):
        comparison = comparisons[position]
        feature = next((i for i, f in enumerate(model.features) if f.members == (position,)), None)
        if feature is not None:
            top = comparison.levels - 1
            exact = levels[:, position] == top
            share = np.maximum(frequencies_a[column], frequencies_b[column])
            adjustment = np.clip(np.log2(model.u[feature][top] / share), -_TF_CLIP, _TF_CLIP)
            out += np.where(exact, adjustment, 0.0)
    return out


def _posterior(weights: np.ndarray, prior: float) -> np.ndarray:
    log_odds = weights + np.log2(prior / (1.0 - prior))
    posterior: np.ndarray = 1.0 / (1.0 + np.exp2(-np.clip(log_odds, -60, 60)))
    return posterior


def fit_em(
    patterns: np.ndarray,
    counts: np.ndarray,
    features: Sequence[Feature],
    u: tuple[np.ndarray, ...],
    *,
    total_pairs: int,
    max_iterations: int = 200,
    tolerance: float = 1e-7,
) -> FellegiSunterModel:
    """Estimate m and the match prior by EM over the candidates, with u held fixed.

    u comes from random pairs, so it describes all pairs; the prior is therefore the
    chance that two records of all ``total_pairs`` match, with every pair that blocking
    did not propose counted as a non-match. (Fitting the prior among the candidates
    instead would be inconsistent with u: blocking proposes pairs because they agree on
    something, and every candidate would look like a match.)

    Args:
        patterns: distinct level patterns of the candidates, shape (patterns, fields).
        counts: how many candidate pairs have each pattern.
        features: what is weighed.
        u: non-match level probabilities, from :func:`estimate_u`.
        total_pairs: the number of pairs blocking chose from (product of party sizes).
        max_iterations: stop after this many iterations.
        tolerance: stop when no m moves by more than this and the prior by less than
            this share of itself.

    Returns:
        The fitted model.
    """
    counts = counts.astype(np.float64)
    # Start from "matches mostly agree": m rises geometrically towards the top level.
    m = tuple(_initial_m(feature) for feature in features)
    prior = min(0.5, counts.sum() / 10 / total_pairs)
    iteration = 0
    for iteration in range(1, max_iterations + 1):
        model = FellegiSunterModel(tuple(features), m, u, prior, iteration)
        weighted = counts * model.probabilities(patterns)
        new_m = _level_frequencies(patterns, weighted, features, _M_PSEUDO_SHARE)
        new_prior = float(np.clip(weighted.sum() / total_pairs, 1e-12, 0.5))
        change = max(
            abs(new_prior - prior) / prior, *(float(np.abs(a - b).max()) for a, b in zip(new_m, m, strict=True))
        )
        m, prior = new_m, new_prior
        if change < tolerance:
            break
    return FellegiSunterModel(tuple(features), m, u, prior, iteration)


def _initial_m(feature: Feature) -> np.ndarray:
    """Start from "matches mostly agree": m grows with each member's level."""
    codes = np.arange(feature.size)
    score = np.zeros(feature.size)
    for radix in reversed(feature.radices):
        level = codes % radix
        score += np.where(level == radix - 1, 0.5, level / max(radix - 2, 1))  # the top code is "missing"
        codes //= radix
    m = np.exp(3.0 * score)
    m[feature.neutral] = 0.0
    m /= m.sum()
    m[feature.neutral] = 1.0
    return m


def fit_em_by_rule(
    patterns: np.ndarray,
    counts: np.ndarray,
    sessions: Sequence[tuple[np.ndarray, np.ndarray, frozenset[str]]],
    features: Sequence[Feature],
    u: tuple[np.ndarray, ...],
    *,
    total_pairs: int,
) -> FellegiSunterModel:
    """Estimate m one blocking rule at a time, as Splink does, then the prior over all pairs.

    Candidates proposed by a rule agree on that rule's fields by construction, so within
    one rule's candidates those fields say nothing about matching: each rule's session
    fits m only for the features that do not use its fields, and a feature's m is the
    average over the sessions where it was free. A single EM over all candidates can
    instead settle on "agrees on the name" as the match class when namesakes are common.

    Args:
        patterns: distinct level patterns of all candidates, shape (patterns, features).
        counts: how many candidates have each pattern.
        sessions: per blocking rule, its candidates' distinct patterns, their counts, and
            the fields the rule agrees on.
        features: what is weighed.
        u: non-match level probabilities, from :func:`estimate_u`.
        total_pairs: the number of pairs blocking chose from.

    Returns:
        The fitted model (falls back to one EM over all candidates for a feature that no
        session leaves free).
    """
    overall = fit_em(patterns, counts, features, u, total_pairs=total_pairs)
    fitted_m: list[list[np.ndarray]] = [[] for _ in features]
    for session_patterns, session_counts, fields in sessions:
        free = [i for i, f in enumerate(features) if not set(f.name.split("+")) & fields]
        if not free or session_counts.sum() < _MIN_SESSION_PAIRS:
            continue
        sub_features = [features[i] for i in free]
        fitted = fit_em(
            session_patterns[:, free],
            session_counts,
            sub_features,
            tuple(u[i] for i in free),
            total_pairs=int(session_counts.sum()),
        )
        for position, i in enumerate(free):
            # A session in which a feature is nearly always neutral (the CLK fallback,
            # among pairs blocked on a date, which share a salt) says nothing of its m.
            weighed = session_counts[session_patterns[:, i] != features[i].neutral].sum()
            if weighed >= _MIN_SESSION_PAIRS:
                fitted_m[i].append(fitted.m[position])
    m = tuple(_robust_m(fitted_m[i], features[i]) if fitted_m[i] else overall.m[i] for i in range(len(features)))
    model = FellegiSunterModel(tuple(features), m, u, overall.prior, overall.iterations)
    prior = fit_prior(model, patterns, counts, total_pairs)
    return FellegiSunterModel(tuple(features), m, u, prior, overall.iterations)


def _robust_m(sessions: Sequence[np.ndarray], feature: Feature) -> np.ndarray:
    """A feature's m from the sessions that left it free: their median per level, renormalised.

    One session can mistake a group of non-matches for matches: pairs blocked on an
    address are mostly people of one household, who share a surname and an address but
    neither a given name nor a birth date, and that session's EM may take them for the
    match class, rating a different given name as likely among matches. A mean lets that
    one session drag every feature it left free; the median of three or more does not.

    >>> from linkage.matching.compare import Feature
    >>> f = Feature("sex", (0,), (3,), 2)
    >>> _robust_m([np.array([0.1, 0.9, 1.0]), np.array([0.12, 0.88, 1.0]), np.array([0.6, 0.4, 1.0])], f).round(3)
    array([0.12, 0.88, 1.  ])
    """
    m: np.ndarray = np.median(np.stack(sessions), axis=0)
    weighed = np.ones(feature.size, dtype=bool)
    weighed[feature.neutral] = False
    m[weighed] /= m[weighed].sum()
    m[feature.neutral] = 1.0
    return m


def fit_prior(model: FellegiSunterModel, patterns: np.ndarray, counts: np.ndarray, total_pairs: int) -> float:
    """The match prior of one pair of parties (``total_pairs`` pairs), m and u fixed."""
    weights = model.match_weights(patterns)
    counts = counts.astype(np.float64)
    prior = model.prior
    for _ in range(500):
        new_prior = float(np.clip((counts * _posterior(weights, prior)).sum() / total_pairs, 1e-12, 0.5))
        if abs(new_prior - prior) <= 1e-9 * prior:
            break
        prior = new_prior
    return prior
