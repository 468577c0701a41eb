"""Incremental linkage: a batch added to the state links as a link from scratch of the final lists would."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linkage.encodings import read_encodings
from linkage.errors import InputError, MismatchError
from linkage.matching.link_state import LinkState
from linkage.matching.refresh import refit_state, refresh_state, start_state
from tests.helpers import (
    PARTIES,
    accepted_token_pairs,
    entity_members,
    record_tokens,
    start_subset,
    write_party_lists,
)

Token = bytes


def _random_batch(state: LinkState, pool: dict[str, np.ndarray], rng: np.random.Generator, sizes: tuple[int, int, int]):
    """Additions from the pool, corrections (another record's encodings under a held token), withdrawals."""
    add, correct, withdraw = sizes
    every = np.concatenate([state.records[p] for p in range(len(state.parties))] + list(pool.values()))
    batch, withdrawn = {}, {}
    for index, party in enumerate(state.parties):
        held = state.records[index]
        chosen = rng.choice(len(held), min(len(held), correct + withdraw), replace=False)
        corrections = every[rng.choice(len(every), len(chosen[:correct]))].copy()
        corrections["token"] = held["token"][chosen[:correct]]
        withdrawn[party] = [held["token"][i].tobytes().hex() for i in chosen[correct:]]
        take = min(add, len(pool[party]))
        batch[party] = np.concatenate([pool[party][:take], corrections])
        pool[party] = pool[party][take:]
    return batch, withdrawn


def _final_lists(state: LinkState) -> dict[str, np.ndarray]:
    return {party: state.records[index] for index, party in enumerate(state.parties)}


def _check_ids(before: LinkState, after: LinkState, retired: dict[int, int | None], withdrawn: set[Token]) -> None:
    old, new = entity_members(before), entity_members(after)
    # Ids are unique and never reused: a new id is above every id given out before.
    assert not set(retired) & set(new)
    assert all(number in old or number >= before.next_entity for number in new)
    # An entity with the same records keeps its id.
    by_members = {members: number for number, members in old.items()}
    for number, members in new.items():
        if members in by_members:
            assert by_members[members] == number
    # A surviving id stays with the entity holding most of its old records (it was theirs).
    holder = {token: number for number, members in new.items() for token in members}
    for number, members in old.items():
        if number in new:
            shares = Counter(holder[token] for token in members if token in holder)
            assert shares[number] == max(shares.values())
        else:
            assert number in retired
            target = retired[number]
            assert target is None or target in new
            assert (target is None) == all(token not in holder for token in members)
    assert not withdrawn & set(holder)


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    sizes=st.tuples(st.integers(0, 30), st.integers(0, 12), st.integers(0, 12)),
    dedupe=st.booleans(),
)
def test_batches_link_as_a_link_from_scratch(protocol, agencies, seed, sizes, dedupe):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        state, pool, check, rng = start_subset(protocol, agencies, root, 0.8, seed, dedupe)
        for number in range(2):
            batch, withdrawn = _random_batch(state, pool, rng, sizes)
            files = write_party_lists(protocol, batch, check, root / f"batch{number}")
            new, summary = refresh_state(protocol, state, [read_encodings(p) for p in files], withdrawn)
            gone = {bytes.fromhex(token) for tokens in withdrawn.values() for token in tokens}
            _check_ids(state, new, dict(summary.retired), gone)
            assert summary.withdrawn == {party: len(tokens) for party, tokens in withdrawn.items()}
            state = new
        lists = _final_lists(state)
        files = write_party_lists(protocol, lists, check, root / "final")
        again = start_state(protocol, [read_encodings(p) for p in files], model=state.model, dedupe=dedupe)
        assert accepted_token_pairs(state) == accepted_token_pairs(again)
        assert set(entity_members(state).values()) == set(entity_members(again).values())


def test_a_batch_changes_only_what_it_touches(protocol, agencies, tmp_path):
    state, pool, check, rng = start_subset(protocol, agencies, tmp_path, 0.9, 3)
    batch, withdrawn = _random_batch(state, pool, rng, (5, 2, 2))
    files = write_party_lists(protocol, batch, check, tmp_path / "batch")
    new, summary = refresh_state(protocol, state, [read_encodings(p) for p in files], withdrawn)
    assert summary.added == {party: len(batch[party]) - 2 for party in PARTIES}
    assert summary.corrected == dict.fromkeys(PARTIES, 2)
    # Only pairs with a new or corrected record were compared, far fewer than the records.
    assert 0 < summary.pairs_compared < sum(len(r) for r in state.records)
    assert summary.records_solved < sum(len(r) for r in new.records) / 4
    gone = {bytes.fromhex(token) for tokens in withdrawn.values() for token in tokens}
    assert not gone & {t for p in range(len(new.parties)) for t in record_tokens(new.records[p])}
    _check_ids(state, new, dict(summary.retired), gone)


def test_withdrawing_every_record_of_an_entity_retires_its_id(protocol, agencies, tmp_path):
    state, _, _, _ = start_subset(protocol, agencies, tmp_path, 1.0, 4)
    number, records = next((n, r) for n, r in state.entities().items() if len(r) >= 2)
    withdrawn: dict[str, list[str]] = {}
    for party, record in records:
        withdrawn.setdefault(state.parties[party], []).append(state.records[party]["token"][record].tobytes().hex())
    new, summary = refresh_state(protocol, state, [], withdrawn)
    assert summary.retired == {number: None}
    assert number not in new.entities()
    assert len(new.pairs) < len(state.pairs)


def test_a_correction_keeps_its_token_and_entity(protocol, agencies, tmp_path):
    state, _, check, _ = start_subset(protocol, agencies, tmp_path, 1.0, 5)
    number, records = next((n, r) for n, r in state.entities().items() if len(r) >= 2)
    party, record = records[0]
    corrected = state.records[party][record : record + 1].copy()  # the same encodings again: nothing changes
    files = write_party_lists(protocol, {state.parties[party]: corrected}, check, tmp_path / "batch")
    new, summary = refresh_state(protocol, state, [read_encodings(p) for p in files])
    assert summary.corrected[state.parties[party]] == 1 and summary.retired == {}
    assert entity_members(new)[number] == entity_members(state)[number]
    assert entity_members(new) == entity_members(state)


def test_bad_batches_are_refused_with_the_fix(protocol, agencies, foreign, tmp_path):
    state, _, check, _ = start_subset(protocol, agencies, tmp_path, 0.9, 6)
    with pytest.raises(InputError, match="not in the linkage state.*key map"):
        refresh_state(protocol, state, [], {"msd": ["00" * 16]})
    held = state.records[0]["token"][0].tobytes().hex()
    again = write_party_lists(protocol, {"msd": state.records[0][:1]}, check, tmp_path / "again")
    with pytest.raises(InputError, match="both withdrawn and in the batch"):
        refresh_state(protocol, state, [read_encodings(p) for p in again], {"msd": [held]})
    with pytest.raises(MismatchError, match="different shared secret.*project's secret"):
        refresh_state(protocol, state, [read_encodings(foreign["secret"])])
    with pytest.raises(InputError, match="not a record token"):
        refresh_state(protocol, state, [], {"msd": ["xyz"]})


def test_refit_links_the_final_lists_from_scratch_and_keeps_the_ids(protocol, agencies, tmp_path):
    state, pool, check, rng = start_subset(protocol, agencies, tmp_path, 0.8, 10)
    batch, withdrawn = _random_batch(state, pool, rng, (20, 5, 5))
    files = [read_encodings(p) for p in write_party_lists(protocol, batch, check, tmp_path / "batch")]
    new, summary = refit_state(protocol, state, files, withdrawn, work_dir=tmp_path)
    gone = {bytes.fromhex(token) for tokens in withdrawn.values() for token in tokens}
    _check_ids(state, new, dict(summary.retired), gone)
    lists = _final_lists(new)
    scratch = start_state(
        protocol, [read_encodings(p) for p in write_party_lists(protocol, lists, check, tmp_path / "final")]
    )
    assert set(entity_members(new).values()) == set(entity_members(scratch).values())
    assert new.model.to_json() == scratch.model.to_json() and new.batches == 1
    assert not list(tmp_path.glob(".pprl-refit-*"))
