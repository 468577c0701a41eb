"""Read a client file, CSV or spreadsheet, as a header and chunks of raw rows.

:func:`open_client_file` opens a UTF-8 CSV (RFC 4180) or a spreadsheet (``.xlsx``,
``.xlsm``, ``.xlsb``, ``.xls``, ``.ods``, read by calamine) and gives its header and its data
rows in chunks; :func:`read_rows` turns one chunk into the protocol's columns as text, in
whichever process encodes it. Both kinds of file give the same text for the same values:
a spreadsheet date becomes ``YYYY-MM-DD``, which the normaliser reads exactly as a typed
date, and a line break inside a value (a quoted one in a CSV, Alt+Enter in a spreadsheet)
becomes a space, since rural-delivery addresses are exported that way.

Messages name places as a person finds them: ``clients.csv line 14`` (physical lines, the
first line of a record that spans several) or ``clients.xlsx sheet 'Clients' row 14,
column C`` (the spreadsheet's own numbering).
"""

from __future__ import annotations

import csv
import gc
import hashlib
import io
import itertools
import multiprocessing
import operator
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from linkage.agency.columns import ColumnChoice
from linkage.agency.prepare import RowProblem
from linkage.agency.sheets import SPREADSHEET_SUFFIXES, SheetCells, SheetRows, parse_sheet
from linkage.errors import InputError

if TYPE_CHECKING:  # numpy is imported where it is used: the check never needs it
    import numpy as np

__all__ = [
    "CHUNK_ROWS",
    "SPREADSHEET_SUFFIXES",
    "ClientFile",
    "client_id_hashes",
    "column_letter",
    "duplicate_lines",
    "hash_client_ids",
    "list_sheets",
    "map_in_order",
    "open_client_file",
    "read_columns",
    "read_rows",
    "repeated_lines",
    "rows_by_reference",
    "task_rows",
]

CHUNK_ROWS = 4000
# A header row names at least two columns (every protocol has a client id and a consent
# column): rows above it with one cell or none, such as a title, are skipped.
_MIN_HEADER_CELLS = 2
_SAVE_AS_CSV = "save it as comma-separated CSV (in Excel: Save As > CSV UTF-8), or as .xlsx"

# What one chunk of a client file is: its first line (or row) number, and either CSV text
# (parsed where it is encoded, which costs far less than sending parsed rows between
# processes), a spreadsheet's rows of cells as text (see sheets.SheetCells), or the range of
# those rows in the sheet that the worker already holds (see :meth:`ClientFile.chunks`).
Payload = str | list[list[str]]
Task = tuple[int, Payload | range]
# A chunk whose rows are at hand, as read_rows and read_columns take it (see task_rows): a
# chunk of a sheet held here is a view of the sheet's rows, made only if they are needed.
ReadTask = tuple[int, Payload | SheetRows]
Rows = Sequence[list[str]]
Result = TypeVar("Result")


def column_letter(index: int) -> str:
    """The spreadsheet name of a 0-based column index.

    >>> column_letter(0), column_letter(25), column_letter(26), column_letter(701)
    ('A', 'Z', 'AA', 'ZZ')
    """
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters


def _flatten(cell: str) -> str:
    """A value with its line breaks as spaces (a quoted line break is part of the value)."""
    if "\n" in cell or "\r" in cell:
        return " ".join(cell.splitlines())
    return cell


class ClientFile:
    """An open client file: where its header is, and its data rows in chunks.

    Attributes:
        path: the file.
        name: how messages name it (its path unless told otherwise).
        sheet: the sheet read, for a spreadsheet; ``None`` for a CSV.
        header: the header's cells, as text.
        header_line: the line (CSV) or row (spreadsheet) of the header.
        unit: ``"line"`` or ``"row"``, the word for a place in this file.
        total: the progress total (bytes for a CSV, rows for a spreadsheet).
    """

    path: Path
    name: str
    sheet: str | None
    header: tuple[str, ...]
    header_line: int
    unit: str
    total: int
    _position = 0

    @property
    def position(self) -> int:
        """Progress so far, in the unit of :attr:`total`: what the chunks given out so far cover."""
        return self._position

    def where(self, line: int | None = None, column: int | None = None) -> str:
        """A place in the file as a person finds it, e.g. ``clients.xlsx sheet 'Clients' row 14, column C``."""
        place = self.name if self.sheet is None else f"{self.name} sheet {self.sheet!r}"
        if line is not None:
            place += f" {self.unit} {line}"
        if column is not None and self.sheet is not None:
            place += f", column {column_letter(column)}"
        return place

    def describe(self, problem: RowProblem, columns: ColumnChoice) -> str:
        """A row's problem as a person finds it in the file.

        For example ``clients.xlsx sheet 'Clients' row 14, column C 'DOB' (date_of_birth): not a date...``.
        """
        if problem.column is None:
            return f"{self.where(problem.line)}: {problem.reason}"
        position = columns.positions[[m.column for m in columns.matches].index(problem.column)]
        place = self.where(problem.line, position)  # a spreadsheet's ends with ", column E"
        place += (
            f" {columns.label(problem.column)}"
            if self.sheet is not None
            else f", column {columns.label(problem.column)}"
        )
        return f"{place}: {problem.reason}"

    @property
    def shared_rows(self) -> Rows | None:
        """A spreadsheet's rows as read, for workers to hold (``None`` for a CSV, read in chunks)."""
        return None

    def chunks(self, *, by_reference: bool = False) -> Iterator[Task]:
        """The data rows after the header, in chunks of about :data:`CHUNK_ROWS` rows.

        Args:
            by_reference: for a spreadsheet, give each chunk as the range of its rows in
                :attr:`shared_rows` instead of the rows (see :func:`task_rows`); a CSV's
                chunks are its text either way.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release the file."""

    def __enter__(self) -> ClientFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _TrackedBytes(io.RawIOBase):
    """A binary file that remembers how far it has been read, for progress."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count: int | None = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        self.position += count or 0
        return count or 0


class _CsvFile(ClientFile):
    """A UTF-8 CSV (a BOM is allowed), comma-separated, quoted as RFC 4180 says."""

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name, self.sheet, self.unit = path, name, None, "line"
        self.total = path.stat().st_size
        if self.total == 0:
            raise InputError(f"{name}: the file is empty; export the client list with its header row", path=name)
        self._raw = path.open("rb")
        self._tracked = _TrackedBytes(self._raw)
        self._text = io.TextIOWrapper(io.BufferedReader(self._tracked), encoding="utf-8-sig", newline="")
        try:
            header_text = self._text.readline()
        except UnicodeDecodeError as exc:
            self.close()
            raise InputError(
                f"{name} line 1: not UTF-8 text; save the file as UTF-8 (in Excel: Save As > CSV UTF-8)",
                path=name,
                line=1,
            ) from exc
        header = next(csv.reader([header_text]), []) if header_text.strip() else []
        if not header:
            self.close()
            raise InputError(f"{name}: no header row; the first line must name the columns", path=name)
        if len(header) == 1 and any(sep in header[0] for sep in ";\t|"):
            found = next(sep for sep in ";\t|" if sep in header[0])
            self.close()
            raise InputError(
                f"{name} line 1: the header has one column; the file seems to use {found!r} between "
                "columns. Save it as comma-separated CSV (in Excel: Save As > CSV UTF-8), or as .xlsx",
                path=name,
                line=1,
            )
        self.header = tuple(header)
        self.header_line = 1

    @property
    def position(self) -> int:
        """The bytes read so far."""
        return min(self._tracked.position, self.total)

    def chunks(self, *, by_reference: bool = False) -> Iterator[Task]:  # noqa: ARG002 - text either way
        """Group the file's physical lines into chunks of whole records, as (first line, text).

        A record ends where its quotes balance, so a quoted value spanning lines stays in
        one chunk.
        """
        lines: list[str] = []
        start = line = 2
        open_quote = False
        records = 0
        try:
            for physical in self._text:
                lines.append(physical)
                line += 1
                if physical.count('"') % 2:
                    open_quote = not open_quote
                if not open_quote:
                    records += 1
                    if records >= CHUNK_ROWS:
                        yield start, "".join(lines)
                        lines, start, records = [], line, 0
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{self.name} near line {line}: not UTF-8 text ({exc.reason}); save the file "
                "as UTF-8 (in Excel: Save As > CSV UTF-8)",
                path=self.name,
                line=line,
            ) from exc
        if lines:
            yield start, "".join(lines)

    def close(self) -> None:
        self._raw.close()


class _Spreadsheet(ClientFile):
    """One sheet of a workbook, read whole by calamine (a sheet holds at most about a million rows)."""

    def __init__(self, path: Path, name: str, sheet: str | None) -> None:
        from fastexcel import FastExcelError
        from python_calamine import CalamineError  # which lists a workbook's sheets for fastexcel

        self.path, self.name, self.unit = path, name, "row"
        try:
            parsed = parse_sheet(path, sheet)
        except (FastExcelError, CalamineError) as exc:
            raise InputError(
                f"{name}: cannot read this spreadsheet ({exc.__class__.__name__}: {exc}); open it in your "
                f"spreadsheet program and {_SAVE_AS_CSV}",
                path=name,
            ) from exc
        if parsed.cells is None:
            if sheet is None:
                raise InputError(f"{name}: the workbook has no visible worksheet", path=name)
            listed = ", ".join(repr(s) for s in parsed.sheet_names)
            raise InputError(f"{name}: no sheet {sheet!r}; its sheets are {listed}", path=name)
        sheet, cells = parsed.name, parsed.cells
        # Rows start at the sheet's row 1, but cells at the first used column: remember that
        # column's index for the letters in messages.
        self._first_column = cells.first_column
        # Rows are made from the cells a chunk at a time, where each chunk is read.
        self._rows: Rows = cells
        self.sheet = sheet
        header_index = next(
            (
                index
                for index, row in enumerate(self._rows)
                if sum(1 for cell in row if cell.strip()) >= _MIN_HEADER_CELLS
            ),
            None,
        )
        if header_index is None:
            raise InputError(f"{self.where()}: no header row; the first row must name the columns", path=name, line=1)
        self.header = tuple(_flatten(cell).strip() for cell in self._rows[header_index])
        self.header_line = header_index + 1
        self.total = max(len(self._rows) - self.header_line, 1)

    def where(self, line: int | None = None, column: int | None = None) -> str:
        """As :meth:`ClientFile.where`, with columns counted from the sheet's first column A."""
        return super().where(line, None if column is None else column + self._first_column)

    @property
    def shared_rows(self) -> Rows:
        """Every row of the sheet, as calamine gave them."""
        return self._rows

    def chunks(self, *, by_reference: bool = False) -> Iterator[Task]:
        """Chunks of rows after the header, with their spreadsheet row numbers."""
        for start in range(self.header_line, len(self._rows), CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, len(self._rows))
            self._position = stop - self.header_line
            yield start + 1, range(start, stop) if by_reference else list(self._rows[start:stop])

    def close(self) -> None:
        self._rows = []


def list_sheets(path: Path) -> tuple[str, ...]:
    """The visible worksheets of a spreadsheet, in order (none for a CSV).

    Raises:
        InputError: the spreadsheet cannot be read.
    """
    if path.suffix.lower() not in SPREADSHEET_SUFFIXES:
        return ()
    from python_calamine import CalamineError, CalamineWorkbook, SheetTypeEnum, SheetVisibleEnum

    try:
        metadata = CalamineWorkbook.from_path(str(path)).sheets_metadata
    except CalamineError as exc:
        raise InputError(f"{path.name}: cannot read this spreadsheet ({exc.__class__.__name__}: {exc})") from exc
    return tuple(
        meta.name
        for meta in metadata
        if meta.visible == SheetVisibleEnum.Visible and meta.typ == SheetTypeEnum.WorkSheet
    )


def open_client_file(path: Path, *, sheet: str | None = None, name: str | None = None) -> ClientFile:
    """Open a client file and read its header.

    Args:
        path: a CSV, or a spreadsheet named ``.xlsx``, ``.xlsm``, ``.xlsb``, ``.xls`` or ``.ods``.
        sheet: the spreadsheet's sheet to read; the first visible one by default.
        name: how messages name the file (default: its path).

    Returns:
        The open file; close it, or use it in a ``with`` block.

    Raises:
        InputError: no such file, empty, unreadable, not UTF-8, no header row, no such sheet.
    """
    label = name or str(path)
    if not path.is_file():
        raise InputError(f"{label}: no such file", path=label)
    if path.suffix.lower() in SPREADSHEET_SUFFIXES:
        return _Spreadsheet(path, label, sheet)
    if sheet is not None:
        raise InputError(f"{label}: a sheet was named, but this is a CSV file, which has none", path=label)
    return _CsvFile(path, label)


def read_rows(
    task: ReadTask, positions: Sequence[int], width: int
) -> tuple[list[tuple[int, list[str]]], list[RowProblem]]:
    r"""The chosen columns of one chunk's rows as text, and the rows that cannot be read.

    Empty rows are skipped. Line breaks inside values become spaces.

    Args:
        task: the chunk, from :meth:`ClientFile.chunks`.
        positions: the file's column for each of the protocol's columns, in its order.
        width: the header's number of columns (a CSV row must have as many).

    Returns:
        ``(line, values)`` per row, and a problem for every row that cannot be read.

    >>> read_rows((2, 'A1,"461 Whangatipu Street\nRD 6"\n\nA2,x\n'), [1, 0], 2)
    ([(2, ['461 Whangatipu Street RD 6', 'A1']), (5, ['x', 'A2'])], [])
    """
    first_line, payload = task
    rows: list[tuple[int, list[str]]] = []
    problems: list[RowProblem] = []
    if not isinstance(payload, str):
        pick = operator.itemgetter(*positions)
        needed = max(positions) + 1
        for offset, cells in enumerate(payload):
            if len(cells) < needed:
                cells = [*cells, *[""] * (needed - len(cells))]
            # Joined, a row is searched for breaks and content at C speed.
            values = list(pick(cells))
            joined = "".join(values)
            if "\n" in joined or "\r" in joined:
                values = [_flatten(value) for value in values]
            if joined.strip() or "".join(cells).strip():
                rows.append((first_line + offset, values))
        return rows, problems
    reader = csv.reader(io.StringIO(payload, newline=""), strict=True)
    pick = operator.itemgetter(*positions)
    while True:
        consumed = reader.line_num
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(
                RowProblem(first_line + consumed, None, f"malformed CSV ({exc}); check the quoting of this line")
            )
            break
        if not "".join(row).strip():  # an empty row (its cells joined: one search at C speed)
            continue
        line = first_line + consumed
        if len(row) != width:
            problems.append(RowProblem(line, None, f"has {len(row)} columns where the header has {width}"))
            continue
        values = list(pick(row))
        if reader.line_num > consumed + 1:  # only a record spanning lines holds a line break
            values = [_flatten(value) for value in values]
        rows.append((line, values))
    return rows, problems


def read_columns(
    task: ReadTask, positions: Sequence[int], width: int
) -> tuple[list[int], list[Sequence[str]], list[RowProblem]]:
    r"""As :func:`read_rows`, a column at a time: each row's line, one sequence of cells per chosen column.

    A chunk of a CSV whose every record is one full line, none empty (an export as
    usual), or of a spreadsheet whose every row has the chosen columns, none empty, is
    turned into columns by C-level calls over the whole chunk; any other chunk is read a
    row at a time, with the same result.

    >>> read_columns((2, "A1,x\nA2,y\n"), [1, 0], 2)
    ([2, 3], [('x', 'y'), ('A1', 'A2')], [])
    """
    first_line, payload = task
    columns: list[Sequence[str]]
    if isinstance(payload, str):
        reader = csv.reader(io.StringIO(payload, newline=""), strict=True)
        try:
            records = list(reader)
        except csv.Error:
            records = []
        if records and reader.line_num == len(records) and set(map(len, records)) == {width}:
            # Every record is one line (none spans lines, none is malformed) and has every column.
            everything = list(zip(*records, strict=True))
            # No row is empty: a client id in every row says so, else every row is looked at.
            if "" not in map(str.strip, everything[positions[0]]) or "" not in map(str.strip, map("".join, records)):
                return list(range(first_line, first_line + len(records))), [everything[p] for p in positions], []
    elif isinstance(payload, SheetRows) and len(payload):
        # Every row of a sheet has every column: the chosen ones are taken from the sheet's
        # columns, with no list made per row nor text for the other columns.
        columns = [_column_text(column) for column in payload.columns(positions)]
        if "" not in map(str.strip, columns[0]) or "" not in map(str.strip, map("".join, zip(*columns, strict=True))):
            return list(range(first_line, first_line + len(payload))), columns, []
    elif payload and min(map(len, payload)) > max(positions):
        # A spreadsheet's rows, each with every chosen column: cells as text, a column at a time
        # (taken by itemgetter: a zip over thousands of rows costs three times as much).
        columns = [_column_text(list(map(operator.itemgetter(p), payload))) for p in positions]
        # No row is empty: as for a CSV (an empty row's other columns are looked at, row by row).
        if "" not in map(str.strip, columns[0]) or "" not in map(str.strip, map("".join, zip(*columns, strict=True))):
            return list(range(first_line, first_line + len(payload))), columns, []
    rows, problems = read_rows(task, positions, width)
    lines = [line for line, _ in rows]
    columns = list(zip(*(values for _, values in rows), strict=True)) if rows else [() for _ in positions]
    return lines, columns, problems


def _column_text(cells: Sequence[str]) -> Sequence[str]:
    r"""A spreadsheet column's cells, line breaks as spaces.

    >>> _column_text(["461 Whangatipu Street\nRD 6", "Mere"])
    ['461 Whangatipu Street RD 6', 'Mere']
    """
    # One join at C speed finds whether any cell holds a line break.
    joined = "".join(cells)
    if "\n" in joined or "\r" in joined:
        return [_flatten(cell) for cell in cells]
    return cells


def rows_by_reference(workers: int) -> bool:
    """Whether chunks of a spreadsheet can name their rows instead of carrying them to ``workers`` processes.

    They can in this process, and in workers forked from it, which hold the sheet already (it
    is handed to them at set-up, which a fork does not copy). Pickling the rows of every chunk
    to a worker, and unpickling them there, cost more than the check's own work on them.
    Where workers are spawned instead (not Linux), the set-up is pickled once per worker, so
    chunks carry their rows.
    """
    return workers <= 1 or multiprocessing.get_start_method() == "fork"


def task_rows(task: Task, rows: Rows | None) -> ReadTask:
    """A chunk with its rows at hand: a range of rows is looked up in ``rows``, the sheet's rows.

    >>> task_rows((3, range(2, 4)), [["h"], ["a"], ["b"], ["c"]])
    (3, [['b'], ['c']])
    >>> task_rows((2, "A1,x"), None)
    (2, 'A1,x')
    """
    first_line, payload = task
    if isinstance(payload, range):
        if rows is None:
            raise ValueError("a chunk names its rows, but no sheet was handed to this worker")
        if isinstance(rows, SheetCells):
            return first_line, rows.span(payload.start, payload.stop)
        return first_line, list(rows[payload.start : payload.stop])
    return first_line, payload


def hash_client_ids(client_ids: Iterable[str]) -> np.ndarray:
    """A 64-bit hash of each client id, the same in every process (unlike ``hash``).

    >>> hash_client_ids(["A1", "A2", "A1"]).tolist()[0] == hash_client_ids(["A1"]).tolist()[0]
    True
    """
    import numpy as np

    return np.frombuffer(_client_id_digests(client_ids), dtype="<i8").astype(np.int64)


def client_id_hashes(client_ids: Iterable[str]) -> list[int]:
    """:func:`hash_client_ids` as Python ints, without numpy (which the check does not load).

    >>> client_id_hashes(["A1", "A2", "A1"])[0] == client_id_hashes(["A1"])[0]
    True
    """
    hashes = array("q")
    hashes.frombytes(_client_id_digests(client_ids))
    return hashes.tolist()


def _client_id_digests(client_ids: Iterable[str]) -> bytes:
    """Each client id's 64-bit BLAKE2b digest, one after another."""
    digest = hashlib.blake2b
    return b"".join([digest(client_id.encode("utf-8"), digest_size=8).digest() for client_id in client_ids])


def duplicate_lines(id_hashes: np.ndarray, lines: np.ndarray) -> dict[int, int]:
    """Lines whose client id also appears on another line, each mapped to one such line.

    Only a 64-bit hash per row is kept, so memory stays small. Every occurrence of a
    repeated id is listed, since which one is right cannot be known here.

    >>> import numpy as np
    >>> duplicate_lines(np.array([5, 7, 5]), np.array([2, 3, 4]))
    {2: 4, 4: 2}
    """
    import numpy as np

    order = np.argsort(id_hashes, kind="stable")
    sorted_hashes = id_hashes[order]
    out: dict[int, int] = {}
    for index in np.flatnonzero(sorted_hashes[1:] == sorted_hashes[:-1]):
        first, second = int(lines[order[index]]), int(lines[order[index + 1]])
        out.setdefault(first, second)
        out[second] = first
    return out


def repeated_lines(id_hashes: Sequence[int], lines: Sequence[int]) -> dict[int, int]:
    """:func:`duplicate_lines` of Python ints, without numpy (which the check does not load).

    >>> repeated_lines([5, 7, 5, 5], [2, 3, 4, 9])
    {2: 4, 4: 2, 9: 4}
    """
    counts = Counter(id_hashes)
    repeated = {id_hash for id_hash, count in counts.items() if count > 1}
    by_hash: dict[int, list[int]] = {}
    for id_hash, line in itertools.compress(zip(id_hashes, lines, strict=True), map(repeated.__contains__, id_hashes)):
        by_hash.setdefault(id_hash, []).append(line)
    out: dict[int, int] = {}
    # As duplicate_lines pairs them: by hash, then in file order, each line with the next.
    for id_hash in sorted(by_hash):
        group = by_hash[id_hash]
        for first, second in itertools.pairwise(group):
            out.setdefault(first, second)
            out[second] = first
    return out


def map_in_order(
    work: Callable[[Task], Result],
    chunks: Iterator[Task],
    workers: int,
    initializer: Callable[..., None],
    initargs: tuple[Any, ...],
    *,
    here: bool = False,
) -> Iterator[Result]:
    """Run ``work`` on every chunk, results in the chunks' order, on a pool with a bounded number in flight.

    Each worker process runs ``initializer(*initargs)`` once; with one worker, everything
    runs in this process.

    Args:
        work: what to do with one chunk.
        chunks: the chunks, read as they are needed.
        workers: processes to use.
        initializer: sets a worker up, with ``initargs``.
        initargs: what every worker is set up with.
        here: this process is one of the ``workers``: it works on a chunk whenever the
            pool has enough in hand, instead of waiting. For a caller with nothing else
            to do meanwhile; one process fewer to fork.
    """
    if workers <= 1:
        initializer(*initargs)
        for chunk in chunks:
            yield work(chunk)
        return
    # Workers are forked from this process: frozen, its objects (a spreadsheet's rows among
    # them) are never scanned by a worker's garbage collector, which would copy their pages.
    gc.freeze()
    try:
        with ProcessPoolExecutor(workers - here, initializer=initializer, initargs=initargs) as pool:
            if here:
                initializer(*initargs)
            pending: deque[Future[Result]] = deque()
            in_pool: deque[Future[Result]] = deque()
            for chunk in chunks:
                while in_pool and in_pool[0].done():
                    in_pool.popleft()
                if here and len(in_pool) >= 2 * (workers - 1):
                    done: Future[Result] = Future()
                    done.set_result(work(chunk))
                    pending.append(done)
                else:
                    in_pool.append(pool.submit(work, chunk))
                    pending.append(in_pool[-1])
                while pending and (pending[0].done() or len(pending) >= 2 * workers):
                    yield pending.popleft().result()
            for future in pending:
                yield future.result()
    finally:
        gc.unfreeze()
