"""Link-and-dedupe: a party's duplicates join one entity and are reported."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.encodings import read_encodings
from linkage.matching.compare import comparisons_for, features_for
from linkage.matching.dedupe import duplicate_groups, within_prior
from linkage.matching.link_state import read_state, write_state
from linkage.matching.model import FellegiSunterModel
from linkage.matching.refresh import refresh_state, start_state
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


def test_each_party_gets_its_own_prior_within_itself_frozen_with_the_model(protocol, agencies, tmp_path):
    state, _, _, _ = start_subset(protocol, agencies, tmp_path, 1.0, 9, dedupe=True)
    overall = state.model.model.prior
    for index, party in enumerate(state.parties):
        within = state.model.priors[(party, party)]
        records = len(state.records[index])
        # These agencies hold nobody twice: the prior is the floor of one pair in all the party's.
        assert within == pytest.approx(2 / (records * (records - 1))) and within != overall
        assert state.model.prior_of(party, party) == within
    written = tmp_path / "state"
    write_state(state, written)
    assert read_state(written, protocol).model.priors == state.model.priors
    # Without dedupe the model holds priors across parties only.
    plain, _, _, _ = start_subset(protocol, agencies, tmp_path / "plain", 1.0, 9)
    assert all(a != b for a, b in plain.model.priors)
    # A model given (here: one fitted without dedupe) is not fitted again: its overall prior stands in.
    files = write_party_lists(
        protocol, {p: state.records[i] for i, p in enumerate(state.parties)}, state.secret_check, tmp_path / "again"
    )
    given = start_state(protocol, [read_encodings(p) for p in files], model=plain.model, dedupe=True)
    assert given.model.priors == plain.model.priors


def test_the_prior_within_a_party_is_the_share_of_its_pairs_that_are_plain_duplicates(protocol, agencies, tmp_path):
    state, _, _, _ = start_subset(protocol, agencies, tmp_path, 0.3, 2)
    comparisons = comparisons_for(protocol)
    # A comparison's last level is the closest agreement; the CLK fallback stays neutral (no salt missing).
    top = [len(c.labels) if c.fallback else len(c.labels) - 1 for c in comparisons]
    bottom = [len(c.labels) if c.fallback else 0 for c in comparisons]
    # 40 candidates that agree on everything and 4,000 that agree on nothing, among 1,000 records.
    levels = np.array([top] * 40 + [bottom] * 4000, dtype=np.int32)
    prior = within_prior(state.model.model, levels, state.model.model.features, 1000)
    assert prior == pytest.approx(40 / (1000 * 999 / 2), rel=0.01)


def _random_model(protocol, rng):
    """A Fellegi-Sunter model over the protocol's features with random m and u (neutral levels at 1)."""
    features = features_for(comparisons_for(protocol), protocol.comparison_groups)

    def shares(feature):
        out = rng.random(feature.size) + 1e-3
        out[feature.neutral] = 0
        out /= out.sum()
        out[feature.neutral] = 1
        return out

    m = tuple(shares(f) for f in features)
    u = tuple(shares(f) for f in features)
    return FellegiSunterModel(features, m, u, float(rng.uniform(1e-7, 0.1)), 0, term_frequencies=False)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), records=st.integers(2, 5000), count=st.integers(0, 300))
def test_the_prior_within_a_party_is_at_least_one_pair_and_at_most_one_half(protocol, seed, records, count):
    rng = np.random.default_rng(seed)
    model = _random_model(protocol, rng)
    comparisons = comparisons_for(protocol)
    total = records * (records - 1) // 2
    count = min(count, total - 1)
    levels = np.stack([rng.integers(0, len(c.labels) + 1, count) for c in comparisons], axis=1).astype(np.int32)
    prior = within_prior(model, levels, model.features, records)
    assert min(1 / total, 0.5) <= prior <= 0.5


def test_a_pair_within_a_party_needs_the_protocols_dedupe_threshold(protocol, agencies, tmp_path):
    # A false pair within a party merges two people's entities whole, and household members
    # are weighed as likelier matches than they are: with dedupe_threshold, a pair within a
    # party needs that match probability (the example: 0.99), pairs across parties still
    # the threshold. A client held twice with only names and date (address and sex missing):
    state, _, check, rng = start_subset(protocol, agencies, tmp_path, 1.0, 9, dedupe=True)
    number, records = next((n, r) for n, r in state.entities().items() if len(r) == 3)
    party, record = records[0]
    twin = state.records[party][record : record + 1].copy()
    twin["token"] = np.frombuffer(rng.bytes(16), dtype=np.uint8)
    for name in twin.dtype.names:
        if name.split("@")[0] in ("address", "city", "postcode", "sex"):
            twin[name] = 0
    files = write_party_lists(protocol, {state.parties[party]: twin}, check, tmp_path / "twin")
    batch = [read_encodings(p) for p in files]
    loose = replace(protocol, dedupe_threshold=None)
    new, _ = refresh_state(loose, state, batch)
    across = int((new.pairs.party_a != new.pairs.party_b).sum())
    within = new.pairs.party_a == new.pairs.party_b
    assert within.sum() == 1
    name = state.parties[party]
    chance = float(new.model.model.probabilities_of(new.pairs.weight[within], new.model.prior_of(name, name))[0])
    assert state.model.threshold < chance < 1.0
    assert twin["token"][0].tobytes() in entity_members(new)[number]
    # Above the chance: halfway to 1, which stays above it however close to 1 it is (chance * 1.001
    # capped at 1 - 1e-12 would not).
    assert chance < 1 - 1e-9, "the pair must leave room for a threshold above its chance"
    for threshold, grouped in ((chance * 0.999, True), ((chance + 1) / 2, False)):
        strict = replace(protocol, dedupe_threshold=threshold)
        new, _ = refresh_state(strict, state, batch)
        # Whether the pair within the party is accepted (the twin may still join the entity through
        # its pairs across parties, where its missing address beats the original's older one).
        assert int((new.pairs.party_a == new.pairs.party_b).sum()) == int(grouped)
        if grouped:
            assert twin["token"][0].tobytes() in entity_members(new)[number]
        # Pairs across parties keep the threshold.
        assert (new.pairs.party_a != new.pairs.party_b).sum() == across
    assert protocol.dedupe_threshold == 0.99
