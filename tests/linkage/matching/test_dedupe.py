"""Link-and-dedupe: a party's duplicates join one entity and are reported."""

from __future__ import annotations

import numpy as np

from linkage.encodings import read_encodings
from linkage.matching.dedupe import duplicate_groups
from linkage.matching.link_state import read_state, write_state
from linkage.matching.refresh import refresh_state
from tests.helpers import entity_members, start_subset, write_party_lists


def test_dedupe_puts_a_partys_duplicates_in_one_entity_and_reports_them(protocol, agencies, tmp_path):
    state, _, check, rng = start_subset(protocol, agencies, tmp_path, 1.0, 9, dedupe=True)
    number, records = next((n, r) for n, r in state.entities().items() if len(r) == 3)
    party, record = records[0]
    twin = state.records[party][record : record + 1].copy()
    twin["token"] = np.frombuffer(rng.bytes(16), dtype=np.uint8)  # the same client again, under a new client id
    files = write_party_lists(protocol, {state.parties[party]: twin}, check, tmp_path / "twin")
    new, summary = refresh_state(protocol, state, [read_encodings(p) for p in files])
    assert summary.added[state.parties[party]] == 1
    members = entity_members(new)[number]
    assert len(members) == 4 and twin["token"][0].tobytes() in members
    report = duplicate_groups(new)
    assert (
        state.parties[party],
        sorted([state.records[party]["token"][record].tobytes(), twin["token"][0].tobytes()]),
    ) in [(p, sorted(tokens)) for p, tokens in report]
    written = tmp_path / "state"
    write_state(new, written)
    again = read_state(written, protocol)
    assert again.dedupe and entity_members(again) == entity_members(new) and duplicate_groups(again) == report
    # Without dedupe, the twin is an entity of its own.
    plain, _, _, _ = start_subset(protocol, agencies, tmp_path / "plain", 1.0, 9)
    plain_new, _ = refresh_state(protocol, plain, [read_encodings(p) for p in files])
    assert twin["token"][0].tobytes() not in entity_members(plain_new)[number] and duplicate_groups(plain_new) == []


def test_a_dedupe_state_read_back_takes_a_batch_under_similarity_rules(protocol, agencies, tmp_path):
    # The example protocol's similarity rules make many block key columns per rule: the
    # state once read back one skipped-block list per rule, and the next batch failed.
    assert len(protocol.block_limits) > len(protocol.blocking)
    state, pool, check, _ = start_subset(protocol, agencies, tmp_path, 0.9, 4, dedupe=True)
    assert all(len(columns) == len(protocol.block_limits) for columns in state.within_oversized.values())
    written = tmp_path / "state"
    write_state(state, written)
    again = read_state(written, protocol)
    for party, columns in state.within_oversized.items():
        assert [k.tolist() for k in again.within_oversized[party]] == [k.tolist() for k in columns]
    files = write_party_lists(protocol, {"msd": pool["msd"][:5]}, check, tmp_path / "batch")
    from_file, _ = refresh_state(protocol, again, [read_encodings(p) for p in files])
    in_memory, _ = refresh_state(protocol, state, [read_encodings(p) for p in files])
    assert entity_members(from_file) == entity_members(in_memory)
