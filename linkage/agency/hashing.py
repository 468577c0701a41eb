"""Keyed hashing of normalised identifiers: the only module that imports clkhash.

pprl's record-level CLK is exactly clkhash's CLK for the linkage schema (v3) that
:func:`clkhash_schema` derives from the protocol: same HKDF keys, same BLAKE2 token
hashing, same bit order. What pprl adds is speed (token and value caches, bits set in
numpy for a whole chunk at once) and the per-field encodings the matcher needs:

* a Bloom filter per name, text or code field, with keys of its own;
* keyed 32-bit hashes of a date's day, month and year (day and month share a key, so a
  swapped day and month can be recognised), and of a category;
* keyed 64-bit block keys, one per blocking rule.

Hardening (``encoding.hardening`` in the protocol; off by default) changes only how the
Bloom filters are built, never their length: tokens of every field but the salt field are
salted with a stable value (e.g. the year of birth); a filter is built at half length and
balanced with its complement under a keyed permutation, or built at twice the length and
XOR-folded; finally a keyed linear diffusion layer makes every output bit the XOR of a few
input bits (Armknecht, Heng and Schnell, PoPETs 2023). Tokens are always hashed with
clkhash's keyed BLAKE2 random hashing, one key per field; double hashing is not offered.

Every key is derived from the shared secret with HKDF, salted with the protocol
fingerprint, so that another protocol or another secret gives unrelated encodings.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from clkhash import schema as clkhash_schema_module
from clkhash.bloomfilter import blake_hash_token
from clkhash.key_derivation import generate_key_lists, hkdf

from linkage.matching.block import mix_keys
from linkage.protocol import FieldSpec, Hardening, Protocol

__all__ = [
    "FilterHardening",
    "Keys",
    "clkhash_schema",
    "apply_hardening",
    "derive_keys",
    "filter_hardening",
    "keyed_hash32",
    "keyed_hash64",
    "salted",
    "salted_positions",
    "secret_check",
    "token_positions",
]

_CLK_INFO = b"pprl/v1/clk"
_KEY_SIZE = 64  # the largest key BLAKE2b takes, and clkhash's default


@dataclass(frozen=True)
class Keys:
    """Every key one protocol needs, derived from the shared secret.

    Attributes:
        clk: one clkhash key per identifier field, for the record-level CLK.
        field: one key per identifier field for its own Bloom filter or hashes.
        day_month: shared by a date's day and month, so that a swap can be detected.
        year: for a date's year.
        block: for block keys.
        check: for the secret check value in encodings headers.
        hardening: for the balancing permutations and diffusion taps.
    """

    clk: tuple[bytes, ...]
    field: tuple[bytes, ...]
    day_month: bytes
    year: bytes
    block: bytes
    check: bytes
    hardening: bytes


def clkhash_schema(protocol: Protocol) -> dict[str, Any]:
    """Derive the clkhash linkage schema (v3) whose CLKs pprl reproduces.

    This is the unhardened CLK: pprl's CLK equals clkhash's for it when the protocol's
    hardening is off or does not apply to the CLK.

    Each field is fed to clkhash as its normalised string (dates as ``YYYYMMDD``; a missing
    value as the empty string, which yields no tokens).
    """
    features = []
    for spec in protocol.fields:
        if spec.kind == "category":
            comparison: dict[str, Any] = {"type": "exact"}
        else:
            comparison = {"type": "ngram", "n": protocol.ngram, "positional": spec.kind == "code"}
        features.append(
            {
                "identifier": spec.name,
                "format": {"type": "string", "encoding": "utf-8"},
                "hashing": {
                    "comparison": comparison,
                    "strategy": {"bitsPerToken": spec.clk_bits_per_token},
                    "hash": {"type": "blakeHash"},
                    "missingValue": {"sentinel": ""},
                },
            }
        )
    return {
        "version": 3,
        "clkConfig": {
            "l": protocol.clk_bits,
            "xor_folds": 0,
            "kdf": {
                "type": "HKDF",
                "hash": "SHA256",
                "salt": base64.b64encode(bytes.fromhex(protocol.fingerprint)).decode("ascii"),
                "info": base64.b64encode(_CLK_INFO).decode("ascii"),
                "keySize": _KEY_SIZE,
            },
        },
        "features": features,
    }


def load_clkhash_schema(protocol: Protocol) -> Any:
    """The derived schema as a clkhash ``Schema`` object (for comparisons with clkhash)."""
    return clkhash_schema_module.from_json_dict(clkhash_schema(protocol))


def derive_keys(secret: bytes, protocol: Protocol) -> Keys:
    """Derive every key from the shared secret.

    Args:
        secret: the shared secret (at least 32 bytes).
        protocol: the protocol; its fingerprint salts every key.

    Returns:
        The keys.
    """
    salt = bytes.fromhex(protocol.fingerprint)
    clk_lists = generate_key_lists(secret, len(protocol.fields), key_size=_KEY_SIZE, salt=salt, info=_CLK_INFO)
    clk = tuple(keys[0] for keys in clk_lists)
    names = [f"field/{spec.name}" for spec in protocol.fields] + [
        "day_month",
        "year",
        "block",
        "check",
        "hardening",
    ]
    derived = [hkdf(secret, 1, salt=salt, info=f"pprl/v1/{n}".encode(), key_size=_KEY_SIZE)[0] for n in names]
    count = len(protocol.fields)
    return Keys(
        clk=clk,
        field=tuple(derived[:count]),
        day_month=derived[count],
        year=derived[count + 1],
        block=derived[count + 2],
        check=derived[count + 3],
        hardening=derived[count + 4],
    )


def secret_check(keys: Keys) -> str:
    """A value that tells whether two encodings files were made with the same secret.

    It is a keyed hash of a constant, so it reveals nothing about the secret.
    """
    return hmac.new(keys.check, b"pprl secret check", hashlib.sha256).hexdigest()[:16]


def tokenize(value: str, spec: FieldSpec, ngram: int) -> tuple[str, ...]:
    """Tokens of a normalised value, as clkhash's comparison for this field makes them.

    >>> from linkage.protocol import FieldSpec
    >>> tokenize("ana", FieldSpec("given_name", "name", 64, 10, 256, 10), 2)
    (' a', 'an', 'na', 'a ')
    """
    if spec.kind == "category":
        return (value,)
    pad = " " * (ngram - 1)
    padded = pad + value + pad
    grams = [padded[i : i + ngram] for i in range(len(padded) - ngram + 1)]
    if spec.kind == "code":
        return tuple([f"{i + 1} {g}" for i, g in enumerate(grams)])
    return tuple(grams)


def token_positions(token: str, key: bytes, bits_per_token: int, num_bits: int) -> tuple[int, ...]:
    """Bit positions clkhash's BLAKE2 hashing sets for one token."""
    return tuple(blake_hash_token(token.encode("utf-8"), bits_per_token, key, num_bits))


@lru_cache(maxsize=1 << 16)
def keyed_hash32(key: bytes, value: str) -> int:
    """A keyed 32-bit hash; never 0, which marks a missing value."""
    digest = hashlib.blake2b(value.encode("utf-8"), key=key, digest_size=4).digest()
    return struct.unpack("<I", digest)[0] or 1


@lru_cache(maxsize=1 << 18)
def keyed_hash64(key: bytes, value: str) -> int:
    """A keyed 64-bit hash; never 0, which marks a missing block key."""
    digest = hashlib.blake2b(value.encode("utf-8"), key=key, digest_size=8).digest()
    return struct.unpack("<Q", digest)[0] or 1


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def salted_positions(
    token_values: np.ndarray, salt_values: np.ndarray, bits_per_token: int, num_bits: int
) -> np.ndarray:
    """Bit positions of salted tokens: keyed, one set per (token, salt), computed in numpy.

    ``token_values`` and ``salt_values`` are keyed 64-bit hashes (:func:`keyed_hash64`) of
    each token and of its record's salt. They are mixed with SplitMix64's finaliser (a
    bijection that spreads every input bit), and each of the ``bits_per_token`` positions
    is a further mix of that value with its index. Without the keys the two hashes are
    unknown, so the positions of a token under one salt say nothing about its positions
    under another. One BLAKE2 per token and one per salt value replaces one per
    (token, salt) pair: the pairs are many (a few hundred bigrams times some 25,000 days
    of birth), the tokens and salts few.

    Returns:
        Positions in ``0 .. num_bits - 1``, shape (tokens, bits_per_token), uint32.

    >>> p = salted_positions(np.array([1, 1, 2], np.uint64), np.array([7, 8, 7], np.uint64), 3, 64)
    >>> p.shape, bool((p[0] != p[1]).any()), bool((p[0] != p[2]).any()), int(p.max()) < 64
    ((3, 3), True, True, True)
    """
    with np.errstate(over="ignore"):
        mixed = mix_keys(mix_keys(token_values.astype(np.uint64)) + salt_values.astype(np.uint64))
        # Every position of every token in one pass: position ``index`` mixes in (index + 1) golden ratios.
        steps = _GOLDEN * np.arange(1, bits_per_token + 1, dtype=np.uint64)
        out: np.ndarray = (mix_keys(mixed[:, None] + steps) % np.uint64(num_bits)).astype(np.uint32)
    return out


def salted(token: str, salt: str) -> str:
    r"""The token a salted field hashes: the token and the salt, apart.

    >>> salted("an", "1984"), salted("an", "")
    ('an\x001984', 'an')
    """
    return f"{token}\0{salt}" if salt else token


@dataclass(frozen=True)
class FilterHardening:
    """How one Bloom filter is built and hardened.

    Attributes:
        build_bits: length the tokens are hashed into.
        num_bits: length of the hardened filter (what the protocol declares).
        permutation: for balancing, where each bit of ``filter + complement`` goes.
        fold: XOR the two halves.
        taps: for diffusion, the input bits each output bit XORs, shape (num_bits, taps).
    """

    build_bits: int
    num_bits: int
    permutation: np.ndarray | None = None
    fold: bool = False
    taps: np.ndarray | None = None


def _keyed_integers(key: bytes, label: str, count: int) -> list[int]:
    """``count`` keyed pseudo-random 64-bit integers (BLAKE2b in counter mode)."""
    out: list[int] = []
    block = 0
    while len(out) < count:
        digest = hashlib.blake2b(f"{label}/{block}".encode(), key=key, digest_size=64).digest()
        out.extend(struct.unpack("<8Q", digest))
        block += 1
    return out[:count]


def filter_hardening(key: bytes, hardening: Hardening, num_bits: int, target: str) -> FilterHardening:
    """The keyed balancing permutation and diffusion taps of one filter.

    Args:
        key: the hardening key (:attr:`Keys.hardening`).
        hardening: the protocol's hardening.
        num_bits: the filter's declared length.
        target: ``"clk"`` or ``"field/<name>"``; each filter has its own permutation and taps.

    >>> plan = filter_hardening(bytes(64), Hardening(balance=True, diffusion=3), 64, "clk")
    >>> plan.build_bits, plan.taps.shape
    (32, (64, 3))
    """
    if not hardening.applies_to("clk" if target == "clk" else "fields"):
        return FilterHardening(build_bits=num_bits, num_bits=num_bits)
    width = num_bits * 2 if hardening.xor_fold else num_bits
    build_bits = width // 2 if hardening.balance else width
    permutation = None
    if hardening.balance:
        # Fisher-Yates with keyed draws (64-bit draws make the modulo bias negligible).
        order = list(range(width))
        draws = _keyed_integers(key, f"{target}/balance", width)
        for i in range(width - 1, 0, -1):
            j = draws[i] % (i + 1)
            order[i], order[j] = order[j], order[i]
        permutation = np.asarray(order, dtype=np.intp)
    taps = None
    if hardening.diffusion:
        rows: list[list[int]] = []
        stream: Iterator[int] = iter(_keyed_integers(key, f"{target}/diffusion", num_bits * hardening.diffusion * 2))
        for _ in range(num_bits):
            chosen: list[int] = []
            while len(chosen) < hardening.diffusion:
                try:
                    tap = next(stream) % num_bits
                except StopIteration:  # astronomically rare: top up the stream
                    stream = iter(_keyed_integers(key, f"{target}/diffusion/{len(rows)}", 64))
                    continue
                if tap not in chosen:
                    chosen.append(tap)
            rows.append(chosen)
        taps = np.asarray(rows, dtype=np.intp)
    return FilterHardening(
        build_bits=build_bits, num_bits=num_bits, permutation=permutation, fold=hardening.xor_fold, taps=taps
    )


def apply_hardening(bits: np.ndarray, plan: FilterHardening) -> np.ndarray:
    """Balance, fold and diffuse built filters (unpacked, shape (records, build_bits)).

    Returns:
        Unpacked hardened filters, shape (records, num_bits).

    >>> plan = filter_hardening(bytes(64), Hardening(balance=True), 8, "clk")
    >>> apply_hardening(np.array([[1, 0, 0, 0]], dtype=bool), plan).sum()
    np.int64(4)
    """
    if plan.permutation is not None:
        bits = np.concatenate([bits, ~bits], axis=1)[:, plan.permutation]
    if plan.fold:
        half = bits.shape[1] // 2
        bits = bits[:, :half] ^ bits[:, half:]
    if plan.taps is not None:
        # Every output bit XORs whole input bit columns: packed along the records, a
        # column is a contiguous row of bytes, 8 records per byte, XORed a tap at a time.
        columns = np.packbits(bits.T, axis=1)
        diffused = columns[plan.taps[:, 0]]
        for tap in range(1, plan.taps.shape[1]):
            diffused ^= columns[plan.taps[:, tap]]
        bits = np.unpackbits(diffused, axis=1, count=len(bits)).T.astype(bool)
    return bits
