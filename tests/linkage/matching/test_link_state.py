"""The linkage state file: it round-trips, and a state that cannot be used is refused with the fix."""

from __future__ import annotations

from dataclasses import replace

import pytest

from linkage.errors import InputError, MismatchError
from linkage.matching.link_state import read_state, write_state
from tests.helpers import accepted_token_pairs, entity_members, start_subset


def test_state_round_trips(protocol, agencies, tmp_path):
    state, _, _, _ = start_subset(protocol, agencies, tmp_path, 0.9, 7)
    write_state(state, tmp_path / "state")
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o600
    again = read_state(tmp_path / "state", protocol)
    assert entity_members(again) == entity_members(state) and accepted_token_pairs(again) == accepted_token_pairs(state)
    assert again.model.to_json() == state.model.to_json()
    assert (again.next_entity, again.batches, again.secret_check) == (state.next_entity, 0, state.secret_check)


def test_bad_state_files_name_the_fix(protocol, plain_protocol, agencies, tmp_path):
    state, _, _, _ = start_subset(protocol, agencies, tmp_path, 0.9, 8)
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


def test_a_state_whose_arrays_do_not_fit_together_is_refused(protocol, agencies, tmp_path):
    state, _, _, _ = start_subset(protocol, agencies, tmp_path, 0.9, 11)
    pairs = state.pairs
    broken = replace(state, pairs=replace(pairs, record_b=pairs.record_b + 10**6))
    write_state(broken, tmp_path / "state")
    with pytest.raises(InputError, match="does not hold together.*a record the state does not hold"):
        read_state(tmp_path / "state", protocol)
