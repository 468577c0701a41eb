"""The secret the agencies share: made once by one agency, read from a file or variable.

Every key of the encodings is derived from it (:mod:`linkage.agency.hashing`); the
linkage service and the statistics side never see it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from linkage.errors import OutputExistsError, SecretError

__all__ = ["MIN_SECRET_BYTES", "SECRET_BYTES", "generate_secret", "parse_secret", "write_secret"]

SECRET_BYTES = 32
MIN_SECRET_BYTES = 32


def generate_secret() -> bytes:
    """A fresh 256-bit secret from the operating system's CSPRNG."""
    return secrets.token_bytes(SECRET_BYTES)


def write_secret(path: Path, secret: bytes) -> None:
    """Write a secret as hex to a new file readable by its owner only (mode 0600).

    Raises:
        OutputExistsError: the file exists; a secret is never overwritten.
    """
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise OutputExistsError(
            f"{path} already exists; a secret is never overwritten. Choose another path, or "
            "delete the old secret only if no encodings made with it are still needed",
            path=str(path),
        ) from exc
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(secret.hex() + "\n")


def parse_secret(text: str, source: str) -> bytes:
    """Parse a secret written by ``pprl keygen`` (hex).

    Args:
        text: the file's or variable's content.
        source: where it came from, for messages (never the secret itself).

    Raises:
        SecretError: not hex, or shorter than 256 bits.

    >>> len(parse_secret("ab" * 32, "test"))
    32
    """
    stripped = text.strip()
    try:
        secret = bytes.fromhex(stripped)
    except ValueError as exc:
        raise SecretError(f"{source}: the secret is not hexadecimal; use the file `pprl keygen` wrote") from exc
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretError(
            f"{source}: the secret has {len(secret) * 8} bits, fewer than {MIN_SECRET_BYTES * 8}; "
            "make one with `pprl keygen --out FILE` and share it with the other agencies"
        )
    return secret
