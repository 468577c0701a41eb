"""Check and normalise one party's raw client rows, a column at a time (pure, no I/O).

:func:`prepare_rows` turns raw rows (as :func:`~linkage.agency.sources.read_rows` gives
them) into normalised values and the problems of the rows that cannot be encoded. Encoding
(:mod:`linkage.agency.records`) and the check (:mod:`linkage.agency.check`) both start from
it; it needs no secret, so it imports no hashing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from linkage.agency.normalise import (
    NormaliseError,
    normalise_category,
    normalise_code,
    normalise_date,
    normalise_text,
)
from linkage.protocol import AttributeSpec, FieldSpec, Protocol

__all__ = ["PreparedRows", "RowProblem", "Value", "prepare_rows"]

Value = str | dt.date | None
MAX_CLIENT_ID_LENGTH = 128
_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0"})
# Per field: names, dates and places repeat and stay cached (a day of birth among some
# 25,000); a limit keeps memory flat whatever the file size.
_CACHE_LIMIT = 40_000
_MAX_MEMOS = 64


@dataclass(frozen=True)
class RowProblem:
    """Why one input row cannot be encoded (the value itself is never quoted)."""

    line: int
    column: str | None
    reason: str
    client_id: str = ""


@dataclass
class PreparedRows:
    """The rows of one chunk that passed, normalised, and the problems of the others."""

    lines: list[int] = field(default_factory=list)
    client_ids: list[str] = field(default_factory=list)
    values: list[tuple[Value, ...]] = field(default_factory=list)
    consent: list[bool] = field(default_factory=list)
    attributes: list[tuple[str, ...]] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)


def _normalise_identifier(raw: str, spec: FieldSpec, today: dt.date | None = None) -> Value:
    if len(raw) > spec.max_length:
        raise NormaliseError(
            f"longer than {spec.max_length} characters; check the column holds {spec.name} "
            "or raise max_length in the protocol"
        )
    if "\n" in raw or "\r" in raw:
        raise NormaliseError("contains a line break (a quoted value spanning lines); remove it")
    if spec.kind == "date":
        return normalise_date(raw, today)
    if spec.kind == "category":
        return normalise_category(raw, spec.categories)
    if spec.kind == "code":
        return normalise_code(raw)
    return normalise_text(raw)


def _normalise_attribute(raw: str, spec: AttributeSpec) -> str:
    text = raw.strip()
    if not text:
        return ""
    if spec.type == "boolean":
        lowered = text.lower()
        if lowered in _TRUE:
            return "true"
        if lowered in _FALSE:
            return "false"
        raise NormaliseError("not a boolean; write true or false")
    if spec.type == "integer":
        assert spec.lower is not None and spec.upper is not None  # noqa: S101 - schema requires bounds
        try:
            number = int(text)
        except ValueError as exc:
            raise NormaliseError("not a whole number") from exc
        if not spec.lower <= number <= spec.upper:
            raise NormaliseError(f"outside the protocol's bounds {spec.lower}..{spec.upper}")
        return str(number)
    for category in spec.categories:
        if text.casefold() == category.casefold():
            return category
    raise NormaliseError(f"not one of the categories {', '.join(spec.categories)}")


@dataclass
class _ColumnMemo:
    """One column's normalised cells (a refused cell maps to its error), kept across chunks."""

    values: dict[str, Any] = field(default_factory=dict)
    refused: set[str] = field(default_factory=set)


# Per (protocol fingerprint, column, day): what its cells normalised to, in this process.
# Names, dates, places and attribute values repeat from chunk to chunk; emptied past a
# limit, so memory stays flat. The day is part of the key: a date after today is refused.
_MEMOS: dict[tuple[str, str, dt.date], _ColumnMemo] = {}


def _column_memo(protocol: Protocol, column: str, today: dt.date) -> _ColumnMemo:
    key = (protocol.fingerprint, column, today)
    memo = _MEMOS.get(key)
    if memo is None or len(memo.values) >= _CACHE_LIMIT:
        if len(_MEMOS) >= _MAX_MEMOS:
            _MEMOS.clear()
        memo = _MEMOS[key] = _ColumnMemo()
    return memo


def _normalise_column(
    cells: Sequence[str], normalise: Callable[[str], Any], memo: _ColumnMemo
) -> tuple[list[Any], bool]:
    """Normalise one column of a chunk, each distinct cell once; a refused cell gives its :class:`NormaliseError`.

    Returns:
        The normalised value (or the error) per cell, and whether any cell was refused.
    """
    values = memo.values
    for cell in set(cells).difference(values):
        try:
            values[cell] = normalise(cell)
        except NormaliseError as exc:
            values[cell] = exc.with_traceback(None)  # kept: its frames (and this chunk) need not be
            memo.refused.add(cell)
    return list(map(values.__getitem__, cells)), bool(memo.refused) and not memo.refused.isdisjoint(cells)


def prepare_rows(protocol: Protocol, party_id: str, rows: Sequence[tuple[int, Sequence[str]]]) -> PreparedRows:
    """Check and normalise raw rows of one party.

    Client lists repeat names, dates, places and attribute values, so the rows are
    normalised a column at a time, each distinct cell once.

    Args:
        protocol: the protocol.
        party_id: the party whose file this is.
        rows: ``(line, values)`` pairs, values in the order of ``protocol.columns_for(party_id)``.

    Returns:
        The rows that passed, normalised, and a problem for every cell that did not, a
        row's problems in the order of its columns.
    """
    party = protocol.party(party_id)
    attribute_specs = [protocol.attribute(name) for name in party.attributes]
    id_column, consent_column = protocol.client_id_column, protocol.consent_column
    field_count = len(protocol.fields)
    today = dt.date.today()
    lines = [line for line, _ in rows]
    # The rows' cells a column at a time (every row has every column).
    cells = (
        list(zip(*(raw for _, raw in rows), strict=True)) if rows else [()] * (2 + field_count + len(attribute_specs))
    )
    # Per row (by position) with a problem: its problems, in column order.
    problems: dict[int, list[RowProblem]] = {}
    client_ids = [raw.strip() for raw in cells[0]]
    for number, client_id in enumerate(client_ids):
        if not client_id:
            problems.setdefault(number, []).append(
                RowProblem(lines[number], id_column, "missing; every row needs a client id")
            )
        elif len(client_id) > MAX_CLIENT_ID_LENGTH:
            problems.setdefault(number, []).append(
                RowProblem(lines[number], id_column, f"longer than {MAX_CLIENT_ID_LENGTH} characters")
            )
    # Per row: how many of its identifiers were refused.
    refused_count: dict[int, int] = {}
    value_columns: list[list[Any]] = []
    for offset, spec in enumerate(protocol.fields):
        column, refused = _normalise_column(
            cells[1 + offset],
            partial(_normalise_identifier, spec=spec, today=today),
            _column_memo(protocol, spec.name, today),
        )
        if refused:
            for number, value in enumerate(column):
                if isinstance(value, NormaliseError):
                    problems.setdefault(number, []).append(
                        RowProblem(lines[number], spec.name, value.reason, client_ids[number])
                    )
                    refused_count[number] = refused_count.get(number, 0) + 1
        value_columns.append(column)
    consent = [raw.strip().lower() for raw in cells[1 + field_count]]
    for number, consent_raw in enumerate(consent):
        if consent_raw not in _TRUE and consent_raw not in _FALSE:
            problems.setdefault(number, []).append(
                RowProblem(lines[number], consent_column, "not true or false; record the client's consent")
            )
    attribute_columns: list[list[Any]] = []
    for offset, attribute_spec in enumerate(attribute_specs):
        column, refused = _normalise_column(
            cells[2 + field_count + offset],
            partial(_normalise_attribute, spec=attribute_spec),
            _column_memo(protocol, attribute_spec.name, today),
        )
        if refused:
            for number, value in enumerate(column):
                if isinstance(value, NormaliseError):
                    problems.setdefault(number, []).append(
                        RowProblem(lines[number], attribute_spec.name, value.reason, client_ids[number])
                    )
        attribute_columns.append(column)
    values = list(zip(*value_columns, strict=True)) if value_columns else [()] * len(rows)
    # A row has an identifier when some field's value normalised to something (neither empty nor refused).
    for number, row_values in enumerate(values):
        if row_values.count(None) + refused_count.get(number, 0) == field_count:
            problems.setdefault(number, []).append(
                RowProblem(lines[number], None, "every identifier is empty; nothing to match on", client_ids[number])
            )
    out = PreparedRows()
    attributes = list(zip(*attribute_columns, strict=True)) if attribute_columns else [()] * len(rows)
    for number in range(len(rows)):
        found_problems = problems.get(number)
        if found_problems:
            out.problems.extend(found_problems)
            continue
        out.lines.append(lines[number])
        out.client_ids.append(client_ids[number])
        out.values.append(values[number])
        out.consent.append(consent[number] in _TRUE)
        out.attributes.append(attributes[number])
    return out
