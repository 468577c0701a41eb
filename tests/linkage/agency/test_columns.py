"""Finding the protocol's columns in an agency's header: given names, same names, usual names."""

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from linkage.agency.columns import (
    GIVEN,
    SAME_NAME,
    SYNONYMS,
    USUAL_NAME,
    choose_columns,
    format_columns,
    header_key,
    parse_columns,
    propose_columns,
    read_mapping_file,
)
from linkage.errors import InputError
from tests.helpers import MSD_HEADER

EXPECTED = MSD_HEADER
names = st.text(alphabet=string.ascii_letters + string.digits + " _-.,=\"'", min_size=1, max_size=20).filter(
    lambda text: text.strip() and header_key(text)
)


def spellings(name):
    """Ways an export writes the same column name: case, spaces, underscores, dots."""
    words = name.split("_")
    return st.sampled_from(
        [name, name.upper(), " ".join(w.title() for w in words), "-".join(words), f" {name} ", ".".join(words)]
    )


@given(data=st.data())
def test_the_protocols_own_names_are_found_in_any_order_and_spelling(data):
    order = data.draw(st.permutations(EXPECTED))
    header = [data.draw(spellings(name)) for name in order]
    extra = data.draw(st.lists(st.sampled_from(["Notes", "Case worker", "Office"]), unique=True))
    header += extra
    choice = choose_columns(header, EXPECTED)
    assert [header[p] for p in choice.positions] == [header[order.index(c)] for c in EXPECTED]
    assert {m.how for m in choice.matches} == {SAME_NAME}
    assert sorted(choice.ignored) == sorted(extra)


@given(data=st.data())
def test_a_given_mapping_wins_and_is_never_second_guessed(data):
    """Any unique header names, any order: the agency's mapping is what is read."""
    header = data.draw(st.lists(names, min_size=len(EXPECTED), max_size=len(EXPECTED) + 3, unique_by=header_key))
    columns = data.draw(st.permutations(header))[: len(EXPECTED)]
    mapping = dict(zip(EXPECTED, columns, strict=True))
    choice = choose_columns(header, EXPECTED, mapping)
    assert choice.as_mapping() == mapping
    assert [m.how for m in choice.matches] == [GIVEN] * len(EXPECTED)
    assert [header[p] for p in choice.positions] == columns


@given(data=st.data())
def test_usual_names_are_found_and_a_choice_never_takes_a_column_twice(data):
    usual = {column: data.draw(st.sampled_from(SYNONYMS[column])) for column in EXPECTED if column in SYNONYMS}
    header = [usual.get(column, column) for column in EXPECTED]
    header = data.draw(st.permutations(header))
    proposal = propose_columns(header, EXPECTED)
    positions = [m.position for m in proposal.matches]
    assert len(positions) == len(set(positions))
    assert proposal.undecided == () and proposal.problems == ()
    for match in proposal.matches:
        assert match.header == usual.get(match.column, match.column)
        assert match.how == (SAME_NAME if header_key(match.header) == header_key(match.column) else USUAL_NAME)


def test_no_usual_name_belongs_to_two_columns():
    keys = [header_key(name) for names_ in SYNONYMS.values() for name in names_]
    assert len(keys) == len(set(keys))
    for column, usual in SYNONYMS.items():
        for other in SYNONYMS:
            if other != column:
                assert header_key(other) not in {header_key(name) for name in usual}


def test_two_usual_names_for_one_column_is_an_error_listing_both():
    header = ["Client ID", "First Name", "Forename", *EXPECTED[2:]]
    with pytest.raises(InputError) as info:
        choose_columns(header, EXPECTED, where="clients.xlsx sheet 'Clients' row 1")
    assert str(info.value).startswith("clients.xlsx sheet 'Clients' row 1: some of the protocol's columns")
    assert info.value.problems == (
        "given_name: more than one column could be it; candidates: 'First Name', 'Forename'",
    )
    assert "--columns 'given_name=First Name'" in str(info.value)
    assert choose_columns(header, EXPECTED, {"given_name": "Forename"}).header_of("given_name") == "Forename"


def test_a_missing_column_lists_the_likely_candidates_first():
    header = [c for c in EXPECTED if c != "weeks_supported"] + ["Case Notes", "Weeks"]
    with pytest.raises(InputError) as info:
        choose_columns(header, EXPECTED)
    assert info.value.problems == (
        "weeks_supported: no column with its name or a usual name for it; candidates: 'Weeks', 'Case Notes'",
    )


def test_mistakes_in_a_given_mapping_are_each_listed():
    with pytest.raises(InputError) as info:
        choose_columns(EXPECTED, EXPECTED, {"given_nam": "given_name", "surname": "Surnam"})
    assert info.value.problems == (
        "'given_nam' is not one of the protocol's columns for this party (" + ", ".join(EXPECTED) + ")",
        "surname: the file has no column 'Surnam' (is it 'surname'?)",
    )


def test_a_header_named_twice_is_ambiguous_even_when_given():
    header = [*EXPECTED, "surname"]
    with pytest.raises(InputError, match="surname: more than one column could be it"):
        choose_columns(header, EXPECTED)
    with pytest.raises(InputError, match="the file has 2 columns named 'surname'"):
        choose_columns(header, EXPECTED, {"surname": "surname"})


@given(st.dictionaries(st.sampled_from(EXPECTED), names, min_size=1))
def test_columns_option_round_trips(mapping):
    cleaned = {column: header.strip() for column, header in mapping.items()}
    assert parse_columns(format_columns(cleaned)) == cleaned


@pytest.mark.parametrize(
    ("text", "message"),
    [("given_name", "is not column=header"), ("=DOB", "is not column=header"), ("a=x,a=y", "'a' is named twice")],
)
def test_bad_columns_options(text, message):
    with pytest.raises(InputError, match=message):
        parse_columns(text)


def test_mapping_file(tmp_path):
    path = tmp_path / "msd-columns.yaml"
    path.write_text("# our export\nsheet: Clients\ncolumns:\n  given_name: First Name\n  date_of_birth: DOB\n")
    saved = read_mapping_file(path)
    assert (dict(saved.columns), saved.sheet) == ({"given_name": "First Name", "date_of_birth": "DOB"}, "Clients")
    path.write_text("columns:\n  given_name: First Name\n  postcode: 1234\nsheets: Clients\n")
    with pytest.raises(InputError) as info:
        read_mapping_file(path)
    assert info.value.problems == (
        "unknown key 'sheets'; the keys are 'columns' and 'sheet'",
        "columns: 'postcode': 1234 must be a column name in quotes if it looks like a number",
    )
    path.write_text("- not a mapping\n")
    with pytest.raises(InputError, match="a mapping file holds 'columns'"):
        read_mapping_file(path)
