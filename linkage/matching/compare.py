"""Compare candidate pairs field by field, into agreement levels and pattern codes.

Every identifier field has its own encoding, so a pair is compared field by field:
Dice similarity of the field Bloom filters, bucketed into agreement levels, or equality
of keyed hashes (a date's day, month and year are compared separately, so that a swapped
day and month is its own level). A missing value on either side is its own, neutral level.

Under a salted protocol (``encoding.hardening.salt``), the filters of every field but the
salt field hash their tokens together with the salt (say, the year of birth). Two filters
are then only comparable when the two records share the salt: elsewhere a salted field
is neutral (:mod:`linkage.matching.model` estimates its u among pairs that share the salt).
The salt's own agreement is weighed once, by the salt field's comparison, and never again
through every salted field. Under several salts (``"salt": ["date_of_birth:year",
"date_of_birth:month_day"]``) every salted field has one filter per salt, and a pair is
compared under the first salt its two records share: a mistyped year still leaves the day
and month. With ``"fallback": "clk"``, a pair that shares no salt because one record lacks
the salt field (a date of birth missing on one side) is compared on its unsalted, hardened
record-level CLK instead when its records share a names-only block key
(``surname:soundex+given_name:soundex``) or their CLKs are close (``LACKING_BAR_DICE``);
so is a pair whose two dates share no salt when both hold (``NAMES_BAR_DICE``). A
household member, with another given name and a CLK that shares only a surname and an
address, does not.

The fields' levels are then combined into features (a group of fields that vary together,
such as an address and its postcode, is one feature) and each pair's pattern of feature
levels into one integer code, which is all the model needs to count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from linkage.encodings import PLACEHOLDER_DAY
from linkage.matching.block import rule_spans
from linkage.protocol import BlockingRule, FieldSpec, Protocol

__all__ = [
    "COMPARE_BATCH",
    "Comparison",
    "Feature",
    "PartyFeatures",
    "compare_and_measure",
    "compare_pairs",
    "comparisons_for",
    "date_level_counts",
    "decode_patterns",
    "encode_patterns",
    "feature_levels",
    "features_for",
    "first_shared_salt",
    "record_salts",
    "rejected",
    "salt_keys",
]

# A pair whose two dates share no salt is compared on the CLK fallback when it shares a
# names-only block key and its CLK Dice reaches this. Namesakes with another date and
# address sit at 0.65-0.75 and, compared, were linked; a true pair whose date alone is
# wholly other mostly keeps its address and the rest, and sits above it.
NAMES_BAR_DICE = 0.8
# A pair whose date is missing on one side is compared on the CLK fallback when it shares a
# names-only block key, or when its CLK Dice reaches this. A household member (one surname,
# one address, another given name) sits at 0.7-0.75 and, compared, was linked on the CLK
# alone; so do a third of the true pairs with another given name there (realistic synth,
# seed 11: 40 false and 15 true pairs linked so at 0.7-0.75 shared no names key; at
# 0.75-0.8, 13 false and 8 true).
LACKING_BAR_DICE = 0.75
_DICE_LEVELS = {
    "name": (0.95, 0.85, 0.7, 0.5),
    "text": (0.95, 0.8, 0.6),
    "code": (0.95, 0.7, 0.45),
    # Finer: a balanced or diffused CLK squeezes every pair's Dice towards one half.
    "clk": (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6),
}


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
        copies: a salted filter's number of copies, one per salt.
        fallback: the record-level CLK, compared only for pairs that share no salt: where
            one record lacks the salt field, when the names (``name_keys``) or a close CLK
            vouch for it; where both hold it, when both do.
        salt_parts: for the salt field, the parts of its value that salt, in order
            (``("year", "month_day")``); empty for every other field.
        name_keys: for the CLK fallback, the block key columns of the exact blocking
            rules made of names alone (two or more name fields): a pair whose two dates
            share no salt is compared on the CLK too when it shares one of these keys.
        swapped: one of the protocol's ``swapped_names``: its filters share a key with the
            other's, and a pair whose two names agree only crossed (one record's given
            name with the other's surname) is compared crossed (:func:`_uncrossed`).
        rejects: the rules of the protocol's ``reject_when_different`` that hold the field,
            each as (rule, the highest level that counts as different there: 0, or 1 for
            ``field:partly``); a pair different on every field of a rule is never linked
            (:func:`rejected`).
    """

    field: FieldSpec
    labels: tuple[str, ...]
    dice_thresholds: tuple[float, ...] = ()
    salted: bool = False
    salt_part: str | None = None
    taps: int = 1
    copies: int = 1
    fallback: bool = False
    salt_parts: tuple[str, ...] = ()
    name_keys: tuple[int, ...] = ()
    rejects: tuple[tuple[int, int], ...] = ()
    swapped: bool = False

    @property
    def columns(self) -> tuple[str, ...]:
        """The encodings record columns this comparison reads (a salted filter's copies too)."""
        return tuple(self.field.name if k == 0 else f"{self.field.name}@{k}" for k in range(self.copies))

    @property
    def levels(self) -> int:
        """Number of levels, not counting "missing"."""
        return len(self.labels)

    @property
    def missing(self) -> int:
        """The level code of a missing value."""
        return len(self.labels)


def _taps(protocol: Protocol, target: str) -> int:
    hardening = protocol.hardening
    if not hardening.applies_to(target) or hardening.balance:
        # A balanced filter has half its bits set whatever the value: the built filter's
        # bit share, which the mapping needs, is lost.
        return 1
    return (2 if hardening.xor_fold else 1) * (hardening.diffusion or 1)


def comparisons_for(protocol: Protocol) -> tuple[Comparison, ...]:
    """The comparison of every identifier field of a protocol, in field order (then a CLK fallback)."""
    hardening = protocol.hardening
    salt_field = hardening.salt[0] if hardening.salt else None
    parts = tuple(transform or "whole" for _, transform in hardening.salts)
    salts_filters = hardening.salts_target("fields")
    taps = _taps(protocol, "fields")
    out = []
    for spec in protocol.fields:
        salt_part = parts[0] if spec.name == salt_field else None
        salt_parts = parts if spec.name == salt_field else ()
        rejects = _rejects(protocol, spec.name)
        if spec.kind == "date":
            labels: tuple[str, ...] = ("different", "two of three parts", "day and month swapped", "exact")
            out.append(Comparison(spec, labels, salt_part=salt_part, salt_parts=salt_parts, rejects=rejects))
        elif spec.kind == "category":
            out.append(
                Comparison(spec, ("different", "exact"), salt_part=salt_part, salt_parts=salt_parts, rejects=rejects)
            )
        else:
            thresholds = _DICE_LEVELS[spec.kind]
            labels = ("different", *(f"dice >= {t}" for t in reversed(thresholds)))
            salted = salts_filters and spec.name != salt_field
            copies = len(parts) if salted else 1
            out.append(
                Comparison(
                    spec,
                    labels,
                    thresholds,
                    salted=salted,
                    taps=taps,
                    copies=copies,
                    rejects=rejects,
                    swapped=spec.name in protocol.swapped_names,
                )
            )
    if hardening.fallback == "clk" and parts:
        spec = FieldSpec("clk", "clk", 0, 0, num_bits=protocol.clk_bits)
        thresholds = _DICE_LEVELS["clk"]
        labels = ("different", *(f"dice >= {t}" for t in reversed(thresholds)))
        out.append(
            Comparison(
                spec, labels, thresholds, taps=_taps(protocol, "clk"), fallback=True, name_keys=_name_keys(protocol)
            )
        )
    return tuple(out)


def _rejects(protocol: Protocol, name: str) -> tuple[tuple[int, int], ...]:
    """The ``reject_when_different`` rules that hold a field, with the highest level that counts as different."""
    return tuple(
        (rule, 1 if entry.partly else 0)
        for rule, entries in enumerate(protocol.reject_when_different)
        for entry in entries
        if entry.name == name
    )


def _name_keys(protocol: Protocol) -> tuple[int, ...]:
    """The block key columns of the exact rules made of two or more name fields and nothing else."""
    names = {spec.name for spec in protocol.fields if spec.kind == "name"}
    spans = rule_spans(rule.columns for rule in protocol.blocking)
    return tuple(
        first
        for rule, (first, _) in zip(protocol.blocking, spans, strict=True)
        if isinstance(rule, BlockingRule) and len(rule.fields) >= 2 and rule.fields <= names
    )


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
    """Each record's key of each salt (:func:`salt_keys`), read from its salt field alone.

    Returns:
        uint64, shape (records, salts); no column when unsalted.
    """
    salt = next((c for c in comparisons if c.salt_parts), None)
    if salt is None:
        return np.zeros((len(records), 0), dtype=np.uint64)
    hashes = np.asarray(records[salt.field.name]).reshape(len(records), -1)
    hashes = hashes if hashes.shape[1] > 1 else hashes[:, 0]
    return np.stack([salt_keys(hashes, part) for part in salt.salt_parts], axis=1)


def first_shared_salt(salts_a: np.ndarray, salts_b: np.ndarray) -> np.ndarray:
    """Per pair, the index of the first salt its two records share; -1 where they share none.

    Two records that both lack the salt field share its "no salt" value: the encoder
    salts both with it, so their filters compare.

    >>> a = np.array([[1984, 37], [1984, 37], [0, 0], [0, 0]], np.uint64)
    >>> b = np.array([[1984, 99], [1985, 37], [0, 0], [1984, 37]], np.uint64)
    >>> first_shared_salt(a, b).tolist()
    [0, 1, 0, -1]
    """
    shared = salts_a == salts_b
    if not shared.shape[1]:
        return np.full(len(salts_a), -1, dtype=np.intp)
    return np.where(shared.any(axis=1), np.argmax(shared, axis=1), -1)


@dataclass(frozen=True)
class PartyFeatures:
    """One party's encodings, laid out for fast comparison.

    Every Bloom-filter field of a record sits in one row of uint64 words, so a pair's
    filters are gathered with one index operation; hashes (dates, categories) likewise.

    Attributes:
        words: packed Bloom filters of all filter fields, side by side, shape (records, words).
        starts: first word of each filter within a row (a salted field's copies are filters
            of their own, one after the other).
        popcounts: bits set per record and filter, shape (records, filters).
        hashes: hashes of the date and category fields, side by side, shape (records, columns).
        hash_starts: first column of each hashed field within ``hashes``.
        salts: per record, its key of each salt (:func:`record_salts`), shape (records, salts).
        name_keys: per record, its block keys of the CLK fallback's ``name_keys`` columns.
    """

    words: np.ndarray
    starts: np.ndarray
    popcounts: np.ndarray
    hashes: np.ndarray
    hash_starts: tuple[int, ...]
    salts: np.ndarray
    name_keys: np.ndarray

    @classmethod
    def from_records(cls, records: np.ndarray, comparisons: Sequence[Comparison]) -> PartyFeatures:
        """Extract contiguous field arrays from an encodings file's records."""
        count = len(records)
        filters, hashes, starts, hash_starts = [], [], [], []
        width = hash_width = 0
        for comparison in comparisons:
            if comparison.dice_thresholds:
                for name in comparison.columns:
                    words = np.ascontiguousarray(records[name]).view(np.uint64).reshape(count, -1)
                    starts.append(width)
                    width += words.shape[1]
                    filters.append(words)
            else:
                column = np.ascontiguousarray(records[comparison.field.name])
                values = column.reshape(count, -1).astype(np.uint32)
                hash_starts.append(hash_width)
                hash_width += values.shape[1]
                hashes.append(values)
        words = np.concatenate(filters, axis=1) if filters else np.zeros((count, 0), dtype=np.uint64)
        start_array = np.asarray(starts, dtype=np.intp)
        columns = [column for c in comparisons for column in c.name_keys]
        block = np.asarray(records["block"]).reshape(count, -1) if columns else np.zeros((count, 0), np.uint64)
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
            name_keys=np.ascontiguousarray(block[:, columns], dtype=np.uint64),
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
    # A filter's share of set bits is within binomial noise (1 / sqrt(bits) on 1 - 2 * share)
    # of one half whenever the built filter is well filled: there, the built share cannot be
    # read from it, and inverting the noise made the Dice of a diffused CLK near random.
    floor = 1 / np.sqrt(bits)
    built_a = (1 - np.clip(1 - 2 * share_a, floor, 1.0) ** (1 / taps)) / 2
    built_b = (1 - np.clip(1 - 2 * share_b, floor, 1.0) ** (1 / taps)) / 2
    unmixed: np.ndarray = np.clip(1 - built_differ / np.maximum(built_a + built_b, 1e-12), 0.0, 1.0)
    return unmixed


def _dice_levels(dice: np.ndarray, missing: np.ndarray, comparison: Comparison) -> np.ndarray:
    levels = np.zeros(len(dice), dtype=np.int8)
    for level, threshold in enumerate(reversed(comparison.dice_thresholds), start=1):
        levels[dice >= threshold] = level
    levels[missing] = comparison.missing
    return levels


def _date_levels(a: np.ndarray, b: np.ndarray, comparison: Comparison) -> np.ndarray:
    """Per pair of (day, month, year) hashes: 3 exact, 2 day and month swapped, 1 two parts equal, 0 different.

    A day and month sent as ``PLACEHOLDER_DAY`` are unknown (a protocol's placeholder day,
    such as 1 January for people whose birth day was never recorded), so such a date is
    compared by its year alone: two placeholders of the same year are equal, a placeholder
    and a real date of its year agree on two parts of three (one agency knew the day, the
    other did not; before, such a pair was "different"), and any other pair with a
    placeholder is "different". Before, two members of a refugee family registered on 1
    January of different years agreed on two parts of three, the level of a mistyped year.

    >>> day, month, year, other, unknown = 11, 12, 1982, 1964, PLACEHOLDER_DAY
    >>> a = np.array([[day, month, year], [unknown, unknown, year], [unknown, unknown, year],
    ...               [month, day, year], [unknown, unknown, year], [day, month, other]])
    >>> b = np.array([[day, month, year], [unknown, unknown, year], [unknown, unknown, other],
    ...               [day, month, year], [day, unknown, year], [day, month, year]])
    >>> date = Comparison(FieldSpec("d", "date", 100, 10), ("different", "two parts", "swapped", "exact"))
    >>> _date_levels(a, b, date).tolist()
    [3, 3, 0, 2, 1, 1]
    """
    placeholder_a, placeholder_b = a[:, 0] == PLACEHOLDER_DAY, b[:, 0] == PLACEHOLDER_DAY
    same = a == b
    parts_equal = same.sum(axis=1)
    swapped = (a[:, 0] == b[:, 1]) & (a[:, 1] == b[:, 0]) & same[:, 2]
    levels = np.zeros(len(a), dtype=np.int8)
    levels[parts_equal >= 2] = 1
    levels[swapped] = 2
    levels[parts_equal == 3] = 3
    levels[(placeholder_a | placeholder_b) & ~(placeholder_a & placeholder_b & same[:, 2])] = 0
    # A placeholder against a real date of its year: one agency knew the day, the other did not.
    levels[(placeholder_a != placeholder_b) & same[:, 2]] = 1
    levels[(a[:, 2] == 0) | (b[:, 2] == 0)] = comparison.missing
    return levels


def _equal_keys(a: np.ndarray, b: np.ndarray) -> int:
    """How many pairs (one key of ``a``, one of ``b``) have equal keys.

    >>> _equal_keys(np.array([5, 5, 7]), np.array([5, 9]))
    2
    """
    if not len(a) or not len(b):
        return 0
    _, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    size = int(inverse.max()) + 1
    counts_a = np.bincount(inverse[: len(a)], minlength=size).astype(np.int64)
    counts_b = np.bincount(inverse[len(a) :], minlength=size).astype(np.int64)
    return int(counts_a @ counts_b)


def _factorised(*columns: np.ndarray) -> tuple[list[np.ndarray], int]:
    """The columns as small integer codes, equal values equal codes across all of them, and how many codes."""
    values, inverse = np.unique(np.concatenate(columns), return_inverse=True)
    bounds = np.cumsum([len(column) for column in columns])[:-1]
    return [part.astype(np.int64) for part in np.split(inverse.ravel(), bounds)], max(len(values), 1)


def date_level_counts(a: np.ndarray, b: np.ndarray, comparison: Comparison) -> np.ndarray:
    """How many of all pairs (a record of ``a``, one of ``b``) fall in each level of :func:`_date_levels`.

    Counted from how often each date (and each two of its parts) occurs on either side,
    so every pair is counted without being compared: u of a date's rare levels (exact,
    day and month swapped) from all pairs instead of a few dozen random ones, whose
    count moved the exact level's weight by up to a bit from one draw to the next.

    Args:
        a: (day, month, year) hashes of one party's records, shape (records, 3).
        b: the other party's.
        comparison: the date's comparison.

    Returns:
        int64 counts per level code (``comparison.missing`` last), summing to ``len(a) * len(b)``.

    >>> date = Comparison(FieldSpec("d", "date", 100, 10), ("different", "two parts", "swapped", "exact"))
    >>> a = np.array([[11, 12, 1982], [3, 4, 1990], [0, 0, 0]])
    >>> b = np.array([[11, 12, 1982], [12, 11, 1982], [3, 4, 1991]])
    >>> date_level_counts(a, b, date).tolist()
    [3, 1, 1, 1, 3]
    """
    out = np.zeros(comparison.levels + 1, dtype=np.int64)
    present_a, present_b = a[a[:, 2] != 0], b[b[:, 2] != 0]
    out[comparison.missing] = len(a) * len(b) - len(present_a) * len(present_b)
    held_a, held_b = present_a[:, 0] == PLACEHOLDER_DAY, present_b[:, 0] == PLACEHOLDER_DAY
    real_a, real_b = present_a[~held_a], present_b[~held_b]
    # Days and months share a key (so that a swap shows): one code space for both. Codes are
    # few (31 days, a year per birth year), so the combined keys stay far inside int64.
    (day_a, month_a, day_b, month_b), parts = _factorised(real_a[:, 0], real_a[:, 1], real_b[:, 0], real_b[:, 1])
    (year_a, year_b), years = _factorised(real_a[:, 2], real_b[:, 2])
    exact = _equal_keys((day_a * parts + month_a) * years + year_a, (day_b * parts + month_b) * years + year_b)
    # Two placeholders of one year are equal; a placeholder against any other date differs.
    placeholders = _equal_keys(present_a[held_a][:, 2], present_b[held_b][:, 2])
    # A placeholder against a real date of its year agrees on two parts of three.
    half_known = _equal_keys(present_a[held_a][:, 2], real_b[:, 2]) + _equal_keys(real_a[:, 2], present_b[held_b][:, 2])
    two_parts = (
        _equal_keys(day_a * parts + month_a, day_b * parts + month_b)
        + _equal_keys(day_a * years + year_a, day_b * years + year_b)
        + _equal_keys(month_a * years + year_a, month_b * years + year_b)
    )
    # Swapped day and month in one year; a day equal to its month is the exact date instead.
    swapped = _equal_keys((day_a * parts + month_a) * years + year_a, (month_b * parts + day_b) * years + year_b)
    same_a, same_b = day_a == month_a, day_b == month_b
    swapped -= _equal_keys(day_a[same_a] * years + year_a[same_a], day_b[same_b] * years + year_b[same_b])
    out[3] = exact + placeholders
    out[2] = swapped
    out[1] = two_parts - 3 * exact + half_known
    out[0] = len(present_a) * len(present_b) - out[1:3].sum() - out[3]
    return out


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
    return compare_and_measure(features_a, features_b, index_a, index_b, comparisons)[0]


def compare_and_measure(
    features_a: PartyFeatures,
    features_b: PartyFeatures,
    index_a: np.ndarray,
    index_b: np.ndarray,
    comparisons: Sequence[Comparison],
) -> tuple[np.ndarray, np.ndarray]:
    """The levels of :func:`compare_pairs`, and each pair's similarity: a continuous score.

    The similarity is the sum of the Dice coefficients (on the built filters' scale) of
    the pair's Bloom filters that were compared: a missing or neutral field adds nothing,
    a salted field adds its copy under the pair's shared salt. Two pairs with the same
    levels are equally likely matches to the model; the similarity still says which is
    the closer (:func:`linkage.matching.solve.with_tie_break`). It depends on the pair's
    two records alone.

    Returns:
        The levels, shape (pairs, fields), and the similarities (float64, one per pair).
    """
    out = np.empty((len(index_a), len(comparisons)), dtype=np.int8)
    similarity = np.zeros(len(index_a), dtype=np.float64)
    for start in range(0, len(index_a), COMPARE_BATCH):
        stop = start + COMPARE_BATCH
        out[start:stop], similarity[start:stop] = _compare_batch(
            features_a, features_b, index_a[start:stop], index_b[start:stop], comparisons
        )
    return out, similarity


def _compare_batch(
    features_a: PartyFeatures,
    features_b: PartyFeatures,
    index_a: np.ndarray,
    index_b: np.ndarray,
    comparisons: Sequence[Comparison],
) -> tuple[np.ndarray, np.ndarray]:
    out = np.empty((len(index_a), len(comparisons)), dtype=np.int8)
    # Per field (Bloom filters only), the Dice of the filters the pair is compared on.
    scores = np.zeros((len(index_a), len(comparisons)), dtype=np.float64)
    # Per pair, the salt its filters are compared under (-1: the pair shares none).
    salt = first_shared_salt(features_a.salts[index_a], features_b.salts[index_b])
    rows = np.arange(len(index_a))
    if features_a.words.shape[1]:
        shared = np.bitwise_count(features_a.words[index_a] & features_b.words[index_b])
        intersections = np.add.reduceat(shared, features_a.starts, axis=1, dtype=np.int32)
        counts_a = features_a.popcounts[index_a]
        counts_b = features_b.popcounts[index_b]
        totals = counts_a + counts_b
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = np.where(totals > 0, 2.0 * intersections / totals, 0.0)
            bits = np.diff(np.append(features_a.starts, features_a.words.shape[1])) * 64
            block = 0
            for comparison in (c for c in comparisons if c.dice_thresholds):
                if comparison.taps > 1:
                    for column in range(block, block + comparison.copies):
                        dice[:, column] = _unmixed_dice(
                            dice[:, column], counts_a[:, column], counts_b[:, column], bits[column], comparison.taps
                        )
                block += comparison.copies
        missing = (counts_a == 0) | (counts_b == 0)
    hashes_a = features_a.hashes[index_a]
    hashes_b = features_b.hashes[index_b]
    filter_column = hash_column = 0
    for column, comparison in enumerate(comparisons):
        if comparison.dice_thresholds:
            # A salted field's copy under the pair's shared salt (the first copy if none:
            # it is then set missing below, with every salted field).
            chosen = filter_column + np.maximum(salt, 0) if comparison.copies > 1 else filter_column
            out[:, column] = _dice_levels(dice[rows, chosen], missing[rows, chosen], comparison)
            scores[:, column] = dice[rows, chosen]
            filter_column += comparison.copies
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
    swapped = [column for column, c in enumerate(comparisons) if c.swapped]
    if len(swapped) == 2:
        _uncrossed(features_a, features_b, index_a, index_b, comparisons, swapped, salt, out, scores)
    apart = salt < 0
    if any(c.fallback for c in comparisons):
        # The CLK stands in where a record lacks the salt field. Where both hold it and
        # still share no salt, the dates disagree wholly: mostly members of one household,
        # whose CLKs share a surname and an address, and who mostly differ in their given
        # names. So there the CLK stands in only for pairs that share a names-only block key
        # and are close. Where a record lacks the date, for a pair that shares such a key
        # or whose CLK reaches LACKING_BAR_DICE.
        lacking = (features_a.salts[index_a, 0] == 0) | (features_b.salts[index_b, 0] == 0)
        keys_a, keys_b = features_a.name_keys[index_a], features_b.name_keys[index_b]
        named = ((keys_a == keys_b) & (keys_a != 0)).any(axis=1)
    for column, comparison in enumerate(comparisons):
        if comparison.salted:
            out[apart, column] = comparison.missing
        elif comparison.fallback:
            close = scores[:, column] >= NAMES_BAR_DICE
            near = scores[:, column] >= LACKING_BAR_DICE
            out[~(apart & ((lacking & (named | near)) | (named & close))), column] = comparison.missing
    missing_level = np.array([c.missing for c in comparisons], dtype=np.int8)
    scores[out == missing_level] = 0.0
    return out, scores.sum(axis=1)


def _crossed_dice(
    features_a: PartyFeatures,
    features_b: PartyFeatures,
    index_a: np.ndarray,
    index_b: np.ndarray,
    filter_a: np.ndarray,
    filter_b: np.ndarray,
    width: int,
    taps: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per pair, the Dice of ``a``'s filter ``filter_a[i]`` with ``b``'s ``filter_b[i]``, and whether one is empty.

    The filters are ``width`` words long; a hardened Dice is mapped back to the built scale.
    """
    columns = np.arange(width)
    words_a = features_a.words[index_a[:, None], features_a.starts[filter_a][:, None] + columns]
    words_b = features_b.words[index_b[:, None], features_b.starts[filter_b][:, None] + columns]
    shared = np.bitwise_count(words_a & words_b).sum(axis=1, dtype=np.int32)
    rows = np.arange(len(index_a))
    counts_a = features_a.popcounts[index_a, filter_a]
    counts_b = features_b.popcounts[index_b, filter_b]
    totals = counts_a + counts_b
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(totals > 0, 2.0 * shared / totals, 0.0)
        if taps > 1:
            dice = _unmixed_dice(dice, counts_a, counts_b, np.full(len(rows), width * 64), taps)
    return dice, (counts_a == 0) | (counts_b == 0)


def _uncrossed(
    features_a: PartyFeatures,
    features_b: PartyFeatures,
    index_a: np.ndarray,
    index_b: np.ndarray,
    comparisons: Sequence[Comparison],
    swapped: Sequence[int],
    salt: np.ndarray,
    out: np.ndarray,
    scores: np.ndarray,
) -> None:
    """Compare the two swapped names crossed where they agree better so than straight (in place).

    One record's given name is compared with the other's surname and the other way round
    (their filters share a key). Where both crossed levels are above both straight ones
    (a given name and surname written the other way round), the pair takes the crossed
    levels and Dice instead: each name is still weighed once. A household member, who
    shares the surname straight, keeps its straight levels.
    """
    first, second = swapped
    # Each comparison's first filter among the pair's filters (a salted field has a copy per salt).
    starts, filters = {}, 0
    for column, comparison in enumerate(comparisons):
        if comparison.dice_thresholds:
            starts[column] = filters
            filters += comparison.copies
    copy = np.maximum(salt, 0) if comparisons[first].copies > 1 else np.zeros(len(salt), dtype=np.intp)
    filter_first, filter_second = starts[first] + copy, starts[second] + copy
    taps, width = comparisons[first].taps, (comparisons[first].field.num_bits or 0) // 64
    dice_1, missing_1 = _crossed_dice(
        features_a, features_b, index_a, index_b, filter_first, filter_second, width, taps
    )
    dice_2, missing_2 = _crossed_dice(
        features_a, features_b, index_a, index_b, filter_second, filter_first, width, taps
    )
    level_1 = _dice_levels(dice_1, missing_1, comparisons[first])
    level_2 = _dice_levels(dice_2, missing_2, comparisons[second])
    straight_1, straight_2 = out[:, first], out[:, second]
    present = ~(missing_1 | missing_2) & (straight_1 != comparisons[first].missing)
    present &= straight_2 != comparisons[second].missing
    crossed = present & (np.minimum(level_1, level_2) > np.maximum(straight_1, straight_2))
    out[crossed, first] = level_1[crossed]
    out[crossed, second] = level_2[crossed]
    scores[crossed, first] = dice_1[crossed]
    scores[crossed, second] = dice_2[crossed]


def rejected(levels: np.ndarray, comparisons: Sequence[Comparison]) -> np.ndarray:
    """Per pair, whether it is "different" on every field of one of the protocol's ``reject_when_different`` rules.

    Such a pair is never linked, whatever its match weight. Members of one household share
    a surname and an address, and the model adds up both weights as if they were
    independent (among non-matches they are not: household members agree on both), so
    that a parent and a child with other given names and other birth dates passed as one
    person. Two records of one person rarely differ in both the given name and the date
    (realistic synth, seed 11: 9 of 6,343 true pairs). A field written ``name:partly``
    also counts as different at its first level above (a date agreeing on two of its
    three parts: a household member born in the same month of another year). A missing
    value is never "different", so a pair missing a field of a rule is weighed as before.

    >>> given = Comparison(FieldSpec("given", "name", 64, 10), ("different", "close", "exact"), rejects=((0, 0),))
    >>> date = Comparison(FieldSpec("date", "date", 0, 10), ("different", "two", "exact"), rejects=((0, 1),))
    >>> surname = Comparison(FieldSpec("surname", "name", 64, 10), ("different", "close"))
    >>> levels = np.array([[0, 0, 1], [0, 1, 1], [2, 0, 1], [0, 2, 0], [0, 3, 0]])
    >>> rejected(levels, [given, date, surname]).tolist()
    [True, True, False, False, False]
    """
    rules: dict[int, list[tuple[int, int]]] = {}
    for column, comparison in enumerate(comparisons):
        for rule, top in comparison.rejects:
            rules.setdefault(rule, []).append((column, top))
    out = np.zeros(len(levels), dtype=bool)
    for members in rules.values():
        out |= np.logical_and.reduce([levels[:, column] <= top for column, top in members])
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
