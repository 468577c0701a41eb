"""Parse one sheet of a workbook with fastexcel (Rust calamine), possibly started ahead in a background thread.

Parsing a sheet is most of the time it takes to read a spreadsheet (about 0.6 s for
100,000 rows of 13 columns, then 0.2 s to hand its cells over as Arrow columns) and runs in Rust
without Python's lock. fastexcel parses the same sheet as python-calamine in about half
the time, and hands it over as Arrow columns rather than a Python object per cell; every
cell is asked for as text, and :func:`_column_text` makes that text what a CSV export of
the same cells holds (a date cell ``YYYY-MM-DD``, a whole number without ``.0``).
:func:`read_ahead` starts the parse in a thread as soon as the file is known, so that a
command can import and set up the rest (numpy, the normaliser, the protocol) meanwhile;
:func:`parse_sheet`, which
:func:`~linkage.agency.sources.open_client_file` calls, then takes the parsed sheet, or
parses it there and then. This module imports nothing heavy, so that calling it first
costs nothing.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

__all__ = ["SPREADSHEET_SUFFIXES", "ParsedSheet", "SheetCells", "SheetRows", "parse_sheet", "read_ahead"]

SPREADSHEET_SUFFIXES = frozenset({".xlsx", ".xlsm", ".xlsb", ".xls", ".ods"})


class SheetCells(Sequence[list[str]]):
    """A sheet's used range, every row from the sheet's first: each a list of its cells as text.

    The cells stay in fastexcel's Arrow columns until rows are asked for, a slice at a time:
    a chunk's rows are made where the chunk is read (in a pool worker, which holds the
    columns already), not all of them in one process before any chunk is read. Cells are
    as a CSV export of them would read (see :func:`_column_text`).

    Attributes:
        first_column: the used range's first column (0 for A).
    """

    def __init__(self, first_column: int, batch: Any) -> None:
        """Args: the range's first column, and its cells (a ``pyarrow.RecordBatch`` of text, or ``None``)."""
        self.first_column = first_column
        self._batch = batch

    def __len__(self) -> int:
        return 0 if self._batch is None else int(self._batch.num_rows)

    @overload
    def __getitem__(self, index: int) -> list[str]: ...

    @overload
    def __getitem__(self, index: slice) -> list[list[str]]: ...

    def __getitem__(self, index: int | slice) -> list[str] | list[list[str]]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError("rows are sliced in order, one after another")
            return self._rows(start, stop)
        if not -len(self) <= index < len(self):
            raise IndexError("no such row")
        return self._rows(index % len(self), index % len(self) + 1)[0]

    def __iter__(self) -> Iterator[list[str]]:
        for start in range(0, len(self), _ROWS_AT_ONCE):
            yield from self._rows(start, min(start + _ROWS_AT_ONCE, len(self)))

    def span(self, start: int, stop: int) -> SheetRows:
        """Rows ``start`` to ``stop`` (not included), made only when they are walked (see :class:`SheetRows`)."""
        start, stop, _ = slice(start, stop).indices(len(self))
        return SheetRows(self, start, max(start, stop))

    def columns(self, start: int, stop: int, positions: Sequence[int]) -> list[list[str]]:
        """The cells of rows ``start`` to ``stop`` in the columns at ``positions``, as text, a list per column.

        Only those columns are turned into Python text, and no row is made.
        """
        if stop <= start:
            return [[] for _ in positions]
        part = self._batch.slice(start, stop - start)
        return [_arrow_text(part.column(position)) for position in positions]

    def _rows(self, start: int, stop: int) -> list[list[str]]:
        if stop <= start:
            return []
        part = self._batch.slice(start, stop - start)
        return list(map(list, zip(*map(_arrow_text, part.columns), strict=True)))


class SheetRows(Sequence[list[str]]):
    """Consecutive rows of a sheet (a chunk), its cells still in the sheet's columns.

    A chunk that is read a column at a time takes its chosen columns from the sheet
    (:meth:`columns`): no list is made per row, and no text for the columns not chosen.
    Walked or indexed, it makes its rows, once.
    """

    def __init__(self, cells: SheetCells, start: int, stop: int) -> None:
        self._cells, self._start, self._stop = cells, start, stop
        self._made: list[list[str]] | None = None

    def __len__(self) -> int:
        return self._stop - self._start

    @overload
    def __getitem__(self, index: int) -> list[str]: ...

    @overload
    def __getitem__(self, index: slice) -> list[list[str]]: ...

    def __getitem__(self, index: int | slice) -> list[str] | list[list[str]]:
        return self._rows()[index]

    def __iter__(self) -> Iterator[list[str]]:
        return iter(self._rows())

    def columns(self, positions: Sequence[int]) -> list[list[str]]:
        """The cells of these rows in the columns at ``positions``, as text, a list per column."""
        return self._cells.columns(self._start, self._stop, positions)

    def _rows(self) -> list[list[str]]:
        if self._made is None:
            self._made = self._cells[self._start : self._stop]
        return self._made


def _arrow_text(column: Any) -> list[str]:
    """One Arrow column of fastexcel's text as :func:`_column_text` makes it."""
    return _column_text(column.to_pylist(), has_empty=column.null_count > 0)


# Rows made at once when a sheet's rows are walked (as many as a chunk holds).
_ROWS_AT_ONCE = 4000


@dataclass(frozen=True)
class ParsedSheet:
    """A sheet as fastexcel parsed it, or why it was not.

    Attributes:
        sheet_names: every sheet of the workbook, in order.
        name: the sheet chosen (the one asked for, or the first visible worksheet);
            ``None`` when there is no such sheet.
        cells: the parsed sheet; ``None`` when ``name`` is.
    """

    sheet_names: tuple[str, ...]
    name: str | None
    cells: SheetCells | None


# A date (and time) cell as fastexcel writes it as text, and the date-only text a CSV would hold.
_DATETIME = re.compile(r"(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)")


def _column_text(values: list[str | None], *, has_empty: bool = True) -> list[str]:
    """One column of cells as fastexcel gives them as text, made as a CSV would hold them.

    An empty cell (``None``) is empty text; a date-time cell loses its time of day; a time
    of day, which fastexcel writes on the day before 1900-01-01, is the time alone. Whole
    numbers lose their ``.0``, booleans are ``true`` and ``false``, as calamine's typed cells
    read. Where the text is not told from the type, it differs from them: a text cell that
    reads ``YYYY-MM-DD hh:mm:ss`` is taken for a date-time (Excel itself turns such typing
    into one), a number from 2**53 up or below 0.0001 is written out in full
    (``100000000000000000000``, not ``1e+20``), and a duration reads as a time of day.

    >>> _column_text([None, "1984-03-07 00:00:00", "1984-03-07 13:05:00", "1899-12-31 13:05:00", "x"])
    ['', '1984-03-07', '1984-03-07', '13:05:00', 'x']
    """
    texts: list[str] = [value or "" for value in values] if has_empty else values  # type: ignore[assignment]
    # A time of day is written with colons, which other cells seldom hold: one search at C
    # speed tells most columns from those that may hold dates.
    if ":" not in "\n".join(texts):
        return texts
    return [_date_text(text) if len(text) == 19 else text for text in texts]


def _date_text(text: str) -> str:
    """A date-time cell's text as a CSV would hold it (see :func:`_column_text`); other text as it is."""
    match = _DATETIME.fullmatch(text)
    if match is None:
        return text
    return match[2] if match[1] == "1899-12-31" else match[1]


def _first_visible(path: Path, names: tuple[str, ...]) -> str | None:
    """The first visible worksheet (a workbook of one sheet has no other to choose)."""
    if len(names) == 1:
        return names[0]
    # fastexcel tells a sheet's visibility only once it is parsed, and not whether it is a chart.
    from python_calamine import CalamineWorkbook, SheetTypeEnum, SheetVisibleEnum

    visible = [
        meta.name
        for meta in CalamineWorkbook.from_path(str(path)).sheets_metadata
        if meta.visible == SheetVisibleEnum.Visible and meta.typ == SheetTypeEnum.WorkSheet
    ]
    return visible[0] if visible else None


def _import_arrow() -> None:
    """Import pyarrow ahead of its use; without it, fastexcel says what is missing when it is used."""
    with contextlib.suppress(ImportError):
        importlib.import_module("pyarrow")


def _parse(path: Path, sheet: str | None) -> ParsedSheet:
    """Open the workbook, choose the sheet and parse it (raises fastexcel's errors as they are)."""
    import fastexcel

    reader = fastexcel.read_excel(path)
    names = tuple(reader.sheet_names)
    sheet = _first_visible(path, names) if sheet is None else sheet if sheet in names else None
    if sheet is None:
        return ParsedSheet(names, None, None)
    # The cells come as Arrow columns, and pyarrow takes a tenth of a second to import: it
    # loads beside the parse, which lets go of Python's lock.
    arrow = threading.Thread(target=_import_arrow, name="pprl-read-ahead")
    arrow.start()
    try:
        # Every row from the sheet's first (row numbers stay the sheet's), every cell as text.
        loaded = reader.load_sheet(sheet, header_row=None, skip_rows=0, dtypes="string")
    finally:
        arrow.join()
    available = loaded.available_columns()
    if not available or loaded.height == 0:
        return ParsedSheet(names, sheet, SheetCells(0, None))
    return ParsedSheet(names, sheet, SheetCells(available[0].absolute_index, loaded.to_arrow()))


class _Ahead:
    """One parse running in a background thread, and its outcome."""

    def __init__(self, path: Path, sheet: str | None) -> None:
        self.key = (path, sheet)
        self.parsed: ParsedSheet | None = None
        self.error: BaseException | None = None
        # A daemon: a command that stops before reading the sheet need not wait for it.
        self.thread = threading.Thread(target=self._run, name="pprl-read-ahead", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.parsed = _parse(*self.key)
        except Exception as exc:  # handed, as it is, to whoever takes the sheet
            self.error = exc

    def result(self) -> ParsedSheet:
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.parsed is not None  # noqa: S101 - set when there is no error
        return self.parsed


# At most one parse ahead, taken (or, for another file, waited for and dropped) by the next
# parse_sheet: no thread of this module is left running when a process pool forks.
_ahead: _Ahead | None = None
_lock = threading.Lock()


def read_ahead(path: Path, sheet: str | None = None) -> None:
    """Start parsing a spreadsheet's sheet in a background thread, for :func:`parse_sheet` to take.

    Anything but a spreadsheet (by its name: see :data:`SPREADSHEET_SUFFIXES`) is left alone.

    Args:
        path: the client file.
        sheet: the sheet to parse; the first visible worksheet by default.
    """
    global _ahead  # one parse ahead per process, by design
    if path.suffix.lower() not in SPREADSHEET_SUFFIXES:
        return
    with _lock:
        if _ahead is not None:
            _ahead.thread.join()
        _ahead = _Ahead(path, sheet)


def parse_sheet(path: Path, sheet: str | None = None) -> ParsedSheet:
    """A spreadsheet's sheet, parsed: the one :func:`read_ahead` started for it, else parsed now.

    Args:
        path: the spreadsheet.
        sheet: the sheet to parse; the first visible worksheet by default.

    Returns:
        The sheet, or no sheet when the workbook has none by that name (or none visible).

    Raises:
        CalamineError: the workbook cannot be read (as calamine raises it).
        OSError: the file cannot be opened.
    """
    global _ahead  # one parse ahead per process, by design
    with _lock:
        ahead, _ahead = _ahead, None
    if ahead is not None:
        if ahead.key == (path, sheet):
            return ahead.result()
        ahead.thread.join()
    return _parse(path, sheet)
