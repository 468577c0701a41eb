"""The linkage engine on synthetic populations: 2, 3 and 5 parties, quality, determinism."""

import csv

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.evaluation.blocking import analyse_blocking
from linkage.evaluation.scores import (
    pairwise_scores,
    read_truth,
    record_people,
    resolve_entities,
    true_pairs,
)
from linkage.matching.compare import PartyFeatures, compare_pairs, comparisons_for, features_for
from linkage.matching.engine import _canonical_order, link, load_inputs, score_candidates
from linkage.token_files import read_entities, read_keymap, write_entities
from tests.helpers import encoded_population, protocol_with_parties, write_encodings


def quality(protocol, data, outs, entities_path):
    keymaps = {p.id: read_keymap(out / "keymap.csv") for p, out in zip(protocol.parties, outs, strict=True)}
    actual, _ = true_pairs(read_truth(data / "truth.csv"), keymaps)
    return pairwise_scores(resolve_entities(read_entities(entities_path), keymaps), actual)


@pytest.mark.parametrize("parties", [2, 3, 5])
def test_links_synthetic_agencies_accurately(tmp_path, parties):
    protocol = protocol_with_parties(parties)
    data, outs = encoded_population(protocol, 1500, 5, tmp_path)
    result = link(protocol, load_inputs(protocol, outs))
    write_entities(result, tmp_path / "entities.csv")
    for entity in result.entities:
        members = [party for party, _ in entity.records]
        assert len(members) == len(set(members)) >= 2
    scores = quality(protocol, data, outs, tmp_path / "entities.csv")
    assert scores.precision > 0.97
    assert scores.recall > 0.93


def test_same_inputs_same_output_with_or_without_a_pool(tmp_path):
    protocol = protocol_with_parties(3)
    _, outs = encoded_population(protocol, 800, 9, tmp_path)
    single = link(protocol, load_inputs(protocol, outs), workers=1)
    pooled = link(protocol, load_inputs(protocol, outs), workers=2)
    write_entities(single, tmp_path / "one.csv")
    write_entities(pooled, tmp_path / "two.csv")
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "two.csv").read_bytes()


def test_singletons_and_no_scores_in_output(tmp_path):
    protocol = protocol_with_parties(2)
    _, outs = encoded_population(protocol, 400, 3, tmp_path)
    encodings = load_inputs(protocol, outs)
    result = link(protocol, encodings)
    linked = write_entities(result, tmp_path / "linked.csv")
    everyone = write_entities(result, tmp_path / "all.csv", include_singletons=True)
    with (tmp_path / "all.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["entity_id", "party", "token"]
    assert len(rows) - 1 == sum(item.header.record_count for item in encodings)
    assert everyone > linked == len(result.entities)


def test_blocking_keeps_almost_every_true_pair(tmp_path):
    protocol = protocol_with_parties(3)
    data, outs = encoded_population(protocol, 2000, 21, tmp_path)
    encodings = load_inputs(protocol, outs)
    scored = score_candidates(protocol, encodings)
    keymaps = {p.id: read_keymap(out / "keymap.csv") for p, out in zip(protocol.parties, outs, strict=True)}
    people = record_people(encodings, keymaps, read_truth(data / "truth.csv"))
    blocking = analyse_blocking(protocol, encodings, people)
    assert blocking.candidate_pairs == scored.pairs_compared
    assert blocking.pair_completeness > 0.98
    # Similarity rules propose about as many candidates per record whatever the list's
    # size (a band's blocks are small): on 2,000 people that is a few percent of all pairs.
    assert blocking.reduction_ratio > 0.97
    assert blocking.candidates_per_record < 30
    assert np.all((scored.probability >= 0) & (scored.probability <= 1))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(1, 2), st.integers(0, 9), st.integers(0, 9)), max_size=40))
def test_candidates_are_put_in_canonical_order_whatever_order_tasks_finished_in(pairs):
    columns = [np.array([p[i] for p in pairs], dtype=np.int8 if i < 2 else np.int32) for i in range(4)]
    order = _canonical_order(*columns)
    ordered = [tuple(int(c[i]) for c in columns) for i in (range(len(pairs)) if order is None else order)]
    assert ordered == sorted(pairs)


def _entities_by_token(result):
    return sorted(
        sorted((result.parties[p], result.tokens[p][r].tobytes().hex()) for p, r in entity.records)
        for entity in result.entities
    )


def test_the_order_of_the_records_changes_no_entity(tmp_path):
    # Fellegi-Sunter weights are discrete, so many candidates tie; they were taken in the
    # order of the input (and u was drawn by record index), so shuffling an agency's file
    # moved entities: pairwise F1 0.9527-0.9551 over three orders of one 20,000-person
    # realistic synth.
    protocol = protocol_with_parties(3)
    _, outs = encoded_population(protocol, 600, 13, tmp_path, profile="realistic")
    encodings = load_inputs(protocol, outs)
    rng = np.random.default_rng(1)
    shuffled = load_inputs(
        protocol,
        [
            write_encodings(
                protocol,
                item.header.party,
                item.header.secret_check,
                np.asarray(item.records)[rng.permutation(item.header.record_count)],
                tmp_path / "shuffled" / item.header.party,
            )
            for item in encodings
        ],
    )
    first = link(protocol, encodings, freeze=True)
    second = link(protocol, shuffled, freeze=True)
    assert first.threshold == second.threshold
    assert _entities_by_token(first) == _entities_by_token(second)
    assert first.stable is not None and second.stable is not None
    assert first.stable.worst_deletion == second.stable.worst_deletion
    assert first.stable.ambiguous_records == second.stable.ambiguous_records


def test_u_of_a_date_is_its_share_among_all_pairs_not_a_draw(tmp_path):
    # u came from 200,000 random pairs, among which an exact date of birth is about 30 and
    # a swapped day and month about 3 (realistic synth, 20,000 people): the weight of an
    # agreeing date moved by up to a bit from one draw to the next (u of the exact level
    # 1.2e-4 to 1.7e-4 over four draws at seed 7). Now its levels are counted over every pair.
    protocol = protocol_with_parties(2)
    _, outs = encoded_population(protocol, 400, 5, tmp_path, profile="realistic")
    encodings = load_inputs(protocol, outs)
    comparisons = comparisons_for(protocol)
    features = features_for(comparisons, protocol.comparison_groups)
    column = next(i for i, f in enumerate(features) if f.name == "date_of_birth")
    date = features[column].members[0]
    sides = [PartyFeatures.from_records(np.asarray(item.records), comparisons) for item in encodings]
    index_a, index_b = (
        index.ravel()
        for index in np.meshgrid(np.arange(len(encodings[0].records)), np.arange(len(encodings[1].records)))
    )
    levels = compare_pairs(sides[0], sides[1], index_a, index_b, comparisons)[:, date]
    counts = np.bincount(levels, minlength=comparisons[date].levels + 1)[:-1]
    model = score_candidates(protocol, encodings).model
    assert counts[2] > 0  # a swapped day and month among all pairs: rare, so noisy when drawn
    np.testing.assert_allclose(model.u[column][:-1], counts / counts.sum(), rtol=0.02)
