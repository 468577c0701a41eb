"""Published attacks on Bloom-filter encodings, as a curious linkage unit could run them.

Each attack gets what the linkage service sees (the records of an encodings file) and
what a curious linkage unit could hold: a plaintext reference list of people
(normalised identifiers) and the protocol, which is no secret. It returns the share of
encoded records it re-identified: the reference person it named for the record is the
right one, and no other reference record has the identifiers it recovered.

* :func:`frequency_attack`: identical values give identical encodings; align the most
  frequent encodings with the most frequent plaintext values (Kuzu et al. 2011), on the
  whole CLK or on each field's filter.
* :func:`pattern_mining_attack`: a frequent q-gram sets the same k bits in every filter
  that holds it; find the most frequent k-bit pattern, name it after the most frequent
  q-gram, split the filters by it and repeat in each part (Christen, Ranbaduge,
  Vatsalan and Schnell 2017/2018). A part whose reference values are a single value
  re-identifies that value.
* :func:`graph_matching_attack`: encode the reference under the same protocol with a key
  of the attacker's own, build both similarity graphs and align their nodes: by the
  profile of each node's strongest similarities first, then by similarities to nodes
  already aligned (Culnane, Rubinstein and Teague 2017; Vidanage et al. 2020).

Everything here is pure: arrays and values in, results out.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "AttackResult",
    "frequency_attack",
    "graph_matching_attack",
    "identify",
    "pattern_mining_attack",
    "random_secret",
]

Value = Hashable


@dataclass(frozen=True)
class AttackResult:
    """What one attack achieved.

    Attributes:
        attack: the attack's name.
        reidentified: share of the encoded records whose person it named correctly.
        named: share of the encoded records it named a person for (right or wrong).
        values_recovered: share of records with at least one identifier value recovered
            correctly (value-level, as much of the literature reports).
        detail: further numbers, e.g. per field.
    """

    attack: str
    reidentified: float
    named: float
    values_recovered: float
    detail: dict[str, float] = field(default_factory=dict)


def random_secret() -> bytes:
    """A key of the attacker's own, for re-encoding the reference list."""
    return secrets.token_bytes(32)


def identify(
    guesses: Sequence[Sequence[Value | None]], reference: Sequence[Sequence[Value]], truth: np.ndarray
) -> tuple[int, int]:
    """Turn recovered identifier values into named people.

    A record is named when the values recovered for it (its guesses that are not
    ``None``) match exactly one reference record.

    Args:
        guesses: per encoded record, one recovered value (or ``None``) per field.
        reference: per reference record, its value per field (same field order).
        truth: per encoded record, the index of its person in ``reference`` (-1: absent).

    Returns:
        (records named, records named correctly).

    >>> identify([("ana", None), ("bo", "x")], [("ana", "y"), ("bo", "x"), ("bo", "z")], np.array([0, 1]))
    (2, 2)
    """
    by_mask: dict[tuple[int, ...], dict[tuple[object, ...], int]] = {}
    named = correct = 0
    for record, guess in enumerate(guesses):
        mask = tuple(i for i, value in enumerate(guess) if value is not None)
        if not mask:
            continue
        if mask not in by_mask:
            counts: Counter[tuple[object, ...]] = Counter()
            where: dict[tuple[object, ...], int] = {}
            for index, row in enumerate(reference):
                key = tuple(row[i] for i in mask)
                counts[key] += 1
                where[key] = index
            by_mask[mask] = {key: where[key] for key, count in counts.items() if count == 1}
        person = by_mask[mask].get(tuple(guess[i] for i in mask))
        if person is not None:
            named += 1
            correct += int(person == truth[record])
    return named, correct


def _value_hits(guesses: Sequence[Sequence[Value | None]], actual: Sequence[Sequence[Value]]) -> int:
    return sum(
        any(g is not None and g == a for g, a in zip(guess, row, strict=True))
        for guess, row in zip(guesses, actual, strict=True)
    )


def _named_result(
    attack: str,
    columns: Sequence[Sequence[Value | None]],
    actual: Sequence[Sequence[Value]],
    reference: Sequence[Sequence[Value]],
    truth: np.ndarray,
    detail: dict[str, float],
) -> AttackResult:
    """Score an attack that recovered values field by field (``columns``: one list per field)."""
    count = len(truth)
    guesses = list(zip(*columns, strict=True)) if columns else []
    named, correct = identify(guesses, reference, truth)
    return AttackResult(
        attack=attack,
        reidentified=correct / count if count else 0.0,
        named=named / count if count else 0.0,
        values_recovered=_value_hits(guesses, actual) / count if count else 0.0,
        detail=detail,
    )


# -- frequency --------------------------------------------------------------------------


def _frequency_guesses(
    encoded: Sequence[bytes | None], plaintext: Sequence[tuple[Value, str] | None], min_count: int
) -> list[tuple[Value, str] | None]:
    """Align distinct encodings with distinct plaintext values by frequency rank."""
    encoded_counts = Counter(e for e in encoded if e is not None)
    plain_counts = Counter(p for p in plaintext if p is not None)
    # Ties are broken at random: the attacker has nothing better (and an order shared by
    # both lists would be knowledge it does not have).
    rng = np.random.default_rng(0)
    encoded_items = [(c, rng.random(), e) for e, c in encoded_counts.items() if c >= min_count]
    plain_items = [(c, rng.random(), i) for i, (p, c) in enumerate(plain_counts.items()) if c >= min_count]
    plain_values = list(plain_counts)
    ranked_encoded = [e for _, _, e in sorted(encoded_items, key=lambda item: (-item[0], item[1]))]
    ranked_plain = [plain_values[i] for _, _, i in sorted(plain_items, key=lambda item: (-item[0], item[1]))]
    mapping = dict(zip(ranked_encoded, ranked_plain, strict=False))
    return [None if e is None else mapping.get(e) for e in encoded]


def frequency_attack(
    filters: Sequence[np.ndarray],
    reference_keys: Sequence[Sequence[tuple[Value, str] | None]],
    reference: Sequence[Sequence[Value]],
    actual: Sequence[Sequence[Value]],
    truth: np.ndarray,
    *,
    names: Sequence[str] = (),
    min_count: int = 2,
    attack: str = "frequency",
) -> AttackResult:
    """Frequency alignment of identical encodings with identical plaintext values.

    Args:
        filters: per attacked column, the packed encodings, shape (records, bytes); an
            all-zero row is a missing value.
        reference_keys: per attacked column, each reference record's ``(value, salt)``
            as it would be encoded (salt ``""`` if unsalted), or ``None`` if missing.
        reference: the reference's identifier values per record, for naming people;
            column ``c`` of :func:`identify`'s guesses is the value part of column ``c``.
        actual: the encoded records' true values in the same columns (for scoring only).
        truth: per encoded record, its person's index in ``reference`` (-1: absent).
        names: a name per column, for ``detail``.
        min_count: only values seen at least this often carry frequency information.
        attack: the name to report.
    """
    count = len(truth)
    columns: list[list[Value | None]] = []
    detail: dict[str, float] = {}
    for position, (column, keys) in enumerate(zip(filters, reference_keys, strict=True)):
        encoded = [row.tobytes() if row.any() else None for row in column]
        guesses = _frequency_guesses(encoded, keys, min_count)
        values = [None if g is None else g[0] for g in guesses]
        columns.append(values)
        if names:
            hits = sum(v is not None and v == row[position] for v, row in zip(values, actual, strict=True))
            detail[names[position]] = hits / count if count else 0.0
    return _named_result(attack, columns, actual, reference, truth, detail)


# -- pattern mining -------------------------------------------------------------------------


def _frequent_pattern(
    bits: np.ndarray, size: int, excluded: np.ndarray, target: float, beam: int = 8
) -> tuple[np.ndarray, int]:
    """Up to ``size`` bit positions set together in about ``target`` rows (beam search).

    Sets are grown a bit at a time keeping the ``beam`` best supported; of the full-size
    sets, the one whose support is closest to ``target`` (what the q-gram's frequency in
    the reference predicts) wins, so that bits that many q-grams share are not taken for
    one q-gram's pattern.
    """
    counts = bits.sum(axis=0).astype(np.int64)
    counts[excluded] = -1
    beams: list[tuple[tuple[int, ...], np.ndarray]] = [
        ((int(b),), bits[:, b]) for b in np.argsort(-counts, kind="stable")[: beam * 2] if counts[b] > 0
    ]
    if not beams:
        return np.zeros(0, dtype=np.intp), 0
    for _ in range(size - 1):
        grown: dict[tuple[int, ...], np.ndarray] = {}
        for chosen, rows in beams:
            support = bits[rows].sum(axis=0).astype(np.int64)
            support[excluded] = -1
            support[list(chosen)] = -1
            for b in np.argsort(-support, kind="stable")[:beam]:
                if support[b] <= 0:
                    break
                key = tuple(sorted((*chosen, int(b))))
                if key not in grown:
                    grown[key] = rows & bits[:, b]
        if not grown:
            break
        beams = sorted(grown.items(), key=lambda item: -int(item[1].sum()))[:beam]
    chosen, rows = min(beams, key=lambda item: abs(int(item[1].sum()) - target))
    return np.asarray(chosen, dtype=np.intp), int(rows.sum())


@dataclass
class _Node:
    encoded: np.ndarray  # indices of encoded records
    reference: np.ndarray  # indices of reference records
    present: list[np.ndarray]  # patterns known present in this node
    known: set[str]  # tokens known present or absent
    depth: int


def _mine(
    bits: np.ndarray,
    token_sets: Sequence[frozenset[str]],
    values: Sequence[Value | None],
    bits_per_token: dict[str, int],
    *,
    max_depth: int,
    min_records: int,
    tolerance: float,
) -> tuple[list[Value | None], int]:
    """Christen et al.'s recursive pattern mining; returns per record the value recovered."""
    guesses: list[Value | None] = [None] * len(bits)
    reference_present = np.array([v is not None for v in values])
    stack = [_Node(np.flatnonzero(bits.any(axis=1)), np.flatnonzero(reference_present), [], set(), 0)]
    identified = 0
    while stack:
        node = stack.pop()
        distinct = Counter(values[r] for r in node.reference)
        if not distinct or not len(node.encoded):
            continue
        if len(distinct) > 1 and not (
            node.depth >= max_depth or len(node.encoded) < min_records or len(node.reference) < min_records
        ):
            split = _split(bits, token_sets, node, bits_per_token, tolerance)
            if split:
                stack.extend(split)
                identified += 1
                continue
        # A leaf: the attacker names its records after the value most of its reference holds.
        value, frequency = distinct.most_common(1)[0]
        if frequency * 2 > len(node.reference):
            for record in node.encoded:
                guesses[record] = value
    return guesses, identified


def _split(
    bits: np.ndarray,
    token_sets: Sequence[frozenset[str]],
    node: _Node,
    bits_per_token: dict[str, int],
    tolerance: float,
) -> list[_Node]:
    """Split a part of the partition by the pattern of its most frequent unknown q-gram."""
    tokens: Counter[str] = Counter()
    for r in node.reference:
        tokens.update(token_sets[r] - node.known)
    if not tokens:
        return []
    token, frequency = tokens.most_common(1)[0]
    reference_share = frequency / len(node.reference)
    if reference_share >= 1.0:
        return []
    excluded = np.zeros(bits.shape[1], dtype=bool)
    for pattern in node.present:
        excluded[pattern] = True
    sub = bits[node.encoded]
    pattern, support = _frequent_pattern(sub, bits_per_token[token], excluded, reference_share * len(sub))
    if len(pattern) < max(2, bits_per_token[token] // 2):
        return []
    encoded_share = support / len(node.encoded)
    if abs(encoded_share - reference_share) > max(tolerance * reference_share, 2 / len(node.encoded)):
        return []  # the attacker cannot align this pattern with that q-gram
    holds = sub[:, pattern].all(axis=1)
    has_token = np.array([token in token_sets[r] for r in node.reference])
    known = node.known | {token}
    return [
        _Node(node.encoded[holds], node.reference[has_token], [*node.present, pattern], known, node.depth + 1),
        _Node(node.encoded[~holds], node.reference[~has_token], node.present, known, node.depth + 1),
    ]


def pattern_mining_attack(
    filters: Sequence[np.ndarray],
    reference_tokens: Sequence[Sequence[frozenset[str]]],
    reference_values: Sequence[Sequence[Value | None]],
    bits_per_token: Sequence[dict[str, int]],
    reference: Sequence[Sequence[Value]],
    actual: Sequence[Sequence[Value]],
    truth: np.ndarray,
    *,
    names: Sequence[str] = (),
    max_depth: int = 14,
    min_records: int = 4,
    tolerance: float = 0.3,
    attack: str = "pattern_mining",
) -> AttackResult:
    """Recover values from the bit patterns of frequent q-grams.

    Args:
        filters: per attacked column, packed filters, shape (records, bytes).
        reference_tokens: per column, each reference record's tokens as the attacker
            would encode them (salted if the protocol salts).
        reference_values: per column, each reference record's value as recovered when
            its part of the partition is a single value (``None``: missing).
        bits_per_token: per column, the bits each token sets (public in the protocol).
        reference: the reference's identifier values per record (for naming people).
        actual: the encoded records' true values, column by column (for scoring only).
        truth: per encoded record, its person's index in ``reference`` (-1: absent).
        names: a name per column, for ``detail``.
        max_depth: most q-grams along one branch of the partition.
        min_records: stop splitting parts smaller than this.
        tolerance: relative difference of frequencies the attacker accepts when naming
            a pattern after a q-gram.
        attack: the name to report.
    """
    count = len(truth)
    columns = []
    detail: dict[str, float] = {}
    for position, (packed, tokens, values, widths) in enumerate(
        zip(filters, reference_tokens, reference_values, bits_per_token, strict=True)
    ):
        bits = np.unpackbits(packed, axis=1).astype(bool)
        guesses, identified = _mine(
            bits, tokens, values, widths, max_depth=max_depth, min_records=min_records, tolerance=tolerance
        )
        columns.append(guesses)
        if names:
            hits = sum(g is not None and g == row[position] for g, row in zip(guesses, actual, strict=True))
            detail[names[position]] = hits / count if count else 0.0
            detail[f"{names[position]} patterns"] = float(identified)
    return _named_result(attack, columns, actual, reference, truth, detail)


# -- graph matching ------------------------------------------------------------------------


def _dice_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All-pairs Dice of two sets of packed filters (float32)."""
    x = np.unpackbits(a, axis=1).astype(np.float32)
    y = np.unpackbits(b, axis=1).astype(np.float32)
    overlap = x @ y.T
    sizes = x.sum(axis=1)[:, None] + y.sum(axis=1)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(sizes > 0, 2 * overlap / sizes, 0.0)
    return dice.astype(np.float32)


def _profiles(similarity: np.ndarray, width: int) -> np.ndarray:
    """Each node's strongest similarities to other nodes, sorted (its neighbourhood profile)."""
    matrix = similarity.copy()
    np.fill_diagonal(matrix, -1.0)
    width = min(width, max(1, matrix.shape[1] - 1))
    top = -np.partition(-matrix, width - 1, axis=1)[:, :width]
    return -np.sort(-top, axis=1)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``a`` and of ``b``."""
    a = a.astype(np.float32)
    b = b.astype(np.float32)
    out = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2 * (a @ b.T)
    distances: np.ndarray = np.maximum(out, 0.0)
    return distances


def _mutual_best(distance: np.ndarray, margin: float) -> list[tuple[int, int, float]]:
    """Pairs (i, j) that are each other's nearest, with the runner-up at least ``margin`` farther."""
    best_j = np.argmin(distance, axis=1)
    best_i = np.argmin(distance, axis=0)
    out = []
    for i, j in enumerate(best_j):
        if best_i[j] != i:
            continue
        row = distance[i]
        second = np.partition(row, 1)[1] if len(row) > 1 else np.inf
        gap = float(second - row[j])
        if gap >= margin:
            out.append((i, int(j), gap))
    return out


def graph_matching_attack(
    encoded: np.ndarray,
    reencoded: np.ndarray,
    truth: np.ndarray,
    *,
    profile_width: int = 12,
    rounds: int = 6,
    seeds: int = 40,
    max_anchors: int = 400,
    attack: str = "graph_matching",
) -> AttackResult:
    """Align the similarity graph of the encodings with that of the re-encoded reference.

    Args:
        encoded: the attacked packed filters (rows: encoded records).
        reencoded: the reference list encoded by the attacker under the same protocol
            and hardening with a key of its own (rows: reference records).
        truth: per encoded record, its person's index in the reference (-1: absent).
        profile_width: strongest similarities per node in the first alignment.
        rounds: rounds of re-alignment by similarities to aligned nodes.
        seeds: nodes aligned with most confidence that seed the first round.
        max_anchors: most aligned nodes used in a round.
        attack: the name to report.
    """
    count = len(encoded)
    if count < 3 or len(reencoded) < 3:
        return AttackResult(attack, 0.0, 0.0, 0.0)
    inner_a = _dice_matrix(encoded, encoded)
    inner_b = _dice_matrix(reencoded, reencoded)
    profile_a, profile_b = _profiles(inner_a, profile_width), _profiles(inner_b, profile_width)
    distance = _distances(profile_a, profile_b)
    pairs = sorted(_mutual_best(distance, 0.0), key=lambda item: -item[2])[:seeds]
    anchors = [(i, j) for i, j, _ in pairs]
    match = np.argmin(distance, axis=1)
    for _ in range(rounds):
        if len(anchors) < 3:
            break
        left = np.array([i for i, _ in anchors])
        right = np.array([j for _, j in anchors])
        # Each node as its similarities to the anchors; nodes are compared by those vectors.
        vectors_a = inner_a[:, left]
        vectors_b = inner_b[:, right]
        distance = _distances(vectors_a, vectors_b)
        match = np.argmin(distance, axis=1)
        confident = sorted(_mutual_best(distance, 0.0), key=lambda item: -item[2])
        keep = min(max(len(anchors) * 2, seeds), max_anchors)
        anchors = [(i, j) for i, j, _ in confident[:keep]]
    correct = int((match == truth).sum())
    return AttackResult(
        attack=attack,
        reidentified=correct / count,
        named=1.0,
        values_recovered=correct / count,
        detail={"anchors": float(len(anchors))},
    )
