"""Band keys of similarity blocking: keyed MinHash over the tokens of a record's fields.

A similarity rule (``matching.blocking`` in the protocol) gives each record ``bands`` block
keys made at the agency, beside the exact rules' keys, so that the linkage service can
propose pairs whose values are alike without learning the values. The tokens are those
each field's Bloom filter hashes (its n-grams). Every token is first hashed with the
block key (:func:`token_hashes`), so nothing below is computable without the secret; the
signature is the minimum of ``bands * hashes_per_band`` keyed hash functions over the
record's tokens, and a band key is a keyed hash of ``hashes_per_band`` of those minima.

Why the chance of sharing a band is known: a hash function's minimum over two token
sets is the same exactly when the token of the union that hashes lowest lies in both,
which happens with chance J, the Jaccard similarity of the sets. The functions are
independent, so a band (``hashes_per_band`` = r of them) is shared with chance J ** r and
at least one of ``bands`` = b bands with chance 1 - (1 - J ** r) ** b. Token sets with
Dice D have J = D / (2 - D). See docs/blocking.md.

Tokens are taken before salting and hardening: the band keys are keyed functions of the
normalised values, as the exact rules' block keys are, and the service learns from them
what it learns from those: which records share a key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from linkage.agency.hashing import keyed_hash64
from linkage.matching.block import mix_keys
from linkage.protocol import Protocol, SimilarityRule

__all__ = [
    "MinHashPlan",
    "SimilarityEncoder",
    "band_keys",
    "minhash_plan",
    "signatures",
    "token_hash",
    "token_hashes",
]

_NO_TOKEN = np.iinfo(np.uint32).max
# Hash functions evaluated at once: bounds the (tokens x functions) work array.
_FUNCTIONS_AT_ONCE = 32


@dataclass(frozen=True)
class MinHashPlan:
    """The keyed hash functions of one similarity rule.

    Attributes:
        rule: the rule.
        group_salts: per group of the rule, a keyed salt XORed into its tokens' hashes,
            so that the same n-gram in two groups is two tokens.
        multipliers: per hash function, an odd keyed 32-bit multiplier.
        offsets: per hash function, a keyed 32-bit offset.
        band_salts: per band, the keyed value its key's hash starts from.
    """

    rule: SimilarityRule
    group_salts: tuple[int, ...]
    multipliers: np.ndarray
    offsets: np.ndarray
    band_salts: np.ndarray

    def group_of(self, field: str) -> int:
        """The position of the group holding ``field``."""
        return next(i for i, group in enumerate(self.rule.groups) if field in group)


def minhash_plan(rule: SimilarityRule, key: bytes) -> MinHashPlan:
    """Derive a rule's hash functions and salts from the block key (:attr:`Keys.block`).

    Every value depends on the rule's name, which holds its fields and parameters: two
    rules never share hash functions.
    """
    functions = rule.bands * rule.hashes_per_band
    label = f"similarity|{rule.name}"
    return MinHashPlan(
        rule=rule,
        group_salts=tuple(keyed_hash64(key, f"{label}|group|{'|'.join(group)}") for group in rule.groups),
        multipliers=np.array(
            [(keyed_hash64(key, f"{label}|a{k}") | 1) & 0xFFFFFFFF for k in range(functions)], dtype=np.uint32
        ),
        offsets=np.array([keyed_hash64(key, f"{label}|b{k}") & 0xFFFFFFFF for k in range(functions)], dtype=np.uint32),
        band_salts=np.array([keyed_hash64(key, f"{label}|band{j}") for j in range(rule.bands)], dtype=np.uint64),
    )


def token_hash(token: str, key: bytes) -> int:
    """A token's keyed 64-bit hash (the same token, the same hash, in every field)."""
    return keyed_hash64(key, f"token|{token}")


def token_hashes(tokens: Sequence[str], key: bytes) -> np.ndarray:
    """:func:`token_hash` of each token, as an array."""
    return np.array([token_hash(token, key) for token in tokens], dtype=np.uint64)


def signatures(plan: MinHashPlan, hashes: Sequence[tuple[int, np.ndarray, np.ndarray]], count: int) -> np.ndarray:
    """MinHash signatures of ``count`` records.

    Args:
        plan: the rule's hash functions.
        hashes: per field of the rule, ``(group position, token hashes, record of each
            token)``, the records in ascending order; a token may appear twice for a
            record (it counts once).
        count: number of records.

    Returns:
        uint32 array (count, bands * hashes_per_band); a record without tokens holds the
        maximum value in every column.
    """
    functions = len(plan.multipliers)
    out = np.full((count, functions), _NO_TOKEN, dtype=np.uint32)
    with np.errstate(over="ignore"):
        for group, tokens, records in hashes:
            if not len(tokens):
                continue
            # 32-bit arithmetic halves the work; two tokens of a record tie once in 2**32 / 50**2.
            values = ((tokens ^ np.uint64(plan.group_salts[group])) >> np.uint64(32)).astype(np.uint32)
            starts = np.flatnonzero(np.concatenate([[True], records[1:] != records[:-1]]))
            holders = records[starts]
            for first in range(0, functions, _FUNCTIONS_AT_ONCE):
                last = min(first + _FUNCTIONS_AT_ONCE, functions)
                hashed = values[:, None] * plan.multipliers[first:last] + plan.offsets[first:last]
                minima = np.minimum.reduceat(hashed, starts, axis=0)
                out[holders, first:last] = np.minimum(out[holders, first:last], minima)
    return out


def band_keys(plan: MinHashPlan, signature: np.ndarray) -> np.ndarray:
    """The rule's band keys from the records' signatures: (records, bands) uint64, 0 for no token.

    >>> from linkage.protocol import Protocol, SimilarityRule
    >>> plan = minhash_plan(SimilarityRule((("surname",),), 2, 3), bytes(64))
    >>> one = signatures(plan, [(0, token_hashes(["ab", "bc", "cd"], bytes(64)), np.zeros(3, np.int64))], 1)
    >>> keys = band_keys(plan, np.concatenate([one, one, signatures(plan, [], 1)]))
    >>> bool((keys[0] == keys[1]).all()), keys[2].tolist()
    (True, [0, 0])
    """
    rows = plan.rule.hashes_per_band
    present = signature[:, 0] != _NO_TOKEN
    # Every band at once: band j's key folds in its columns j * rows .. (j + 1) * rows - 1, in order.
    by_band = signature.reshape(len(signature), plan.rule.bands, rows).astype(np.uint64)
    key = np.broadcast_to(plan.band_salts, (len(signature), plan.rule.bands))
    for row in range(rows):
        key = mix_keys(key ^ by_band[:, :, row])
    key[key == 0] = 1
    out: np.ndarray = np.where(present[:, None], key, np.uint64(0))
    return out


def value_signature(plan: MinHashPlan, group: int, tokens: np.ndarray) -> np.ndarray:
    """The signature of one value's tokens (their keyed hashes, at least one) within one group of a rule.

    The signature of a record is the element-wise minimum of its values' signatures, as
    :func:`signatures` computes it for many records at once.
    """
    values = ((tokens ^ np.uint64(plan.group_salts[group])) >> np.uint64(32)).astype(np.uint32)
    with np.errstate(over="ignore"):
        minima: np.ndarray = (values[:, None] * plan.multipliers + plan.offsets).min(axis=0)
    return minima


class SimilarityEncoder:
    """Every similarity rule's band keys for the records of one encoder, from each value's signatures.

    Names, places and postcodes repeat across a client list, so the encoder computes a
    value's signature under every rule that reads its field once (:meth:`value_signatures`,
    for a batch of values at a time) and gathers the values' signatures into the records'.
    """

    def __init__(self, protocol: Protocol, key: bytes) -> None:
        self.columns = sum(rule.columns for rule in protocol.blocking)
        position = {spec.name: i for i, spec in enumerate(protocol.fields)}
        first = 0
        self.plans: list[tuple[int, MinHashPlan]] = []
        # Per field position: the (rule among the plans, group position) of each rule that reads it.
        self.readers: dict[int, list[tuple[int, int]]] = {}
        for rule in protocol.blocking:
            if isinstance(rule, SimilarityRule):
                plan = minhash_plan(rule, key)
                for group_position, group in enumerate(rule.groups):
                    for name in group:
                        self.readers.setdefault(position[name], []).append((len(self.plans), group_position))
                self.plans.append((first, plan))
            first += rule.columns
        # Per rule: the fields it reads, and where its signature sits among each field's.
        self.members: list[list[tuple[int, int]]] = [
            [
                (field, at)
                for field, readers in self.readers.items()
                for at, (rule, _) in enumerate(readers)
                if rule == number
            ]
            for number in range(len(self.plans))
        ]

    def widths(self, field: int) -> list[int]:
        """The length of a signature of ``field``'s values under each rule that reads it."""
        return [len(self.plans[rule][1].multipliers) for rule, _ in self.readers.get(field, [])]

    def value_signatures(self, field: int, hashes: np.ndarray, owners: np.ndarray, count: int) -> list[np.ndarray]:
        """Signatures of ``count`` values of ``field`` under each rule that reads it.

        Args:
            field: the field's position in the protocol.
            hashes: the keyed hashes (:func:`token_hash`) of the values' tokens, one after another.
            owners: the value (``0 .. count - 1``) of each token, in ascending order; every
                value has at least one token.
            count: number of values.

        Returns:
            Per rule that reads the field, uint32 (count, functions): what
            :func:`value_signature` gives for each value alone.
        """
        return [
            signatures(self.plans[rule][1], [(group, hashes, owners)], count) for rule, group in self.readers[field]
        ]

    def band_keys(self, values: dict[int, tuple[np.ndarray, list[np.ndarray]]], count: int) -> np.ndarray:
        """The records' band keys in their block key columns (every other column 0).

        Args:
            values: per field, the records holding a value and, per rule reading the field,
                those values' signatures in the same order (from :meth:`value_signatures`).
            count: number of records.
        """
        out = np.zeros((count, self.columns), dtype=np.uint64)
        for (first, plan), members in zip(self.plans, self.members, strict=True):
            signature = np.full((count, len(plan.multipliers)), _NO_TOKEN, dtype=np.uint32)
            for field, at in members:
                if field in values and len(values[field][0]):
                    rows, signatures_of = values[field]
                    signature[rows] = np.minimum(signature[rows], signatures_of[at])
            out[:, first : first + plan.rule.bands] = band_keys(plan, signature)
        return out
