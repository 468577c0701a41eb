"""Folders and files only their owner may read: 0700 and 0600, whatever the umask.

Both sides keep data that must not be readable by other accounts on the machine: the
service's databases and encodings blobs, an agency's key map, attributes and results. A
mode given to ``mkdir`` or ``open`` is masked by the process's umask, so every helper here
sets the mode explicitly after creating.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PRIVATE_DIR", "PRIVATE_FILE", "private_dir", "private_file", "private_opener", "shred_file"]

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """Create a folder (and its parents) if missing, and make it 0700.

    Returns:
        The path, for chaining.
    """
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR)
    return path


def private_opener(path: str, flags: int) -> int:
    """An ``opener`` for :func:`open` that creates files 0600 (``open(p, "w", opener=private_opener)``)."""
    descriptor = os.open(path, flags, PRIVATE_FILE)
    try:
        os.fchmod(descriptor, PRIVATE_FILE)
    except OSError:
        os.close(descriptor)
        raise
    return descriptor


def private_file(path: Path) -> Path:
    """Create an empty file if missing, and make it 0600 (e.g. before SQLite opens it).

    Returns:
        The path, for chaining.
    """
    os.close(private_opener(str(path), os.O_WRONLY | os.O_CREAT))
    return path


def shred_file(path: Path, *, chunk_bytes: int = 1 << 20) -> bool:
    """Overwrite a file with zeros, flush it to disk, then remove it (a missing file is fine).

    On a plain file system this leaves none of its bytes in the folder's blocks; on copy-on-write
    file systems, SSDs that remap blocks, and in snapshots or backups older copies may survive,
    which only encrypting the volume covers (docs/erasure.md).

    Returns:
        Whether there was a file to shred.
    """
    try:
        descriptor = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return False
    try:
        size = os.fstat(descriptor).st_size
        zeros = bytes(min(chunk_bytes, max(size, 1)))
        written = 0
        while written < size:
            written += os.write(descriptor, zeros[: size - written])
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    path.unlink(missing_ok=True)
    return True
