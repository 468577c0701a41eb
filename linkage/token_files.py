"""The token-keyed CSV files pprl writes and reads: entities and key maps.

* ``entities.csv`` (``entity_id,party,token``): what ``pprl link`` writes, one row per
  record of an entity; the statistics side and evaluation read it.
* ``keymap.csv`` (``token,client_id``): written by ``pprl encode``; it never leaves the
  agency, where ``pprl results`` and ``pprl evaluate`` map tokens back to client ids.
"""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from linkage.errors import InputError

if TYPE_CHECKING:
    from linkage.matching.engine import LinkResult

__all__ = ["read_entities", "read_keymap", "read_rows", "token_set_sha256", "write_entities"]


def read_rows(path: Path, columns: Sequence[str]) -> Iterator[list[str]]:
    """The rows of a CSV file pprl wrote, after checking its header is exactly ``columns``.

    Raises:
        InputError: no such file, another header, or a row of another width.
    """
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file", path=str(path)) from exc
    with handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        if [h.strip() for h in header] != list(columns):
            raise InputError(
                f"{path} line 1: expected the header {','.join(columns)}; pass the file pprl wrote",
                path=str(path),
                line=1,
            )
        for row in reader:
            if len(row) != len(columns):
                raise InputError(f"{path} line {reader.line_num}: expected {len(columns)} columns", path=str(path))
            yield row


def token_set_sha256(tokens: Iterable[str]) -> str:
    """SHA-256 of a set of record tokens (32 hex digits each), the same in whatever order they come.

    The linkage side computes it from a party's encodings and the statistics side from its
    attributes.csv: equal digests mean the two files hold the same records.

    >>> token_set_sha256(["b" * 32, "a" * 32]) == token_set_sha256(["a" * 32, "b" * 32])
    True
    """
    digest = hashlib.sha256()
    for token in sorted(tokens):
        digest.update(bytes.fromhex(token))
    return digest.hexdigest()


def read_keymap(path: Path) -> dict[str, str]:
    """A party's ``token,client_id`` key map as {token: client id}."""
    return dict(read_rows(path, ("token", "client_id")))


def read_entities(path: Path) -> dict[str, list[tuple[str, str]]]:
    """``entity_id,party,token`` rows as {entity id: [(party, token), ...]}."""
    entities: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for entity, party, token in read_rows(path, ("entity_id", "party", "token")):
        entities[entity].append((party, token))
    return dict(entities)


def write_entities(result: LinkResult, path: Path, *, include_singletons: bool = False) -> int:
    """Write ``entity_id,party,token`` rows; returns the number of entities written.

    Written to a temporary file and renamed, so a reader never sees half a file.
    """
    rows: list[tuple[str, str, str]] = []
    number = 0
    linked: set[tuple[int, int]] = set()
    for number, entity in enumerate(result.entities, start=1):
        for party, record in entity.records:
            rows.append((f"e{number:07d}", result.parties[party], result.tokens[party][record].tobytes().hex()))
            linked.add((party, record))
    if include_singletons:
        for party, tokens in enumerate(result.tokens):
            for record in range(len(tokens)):
                if (party, record) not in linked:
                    number += 1
                    rows.append((f"e{number:07d}", result.parties[party], tokens[record].tobytes().hex()))
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["entity_id", "party", "token"])
        writer.writerows(rows)
    tmp.replace(path)
    return number
