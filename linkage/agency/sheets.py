"""Parse one sheet of a workbook with calamine, possibly started ahead in a background thread.

Parsing a sheet is most of the time it takes to read a spreadsheet (about a second for
100,000 rows) and runs in Rust without Python's lock. :func:`read_ahead` starts it in a
thread as soon as the file is known, so that a command can import and set up the rest
(numpy, the normaliser, the protocol) meanwhile; :func:`parse_sheet`, which
:func:`~linkage.agency.sources.open_client_file` calls, then takes the parsed sheet, or
parses it there and then. This module imports nothing heavy, so that calling it first
costs nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SPREADSHEET_SUFFIXES", "ParsedSheet", "parse_sheet", "read_ahead"]

SPREADSHEET_SUFFIXES = frozenset({".xlsx", ".xlsm", ".xlsb", ".xls", ".ods"})


@dataclass(frozen=True)
class ParsedSheet:
    """A sheet as calamine parsed it, or why it was not.

    Attributes:
        sheet_names: every sheet of the workbook, in order.
        name: the sheet chosen (the one asked for, or the first visible worksheet);
            ``None`` when there is no such sheet.
        cells: the parsed sheet (a ``CalamineSheet``); ``None`` when ``name`` is.
    """

    sheet_names: tuple[str, ...]
    name: str | None
    cells: Any


def _parse(path: Path, sheet: str | None) -> ParsedSheet:
    """Open the workbook, choose the sheet and parse it (raises calamine's errors as they are)."""
    from python_calamine import CalamineWorkbook, SheetTypeEnum, SheetVisibleEnum

    workbook = CalamineWorkbook.from_path(str(path))
    names = tuple(workbook.sheet_names)
    if sheet is None:
        visible = [
            meta.name
            for meta in workbook.sheets_metadata
            if meta.visible == SheetVisibleEnum.Visible and meta.typ == SheetTypeEnum.WorkSheet
        ]
        sheet = visible[0] if visible else None
    elif sheet not in names:
        sheet = None
    return ParsedSheet(names, sheet, None if sheet is None else workbook.get_sheet_by_name(sheet))


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
