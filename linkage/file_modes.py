"""Folders and files only their owner may read: 0700 and 0600, whatever the umask.

Both sides keep data that must not be readable by other accounts on the machine: the
service's databases and encodings blobs, an agency's key map, attributes and results. A
mode given to ``mkdir`` or ``open`` is masked by the process's umask, so every helper here
sets the mode explicitly after creating.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PRIVATE_DIR", "PRIVATE_FILE", "private_dir", "private_file", "private_opener"]

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
