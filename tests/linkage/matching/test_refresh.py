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
from linkage.matching.dedupe import duplicate_groups
from linkage.matching.entity_ids import carry_ids
from linkage.matching.link_state import LinkState, read_state, write_state
from linkage.matching.refresh import refit_state, refresh_state, start_state
from linkage.protocol import Protocol
from tests.helpers import PARTIES, write_encodings

Token = bytes


def _tokens(records: np.ndarray) -> list[Token]:
    return [row.tobytes() for row in np.asarray(records["token"])]


def _entities(state: LinkState) -> dict[int, frozenset[Token]]:
    return {
        number: frozenset(state.records[p]["token"][r].tobytes() for p, r in records)
        for number, records in state.entities().items()
    }


def _pairs(state: LinkState) -> set[tuple[Token, Token]]:
    pairs = state.pairs
    return {
        (state.records[a]["token"][ra].tobytes(), state.records[b]["token"][rb].tobytes())
        for a, b, ra, rb in zip(pairs.party_a, pairs.party_b, pairs.record_a, pairs.record_b, strict=True)
    }


def _write_all(protocol: Protocol, lists: dict[str, np.ndarray], check: str, folder: Path) -> list[Path]:
    return [
        write_encodings(protocol, party, check, records, folder / party)
        for party, records in lists.items()
        if len(records)
    ]


def _start(protocol: Protocol, agencies: dict[str, Path], root: Path, share: float, seed: int, dedupe: bool = False):
    """A state of a random ``share`` of every agency's records; the rest are the pool later batches add from."""
    rng = np.random.default_rng(seed)
    full = {party: np.asarray(read_encodings(agencies[party]).records) for party in PARTIES}
    check = read_encodings(agencies["msd"]).header.secret_check
    taken = {party: rng.random(len(records)) < share for party, records in full.items()}
    first = {party: full[party][taken[party]] for party in PARTIES}
    pool = {party: full[party][~taken[party]] for party in PARTIES}
    files = _write_all(protocol, first, check, root / "first")
    state = start_state(protocol, [read_encodings(p) for p in files], dedupe=dedupe)
    return state, pool, check, rng


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
    old, new = _entities(before), _entities(after)
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
        state, pool, check, rng = _start(protocol, agencies, root, 0.8, seed, dedupe)
        for number in range(2):
            batch, withdrawn = _random_batch(state, pool, rng, sizes)
            files = _write_all(protocol, batch, check, root / f"batch{number}")
            new, summary = refresh_state(protocol, state, [read_encodings(p) for p in files], withdrawn)
            gone = {bytes.fromhex(token) for tokens in withdrawn.values() for token in tokens}
            _check_ids(state, new, dict(summary.retired), gone)
            assert summary.withdrawn == {party: len(tokens) for party, tokens in withdrawn.items()}
            state = new
        lists = _final_lists(state)
        files = _write_all(protocol, lists, check, root / "final")
        again = start_state(protocol, [read_encodings(p) for p in files], model=state.model, dedupe=dedupe)
        assert _pairs(state) == _pairs(again)
        assert set(_entities(state).values()) == set(_entities(again).values())


def test_a_batch_changes_only_what_it_touches(protocol, agencies, tmp_path):
    state, pool, check, rng = _start(protocol, agencies, tmp_path, 0.9, 3)
    batch, withdrawn = _random_batch(state, pool, rng, (5, 2, 2))
    files = _write_all(protocol, batch, check, tmp_path / "batch")
    new, summary = refresh_state(protocol, state, [read_encodings(p) for p in files], withdrawn)
    assert summary.added == {party: len(batch[party]) - 2 for party in PARTIES}
    assert summary.corrected == dict.fromkeys(PARTIES, 2)
    # Only pairs with a new or corrected record were compared, far fewer than the records.
    assert 0 < summary.pairs_compared < sum(len(r) for r in state.records)
    assert summary.records_solved < sum(len(r) for r in new.records) / 4
    gone = {bytes.fromhex(token) for tokens in withdrawn.values() for token in tokens}
    assert not gone & {t for p in range(len(new.parties)) for t in _tokens(new.records[p])}
    _check_ids(state, new, dict(summary.retired), gone)


def test_withdrawing_every_record_of_an_entity_retires_its_id(protocol, agencies, tmp_path):
    state, _, _, _ = _start(protocol, agencies, tmp_path, 1.0, 4)
    number, records = next((n, r) for n, r in state.entities().items() if len(r) >= 2)
    withdrawn: dict[str, list[str]] = {}
    for party, record in records:
        withdrawn.setdefault(state.parties[party], []).append(state.records[party]["token"][record].tobytes().hex())
    new, summary = refresh_state(protocol, state, [], withdrawn)
    assert summary.retired == {number: None}
    assert number not in new.entities()
    assert len(new.pairs) < len(state.pairs)


def test_a_correction_keeps_its_token_and_entity(protocol, agencies, tmp_path):
    state, _, check, _ = _start(protocol, agencies, tmp_path, 1.0, 5)
    number, records = next((n, r) for n, r in state.entities().items() if len(r) >= 2)
    party, record = records[0]
    corrected = state.records[party][record : record + 1].copy()  # the same encodings again: nothing changes
    files = _write_all(protocol, {state.parties[party]: corrected}, check, tmp_path / "batch")
    new, summary = refresh_state(protocol, state, [read_encodings(p) for p in files])
    assert summary.corrected[state.parties[party]] == 1 and summary.retired == {}
    assert _entities(new)[number] == _entities(state)[number]
    assert _entities(new) == _entities(state)


def test_carry_ids_split_keeps_the_id_with_the_larger_part():
    previous = [np.array([7, 7]), np.array([7])]
    ids, following, retired = carry_ids([[(0, 0)], [(0, 1), (1, 0)]], previous, 10)
    assert [column.tolist() for column in ids] == [[10, 7], [7]]
    assert following == 11 and retired == {}


def test_bad_batches_are_refused_with_the_fix(protocol, agencies, foreign, tmp_path):
    state, _, check, _ = _start(protocol, agencies, tmp_path, 0.9, 6)
    with pytest.raises(InputError, match="not in the linkage state.*key map"):
        refresh_state(protocol, state, [], {"msd": ["00" * 16]})
    held = state.records[0]["token"][0].tobytes().hex()
    again = _write_all(protocol, {"msd": state.records[0][:1]}, check, tmp_path / "again")
    with pytest.raises(InputError, match="both withdrawn and in the batch"):
        refresh_state(protocol, state, [read_encodings(p) for p in again], {"msd": [held]})
    with pytest.raises(MismatchError, match="different shared secret.*project's secret"):
        refresh_state(protocol, state, [read_encodings(foreign["secret"])])
    with pytest.raises(InputError, match="not a record token"):
        refresh_state(protocol, state, [], {"msd": ["xyz"]})


def test_state_round_trips(protocol, agencies, tmp_path):
    state, _, _, _ = _start(protocol, agencies, tmp_path, 0.9, 7)
    write_state(state, tmp_path / "state")
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o600
    again = read_state(tmp_path / "state", protocol)
    assert _entities(again) == _entities(state) and _pairs(again) == _pairs(state)
    assert again.model.to_json() == state.model.to_json()
    assert (again.next_entity, again.batches, again.secret_check) == (state.next_entity, 0, state.secret_check)


def test_bad_state_files_name_the_fix(protocol, plain_protocol, agencies, tmp_path):
    state, _, _, _ = _start(protocol, agencies, tmp_path, 0.9, 8)
    path = tmp_path / "state"
    write_state(state, path)
    with pytest.raises(MismatchError, match="another protocol|fingerprint.*pass the protocol the state was made with"):
        read_state(path, plain_protocol)
    data = path.read_bytes()
    (tmp_path / "truncated").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated.*--state-out"):
        read_state(tmp_path / "truncated", protocol)
    (tmp_path / "text").write_text("not a state\n")
    with pytest.raises(InputError, match="not a pprl linkage state"):
        read_state(tmp_path / "text", protocol)
    with pytest.raises(InputError, match="no such state file.*--state-out"):
        read_state(tmp_path / "missing", protocol)
    # A flipped byte inside an array: the zip's CRC or the header's checksum says so.
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF
    (tmp_path / "damaged").write_bytes(bytes(damaged))
    with pytest.raises(InputError, match="damaged|truncated|checksum"):
        read_state(tmp_path / "damaged", protocol)


def test_dedupe_puts_a_partys_duplicates_in_one_entity_and_reports_them(protocol, agencies, tmp_path):
    state, _, check, rng = _start(protocol, agencies, tmp_path, 1.0, 9, dedupe=True)
    number, records = next((n, r) for n, r in state.entities().items() if len(r) == 3)
    party, record = records[0]
    twin = state.records[party][record : record + 1].copy()
    twin["token"] = np.frombuffer(rng.bytes(16), dtype=np.uint8)  # the same client again, under a new client id
    files = _write_all(protocol, {state.parties[party]: twin}, check, tmp_path / "twin")
    new, summary = refresh_state(protocol, state, [read_encodings(p) for p in files])
    assert summary.added[state.parties[party]] == 1
    members = _entities(new)[number]
    assert len(members) == 4 and twin["token"][0].tobytes() in members
    report = duplicate_groups(new)
    assert (
        state.parties[party],
        sorted([state.records[party]["token"][record].tobytes(), twin["token"][0].tobytes()]),
    ) in [(p, sorted(tokens)) for p, tokens in report]
    written = tmp_path / "state"
    write_state(new, written)
    again = read_state(written, protocol)
    assert again.dedupe and _entities(again) == _entities(new) and duplicate_groups(again) == report
    # Without dedupe, the twin is an entity of its own.
    plain, _, _, _ = _start(protocol, agencies, tmp_path / "plain", 1.0, 9)
    plain_new, _ = refresh_state(protocol, plain, [read_encodings(p) for p in files])
    assert twin["token"][0].tobytes() not in _entities(plain_new)[number] and duplicate_groups(plain_new) == []


def test_refit_links_the_final_lists_from_scratch_and_keeps_the_ids(protocol, agencies, tmp_path):
    state, pool, check, rng = _start(protocol, agencies, tmp_path, 0.8, 10)
    batch, withdrawn = _random_batch(state, pool, rng, (20, 5, 5))
    files = [read_encodings(p) for p in _write_all(protocol, batch, check, tmp_path / "batch")]
    new, summary = refit_state(protocol, state, files, withdrawn, work_dir=tmp_path)
    gone = {bytes.fromhex(token) for tokens in withdrawn.values() for token in tokens}
    _check_ids(state, new, dict(summary.retired), gone)
    lists = _final_lists(new)
    scratch = start_state(protocol, [read_encodings(p) for p in _write_all(protocol, lists, check, tmp_path / "final")])
    assert set(_entities(new).values()) == set(_entities(scratch).values())
    assert new.model.to_json() == scratch.model.to_json() and new.batches == 1
    assert not list(tmp_path.glob(".pprl-refit-*"))
