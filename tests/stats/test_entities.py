"""The entity table: one row per person, membership flags, attributes combined as the protocol says."""

import pytest

from linkage.errors import InputError
from linkage.protocol import parse_protocol
from stats.entities import entity_table, membership_patterns, privacy_unit, read_entity_table

A, B, C, D = (f"{n:032x}" for n in range(1, 5))


def test_linked_records_become_one_person_and_the_rest_stand_alone(protocol):
    mapping = [("e1", "msd", A), ("e1", "police", B)]
    attributes = {
        "msd": {A: {"region": None, "benefit_type": "jobseeker", "weeks_supported": 10}, C: {"region": "Otago"}},
        "police": {B: {"region": "Waikato", "offence_category": "none", "police_contacts": 3}},
        "haven": {D: {"region": "Auckland", "housed_within_90_days": False, "months_in_nz": 4}},
    }
    table = entity_table(protocol, mapping, attributes).sort("pattern")
    assert table.height == 3
    rows = {row["pattern"]: row for row in table.iter_rows(named=True)}
    assert set(rows) == {"msd+police", "msd", "haven"}
    linked = rows["msd+police"]
    assert linked["member:msd"] and linked["member:police"] and not linked["member:haven"] and linked["shared"]
    assert linked["region"] == "Waikato", "'first' takes the first party in protocol order that reports a value"
    assert (linked["weeks_supported"], linked["police_contacts"]) == (10, 3)
    assert rows["msd"]["region"] == "Otago" and not rows["msd"]["shared"]
    assert rows["haven"]["housed_within_90_days"] is False


def test_any_combines_a_boolean_across_parties(protocol):
    document = protocol.document
    assert {a["name"]: a["combine"] for a in document["attributes"]}["weeks_supported"] == "max"
    changed = {**document, "attributes": [*document["attributes"]]}
    changed["parties"] = [
        {**p, "attributes": [*p["attributes"], "housed_within_90_days"]} if p["id"] == "msd" else p
        for p in document["parties"]
    ]
    other = parse_protocol(changed)
    mapping = [("e", "msd", A), ("e", "haven", B)]
    attributes = {
        "msd": {A: {"housed_within_90_days": True}},
        "haven": {B: {"housed_within_90_days": False}},
    }
    assert entity_table(other, mapping, attributes)["housed_within_90_days"].to_list() == [True]


def test_a_linked_party_without_attributes_is_refused(protocol):
    with pytest.raises(InputError, match="party 'police' is in the linkage results but has sent no attributes"):
        entity_table(protocol, [("e", "msd", A), ("e", "police", B)], {"msd": {A: {}}})


def test_patterns_cover_every_non_empty_set_of_parties(protocol):
    assert len(membership_patterns(protocol)) == 2 ** len(protocol.parties) - 1


def test_local_files_are_read_and_checked(protocol, tmp_path):
    entities = tmp_path / "entities.csv"
    entities.write_text(f"stable_entity_id,party,token\ne1,msd,{A}\ne1,police,{B}\n")
    msd = tmp_path / "msd.csv"
    msd.write_text(f"token,consent,region,benefit_type,weeks_supported\n{A},true,Otago,none,3\n{C},false,,,\n")
    police = tmp_path / "police.csv"
    police.write_text(f"token,consent,region,offence_category,police_contacts\n{B},true,,none,1\n")
    table = read_entity_table(protocol, entities, [("msd", msd), ("police", police)])
    assert sorted(table["pattern"].to_list()) == ["msd", "msd+police"]
    with pytest.raises(InputError, match="names party 'msd' twice"):
        read_entity_table(protocol, entities, [("msd", msd), ("msd", msd)])
    with pytest.raises(InputError, match="entities file not found"):
        read_entity_table(protocol, tmp_path / "nope.csv", [("msd", msd)])
    with pytest.raises(InputError, match="attributes file of party 'haven' not found"):
        read_entity_table(protocol, entities, [("haven", tmp_path / "nope.csv")])
    record_level = tmp_path / "record-level.csv"
    record_level.write_text(f"entity_id,party,token\ne1,msd,{A}\ne1,police,{B}\n")
    with pytest.raises(InputError, match="holds record-level entities, not the stable mapping"):
        read_entity_table(protocol, record_level, [("msd", msd), ("police", police)])


def test_the_privacy_unit_is_stated_in_one_sentence_with_its_bound_and_limits(protocol):
    sentence = privacy_unit(protocol)
    assert sentence.count(". ") == 0 and sentence.endswith(".")
    assert "one person" in sentence and "at most 9 rows" in sentence
    assert "no two records of one agency in one cluster" in sentence and "not protected" in sentence


def test_a_damaged_mapping_is_refused_without_naming_the_token(protocol):
    # The message reaches an analyst (as a 409 on every query), who must never see a token.
    with pytest.raises(InputError, match="a token of party 'msd' is in two entities") as raised:
        entity_table(protocol, [("e1", "msd", A), ("e2", "msd", A)], {"msd": {A: {}}})
    assert A not in str(raised.value)
