"""Compare candidate pairs field by field and weigh the evidence (Fellegi-Sunter).

Every identifier field has its own encoding, so a pair is compared field by field:
Dice similarity of the field Bloom filters, bucketed into agreement levels, or equality
of keyed hashes (a date's day, month and year are compared separately, so that a swapped
day and month is its own level). A missing value on either side is its own, neutral level.

The weight of each level is log2(m/u): m, the chance of that level among true matches,
is estimated by expectation-maximisation over the candidate pairs, without labels; u, its
chance among non-matches, from random pairs, which are almost all non-matches. This is
the approach of Splink and of Fellegi and Sunter (1969), applied to encodings.

Under a salted protocol (``encoding.hardening.salt``), the filters of every field but the
salt field hash their tokens together with the salt (say, the year of birth). Two filters
are then only comparable when the two records share the salt: elsewhere a salted field
is neutral, and its u is estimated among random pairs that share the salt. The salt's own
agreement is weighed once, by the salt field's comparison, and never again through every
salted field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from linkage.protocol import FieldSpec, Protocol

__all__ = [
    "Comparison",
    "Feature",
    "FellegiSunterModel",
    "PartyFeatures",
    "choose_threshold",
    "compare_pairs",
    "comparisons_for",
    "decode_patterns",
    "encode_patterns",
    "estimate_u",
    "feature_levels",
    "features_for",
    "fit_em",
    "fit_em_by_rule",
    "fit_prior",
    "record_salts",
    "salt_keys",
    "term_frequencies",
    "tf_adjustments",
    "value_fingerprints",
]

_DICE_LEVELS = {
    "name": (0.95, 0.85, 0.7, 0.5),
    "text": (0.95, 0.8, 0.6),
    "code": (0.95, 0.7, 0.45),
}
_U_PSEUDO_SHARE = 1e-6
_U_PRIOR_PAIRS = 10
# m comes from a few thousand expected matches: a larger pseudo-count keeps a level never
# seen among them (a disagreeing sex, say) from counting as proof of a non-match.
_M_PSEUDO_SHARE = 1e-3


@dataclass(frozen=True)
class Comparison:
    """How one field is compared: its agreement levels, best last.

    Attributes:
        field: the identifier field.
        labels: a name per level, level 0 (disagree) first.
        dice_thresholds: for Bloom-filter fields, the Dice similarity each level above 0
            needs, from the highest level down.
        salted: its filter's tokens are salted, so it is compared only within a salt.
        salt_part: for the salt field, the part of its value that salts (``"whole"``,
            or a date's ``"year"`` or ``"month_day"``); ``None`` for every other field.
        taps: how many bits of the filter as built each bit of the hardened filter XORs
            (folding: 2, diffusion: its taps, both: the product); 1 when unmixed. The
            Dice of such filters is mapped back to the built filters' scale.
    """

    field: FieldSpec
    labels: tuple[str, ...]
    dice_thresholds: tuple[float, ...] = ()
    salted: bool = False
    salt_part: str | None = None
    taps: int = 1

    @property
    def levels(self) -> int:
        """Number of levels, not counting "missing"."""
        return len(self.labels)

    @property
    def missing(self) -> int:
        """The level code of a missing value."""
        return len(self.labels)


def comparisons_for(protocol: Protocol) -> tuple[Comparison, ...]:
    """The comparison of every identifier field of a protocol, in field order."""
    hardening = protocol.hardening
    salt_field, salt_transform = hardening.salt or (None, None)
    salts_filters = salt_field is not None and hardening.applies_to("fields")
    taps = (2 if hardening.xor_fold else 1) * (hardening.diffusion or 1) if hardening.applies_to("fields") else 1
    if hardening.balance:
        # A balanced filter has half its bits set whatever the value: the built filter's
        # bit share, which the mapping needs, is lost.
        taps = 1
    out = []
    for spec in protocol.fields:
        salt_part = (salt_transform or "whole") if spec.name == salt_field else None
        if spec.kind == "date":
            labels = ("different", "two of three parts", "day and month swapped", "exact")
            out.append(Comparison(spec, labels, salt_part=salt_part))
        elif spec.kind == "category":
            out.append(Comparison(spec, ("different", "exact"), salt_part=salt_part))
        else:
            thresholds = _DICE_LEVELS[spec.kind]
            labels = ("different", *(f"dice >= {t}" for t in reversed(thresholds)))
            salted = salts_filters and spec.name != salt_field
            out.append(Comparison(spec, labels, thresholds, salted=salted, taps=taps))
    return tuple(out)


def salt_keys(hashes: np.ndarray, part: str) -> np.ndarray:
    """Per record, a key that two records share exactly when they share the salt (0: no salt).

    Args:
        hashes: the salt field's keyed hashes: one column for a category; day, month and
            year for a date (0 where the value is missing).
        part: ``"whole"`` for a category; ``"year"`` or ``"month_day"`` for a date (as the
            encoder cuts the salt from the value; the protocol allows no whole date).

    >>> int(salt_keys(np.array([[3, 7, 1984]], np.uint32), "year")[0])
    1984
    >>> a, b = salt_keys(np.array([[3, 7, 1984], [7, 3, 1990]], np.uint32), "month_day")
    >>> bool(a == b)
    True
    """
    if hashes.ndim == 1:
        return hashes.astype(np.uint64)
    day, month, year = (hashes[:, i].astype(np.uint64) for i in range(3))
    if part == "year":
        return year
    # Unordered, as the encoder salts with the sorted day and month.
    return (np.minimum(day, month) << np.uint64(32)) | np.maximum(day, month)


def record_salts(records: np.ndarray, comparisons: Sequence[Comparison]) -> np.ndarray:
    """Each record's salt key (:func:`salt_keys`), read from its salt field alone; all 0 when unsalted."""
    salt = next((c for c in comparisons if c.salt_part is not None), None)
    if salt is None:
        return np.zeros(len(records), dtype=np.uint64)
    hashes = np.asarray(records[salt.field.name]).reshape(len(records), -1)
    return salt_keys(hashes if hashes.shape[1] > 1 else hashes[:, 0], salt.salt_part)  # type: ignore[arg-type]


@dataclass(frozen=True)
class PartyFeatures:
    """One party's encodings, laid out for fast comparison.

    Every Bloom-filter field of a record sits in one row of uint64 words, so a pair's
    filters are gathered with one index operation; hashes (dates, categories) likewise.

    Attributes:
        words: packed Bloom filters of all filter fields, side by side, shape (records, words).
        starts: first word of each filter field within a row.
        popcounts: bits set per record and filter field, shape (records, filter fields).
        hashes: hashes of the date and category fields, side by side, shape (records, columns).
        hash_starts: first column of each hashed field within ``hashes``.
        salts: per record, its salt key (:func:`salt_keys`); all 0 when nothing is salted.
    """

    words: np.ndarray
    starts: np.ndarray
    popcounts: np.ndarray
    hashes: np.ndarray
    hash_starts: tuple[int, ...]
    salts: np.ndarray

    @classmethod
    def from_records(cls, records: np.ndarray, comparisons: Sequence[Comparison]) -> PartyFeatures:
        """Extract contiguous field arrays from an encodings file's records."""
        count = len(records)
        filters, hashes, starts, hash_starts = [], [], [], []
        width = hash_width = 0
        for comparison in comparisons:
            column = np.ascontiguousarray(records[comparison.field.name])
            if comparison.dice_thresholds:
                words = column.view(np.uint64).reshape(count, -1)
                starts.append(width)
                width += words.shape[1]
                filters.append(words)
            else:
                values = column.reshape(count, -1).astype(np.uint32)
                hash_starts.append(hash_width)
                hash_width += values.shape[1]
                hashes.append(values)
        words = np.concatenate(filters, axis=1) if filters else np.zeros((count, 0), dtype=np.uint64)
        start_array = np.asarray(starts, dtype=np.intp)
        popcounts = (
            np.add.reduceat(np.bitwise_count(words), start_array, axis=1, dtype=np.int32)
            if filters
            else np.zeros((count, 0), dtype=np.int32)
        )
        return cls(
            words=words,
            starts=start_array,
            popcounts=popcounts,
            hashes=np.concatenate(hashes, axis=1) if hashes else np.zeros((count, 0), dtype=np.uint32),
            hash_starts=tuple(hash_starts),
            salts=record_salts(records, comparisons),
        )


def _unmixed_dice(
    dice: np.ndarray, counts_a: np.ndarray, counts_b: np.ndarray, bits: np.ndarray, taps: int
) -> np.ndarray:
    """Estimate the Dice of the filters as built, from filters whose bits XOR ``taps`` built bits each.

    With built filters of bit shares p_a, p_b differing in a share h of their bits, a bit
    XORing t independent built bits is set with chance (1 - (1 - 2p)^t) / 2, and differs
    between the two with chance (1 - (1 - 2h)^t) / 2. Inverting both from the bits set and
    shared gives h and p, and Dice = 1 - h / (p_a + p_b), on the scale the levels use.

    >>> built = np.array([0.8]); p = np.array([0.2])
    >>> share = (1 - (1 - 2 * p) ** 3) / 2; differ = (1 - (1 - 2 * (2 * p * (1 - built))) ** 3) / 2
    >>> seen = 1 - differ / (2 * share)
    >>> np.round(_unmixed_dice(seen, share * 256, share * 256, np.array([256]), 3), 6).tolist()
    [0.8]
    """
    share_a, share_b = counts_a / bits, counts_b / bits
    differ = np.clip((share_a + share_b) * (1 - dice), 0.0, 0.5)
    built_differ = (1 - (1 - 2 * differ) ** (1 / taps)) / 2
    built_a = (1 - np.clip(1 - 2 * share_a, 0.0, 1.0) ** (1 / taps)) / 2
    built_b = (1 - np.clip(1 - 2 * share_b, 0.0, 1.0) ** (1 / taps)) / 2
    return np.clip(1 - built_differ / np.maximum(built_a + built_b, 1e-12), 0.0, 1.0)


def _dice_levels(dice: np.ndarray, missing: np.ndarray, comparison: Comparison) -> np.ndarray:
    levels = np.zeros(len(dice), dtype=np.int8)
    for level, threshold in enumerate(reversed(comparison.dice_thresholds), start=1):
        levels[dice >= threshold] = level
    levels[missing] = comparison.missing
    return levels


def _date_levels(a: np.ndarray, b: np.ndarray, comparison: Comparison) -> np.ndarray:
    same = a == b
    parts_equal = same.sum(axis=1)
    swapped = (a[:, 0] == b[:, 1]) & (a[:, 1] == b[:, 0]) & same[:, 2]
    levels = np.zeros(len(a), dtype=np.int8)
    levels[parts_equal >= 2] = 1
    levels[swapped] = 2
    levels[parts_equal == 3] = 3
    levels[(a[:, 2] == 0) | (b[:, 2] == 0)] = comparison.missing
    return levels


COMPARE_BATCH = 65_536


def compare_pairs(
    features_a: PartyFeatures,
    features_b: PartyFeatures,
    index_a: np.ndarray,
    index_b: np.ndarray,
    comparisons: Sequence[Comparison],
) -> np.ndarray:
    """Agreement level of every field for every pair.

    Pairs are compared in batches so that the gathered filters stay in the CPU cache. A
    salted field of a pair whose records have different salts is missing: its filters
    were built with different salts and say nothing about the pair.

    Returns:
        int8 array of shape (pairs, fields); ``comparison.missing`` where either side is missing.
    """
    out = np.empty((len(index_a), len(comparisons)), dtype=np.int8)
    for start in range(0, len(index_a), COMPARE_BATCH):
        stop = start + COMPARE_BATCH
        out[start:stop] = _compare_batch(features_a, features_b, index_a[start:stop], index_b[start:stop], comparisons)
    return out


def _compare_batch(
    features_a: PartyFeatures,
    features_b: PartyFeatures,
    index_a: np.ndarray,
    index_b: np.ndarray,
    comparisons: Sequence[Comparison],
) -> np.ndarray:
    out = np.empty((len(index_a), len(comparisons)), dtype=np.int8)
    if features_a.words.shape[1]:
        shared = np.bitwise_count(features_a.words[index_a] & features_b.words[index_b])
        intersections = np.add.reduceat(shared, features_a.starts, axis=1, dtype=np.int32)
        counts_a = features_a.popcounts[index_a]
        counts_b = features_b.popcounts[index_b]
        totals = counts_a + counts_b
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = np.where(totals > 0, 2.0 * intersections / totals, 0.0)
            bits = np.diff(np.append(features_a.starts, features_a.words.shape[1])) * 64
            for column, comparison in enumerate(c for c in comparisons if c.dice_thresholds):
                if comparison.taps > 1:
                    dice[:, column] = _unmixed_dice(
                        dice[:, column], counts_a[:, column], counts_b[:, column], bits[column], comparison.taps
                    )
        missing = (counts_a == 0) | (counts_b == 0)
    hashes_a = features_a.hashes[index_a]
    hashes_b = features_b.hashes[index_b]
    filter_column = hash_column = 0
    for column, comparison in enumerate(comparisons):
        if comparison.dice_thresholds:
            out[:, column] = _dice_levels(dice[:, filter_column], missing[:, filter_column], comparison)
            filter_column += 1
            continue
        start = features_a.hash_starts[hash_column]
        hash_column += 1
        if comparison.field.kind == "date":
            out[:, column] = _date_levels(hashes_a[:, start : start + 3], hashes_b[:, start : start + 3], comparison)
        else:
            a, b = hashes_a[:, start], hashes_b[:, start]
            levels = (a == b).astype(np.int8)
            levels[(a == 0) | (b == 0)] = comparison.missing
            out[:, column] = levels
    salted = [column for column, comparison in enumerate(comparisons) if comparison.salted]
    if salted:
        apart = features_a.salts[index_a] != features_b.salts[index_b]
        for column in salted:
            out[apart, column] = comparisons[column].missing
    return out


@dataclass(frozen=True)
class Feature:
    """What the model weighs: one field, or a group of fields that vary together.

    Fields of a group (an address, its city and its postcode all change when a person
    moves) are not independent, so the model gives the group one joint level per
    combination of its members' levels instead of adding up their separate weights.

    Attributes:
        name: the field's name, or the members' names joined by ``+``.
        members: positions of the member fields among the comparisons.
        radices: number of codes of each member (its levels plus missing).
        neutral: the code that carries no evidence: a single field's missing value, or a
            group's code with every member missing (its last code). Every other code of
            a group, partly missing ones included, is weighed.
    """

    name: str
    members: tuple[int, ...]
    radices: tuple[int, ...]
    neutral: int

    @property
    def size(self) -> int:
        """Number of level codes of this feature."""
        return int(np.prod(self.radices))


def features_for(comparisons: Sequence[Comparison], groups: Sequence[Sequence[str]] = ()) -> tuple[Feature, ...]:
    """One feature per field, except fields named together in a group, which share one.

    >>> from linkage.protocol import FieldSpec
    >>> c = [Comparison(FieldSpec(n, "category", 1, 1), ("different", "exact")) for n in "abc"]
    >>> [(f.name, f.size, f.neutral) for f in features_for(c, [["b", "c"]])]
    [('a', 3, 2), ('b+c', 9, 8)]
    """
    position = {c.field.name: i for i, c in enumerate(comparisons)}
    grouped = {name for group in groups for name in group}
    out = []
    for i, comparison in enumerate(comparisons):
        if comparison.field.name not in grouped:
            out.append(Feature(comparison.field.name, (i,), (comparison.levels + 1,), comparison.missing))
    for group in groups:
        members = tuple(position[name] for name in group)
        radices = tuple(comparisons[m].levels + 1 for m in members)
        size = int(np.prod(radices))
        out.append(Feature("+".join(group), members, radices, size - 1))
    return tuple(out)


def feature_levels(levels: np.ndarray, features: Sequence[Feature]) -> np.ndarray:
    """Per pair, the level code of every feature (members' levels in mixed radix)."""
    out = np.zeros((len(levels), len(features)), dtype=np.int32)
    for column, feature in enumerate(features):
        code = np.zeros(len(levels), dtype=np.int32)
        for member, radix in zip(feature.members, feature.radices, strict=True):
            code = code * radix + levels[:, member]
        out[:, column] = code
    return out


def encode_patterns(levels: np.ndarray, features: Sequence[Feature]) -> np.ndarray:
    """One int64 code per pair for its whole pattern of feature levels (mixed radix).

    >>> f = Feature("sex", (0,), (3,), 2)
    >>> encode_patterns(np.array([[0, 1], [2, 2]]), [f, f])
    array([1, 8])
    """
    codes = np.zeros(len(levels), dtype=np.int64)
    for column, feature in enumerate(features):
        codes = codes * feature.size + levels[:, column]
    return codes


def decode_patterns(codes: np.ndarray, features: Sequence[Feature]) -> np.ndarray:
    """Inverse of :func:`encode_patterns`."""
    out = np.empty((len(codes), len(features)), dtype=np.int32)
    rest = codes.astype(np.int64)
    for column in range(len(features) - 1, -1, -1):
        out[:, column] = rest % features[column].size
        rest //= features[column].size
    return out


def _level_frequencies(
    levels: np.ndarray, weights: np.ndarray, features: Sequence[Feature], pseudo_share: float
) -> tuple[np.ndarray, ...]:
    """Weighted share of each level per feature, the neutral level excluded (left at 1)."""
    out = []
    for column, feature in enumerate(features):
        counts = np.bincount(levels[:, column], weights=weights, minlength=feature.size)
        weighed = np.ones(feature.size, dtype=bool)
        weighed[feature.neutral] = False
        # A pseudo-count keeps every level possible, so no weight is infinite.
        observed = counts[weighed] + pseudo_share * counts[weighed].sum() / weighed.sum() + 1e-12
        shares = np.ones(feature.size)
        shares[weighed] = observed / observed.sum()
        out.append(shares)
    return tuple(out)


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


def estimate_u(levels: np.ndarray, features: Sequence[Feature]) -> tuple[np.ndarray, ...]:
    """Estimate u, per feature level, from random pairs (nearly all non-matches).

    A few pseudo-pairs that disagree on everything (code 0) are added: where random
    pairs are too few to tell, e.g. a salted field when hardly any pair shares a salt,
    u leans towards "non-matches disagree" instead of rating every level alike.
    """
    prior = np.zeros((_U_PRIOR_PAIRS, len(features)), dtype=levels.dtype)
    return _level_frequencies(
        np.concatenate([levels, prior]), np.ones(len(levels) + len(prior)), features, _U_PSEUDO_SHARE
    )


@dataclass(frozen=True)
class FellegiSunterModel:
    """Fitted m and u per feature level, and the prior chance that two records match.

    Attributes:
        features: what is weighed.
        m: per feature, P(level | match); 1 at the neutral level.
        u: per feature, P(level | non-match); 1 at the neutral level.
        prior: chance that a pair of records (of all pairs) is a match.
        iterations: EM iterations run.
    """

    features: tuple[Feature, ...]
    m: tuple[np.ndarray, ...]
    u: tuple[np.ndarray, ...]
    prior: float
    iterations: int

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


def term_frequencies(fingerprints: Sequence[np.ndarray], salts: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """For every record of every party, the share of all records with the same value.

    Under a salt, the share among the records with the same salt, since a salted field is
    only ever compared within its salt.

    >>> [f.tolist() for f in term_frequencies([np.array([1, 2], np.uint64), np.array([1, 1], np.uint64)])]
    [[0.75, 0.25], [0.75, 0.75]]
    >>> salts = [np.array([7, 7], np.uint64), np.array([8, 8], np.uint64)]
    >>> [f.tolist() for f in term_frequencies([np.array([1, 2], np.uint64), np.array([1, 1], np.uint64)], salts)]
    [[0.5, 0.5], [1.0, 1.0]]
    """
    if salts is None:
        total = sum(len(party) for party in fingerprints)
        return [counts / total for counts in _counts_of(fingerprints)]
    with np.errstate(over="ignore"):
        values = [f ^ (s * np.uint64(0x9E3779B97F4A7C15)) for f, s in zip(fingerprints, salts, strict=True)]
    value_counts = _counts_of(values)
    salt_counts = _counts_of(salts)
    return [v / s for v, s in zip(value_counts, salt_counts, strict=True)]


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
    records with that value (the larger of the two sides'), clipped to +-8 bits.

    Args:
        model: the fitted model (its u of the exact level).
        comparisons: the field comparisons.
        levels: field levels of the pairs, shape (pairs, fields).
        frequencies_a: per term-frequency field, the value share of each pair's first record.
        frequencies_b: the same for the second record.
    """
    out = np.zeros(len(levels))
    column = 0
    for position, comparison in enumerate(comparisons):
        if comparison.field.kind not in TF_KINDS:
            continue
        feature = next((i for i, f in enumerate(model.features) if f.members == (position,)), None)
        if feature is not None:
            top = comparison.levels - 1
            exact = levels[:, position] == top
            share = np.maximum(frequencies_a[column], frequencies_b[column])
            adjustment = np.clip(np.log2(model.u[feature][top] / share), -_TF_CLIP, _TF_CLIP)
            out += np.where(exact, adjustment, 0.0)
        column += 1
    return out


def _posterior(weights: np.ndarray, prior: float) -> np.ndarray:
    log_odds = weights + np.log2(prior / (1.0 - prior))
    return 1.0 / (1.0 + np.exp2(-np.clip(log_odds, -60, 60)))


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
    for iteration in range(1, max_iterations + 1):  # noqa: B007 - reported below
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
    sums = [np.zeros_like(m) for m in overall.m]
    sessions_free = [0] * len(features)
    for session_patterns, session_counts, fields in sessions:
        free = [i for i, f in enumerate(features) if not set(f.name.split("+")) & fields]
        if not free or session_counts.sum() < 100:
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
            sums[i] += fitted.m[position]
            sessions_free[i] += 1
    m = tuple(sums[i] / sessions_free[i] if sessions_free[i] else overall.m[i] for i in range(len(features)))
    model = FellegiSunterModel(tuple(features), m, u, overall.prior, overall.iterations)
    prior = fit_prior(model, patterns, counts, total_pairs)
    return FellegiSunterModel(tuple(features), m, u, prior, overall.iterations)


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


def choose_threshold(probabilities: np.ndarray) -> float:
    """The probability threshold that maximises the expected pairwise F1, without labels.

    Under the model, a pair with posterior p is a match with chance p, so accepting every
    pair with p >= t has expected true positives sum(p), false positives sum(1 - p) over
    the accepted pairs and false negatives sum(p) over the rest.

    >>> choose_threshold(np.array([0.99, 0.98, 0.9, 0.2, 0.01]))
    0.9
    """
    if not len(probabilities):
        return 0.5
    ordered = np.sort(probabilities)[::-1]
    true_positives = np.cumsum(ordered)
    false_positives = np.cumsum(1.0 - ordered)
    false_negatives = ordered.sum() - true_positives
    f1 = 2 * true_positives / (2 * true_positives + false_positives + false_negatives)
    best = int(np.argmax(f1))
    return float(ordered[best])
