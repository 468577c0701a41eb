"""Synthetic populations: the contract the tests and benchmarks rely on."""

import csv
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from linkage.errors import InputError, OutputExistsError
from linkage.evaluation.synth import Corruption, synthesise_population
from linkage.protocol import Protocol


def rows(path):
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


@pytest.fixture(scope="module")
def population(protocol, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    summary = synthesise_population(protocol, 3000, 11, out)
    return out, summary


def test_headers_and_files(protocol, population):
    out, summary = population
    for party in protocol.parties:
        assert rows(out / f"{party.id}.csv")[0] == list(protocol.columns_for(party.id))
    assert rows(out / "truth.csv")[0] == ["party", "client_id", "person_id"]
    assert [p.name for p in summary.files] == ["msd.csv", "police.csv", "haven.csv", "truth.csv"]
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]


def test_truth_covers_every_row_once_and_people_overlap(protocol, population):
    out, summary = population
    truth = rows(out / "truth.csv")[1:]
    records = {(party.id, row[0]) for party in protocol.parties for row in rows(out / f"{party.id}.csv")[1:]}
    assert {(party, client) for party, client, _ in truth} == records
    assert len(truth) == len(records) == sum(summary.records_by_party.values())
    per_person = defaultdict(list)
    for party, _, person in truth:
        per_person[person].append(party)
    assert all(len(parties) == len(set(parties)) for parties in per_person.values())
    sizes = Counter(len(parties) for parties in per_person.values())
    assert sizes[2] > 100 and sizes[3] > 10
    assert len(per_person) == 3000


def test_client_ids_unique_and_values_valid(protocol, population):
    out, _ = population
    for party in protocol.parties:
        table = rows(out / f"{party.id}.csv")
        header, body = table[0], table[1:]
        ids = [row[0] for row in body]
        assert len(ids) == len(set(ids))
        for name in party.attributes:
            spec = protocol.attribute(name)
            values = {row[header.index(name)] for row in body} - {""}
            if spec.type == "categorical":
                assert values <= set(spec.categories)
            elif spec.type == "integer":
                assert all(spec.lower <= int(v) <= spec.upper for v in values)
            else:
                assert values <= {"true", "false"}
        assert {row[header.index("consent")] for row in body} == {"true", "false"}


def test_shared_clients_fare_differently(population):
    out, _ = population
    truth = rows(out / "truth.csv")[1:]
    parties_of = defaultdict(set)
    person_of = {}
    for party, client, person in truth:
        parties_of[person].add(party)
        person_of[(party, client)] = person
    table = rows(out / "police.csv")
    column = table[0].index("police_contacts")
    shared, single = [], []
    for row in table[1:]:
        if row[column]:
            (shared if len(parties_of[person_of[("police", row[0])]]) > 1 else single).append(int(row[column]))
    assert sum(shared) / len(shared) > sum(single) / len(single)


def test_same_seed_same_bytes_other_seed_other_bytes(protocol, tmp_path):
    first = synthesise_population(protocol, 300, 5, tmp_path / "a")
    second = synthesise_population(protocol, 300, 5, tmp_path / "b")
    third = synthesise_population(protocol, 300, 6, tmp_path / "c")
    for a, b, c in zip(first.files, second.files, third.files, strict=True):
        assert a.read_bytes() == b.read_bytes()
        assert a.read_bytes() != c.read_bytes()


def test_refuses_a_non_empty_folder_and_bad_sizes(protocol, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="already exists and is not empty"):
        synthesise_population(protocol, 10, 1, out)
    assert (out / "mine.txt").read_text() == "keep"
    with pytest.raises(InputError, match="at least 1"):
        synthesise_population(protocol, 0, 1, tmp_path / "other")


def test_corruption_rates_are_refused_where_the_profile_would_ignore_them(protocol: Protocol, tmp_path: Path) -> None:
    # The realistic profile has its own rates: bench/neighbours' --harder scaled the basic
    # profile's and silently changed nothing once the realistic one became the default.
    with pytest.raises(InputError, match="basic profile only"):
        synthesise_population(protocol, 10, 1, tmp_path / "out", corruption=Corruption(typo_given_name=0.5))
    summary = synthesise_population(
        protocol, 10, 1, tmp_path / "basic", corruption=Corruption(typo_given_name=0.5), profile="basic"
    )
    assert summary.people == 10
