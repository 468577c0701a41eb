import copy
import json

import pytest

from linkage.errors import InputError, ProtocolError
from linkage.protocol import RejectField, load_protocol, parse_protocol
from tests.helpers import EXAMPLE_PROTOCOL


def document():
    return json.loads(EXAMPLE_PROTOCOL.read_text())


def test_example_is_valid(protocol):
    assert [p.id for p in protocol.parties] == ["msd", "police", "haven"]
    assert protocol.columns_for("police")[:8] == (
        "client_id",
        "given_name",
        "surname",
        "date_of_birth",
        "sex",
        "address",
        "city",
        "postcode",
    )
    assert protocol.columns_for("police")[8:] == ("consent", "region", "offence_category", "police_contacts")
    assert len(protocol.fingerprint) == 64


def test_fingerprint_follows_encoding_settings_only():
    base = parse_protocol(document())
    reworded = document()
    reworded["purpose"] = "A different purpose that is long enough to be valid."
    reworded["releases"]["budget"] = {"rho": 2.0}
    assert parse_protocol(reworded).fingerprint == base.fingerprint
    changed = document()
    changed["identifiers"]["fields"][4]["bits_per_token"] = 11
    assert parse_protocol(changed).fingerprint != base.fingerprint
    defaults = document()
    defaults["encoding"]["ngram"] = 2  # the default, written out
    assert parse_protocol(defaults).fingerprint == base.fingerprint


def test_schema_errors_are_all_listed_with_paths():
    doc = document()
    doc["parties"][0]["mandate"] = "public_health"
    doc["encoding"]["clk_bits"] = 1000
    doc["encoding"]["xorFolds"] = 2
    with pytest.raises(ProtocolError) as info:
        parse_protocol(doc)
    text = str(info.value)
    assert "$.parties[0].mandate" in text
    assert "$.encoding.clk_bits" in text
    assert "xorFolds" in text  # an unknown key is an error, never ignored


def test_consistency_errors():
    doc = document()
    doc["parties"][1]["attributes"].append("shoe_size")
    doc["matching"]["blocking"].append(["surname:year"])
    doc["releases"]["record_level"]["msd"]["serious_threat"] = True
    del doc["releases"]["record_level"]["haven"]
    with pytest.raises(ProtocolError) as info:
        parse_protocol(doc)
    text = str(info.value)
    assert "$.parties[1].attributes[3]: attribute 'shoe_size' is not declared" in text
    assert "transform 'year' does not apply to a name field" in text
    assert "only a public_safety mandate may invoke" in text
    assert "party 'haven' is missing" in text


def test_unknown_party_names_the_known_ones(protocol):
    with pytest.raises(InputError, match="has parties msd, police, haven"):
        protocol.party("corrections")


def test_bad_json_names_line(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{\n  "name": \n}')
    with pytest.raises(ProtocolError, match="line 3, column 1: not valid JSON"):
        load_protocol(path)


def test_missing_file(tmp_path):
    with pytest.raises(ProtocolError, match="protocol file not found"):
        load_protocol(tmp_path / "nope.json")


def test_document_is_not_mutated():
    doc = document()
    before = copy.deepcopy(doc)
    parse_protocol(doc)
    assert doc == before


def test_placeholder_days_are_for_dates_and_change_the_fingerprint():
    base = parse_protocol(document())
    doc = document()
    date = next(f for f in doc["identifiers"]["fields"] if f["kind"] == "date")
    del date["placeholder_days"]
    without = parse_protocol(doc)
    assert without.fingerprint != base.fingerprint  # encodings of either kind never mix
    date["placeholder_days"] = []
    assert parse_protocol(doc).fingerprint == without.fingerprint  # none declared: as before the option
    doc["identifiers"]["fields"][0]["placeholder_days"] = ["01-01"]
    date["placeholder_days"] = ["02-30"]
    with pytest.raises(ProtocolError) as info:
        parse_protocol(doc)
    text = str(info.value)
    assert "$.identifiers.fields[0].placeholder_days: only a date field has placeholder days" in text
    assert "$.identifiers.fields[2].placeholder_days[0]" in text


def test_swapped_names_are_two_name_fields_of_one_shape_and_change_the_fingerprint():
    base = parse_protocol(document())
    assert base.swapped_names == ("given_name", "surname")
    doc = document()
    del doc["identifiers"]["swapped_names"]
    assert parse_protocol(doc).fingerprint != base.fingerprint  # the surname's filter has another key
    doc["identifiers"]["swapped_names"] = ["given_name", "city"]
    with pytest.raises(ProtocolError, match=r"\$.identifiers.swapped_names: 'city' is not a name field"):
        parse_protocol(doc)
    doc["identifiers"]["swapped_names"] = ["given_name", "surname"]
    doc["identifiers"]["fields"][1]["num_bits"] = 512
    with pytest.raises(ProtocolError, match="given_name and surname need the same num_bits and bits_per_token"):
        parse_protocol(doc)


def test_reject_when_different_names_identifier_fields():
    doc = document()
    given, date = RejectField("given_name"), RejectField("date_of_birth")
    assert parse_protocol(doc).reject_when_different == (
        (given, date),
        (RejectField("given_name", partly=True), date),
        (given, RejectField("sex")),
    )
    doc["matching"]["reject_when_different"] = ["given_name", "date_of_birth"]  # one rule, as a flat list
    assert parse_protocol(doc).reject_when_different == ((given, date),)
    doc["matching"]["reject_when_different"] = ["given_name", "nickname"]
    with pytest.raises(ProtocolError, match=r"\$.matching.reject_when_different\[1\]: 'nickname' is not an identifier"):
        parse_protocol(doc)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([["given_name", "sex:partly"]], r"\[0\]\[1\]: a category is equal or not; 'sex' cannot be partly"),
        ([["given_name", "date_of_birth:mostly"]], r"\[0\]\[1\]: 'date_of_birth:mostly': write the field alone"),
        ([["given_name", "date_of_birth"], ["surname", "nickname"]], r"\[1\]\[1\]: 'nickname' is not an identifier"),
        (["given_name", ["surname", "sex"]], r"reject_when_different: mixes field names and lists of them"),
        (["given_name"], r"reject_when_different: a rule needs two fields or more"),
    ],
)
def test_reject_when_different_rules_are_checked(rules, message):
    doc = document()
    doc["matching"]["reject_when_different"] = rules
    with pytest.raises(ProtocolError, match=message):
        parse_protocol(doc)
