"""The neighbour test: take one person's records out, encode and link again, count the rows that moved."""

import numpy as np
import pytest

from linkage.agency.encode import encode_csv
from linkage.encodings import read_encodings
from linkage.evaluation.neighbours import delete_person, entity_rows, measure_move, people_of
from linkage.evaluation.scores import read_truth
from linkage.matching.engine import link, load_inputs
from linkage.matching.stable import rows_bound
from linkage.token_files import read_keymap
from tests.helpers import SECRET, encoded_population


@pytest.fixture(scope="module")
def population(tmp_path_factory, protocol):
    root = tmp_path_factory.mktemp("neighbours")
    # The realistic profile: its households make the ambiguous clusters whose records the
    # per-run linkage moves; the basic one at this size links every person apart.
    data, outs = encoded_population(protocol, 360, 21, root, profile="realistic")
    frozen = link(protocol, load_inputs(protocol, outs), freeze=True)
    return data, outs, frozen


def relink(protocol, data, outs, model, person, root):
    """Link everyone but ``person`` with the frozen model, encoding again the files that lost a row."""
    changed = delete_person(data, person, root / "data", protocol.client_id_column)
    inputs = []
    for party, out in zip(protocol.parties, outs, strict=True):
        if party.id in changed:
            encode_csv(protocol, party.id, SECRET, changed[party.id], root / party.id, workers=1)
            inputs.append(root / party.id)
        else:
            inputs.append(out)
    return link(protocol, load_inputs(protocol, inputs), model=model), inputs


def chosen_people(people, frozen, outs, seed):
    """Two people known to each of 1, 2 and 3 parties, and every person in an ambiguous cluster."""
    rng = np.random.default_rng(seed)
    keymaps = [read_keymap(out / "keymap.csv") for out in outs]
    in_ambiguous = {
        (frozen.parties[p], keymaps[p][frozen.tokens[p][r].tobytes().hex()])
        for cluster in frozen.stable.ambiguous
        for p, r in cluster
    }
    chosen = [person for person, records in sorted(people.items()) if set(records) & in_ambiguous]
    for size in (1, 2, 3):
        known = sorted(person for person, records in people.items() if len(records) == size)
        chosen += [known[i] for i in rng.choice(len(known), 2, replace=False)]
    return chosen


@pytest.mark.slow
def test_one_persons_records_move_at_most_the_declared_rows(protocol, population, tmp_path):
    data, outs, frozen = population
    assert protocol.rows_per_person == rows_bound(len(protocol.parties)) == 9
    people = people_of(read_truth(data / "truth.csv"))
    before = entity_rows(frozen, outs)
    moves = []
    for number, person in enumerate(chosen_people(people, frozen, outs, seed=3)):
        result, inputs = relink(protocol, data, outs, frozen.model, people[person], tmp_path / str(number))
        move = measure_move(before, entity_rows(result, inputs), people[person])
        assert move.rows <= protocol.rows_per_person, (person, move)
        moves.append(move)
    assert len(moves) >= 6
    assert all(move.rows >= 1 for move in moves), "a person's own row always goes"


@pytest.mark.slow
def test_without_a_frozen_model_other_peoples_rows_move(plain_protocol, tmp_path):
    # Unhardened: its names' term frequencies are shares of everyone linked, so taking one
    # person out moves every weight of their names. (Under the example's salts no name is
    # weighed by its share any more, and none of these deletions moved another's row; the
    # per-run model still depends on everyone, through m, u, the prior and the threshold.)
    protocol = plain_protocol
    data, outs = encoded_population(protocol, 360, 21, tmp_path / "population", profile="realistic")
    frozen = link(protocol, load_inputs(protocol, outs), freeze=True)
    people = people_of(read_truth(data / "truth.csv"))
    fitted = link(protocol, load_inputs(protocol, outs))
    before = entity_rows(fitted, outs, fitted.entities)
    others = []
    for number, person in enumerate(chosen_people(people, frozen, outs, seed=5)):
        changed = delete_person(data, people[person], tmp_path / str(number) / "data", protocol.client_id_column)
        inputs = []
        for party, out in zip(protocol.parties, outs, strict=True):
            target = tmp_path / str(number) / party.id
            if party.id in changed:
                encode_csv(protocol, party.id, SECRET, changed[party.id], target, workers=1)
            inputs.append(target if party.id in changed else out)
        result = link(protocol, load_inputs(protocol, inputs))
        others.append(measure_move(before, entity_rows(result, inputs, result.entities), people[person]).others)
    assert max(others) > 0, "the per-run model moves other people's rows: what the frozen model is for"


def test_encoding_is_per_record_so_a_party_encoded_again_without_a_client_is_the_rest_unchanged(
    protocol, population, tmp_path
):
    data, outs, _ = population
    people = people_of(read_truth(data / "truth.csv"))
    person = next(records for records in people.values() if [p for p, _ in records] == ["msd"])
    changed = delete_person(data, person, tmp_path / "data", protocol.client_id_column)
    encode_csv(protocol, "msd", SECRET, changed["msd"], tmp_path / "msd", workers=1)

    def by_client(out):
        keymap = read_keymap(out / "keymap.csv")
        records = read_encodings(out / "encodings.pprl").records
        names = [name for name in records.dtype.names if name != "token"]
        return {keymap[r["token"].tobytes().hex()]: tuple(r[n].tobytes() for n in names) for r in records}

    again, original = by_client(tmp_path / "msd"), by_client(outs[0])
    assert set(original) - set(again) == {person[0][1]}
    assert all(again[client] == original[client] for client in again)
