"""The token-keyed CSV files pprl writes and reads: entities and key maps.

* ``entities.csv`` (``entity_id,party,token``): what ``pprl link`` writes, one row per
  record of an entity; evaluation reads it.
* the stable mapping (``stable_entity_id,party,token``): what ``pprl link
  --statistics-out`` writes from a frozen model (:mod:`linkage.matching.stable`); the
  statistics side reads only this, so that its privacy unit holds (the header says which).
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
    from linkage.matching.link_state import LinkState

__all__ = [
    "ENTITY_COLUMNS",
    "STABLE_COLUMNS",
    "read_entities",
    "read_keymap",
    "read_rows",
    "file_sha256",
    "listed_positions",
    "read_tokens",
    "token_set_sha256",
    "write_duplicates",
    "write_entities",
    "write_retired",
    "write_state_entities",
]

ENTITY_COLUMNS = ("entity_id", "party", "token")
STABLE_COLUMNS = ("stable_entity_id", "party", "token")


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


MAX_LISTED = 10


def listed_positions(numbers: Sequence[int]) -> str:
    """Positions in a list (of tokens sent, say), a few of them, for an error message.

    >>> listed_positions([3, 7]), listed_positions(list(range(1, 13)))
    ('3, 7', '1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 2 more')
    """
    shown = ", ".join(str(n) for n in numbers[:MAX_LISTED])
    return shown + (f" and {len(numbers) - MAX_LISTED} more" if len(numbers) > MAX_LISTED else "")


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read a mebibyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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


def read_entities(path: Path, *, stable: bool | None = None) -> dict[str, list[tuple[str, str]]]:
    """An entities file's rows as {entity id: [(party, token), ...]}.

    Args:
        path: the file.
        stable: ``True`` reads only a stable mapping, ``False`` only record-level entities,
            ``None`` either.

    Raises:
        InputError: no such file, another header, or a row of another width.
    """
    columns = ENTITY_COLUMNS
    if stable or (stable is None and _first_line(path).startswith(STABLE_COLUMNS[0])):
        columns = STABLE_COLUMNS
    try:
        rows = list(read_rows(path, columns))
    except InputError as exc:
        if stable and _first_line(path).startswith(ENTITY_COLUMNS[0]):
            raise InputError(
                f"{path} holds record-level entities, not the stable mapping the statistics side counts people "
                "in; write that with `pprl link --save-model model.json --statistics-out FILE` (or --model) "
                "and pass it",
                path=str(path),
            ) from exc
        raise
    entities: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for entity, party, token in rows:
        entities[entity].append((party, token))
    return dict(entities)


def _first_line(path: Path) -> str:
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return handle.readline()
    except (FileNotFoundError, UnicodeDecodeError):
        return ""


def write_entities(result: LinkResult, path: Path, *, include_singletons: bool = False, stable: bool = False) -> int:
    """Write ``entity_id,party,token`` rows; returns the number of entities written.

    With ``stable``, the run's stable mapping under the header ``stable_entity_id,party,token``
    (the run must have used or frozen a model). Written to a temporary file and renamed, so
    a reader never sees half a file.
    """
    entities = result.entities
    if stable:
        if result.stable is None:
            raise InputError("the stable mapping needs a frozen model: link with --model FILE or --save-model FILE")
        entities = result.stable.entities
    rows: list[tuple[str, str, str]] = []
    number = 0
    linked: set[tuple[int, int]] = set()
    for number, entity in enumerate(entities, start=1):
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
        writer.writerow(STABLE_COLUMNS if stable else ENTITY_COLUMNS)
        writer.writerows(rows)
    tmp.replace(path)
    return number


def read_tokens(path: Path) -> list[str]:
    """Record tokens to withdraw: one per line, or a CSV whose first column is ``token`` (a key map's rows).

    Raises:
        InputError: no such file, or lines that are not tokens (every such line listed).
    """
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file", path=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not a text file of record tokens", path=str(path)) from exc
    tokens, problems = [], []
    for number, line in enumerate(lines, start=1):
        value = line.split(",", 1)[0].strip().lower()
        if not value or (number == 1 and value == "token"):
            continue
        if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
            problems.append(f"{path} line {number}: not a record token (32 hex digits, as in the key map)")
        else:
            tokens.append(value)
    if problems:
        raise InputError(
            problems[0] if len(problems) == 1 else f"{path}: lines that are not tokens",
            path=str(path),
            problems=problems,
        )
    return tokens


def _entity_name(number: int) -> str:
    return f"e{number:07d}"


def write_state_entities(
    state: LinkState, path: Path, *, include_singletons: bool = False, stable: bool = False
) -> int:
    """Write a linkage state's entities with their lasting ids; returns the number written.

    Entities of two or more records (all of them with ``include_singletons``), under
    ``entity_id,party,token`` (or the stable mapping's header with ``stable``: a state's
    entities are the stable mapping). Written to a temporary file and renamed.
    """
    written = 0
    rows: list[tuple[str, str, str]] = []
    for number, records in state.entities().items():
        if len(records) < 2 and not include_singletons:
            continue
        written += 1
        for party, record in records:
            rows.append(
                (_entity_name(number), state.parties[party], state.records[party]["token"][record].tobytes().hex())
            )
    _write_csv(path, STABLE_COLUMNS if stable else ENTITY_COLUMNS, rows)
    return written


def write_retired(retired: dict[int, int | None], path: Path) -> None:
    """Write ``retired_entity_id,entity_id``: each id that went and the id its records went to (empty: withdrawn)."""
    rows = [(_entity_name(old), "" if new is None else _entity_name(new)) for old, new in sorted(retired.items())]
    _write_csv(path, ("retired_entity_id", "entity_id"), rows)


def write_duplicates(groups: Sequence[tuple[str, Sequence[bytes]]], path: Path) -> None:
    """Write the deduplication report: ``duplicate_group,party,token``, one row per token of each group.

    An agency reads its own rows (its tokens map to client ids through its key map).
    """
    rows = [
        (f"d{number:07d}", party, token.hex())
        for number, (party, tokens) in enumerate(groups, start=1)
        for token in tokens
    ]
    _write_csv(path, ("duplicate_group", "party", "token"), rows)


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    tmp.replace(path)
