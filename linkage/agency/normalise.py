"""Normalise raw identifier values before they are encoded.

Every agency spells the same person differently: accents, case, punctuation, spacing and
date formats vary. Normalisation removes the variation that carries no identity, so that
encodings of the same person agree. A missing value stays missing (``None``); it is
never encoded as an empty string.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "NormaliseError",
    "normalise_category",
    "normalise_code",
    "normalise_date",
    "normalise_text",
    "normalise_texts",
    "soundex",
]

_NOT_WORD = re.compile(r"[^\w\s]|_", re.UNICODE)
_SPACES = re.compile(r"\s+", re.UNICODE)
_DATE_ISO = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_DATE_DMY = re.compile(r"^(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})$")
_EARLIEST_YEAR = 1900
_EARLIEST = dt.date(_EARLIEST_YEAR, 1, 1)


@dataclass(frozen=True)
class NormaliseError(Exception):
    """A value cannot be normalised; ``reason`` says how to fix it (and never quotes it)."""

    reason: str


def _fold(value: str) -> str:
    """NFKC, accents folded (ā -> a), lower case."""
    if value.isascii():
        return value.lower()  # NFKC and accent folding leave ASCII as it is
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", value))
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFKC", stripped).casefold()


@lru_cache(maxsize=1 << 16)
def normalise_text(value: str) -> str | None:
    """Normalise a name or free text.

    Args:
        value: the raw value.

    Returns:
        Lower case, accents folded, punctuation dropped (hyphens become spaces), spaces
        collapsed; ``None`` when nothing is left.

    >>> normalise_text("  Tūī  TE-AWA ")
    'tui te awa'
    >>> normalise_text("O'Brien")
    'obrien'
    >>> normalise_text(" -- ") is None
    True
    """
    folded = _fold(value).replace("-", " ")
    cleaned = _SPACES.sub(" ", _NOT_WORD.sub("", folded)).strip()
    return cleaned or None


# Joins values for :func:`normalise_texts`: a word character (kept by _NOT_WORD, never a
# space, without case) that no ASCII value can hold.
_SEPARATOR = "\u4e00"


def normalise_texts(values: Sequence[str]) -> list[str | None]:
    """:func:`normalise_text` of many values, the ASCII ones in one pass over them all.

    A client list's names and addresses are nearly all ASCII: joined by a word character
    none of them holds, they are folded and cleaned by a few calls over one long string
    (no run of spaces and no punctuation spans the separator), then split again.

    >>> normalise_texts(["  Te-Awa ", "O'Brien", " -- ", "Tūī"])
    ['te awa', 'obrien', None, 'tui']
    """
    plain = [value for value in values if value.isascii()]
    if len(plain) < len(values):
        at_once = dict(zip(plain, normalise_texts(plain), strict=True))
        return [at_once[value] if value in at_once else normalise_text(value) for value in values]
    if not plain:
        return []
    folded = _SEPARATOR.join(plain).lower().replace("-", " ")
    cleaned = _SPACES.sub(" ", _NOT_WORD.sub("", folded)).split(_SEPARATOR)
    return [piece.strip() or None for piece in cleaned]


def normalise_code(value: str) -> str | None:
    """Normalise a code such as a postcode: like text, with every space removed.

    >>> normalise_code(" 06 20 ")
    '0620'
    """
    text = normalise_text(value)
    return text.replace(" ", "") if text else None


def normalise_category(value: str, categories: tuple[str, ...]) -> str | None:
    """Map a value to one of the declared categories.

    A value matches a category when they are equal once normalised, or when the category
    is a single letter and the value starts with it (``Female`` -> ``f``).

    Raises:
        NormaliseError: the value matches no category.

    >>> normalise_category("Female", ("f", "m", "x"))
    'f'
    >>> normalise_category("", ("f", "m", "x")) is None
    True
    """
    text = normalise_text(value)
    if text is None:
        return None
    for category in categories:
        if text == normalise_text(category):
            return category
    initials = [c for c in categories if len(c) == 1 and text.startswith(c)]
    if len(initials) == 1:
        return initials[0]
    raise NormaliseError(f"not one of the categories {', '.join(categories)}")


def normalise_date(value: str, today: dt.date | None = None) -> dt.date | None:
    """Parse a date written ``YYYY-MM-DD``, ``DD/MM/YYYY`` or ``D/M/YYYY``.

    Day-first, as New Zealand writes dates; ``.`` and ``-`` are accepted in place of ``/``.

    Raises:
        NormaliseError: not a date in one of these forms, not a real day, or out of range.

    >>> normalise_date("7/3/1984")
    datetime.date(1984, 3, 7)
    >>> normalise_date("1984-03-07")
    datetime.date(1984, 3, 7)
    """
    text = value.strip()
    if not text:
        return None
    date = _iso_date(text) if len(text) == 10 else None
    if date is None:
        if match := _DATE_ISO.match(text):
            year, month, day = (int(g) for g in match.groups())
        elif match := _DATE_DMY.match(text):
            day, month, year = (int(g) for g in match.groups())
        else:
            raise NormaliseError("not a date; write YYYY-MM-DD, DD/MM/YYYY or D/M/YYYY")
        try:
            date = dt.date(year, month, day)
        except ValueError as exc:
            raise NormaliseError(f"not a real calendar day ({exc})") from exc
    latest = today or dt.date.today()
    if not _EARLIEST <= date <= latest:
        raise NormaliseError(f"date outside {_EARLIEST_YEAR}-01-01 .. today")
    return date


def _iso_date(text: str) -> dt.date | None:
    """A date written exactly ``YYYY-MM-DD`` (a spreadsheet date's text), parsed in C; ``None`` for any other text.

    Whatever this accepts, the ``_DATE_ISO`` pattern reads as the same date.

    >>> _iso_date("1984-03-07"), _iso_date("19840307xx"), _iso_date("1990-02-31")
    (datetime.date(1984, 3, 7), None, None)
    """
    if text[4:5] != "-" or text[7:8] != "-":
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


_SOUNDEX_CODES = {
    **dict.fromkeys("bfpv", "1"),
    **dict.fromkeys("cgjkqsxz", "2"),
    **dict.fromkeys("dt", "3"),
    "l": "4",
    **dict.fromkeys("mn", "5"),
    "r": "6",
}


@lru_cache(maxsize=1 << 16)
def soundex(text: str) -> str:
    """American Soundex of the first word of a normalised value (letters a-z only).

    >>> soundex("robert"), soundex("rupert"), soundex("tymczak")
    ('r163', 'r163', 't522')
    >>> soundex("te awa")
    't000'
    """
    letters = [c for c in text.split(" ")[0] if "a" <= c <= "z"]
    if not letters:
        return ""
    first = letters[0]
    code = [first]
    previous = _SOUNDEX_CODES.get(first, "")
    for char in letters[1:]:
        digit = _SOUNDEX_CODES.get(char, "")
        if digit and digit != previous:
            code.append(digit)
        if char not in "hw":
            previous = digit
    return ("".join(code) + "000")[:4]
