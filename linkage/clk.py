"""Keyed hashing of normalised identifiers: the only module that imports clkhash.

pprl's record-level CLK is exactly clkhash's CLK for the linkage schema (v3) that
:func:`clkhash_schema` derives from the protocol: same HKDF keys, same BLAKE2 token
hashing, same bit order. What pprl adds is speed (token and value caches, bits set in
numpy for a whole chunk at once) and the per-field encodings the matcher needs:

* a Bloom filter per name, text or code field, with keys of its own;
* keyed 32-bit hashes of a date's day, month and year (day and month share a key, so a
  swapped day and month can be recognised), and of a category;
* keyed 64-bit block keys, one per blocking rule.

Every key is derived from the shared secret with HKDF, salted with the protocol
fingerprint, so that another protocol or another secret gives unrelated encodings.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from clkhash import schema as clkhash_schema_module
from clkhash.bloomfilter import blake_hash_token
from clkhash.key_derivation import generate_key_lists, hkdf

from linkage.protocol import FieldSpec, Protocol

__all__ = [
    "Keys",
    "MIN_SECRET_BYTES",
    "clkhash_schema",
    "derive_keys",
    "keyed_hash32",
    "keyed_hash64",
    "secret_check",
    "token_positions",
]

MIN_SECRET_BYTES = 32
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
    """

    clk: tuple[bytes, ...]
    field: tuple[bytes, ...]
    day_month: bytes
    year: bytes
    block: bytes
    check: bytes


def clkhash_schema(protocol: Protocol) -> dict[str, Any]:
    """Derive the clkhash linkage schema (v3) whose CLKs pprl reproduces.

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
