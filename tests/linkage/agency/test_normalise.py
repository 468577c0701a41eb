import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from linkage.agency.normalise import (
    _DATE_ISO,
    NormaliseError,
    _iso_date,
    normalise_category,
    normalise_code,
    normalise_date,
    normalise_text,
    normalise_texts,
    soundex,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  JOHN   smith ", "john smith"),
        ("Tūī", "tui"),
        ("Zoë-Ann", "zoe ann"),
        ("O'Brien", "obrien"),
        ("Ｊｏｈｎ", "john"),  # full-width forms fold under NFKC
        ("", None),
        ("  ", None),
        ("--", None),
    ],
)
def test_normalise_text(raw, expected):
    assert normalise_text(raw) == expected


@given(st.text())
def test_normalise_text_is_idempotent(raw):
    once = normalise_text(raw)
    if once is not None:
        assert normalise_text(once) == once
        assert once == once.strip()
        assert "  " not in once


@given(st.text(alphabet=st.characters(categories=["Lu", "Ll"]), min_size=1, max_size=20))
def test_case_never_matters(word):
    assert normalise_text(word.upper()) == normalise_text(word.lower()) or word.upper().lower() != word.lower()


def test_code_drops_spaces():
    assert normalise_code(" 01 10 ") == "0110"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1984-03-07", dt.date(1984, 3, 7)),
        ("07/03/1984", dt.date(1984, 3, 7)),
        ("7/3/1984", dt.date(1984, 3, 7)),
        ("7.3.1984", dt.date(1984, 3, 7)),
        ("", None),
    ],
)
def test_dates_are_day_first(raw, expected):
    assert normalise_date(raw) == expected


@pytest.mark.parametrize("raw", ["31/02/1990", "1990/13/01", "March 3 1990", "3/7/84", "2999-01-01", "1850-01-01"])
def test_bad_dates_are_refused_without_quoting_them(raw):
    with pytest.raises(NormaliseError) as info:
        normalise_date(raw)
    assert raw not in info.value.reason


def test_category_accepts_initial_words():
    assert normalise_category("FEMALE", ("f", "m", "x")) == "f"
    assert normalise_category(" m ", ("f", "m", "x")) == "m"
    with pytest.raises(NormaliseError, match="not one of the categories f, m, x"):
        normalise_category("unknown", ("f", "m", "x"))


def test_soundex_groups_similar_names():
    assert soundex("smith") == soundex("smyth") == "s530"
    assert soundex("") == ""


# Letters, digits, every kind of ASCII punctuation and space, control characters, and a few
# non-ASCII letters (one of them the separator normalise_texts joins ASCII values with).
TEXT_ALPHABET = st.sampled_from(
    [*"aZ09 -_'.,/\\()&\t\n\r\x0b\x0c\x1c\x1f\x00", "Ā", "ū", "\u00a0", "\u4e00", "ǂ", "\u2028"]
)


@given(st.lists(st.text(TEXT_ALPHABET, max_size=12), max_size=30))
def test_texts_normalised_together_are_normalised_one_by_one(values):
    assert normalise_texts(values) == [normalise_text(value) for value in values]


@given(st.text(st.sampled_from([*"0123456789-/+ W", "٣", "７"]), min_size=10, max_size=10))
def test_dates_read_in_c_are_read_as_the_patterns_read_them(text):
    """The C fast path for ``YYYY-MM-DD`` accepts nothing the patterns refuse, and reads it alike."""
    fast = _iso_date(text)
    if fast is not None:
        match = _DATE_ISO.match(text)
        assert match is not None
        assert fast == dt.date(*(int(group) for group in match.groups()))


@given(st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2020, 12, 31)))
def test_every_iso_date_takes_the_c_path(date):
    assert _iso_date(date.isoformat()) == date == normalise_date(date.isoformat())
