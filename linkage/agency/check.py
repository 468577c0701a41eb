"""Check a client file before encoding it: read and normalise everything, write nothing.

:func:`check_file` reads a client file exactly as :func:`~linkage.agency.encode.encode_csv`
does (same columns, same normalisation, same rows rejected) and returns a
:class:`CheckSummary` per column: how many cells are empty, how many the normaliser
refuses and why, and how many hold a placeholder (``UNKNOWN``, ``N/A``, ``TEST``, a birth
date of 01/01/1900...) that would be encoded as if it were a real value; and which client
ids are on more than one row. An agency fixes its list first, then encodes. Nothing is
derived from the secret, so checking needs none.
"""

from __future__ import annotations

import datetime as dt
import operator
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress
from pathlib import Path

from linkage.agency.columns import ColumnChoice, choose_columns
from linkage.agency.prepare import PreparedColumns, RowProblem, prepare_columns
from linkage.agency.sources import (
    Rows,
    Task,
    client_id_hashes,
    map_in_order,
    open_client_file,
    read_columns,
    repeated_lines,
    rows_by_reference,
    task_rows,
)
from linkage.protocol import Protocol

__all__ = [
    "PLACEHOLDER_DATES",
    "PLACEHOLDER_TEXT",
    "CheckSummary",
    "ColumnQuality",
    "check_file",
]

MAX_LISTED_PROBLEMS = 50
PREVIEW_ROWS = 5

# Values that stand for "not known" in exported lists. Encoded, they look like a real name or
# address shared by everyone who has them, so they make false matches. Found as written
# here, in lower case or capitalised; shown as written here.
PLACEHOLDER_TEXT: Mapping[str, str] = {
    label.casefold(): label
    for label in (
        "UNKNOWN",
        "UNK",
        "NOT KNOWN",
        "NOT STATED",
        "N/A",
        "N.A.",
        "NONE",
        "NULL",
        "NIL",
        "TEST",
        "DUMMY",
        "SAMPLE",
        "XXX",
        "XXXX",
        "TBA",
        "TBC",
        "NO NAME",
        "NFA",
        "NO FIXED ABODE",
        "NO FIXED ADDRESS",
        "?",
        "-",
        "--",
        ".",
    )
}
# Postcodes that mean "none" rather than a place.
PLACEHOLDER_CODES: Mapping[str, str] = {"0000": "0000", "9999": "9999"}
# Birth dates that systems fill in when the real one is not known.
PLACEHOLDER_DATES: Mapping[dt.date, str] = {
    dt.date(1900, 1, 1): "01/01/1900",
    dt.date(1901, 1, 1): "01/01/1901",
    dt.date(1970, 1, 1): "01/01/1970",
}
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class ColumnQuality:
    """What the check found in one of the protocol's columns.

    Attributes:
        column: the protocol's name.
        header: the file's name for it.
        kind: ``client id``, ``consent``, an identifier's kind (``name``, ``date``...) or
            ``attribute``.
        missing: rows whose cell is empty.
        unparsed: rows whose cell the normaliser refuses (rejected when encoding).
        reasons: why cells were refused, with counts, most frequent first.
        suspicious: placeholder values found (as :data:`PLACEHOLDER_TEXT` writes them), with
            counts, most frequent first.
    """

    column: str
    header: str
    kind: str
    missing: int
    unparsed: int
    reasons: tuple[tuple[str, int], ...]
    suspicious: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class CheckSummary:
    """What :func:`check_file` found; nothing was written.

    Attributes:
        source: the file (and sheet) checked, as messages name it.
        rows: data rows (empty rows are not counted).
        encodable: rows that encoding would write.
        rejected: rows that encoding would reject (with ``--on-error skip``) or stop on.
        columns: which of the file's columns was read for each protocol column.
        quality: one entry per protocol column, in the protocol's order.
        row_problems: problems of whole rows (wrong number of columns, no identifier), with counts.
        duplicate_ids: client ids found on more than one row.
        duplicate_rows: the rows that carry them.
        problems: the first problems, located as in an encoding error.
        problem_count: all problems, of which ``problems`` lists the first.
        preview: the first rows the normaliser accepts, normalised, in the protocol's column
            order (dates as ``YYYY-MM-DD``, a missing value empty).
        preview_lines: the line (or row) of each previewed row.
        warnings: columns of the file that are ignored.
        seconds: how long the check took.
    """

    source: str
    rows: int
    encodable: int
    rejected: int
    columns: ColumnChoice
    quality: tuple[ColumnQuality, ...]
    row_problems: tuple[tuple[str, int], ...]
    duplicate_ids: int
    duplicate_rows: int
    problems: tuple[str, ...]
    problem_count: int
    preview: tuple[tuple[str, ...], ...]
    preview_lines: tuple[int, ...]
    warnings: tuple[str, ...]
    seconds: float


@dataclass
class _Partial:
    """What one chunk adds to the summary (computed where the chunk is read)."""

    rows: int = 0
    missing: list[int] = field(default_factory=list)
    unparsed: Counter[str] = field(default_factory=Counter)
    reasons: Counter[tuple[str | None, str]] = field(default_factory=Counter)
    suspicious: Counter[tuple[int, str]] = field(default_factory=Counter)
    problem_lines: list[int] = field(default_factory=list)
    first_problems: list[RowProblem] = field(default_factory=list)
    problem_count: int = 0
    id_hashes: list[int] = field(default_factory=list)
    id_lines: list[int] = field(default_factory=list)
    id_failed: list[bool] = field(default_factory=list)
    preview: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)


# Setup of a checking worker: protocol, party, column positions, header width, kinds, and a
# spreadsheet's rows (which chunks then name by range; see sources.rows_by_reference).
_Setup = tuple[Protocol, str, list[int], int, list[str], Rows | None]
_setup: _Setup | None = None


def _init_worker(
    protocol: Protocol, party_id: str, positions: list[int], width: int, kinds: list[str], rows: Rows | None
) -> None:
    global _setup  # one setup per worker process, by design
    _setup = (protocol, party_id, positions, width, kinds, rows)


def _forget_setup() -> None:
    """Let go of the setup (and a sheet's rows) in this process once its chunks are checked."""
    global _setup  # one setup per worker process, by design
    _setup = None


def _kinds(protocol: Protocol, party_id: str) -> list[str]:
    """What each of the party's columns holds, for the placeholder checks."""
    attributes = protocol.party(party_id).attributes
    return ["client id", *(spec.kind for spec in protocol.fields), "consent", *(["attribute"] * len(attributes))]


def _date_spellings(date: dt.date) -> list[str]:
    """Every way :func:`~linkage.agency.normalise.normalise_date` reads a date, as text."""
    days, months = {f"{date.day}", f"{date.day:02d}"}, {f"{date.month}", f"{date.month:02d}"}
    iso = [f"{date.year}-{m}-{d}" for m in months for d in days]
    return iso + [f"{d}{a}{m}{b}{date.year}" for d in days for m in months for a in "/.-" for b in "/.-"]


def _spellings(label: str) -> set[str]:
    """How an export writes a placeholder: as listed, in lower case, or capitalised (``Unknown``)."""
    return {label, label.lower(), label.title(), label.capitalize()}


# Placeholders by their exact spellings, by the kind of column they are looked for in: a
# chunk's distinct values are intersected with these at C speed, not looked at one by one.
_TEXT = {spelling: label for label in PLACEHOLDER_TEXT.values() for spelling in _spellings(label)}
_PLACEHOLDERS: Mapping[str, Mapping[str, str]] = {
    "client id": _TEXT,
    "name": _TEXT,
    "text": _TEXT,
    "code": {**_TEXT, **PLACEHOLDER_CODES},
    "date": {text: label for date, label in PLACEHOLDER_DATES.items() for text in _date_spellings(date)},
}


def _count_cells(cells: Sequence[str], kind: str, distinct: set[str] | None = None) -> tuple[int, Counter[str]]:
    """Empty cells, and placeholders by label, in one column of a chunk.

    Args:
        cells: the column's cells.
        kind: what the column holds (see :func:`_kinds`).
        distinct: the column's distinct cells, if they are at hand.

    >>> _count_cells(["Aroha", "", " ", "UNKNOWN", "Unknown", "n/a"], "name")
    (2, Counter({'UNKNOWN': 2, 'N/A': 1}))
    >>> _count_cells(["1/1/1900", "01-01-1900", "1984-03-07"], "date")
    (0, Counter({'01/01/1900': 2}))
    """
    # Whole-column calls at C speed: a Python step per cell would cost more than the check.
    # The few distinct values that matter are found among the distinct cells, then counted.
    if distinct is None:
        distinct = set(cells)
    missing = cells.count("") + sum(map(cells.count, filter(str.isspace, distinct)))
    table = _PLACEHOLDERS.get(kind)
    found: Counter[str] = Counter()
    if table:
        for value in table.keys() & distinct:
            found[table[value]] += cells.count(value)
    return missing, found


def _preview_row(prepared: PreparedColumns, number: int) -> tuple[str, ...]:
    fields = [column[number] for column in prepared.fields]
    values = [value.isoformat() if isinstance(value, dt.date) else (value or "") for value in fields]
    consent = "true" if prepared.consent[number] else "false"
    return (prepared.client_ids[number], *values, consent, *[column[number] for column in prepared.attributes])


def _check_chunk(task: Task) -> _Partial:
    """Read and normalise one chunk, and count what the summary reports.

    Works on the chunk's columns as :func:`~linkage.agency.prepare.prepare_columns` leaves
    them: only rows with a problem, and the few previewed, are looked at one by one.
    """
    assert _setup is not None  # noqa: S101 - set by _init_worker
    protocol, party_id, positions, width, kinds, rows = _setup
    lines, cells, problems = read_columns(task_rows(task, rows), positions, width)
    prepared = prepare_columns(protocol, party_id, lines, cells)
    # A row that cannot be read has no line among the rows read.
    unread = {p.line for p in problems} - set(lines) if problems else set()
    out = _Partial(rows=len(lines) + len(unread))
    for index, column in enumerate(cells):
        missing, found = _count_cells(column, kinds[index], prepared.distinct[index])
        out.missing.append(missing)
        for label, count in found.items():
            out.suspicious[(index, label)] = count
    for number in sorted(prepared.problems):
        problems.extend(prepared.problems[number])
    for problem in problems:
        out.reasons[(problem.column, problem.reason)] += 1
    problem_lines = {p.line for p in problems}
    out.problem_lines = sorted(problem_lines)
    out.first_problems = sorted(problems, key=lambda p: p.line)[:MAX_LISTED_PROBLEMS]
    out.problem_count = len(problems)
    ids = prepared.client_ids
    id_lines = list(lines)
    if "" in ids:
        id_lines = list(compress(id_lines, ids))
        ids = [client_id for client_id in ids if client_id]
    out.id_hashes = client_id_hashes(ids)
    out.id_lines = id_lines
    out.id_failed = list(map(problem_lines.__contains__, id_lines))
    for number in range(len(lines)):
        if len(out.preview) == PREVIEW_ROWS:
            break
        if number not in prepared.problems:
            out.preview.append((lines[number], _preview_row(prepared, number)))
    return out


def check_file(
    protocol: Protocol,
    party_id: str,
    input_path: Path,
    *,
    sheet: str | None = None,
    columns: Mapping[str, str] | None = None,
    input_name: str | None = None,
    workers: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> CheckSummary:
    """Read and normalise a client file as encoding would, and summarise its quality per column.

    Args:
        protocol: the validated protocol.
        party_id: the party whose clients these are.
        input_path: the client file (a CSV or a spreadsheet).
        sheet: the spreadsheet's sheet to read (default: the first).
        columns: protocol column -> the file's column, as for encoding.
        input_name: how messages name the file (default: its path).
        workers: processes to use; ``None`` means every core, 1 means in this process.
        on_progress: called with (done, total): bytes of a CSV, rows of a spreadsheet.

    Returns:
        The summary; nothing is written.

    Raises:
        InputError: the file cannot be read, or its columns cannot be told apart.
    """
    started = time.perf_counter()
    expected = protocol.columns_for(party_id)
    kinds = _kinds(protocol, party_id)
    with open_client_file(input_path, sheet=sheet, name=input_name) as source:
        choice = choose_columns(source.header, expected, columns, where=source.where(source.header_line))
        merged = _Partial(missing=[0] * len(expected))
        problem_lines: set[int] = set()
        hashes: list[int] = []
        lines: list[int] = []
        failed: list[bool] = []
        first_problems: list[RowProblem] = []
        read_up_to: list[int] = []

        workers = workers or os.cpu_count() or 1
        by_reference = rows_by_reference(workers)

        def chunks() -> Iterator[Task]:
            for chunk in source.chunks(by_reference=by_reference):
                read_up_to.append(source.position)
                yield chunk

        shared = source.shared_rows if by_reference else None
        setup: _Setup = (protocol, party_id, choice.positions, len(source.header), kinds, shared)
        # This process has nothing else to do meanwhile: it checks chunks too.
        results = map_in_order(_check_chunk, chunks(), workers, _init_worker, setup, here=True)
        for number, partial in enumerate(results):
            merged.rows += partial.rows
            merged.missing = [a + b for a, b in zip(merged.missing, partial.missing, strict=True)]
            merged.reasons.update(partial.reasons)
            merged.suspicious.update(partial.suspicious)
            merged.problem_count += partial.problem_count
            problem_lines.update(partial.problem_lines)
            hashes += partial.id_hashes
            lines += partial.id_lines
            failed += partial.id_failed
            if len(first_problems) < MAX_LISTED_PROBLEMS:
                first_problems.extend(partial.first_problems)
            if len(merged.preview) < PREVIEW_ROWS:
                merged.preview.extend(partial.preview[: PREVIEW_ROWS - len(merged.preview)])
            if on_progress:
                on_progress(read_up_to[number], source.total)
        _forget_setup()
        counts = [count for count in Counter(hashes).values() if count > 1]
        # As encoding does: among rows that pass, every row whose id another row also has is rejected.
        passed = list(map(operator.not_, failed))
        repeats = repeated_lines(list(compress(hashes, passed)), list(compress(lines, passed)))
        id_column = expected[0]
        for line, other in sorted(repeats.items()):
            if len(first_problems) < 2 * MAX_LISTED_PROBLEMS:
                first_problems.append(
                    RowProblem(
                        line, id_column, f"the client id is also on {source.unit} {other}; each client must appear once"
                    )
                )
        rejected = len(problem_lines.union(repeats))
        first_problems.sort(key=lambda p: p.line)
        quality = []
        for index, column in enumerate(expected):
            reasons = Counter({reason: n for (col, reason), n in merged.reasons.items() if col == column})
            suspicious = Counter({label: n for (i, label), n in merged.suspicious.items() if i == index})
            quality.append(
                ColumnQuality(
                    column=column,
                    header=choice.header_of(column),
                    kind=kinds[index],
                    missing=merged.missing[index],
                    unparsed=sum(reasons.values()),
                    reasons=tuple(reasons.most_common()),
                    suspicious=tuple(suspicious.most_common()),
                )
            )
        row_problems = Counter({reason: n for (col, reason), n in merged.reasons.items() if col is None})
        return CheckSummary(
            source=source.where(),
            rows=merged.rows,
            encodable=merged.rows - rejected,
            rejected=rejected,
            columns=choice,
            quality=tuple(quality),
            row_problems=tuple(row_problems.most_common()),
            duplicate_ids=len(counts),
            duplicate_rows=sum(counts),
            problems=tuple(source.describe(p, choice) for p in first_problems[:MAX_LISTED_PROBLEMS]),
            problem_count=merged.problem_count + len(repeats),
            preview=tuple(values for _, values in merged.preview),
            preview_lines=tuple(line for line, _ in merged.preview),
            warnings=tuple(
                f"{source.where()}: column {name!r} is not in the protocol and is ignored" for name in choice.ignored
            ),
            seconds=time.perf_counter() - started,
        )
