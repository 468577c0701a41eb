"""Free text that people type (reasons, labels, names): refused with control characters, escaped on output.

A reason or a label goes into the audit log or the ledger and is printed later as one line
of ``pprl audit`` or ``pprl budget``. A line break, a terminal escape or a bidirectional
override in it could forge a line or hide one, so such characters are refused where text
comes in (:func:`check_free_text`) and escaped where it goes out (:func:`escape_text`), for
text stored before the check existed.
"""

from __future__ import annotations

import re
import unicodedata

from linkage.errors import InputError

__all__ = ["check_free_text", "escape_text", "letter_count", "word_count"]

# Characters that change how the following text is laid out: bidirectional embeddings,
# overrides and isolates (the "Trojan source" characters).
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
_NAMES = {"\n": "a line break", "\r": "a carriage return", "\t": "a tab", "\x1b": "an escape character"}


def _forbidden(char: str) -> bool:
    return char in _BIDI or unicodedata.category(char) in ("Cc", "Zl", "Zp")


def check_free_text(text: str, field: str) -> str:
    r"""Refuse text holding control characters, line breaks or bidirectional overrides.

    Args:
        text: what was typed.
        field: its name, for the message (``reason``, ``label``).

    Returns:
        The text, unchanged.

    Raises:
        InputError: naming the field, the character and where it is.

    >>> check_free_text("threat to life, file 2231", "reason")
    'threat to life, file 2231'
    >>> check_free_text("ok\n2026-01-01 forged", "reason")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    linkage.errors.InputError: reason: a line break (U+000A) at character 3; write it on one line, ...
    """
    for position, char in enumerate(text, start=1):
        if _forbidden(char):
            what = _NAMES.get(char, "a control or layout character")
            raise InputError(
                f"{field}: {what} (U+{ord(char):04X}) at character {position}; write it on one line, "
                "without control characters",
                field=field,
            )
    return text


def escape_text(text: str) -> str:
    r"""The text with every control, line-break and bidirectional character written as an escape.

    >>> escape_text("reason\n2026-01-01 forged\x1b[2K")
    'reason\\n2026-01-01 forged\\x1b[2K'
    """
    if not any(_forbidden(char) for char in text):
        return text
    out = []
    for char in text:
        if not _forbidden(char):
            out.append(char)
        elif char in "\n\r\t":
            out.append(repr(char)[1:-1])
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\u{ord(char):04x}")
    return "".join(out)


def _visible(text: str) -> str:
    # Format characters (zero-width spaces, joiners, soft hyphens) do not count as text.
    return "".join(char for char in text if unicodedata.category(char) != "Cf")


def letter_count(text: str) -> int:
    """How many letters (any script) the text holds, ignoring spaces and invisible characters.

    >>> letter_count("  \u200b\u200b x1 y ")
    2
    """
    return sum(1 for char in _visible(text) if unicodedata.category(char).startswith("L"))


def word_count(text: str) -> int:
    """How many different words of two or more letters the text holds (case-insensitive).

    >>> word_count("xx xx XX yy z9")
    2
    """
    words = re.findall(r"[^\W\d_]{2,}", _visible(text).casefold())
    return len(set(words))
