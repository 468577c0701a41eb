"""Check and normalise one party's raw client rows, a column at a time (pure, no I/O).

:func:`prepare_rows` turns raw rows (as :func:`~linkage.agency.sources.read_rows` gives
them) into normalised values and the problems of the rows that cannot be encoded. Encoding
(:mod:`linkage.agency.records`) and the check (:mod:`linkage.agency.check`) both start from
it; it needs no secret, so it imports no hashing.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import compress, repeat
from typing import Any

from linkage.agency.normalise import (
    NormaliseError,
    normalise_category,
    normalise_code,
    normalise_date,
    normalise_text,
    normalise_texts,
)
from linkage.protocol import AttributeSpec, FieldSpec, Protocol

__all__ = ["PreparedColumns", "PreparedRows", "RowProblem", "Value", "prepare_columns", "prepare_rows"]

Value = str | dt.date | None
MAX_CLIENT_ID_LENGTH = 128
_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0"})
_CONSENT = _TRUE | _FALSE
# Kinds of field that _normalise_identifier hands to normalise_text as they are.
_TEXT_KINDS = frozenset({"name", "text"})
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


def _texts_at_once(cells: set[str], spec: FieldSpec) -> dict[str, Value]:
    """The name or text cells that :func:`_normalise_identifier` cannot refuse, normalised together."""
    plain = [cell for cell in cells if len(cell) <= spec.max_length and "\n" not in cell and "\r" not in cell]
    return dict(zip(plain, normalise_texts(plain), strict=True))


def _normalise_column(
    cells: Sequence[str],
    normalise: Callable[[str], Any],
    memo: _ColumnMemo,
    at_once: Callable[[set[str]], dict[str, Any]] | None = None,
) -> tuple[list[Any], bool, set[str]]:
    """Normalise one column of a chunk, each distinct cell once; a refused cell gives its :class:`NormaliseError`.

    Args:
        cells: the column's cells.
        normalise: normalises one cell, or raises :class:`NormaliseError`.
        memo: the column's cells normalised so far in this process.
        at_once: normalises many cells at once, leaving out those it cannot be sure of.

    Returns:
        The normalised value (or the error) per cell, whether any cell was refused, and
        the distinct cells.
    """
    values = memo.values
    distinct = set(cells)
    new = distinct.difference(values)
    if at_once is not None and new:
        done = at_once(new)
        values.update(done)
        new.difference_update(done)
    for cell in new:
        try:
            values[cell] = normalise(cell)
        except NormaliseError as exc:
            values[cell] = exc.with_traceback(None)  # kept: its frames (and this chunk) need not be
            memo.refused.add(cell)
    refused = bool(memo.refused) and not memo.refused.isdisjoint(distinct)
    return list(map(values.__getitem__, cells)), refused, distinct


@dataclass
class PreparedColumns:
    """One chunk normalised a column at a time, before it is cut into rows.

    Attributes:
        lines: each row's line (or spreadsheet row).
        client_ids: each row's client id, stripped.
        fields: per identifier field, each row's normalised value, or the
            :class:`~linkage.agency.normalise.NormaliseError` that refused its cell.
        consent: each row's consent (a row whose cell is neither true nor false has a problem).
        attributes: per attribute, each row's normalised value or its error.
        problems: by row position, the row's problems in the order of its columns (a row
            without any is absent).
        distinct: per column given, its distinct cells where they were gathered to
            normalise them (identifiers and attributes), else ``None``: what the check
            counts is looked up among them instead of going over every cell again.
    """

    lines: Sequence[int]
    client_ids: list[str]
    fields: list[list[Any]]
    consent: list[bool]
    attributes: list[list[Any]]
    problems: dict[int, list[RowProblem]]
    distinct: list[set[str] | None] = field(default_factory=list)

    def to_rows(self) -> PreparedRows:
        """The rows that passed, a row at a time, and every problem, in row order."""
        count = len(self.lines)
        values = list(zip(*self.fields, strict=True)) if self.fields else [()] * count
        attributes = list(zip(*self.attributes, strict=True)) if self.attributes else [()] * count
        out = PreparedRows()
        for number in range(count):
            found_problems = self.problems.get(number)
            if found_problems:
                out.problems.extend(found_problems)
                continue
            out.lines.append(self.lines[number])
            out.client_ids.append(self.client_ids[number])
            out.values.append(values[number])
            out.consent.append(self.consent[number])
            out.attributes.append(attributes[number])
        return out


def prepare_columns(
    protocol: Protocol, party_id: str, lines: Sequence[int], cells: Sequence[Sequence[str]]
) -> PreparedColumns:
    """Check and normalise one chunk given a column at a time, each distinct cell once.

    Only a row with a problem costs Python work of its own: the columns are stripped,
    looked up and compared by C-level calls over whole columns.

    Args:
        protocol: the protocol.
        party_id: the party whose file this is.
        lines: each row's line.
        cells: one sequence of raw cells per column of ``protocol.columns_for(party_id)``,
            each as long as ``lines``.

    Returns:
        The normalised columns and, for every row that cannot be encoded, its problems.
    """
    party = protocol.party(party_id)
    attribute_specs = [protocol.attribute(name) for name in party.attributes]
    id_column, consent_column = protocol.client_id_column, protocol.consent_column
    field_count = len(protocol.fields)
    today = dt.date.today()
    count = len(lines)
    # Per row (by position) with a problem: its problems, in column order.
    problems: dict[int, list[RowProblem]] = {}
    client_ids = list(map(str.strip, cells[0]))
    if "" in client_ids or max(map(len, client_ids), default=0) > MAX_CLIENT_ID_LENGTH:
        for number, client_id in enumerate(client_ids):
            if not client_id:
                problems.setdefault(number, []).append(
                    RowProblem(lines[number], id_column, "missing; every row needs a client id")
                )
            elif len(client_id) > MAX_CLIENT_ID_LENGTH:
                problems.setdefault(number, []).append(
                    RowProblem(lines[number], id_column, f"longer than {MAX_CLIENT_ID_LENGTH} characters")
                )
    # Rows none of whose identifiers normalised to something (each is empty or refused), as a
    # flag per row combined a column at a time by C-level maps (``None``: every row so far).
    without_identifier: list[bool] | None = None
    value_columns: list[list[Any]] = []
    distinct: list[set[str] | None] = [None] * len(cells)
    for offset, spec in enumerate(protocol.fields):
        column, refused, distinct[1 + offset] = _normalise_column(
            cells[1 + offset],
            partial(_normalise_identifier, spec=spec, today=today),
            _column_memo(protocol, spec.name, today),
            partial(_texts_at_once, spec=spec) if spec.kind in _TEXT_KINDS else None,
        )
        if without_identifier is None or any(without_identifier):
            empty = list(map(operator.is_, column, repeat(None)))
            if refused:
                empty = list(map(operator.or_, empty, map(isinstance, column, repeat(NormaliseError))))
            without_identifier = (
                empty if without_identifier is None else list(map(operator.and_, without_identifier, empty))
            )
        if refused:
            for number, value in enumerate(column):
                if isinstance(value, NormaliseError):
                    problems.setdefault(number, []).append(
                        RowProblem(lines[number], spec.name, value.reason, client_ids[number])
                    )
        value_columns.append(column)
    consent = list(map(str.lower, map(str.strip, cells[1 + field_count])))
    if not _CONSENT.issuperset(consent):
        for number, consent_raw in enumerate(consent):
            if consent_raw not in _CONSENT:
                problems.setdefault(number, []).append(
                    RowProblem(lines[number], consent_column, "not true or false; record the client's consent")
                )
    attribute_columns: list[list[Any]] = []
    for offset, attribute_spec in enumerate(attribute_specs):
        column, refused, distinct[2 + field_count + offset] = _normalise_column(
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
    for number in compress(range(count), [True] * count if without_identifier is None else without_identifier):
        problems.setdefault(number, []).append(
            RowProblem(lines[number], None, "every identifier is empty; nothing to match on", client_ids[number])
        )
    consents = list(map(_TRUE.__contains__, consent))
    return PreparedColumns(lines, client_ids, value_columns, consents, attribute_columns, problems, distinct)


def prepare_rows(protocol: Protocol, party_id: str, rows: Sequence[tuple[int, Sequence[str]]]) -> PreparedRows:
    """Check and normalise raw rows of one party.

    Client lists repeat names, dates, places and attribute values, so the rows are
    normalised a column at a time (:func:`prepare_columns`), each distinct cell once.

    Args:
        protocol: the protocol.
        party_id: the party whose file this is.
        rows: ``(line, values)`` pairs, values in the order of ``protocol.columns_for(party_id)``.

    Returns:
        The rows that passed, normalised, and a problem for every cell that did not, a
        row's problems in the order of its columns.
    """
    width = 2 + len(protocol.fields) + len(protocol.party(party_id).attributes)
    lines = [line for line, _ in rows]
    # The rows' cells a column at a time (every row has every column).
    cells = list(zip(*(raw for _, raw in rows), strict=True)) if rows else [()] * width
    return prepare_columns(protocol, party_id, lines, cells).to_rows()
