"""Which column of an agency's file holds which of the protocol's columns (pure, no I/O).

An agency's export names its columns its own way (``First Name``, ``DOB``). The mapping
from the protocol's columns to the file's comes from, in order:

1. what the agency says (``--columns given_name="First Name"`` or a mapping file, see
   :func:`read_mapping_file`);
2. a header with the protocol column's own name, compared without case, spaces or
   punctuation (``Date of birth`` is ``date_of_birth``);
3. a header with one of the column's usual names (:data:`SYNONYMS`: ``Forename``,
   ``Family Name``, ``D.O.B.``...).

:func:`propose_columns` says what it found for every column, and what it could not decide;
:func:`choose_columns` raises when something is left undecided, listing the candidates.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
import shlex
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linkage.errors import InputError

__all__ = [
    "SYNONYMS",
    "ColumnChoice",
    "ColumnMatch",
    "ColumnProposal",
    "MappingFile",
    "choose_columns",
    "format_columns",
    "header_key",
    "parse_columns",
    "propose_columns",
    "read_mapping_file",
]

GIVEN, SAME_NAME, USUAL_NAME = "given", "same name", "usual name"

# Usual names of the columns of the example protocols, as exports spell them. Matching
# ignores case, spaces and punctuation, so "First name", "FIRST_NAME" and "first-name" are
# one entry. No name belongs to two columns (a test checks it).
SYNONYMS: Mapping[str, tuple[str, ...]] = {
    "client_id": (
        "Client ID",
        "Client Number",
        "Client No",
        "Client Ref",
        "Client Reference",
        "Customer ID",
        "Customer Number",
        "Person ID",
        "Record ID",
        "ID",
    ),
    "given_name": (
        "First Name",
        "First Names",
        "Given Name",
        "Given Names",
        "Forename",
        "Forenames",
        "Christian Name",
        "FName",
    ),
    "surname": ("Last Name", "Family Name", "Surname", "LName"),
    "date_of_birth": ("DOB", "Date of Birth", "Birth Date", "Born"),
    "sex": ("Sex", "Gender"),
    "address": ("Address", "Street Address", "Address Line 1", "Address 1", "Street", "Residential Address"),
    "city": ("City", "Town", "Town City"),
    "postcode": ("Post Code", "Postal Code", "Zip", "Zip Code"),
    "consent": ("Consent", "Consent Given", "Consented", "Consent Flag"),
}
_NOT_ALNUM = re.compile(r"[\W_]+", re.UNICODE)
_MAX_CANDIDATES = 8


def header_key(text: str) -> str:
    """What two column names must share to be the same name: letters and digits, folded.

    >>> header_key(" Date of Birth "), header_key("date_of_birth"), header_key("D.O.B.")
    ('dateofbirth', 'dateofbirth', 'dob')
    """
    return _NOT_ALNUM.sub("", unicodedata.normalize("NFKC", text).casefold())


_USUAL: Mapping[str, str] = {header_key(name): column for column, names in SYNONYMS.items() for name in names}


@dataclass(frozen=True)
class ColumnMatch:
    """One protocol column and the file's column that holds it.

    Attributes:
        column: the protocol's name.
        header: the file's name for it.
        position: its 0-based index in the file's header.
        how: ``given`` (said by the agency), ``same name`` or ``usual name``.
    """

    column: str
    header: str
    position: int
    how: str


@dataclass(frozen=True)
class ColumnProposal:
    """What :func:`propose_columns` found: a match per decided column, candidates for the rest.

    Attributes:
        matches: decided columns, in the protocol's order.
        undecided: ``(column, reason, candidate headers)`` for each column without a match.
        problems: mistakes in what was given (unknown columns, headers not in the file).
        ignored: the file's named columns that hold none of the protocol's.
    """

    matches: tuple[ColumnMatch, ...]
    undecided: tuple[tuple[str, str, tuple[str, ...]], ...]
    problems: tuple[str, ...]
    ignored: tuple[str, ...]


@dataclass(frozen=True)
class ColumnChoice:
    """Where each of the protocol's columns is in a file: one match per column, in the protocol's order."""

    matches: tuple[ColumnMatch, ...]
    ignored: tuple[str, ...]

    @property
    def positions(self) -> list[int]:
        """The file's column index for each protocol column."""
        return [match.position for match in self.matches]

    def header_of(self, column: str) -> str:
        """The file's name for a protocol column."""
        return next(match.header for match in self.matches if match.column == column)

    def label(self, column: str) -> str:
        """How messages name a column: the file's name, and the protocol's when it differs.

        >>> ColumnChoice((ColumnMatch("date_of_birth", "DOB", 2, USUAL_NAME),), ()).label("date_of_birth")
        "'DOB' (date_of_birth)"
        """
        header = self.header_of(column)
        return repr(header) if header == column else f"{header!r} ({column})"

    def as_mapping(self) -> dict[str, str]:
        """The choice as a mapping to give back (``--columns``, a mapping file)."""
        return {match.column: match.header for match in self.matches}


def _positions_of(header: Sequence[str], wanted: str) -> list[int]:
    """Where a given name is in the header: exactly (spaces aside), else by :func:`header_key`."""
    exact = [i for i, name in enumerate(header) if name.strip() == wanted.strip()]
    if exact:
        return exact
    key = header_key(wanted)
    return [i for i, name in enumerate(header) if key and header_key(name) == key]


def _close(name: str, headers: Sequence[str]) -> tuple[str, ...]:
    """Headers that look like a name (by key): one holding the other first, then similar spellings.

    >>> _close("weeks_supported", ["Weeks", "Week", "Region"]), _close("surname", ["surnme", "Region"])
    (('Weeks', 'Week'), ('surnme',))
    """
    target = header_key(name)
    keys = {header_key(h): h for h in headers if len(header_key(h)) >= 3}
    within = [h for k, h in keys.items() if k in target or target in k]
    similar = [keys[k] for k in difflib.get_close_matches(target, list(keys), n=3, cutoff=0.6)]
    return tuple(dict.fromkeys([*within, *similar]))


def propose_columns(
    header: Sequence[str], expected: Sequence[str], given: Mapping[str, str] | None = None
) -> ColumnProposal:
    """Match the protocol's columns to a file's header (never raises).

    Args:
        header: the file's column names, in order.
        expected: the protocol's columns for this party, in order.
        given: protocol column -> file column, said by the agency; it wins over names.

    Returns:
        What was decided, and for every other column why not and the likely headers.

    >>> proposal = propose_columns(["Client No", "First Name", "Forename"], ["client_id", "given_name"])
    >>> [(m.column, m.header, m.how) for m in proposal.matches]
    [('client_id', 'Client No', 'usual name')]
    >>> proposal.undecided
    (('given_name', 'more than one column could be it', ('First Name', 'Forename')),)
    """
    given = dict(given or {})
    problems: list[str] = []
    taken: dict[int, str] = {}
    decided: dict[str, ColumnMatch] = {}
    undecided: dict[str, tuple[str, tuple[str, ...]]] = {}
    for column in given:
        if column not in expected:
            problems.append(f"{column!r} is not one of the protocol's columns for this party ({', '.join(expected)})")
    for column in expected:
        if column not in given:
            continue
        wanted = given[column]
        found = _positions_of(header, wanted)
        if len(found) == 1:
            decided[column] = ColumnMatch(column, header[found[0]], found[0], GIVEN)
        elif found:
            undecided[column] = (f"the file has {len(found)} columns named {wanted!r}", ())
        else:
            close = _close(wanted, header)
            hint = f" (is it {close[0]!r}?)" if close else ""
            problems.append(f"{column}: the file has no column {wanted!r}{hint}")
            undecided[column] = (f"no column {wanted!r}", close)
    for match in decided.values():
        taken[match.position] = match.column
    free = [i for i in range(len(header)) if i not in taken and header[i].strip()]
    # Same names first, so that a file's own "id" column is never claimed by a usual name.
    for how in (SAME_NAME, USUAL_NAME):
        for column in expected:
            if column in decided or column in undecided:
                continue
            key = header_key(column)
            if how == SAME_NAME:
                found = [i for i in free if header_key(header[i]) == key]
            else:
                found = [i for i in free if _USUAL.get(header_key(header[i])) == column]
            if len(found) == 1:
                decided[column] = ColumnMatch(column, header[found[0]], found[0], how)
                free.remove(found[0])
            elif found:
                undecided[column] = ("more than one column could be it", tuple(header[i] for i in found))
    # Headers that two columns' names fit are offered for those columns only.
    claimed = {h for _, found in undecided.values() for h in found}
    for column in expected:
        if column in decided or column in undecided:
            continue
        # Likely headers first (close to its name or a usual name), then the other unused ones.
        names = [column, *SYNONYMS.get(column, ())]
        unused = [header[i] for i in free if header[i] not in claimed]
        likely = [h for name in names for h in _close(name, unused)]
        candidates = tuple(dict.fromkeys([*likely, *unused]))[:_MAX_CANDIDATES]
        undecided[column] = ("no column with its name or a usual name for it", candidates)
    used = {match.position for match in decided.values()}
    return ColumnProposal(
        matches=tuple(decided[c] for c in expected if c in decided),
        undecided=tuple((c, *undecided[c]) for c in expected if c in undecided),
        problems=tuple(problems),
        ignored=tuple(name for i, name in enumerate(header) if i not in used and name.strip()),
    )


def choose_columns(
    header: Sequence[str], expected: Sequence[str], given: Mapping[str, str] | None = None, *, where: str = "header"
) -> ColumnChoice:
    """Match the protocol's columns to a file's header, or say what is missing and what could be it.

    Args:
        header: the file's column names, in order.
        expected: the protocol's columns for this party, in order.
        given: protocol column -> file column, said by the agency.
        where: the header's place, for messages (``clients.xlsx sheet 'Clients' row 1``).

    Returns:
        One match per expected column.

    Raises:
        InputError: a column is missing or ambiguous, or the given mapping names an unknown
            column or a header the file does not have; every problem is listed.

    >>> choose_columns(["DOB", "Client ID"], ["client_id", "date_of_birth"]).positions
    [1, 0]
    """
    proposal = propose_columns(header, expected, given)
    problems = list(proposal.problems)
    for column, reason, candidates in proposal.undecided:
        if reason.startswith("no column ") and given and column in given:
            continue  # already listed among the problems of what was given
        listed = ", ".join(repr(c) for c in candidates) if candidates else "none (every column is taken)"
        problems.append(f"{column}: {reason}; candidates: {listed}")
    if problems:
        example = next(((c, found[0]) for c, _, found in proposal.undecided if found), None)
        hint = f" (for example --columns {shlex.quote(format_columns({example[0]: example[1]}))})" if example else ""
        raise InputError(
            f"{where}: some of the protocol's columns are not found or not clear; name them with "
            f"--columns{hint} or a --mapping file, or rename the file's columns",
            problems=problems,
        )
    return ColumnChoice(proposal.matches, proposal.ignored)


def format_columns(mapping: Mapping[str, str]) -> str:
    """A mapping as one ``--columns`` value (what a shell passes on, its own quotes removed).

    A pair whose name holds a comma or a quote is quoted whole, as in a CSV.

    >>> format_columns({"given_name": "First Name", "date_of_birth": "DOB, dd/mm"})
    'given_name=First Name,"date_of_birth=DOB, dd/mm"'
    """
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(f"{column}={header}" for column, header in mapping.items())
    return buffer.getvalue()


def parse_columns(text: str) -> dict[str, str]:
    """Read a ``--columns`` value: ``column=header`` pairs separated by commas.

    A pair whose header holds a comma or a quote is written in double quotes, a quote
    inside doubled (as in a CSV).

    Raises:
        InputError: a pair without ``=``, an empty name, or a column named twice.

    >>> parse_columns('given_name=First Name, "date_of_birth=DOB, dd/mm"')
    {'given_name': 'First Name', 'date_of_birth': 'DOB, dd/mm'}
    """
    try:
        pairs = next(csv.reader([text], skipinitialspace=True, strict=True), [])
    except csv.Error as exc:
        raise InputError(f"--columns: cannot read {text!r} ({exc}); write column=header pairs") from exc
    mapping: dict[str, str] = {}
    for pair in pairs:
        column, equals, header = pair.partition("=")
        if not equals or not column.strip() or not header.strip():
            raise InputError(f"--columns: {pair!r} is not column=header (e.g. given_name=First Name)")
        if column.strip() in mapping:
            raise InputError(f"--columns: {column.strip()!r} is named twice")
        mapping[column.strip()] = header.strip()
    if not mapping:
        raise InputError("--columns: no column=header pair given (e.g. given_name=First Name)")
    return mapping


@dataclass(frozen=True)
class MappingFile:
    """A saved mapping: the file's column for protocol columns, and optionally the sheet to read."""

    columns: Mapping[str, str]
    sheet: str | None = None


def read_mapping_file(path: Path) -> MappingFile:
    """Read a mapping file (YAML) an agency keeps for its exports.

    The file holds ``columns`` (protocol column: the export's column name) and, for a
    spreadsheet, optionally ``sheet``::

        # msd-columns.yaml
        sheet: Clients
        columns:
          client_id: Client Number
          given_name: First Name
          date_of_birth: DOB

    Raises:
        InputError: not YAML, an unknown key, or a name that is not text.
    """
    import yaml

    try:
        document: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read the mapping file ({exc.__class__.__name__})", path=str(path)) from exc
    if not isinstance(document, dict):
        raise InputError(f"{path}: a mapping file holds 'columns' (and optionally 'sheet')", path=str(path))
    problems = [
        f"unknown key {key!r}; the keys are 'columns' and 'sheet'"
        for key in document
        if key not in ("columns", "sheet")
    ]
    columns = document.get("columns")
    if not isinstance(columns, dict) or not columns:
        problems.append("'columns' must map protocol columns to your file's column names")
        columns = {}
    for column, header in columns.items():
        if not isinstance(column, str) or not isinstance(header, str) or not header.strip():
            problems.append(
                f"columns: {column!r}: {header!r} must be a column name in quotes if it looks like a number"
            )
    sheet = document.get("sheet")
    if sheet is not None and not isinstance(sheet, str):
        problems.append("'sheet' must be a sheet's name")
    if problems:
        raise InputError(f"{path}: not a valid mapping file", path=str(path), problems=problems)
    return MappingFile({str(k): str(v) for k, v in columns.items()}, sheet)
