"""Similarity blocking's band keys: the chance of sharing one is the stated one, and they are keyed."""

import datetime as dt
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.agency.hashing import derive_keys
from linkage.agency.records import RecordEncoder
from linkage.agency.similarity import (
    SimilarityEncoder,
    band_keys,
    minhash_plan,
    signatures,
    token_hashes,
    value_signature,
)
from linkage.protocol import SimilarityRule, parse_protocol
from tests.helpers import example_document

RULE = SimilarityRule((("surname",),), bands=12, hashes_per_band=3)
SECRETS = 300
# z of a two-sided test whose false alarms stay below one in a million per check.
Z = 5.0


def band_keys_of(tokens, key, rule=RULE):
    """Band keys of records given as token lists, under the rule's hash functions for ``key``."""
    plan = minhash_plan(rule, key)
    hashes = np.concatenate([token_hashes(list(record), key) for record in tokens])
    rows = np.repeat(np.arange(len(tokens)), [len(record) for record in tokens])
    return band_keys(plan, signatures(plan, [(0, hashes, rows)], len(tokens)))


@st.composite
def similar_sets(draw):
    """Two token sets of 5 to 40 tokens, sharing a drawn share of their union."""
    union = draw(st.integers(6, 40))
    shared = draw(st.integers(1, union - 2))
    only_a = draw(st.integers(0, union - shared))
    tokens = [f"t{i}" for i in range(union)]
    return tokens[:shared] + tokens[shared : shared + only_a], tokens[:shared] + tokens[shared + only_a :]


def dice(a, b):
    return 2 * len(set(a) & set(b)) / (len(set(a)) + len(set(b)))


@settings(max_examples=12, deadline=None)
@given(similar_sets())
def test_a_pair_shares_a_band_with_the_stated_chance(pair):
    """Over many secrets: each band is shared with chance J**r, some band with 1 - (1 - J**r)**b."""
    a, b = pair
    jaccard = len(set(a) & set(b)) / len(set(a) | set(b))
    shared_bands = shared_any = 0
    for secret in range(SECRETS):
        keys = band_keys_of([a, b], secret.to_bytes(8, "little") * 8)
        equal = keys[0] == keys[1]
        shared_bands += int(equal.sum())
        shared_any += bool(equal.any())
    per_band = jaccard**RULE.hashes_per_band
    trials = SECRETS * RULE.bands
    assert abs(shared_bands / trials - per_band) <= Z * math.sqrt(per_band * (1 - per_band) / trials) + 1e-9
    stated = RULE.band_chance(dice(a, b))
    assert abs(stated - (1 - (1 - per_band) ** RULE.bands)) < 1e-12
    assert abs(shared_any / SECRETS - stated) <= Z * math.sqrt(stated * (1 - stated) / SECRETS) + 1e-9


def test_pairs_above_a_dice_bound_share_a_band_at_least_as_often_as_stated():
    """The protocol's promise: Dice >= 0.8 means a band in common with chance >= band_chance(0.8)."""
    rng = np.random.default_rng(5)
    bound = 0.8
    found = trials = 0
    for secret in range(SECRETS):
        size = int(rng.integers(8, 30))
        tokens = [f"x{secret}-{i}" for i in range(size + 6)]
        a = tokens[:size]
        # Swap out as many tokens as keeps Dice at or above the bound.
        swaps = int(size * (1 - bound))
        b = tokens[: size - swaps] + tokens[size : size + swaps]
        assert dice(a, b) >= bound
        keys = band_keys_of([a, b], secret.to_bytes(8, "little") * 8)
        found += bool((keys[0] == keys[1]).any())
        trials += 1
    stated = RULE.band_chance(bound)
    assert found / trials >= stated - Z * math.sqrt(stated * (1 - stated) / trials)


def test_unrelated_sets_rarely_share_a_band():
    keys = band_keys_of([[f"a{i}" for i in range(20)], [f"b{i}" for i in range(20)]], bytes(64))
    assert not (keys[0] == keys[1]).any()


def test_token_hashes_are_keyed():
    assert not np.isin(token_hashes(["ab", "cd"], bytes(64)), token_hashes(["ab", "cd"], bytes([1]) * 64)).any()


def test_a_record_without_tokens_has_no_band_key():
    keys = band_keys_of([["ab"], []], bytes(64))
    assert (keys[0] != 0).all() and (keys[1] == 0).all()


def example_with_similarity():
    document = example_document()
    document["matching"]["blocking"] = [
        ["date_of_birth"],
        {"similarity": {"fields": [["given_name", "surname"], "address"], "bands": 8, "hashes_per_band": 2}},
    ]
    return parse_protocol(document)


ROWS = [
    ("aroha", "te awa", dt.date(1984, 3, 7), "f", "12 kauri street", "whangarei", "0110"),
    ("te awa", "aroha", None, "f", "12 kauri stret", "whangarei", "0110"),
    ("john", "smith", dt.date(1950, 1, 2), "m", "3 queen road", "auckland", "1010"),
]


def test_band_keys_are_keyed_functions_of_the_values_in_the_block_columns():
    protocol = example_with_similarity()
    one = RecordEncoder(protocol, derive_keys(bytes(range(32)), protocol)).encode(ROWS)["block"]
    again = RecordEncoder(protocol, derive_keys(bytes(range(32)), protocol)).encode(ROWS)["block"]
    other = RecordEncoder(protocol, derive_keys(bytes(range(1, 33)), protocol)).encode(ROWS)["block"]
    assert one.shape == (3, 1 + 8)
    assert np.array_equal(one, again)
    # Another secret: no key in common with the first, so nothing about them is unkeyed.
    assert not np.isin(other[:, 1:], one[:, 1:]).any()
    # Swapped names and a typo still meet in a band; the unrelated record in none.
    assert (one[0, 1:] == one[1, 1:]).any()
    assert not (one[0, 1:] == one[2, 1:]).any()


NAMES = st.text(alphabet="abcdeh", min_size=1, max_size=8)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(NAMES, NAMES, NAMES), min_size=2, max_size=6),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=32, max_size=32),
)
def test_band_keys_hold_no_value_computable_without_the_secret(people, secret, other_secret):
    """Whatever the values, band keys under one secret share no value with those under another.

    The service holds the protocol (so its fingerprint and every rule's parameters) but not
    the secret; a band key it could compute from the values alone would be the same under
    every secret. Equal values still give equal keys under one secret: the service learns
    which records share a band, as it learns which share an exact block key, and nothing else.
    """
    if secret == other_secret:
        other_secret = bytes(b ^ 1 for b in secret)
    protocol = example_with_similarity()
    rows = [(given, surname, None, "f", address, "", "") for given, surname, address in people]
    rows.append(rows[0])
    one = RecordEncoder(protocol, derive_keys(secret, protocol)).encode(rows)["block"][:, 1:]
    other = RecordEncoder(protocol, derive_keys(other_secret, protocol)).encode(rows)["block"][:, 1:]
    assert (one != 0).all() and (other != 0).all()
    assert not np.isin(other, one).any()
    assert np.array_equal(one[0], one[-1]) and np.array_equal(other[0], other[-1])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(NAMES, min_size=1, max_size=6), min_size=1, max_size=8))
def test_a_batch_of_values_gets_each_values_own_signature(values):
    """The encoder signs new values a batch at a time: each must get what it gets alone."""
    protocol = example_with_similarity()
    encoder = SimilarityEncoder(protocol, bytes(64))
    field = next(iter(encoder.readers))
    hashes = [token_hashes(tokens, bytes(64)) for tokens in values]
    owners = np.repeat(np.arange(len(values)), [len(tokens) for tokens in values])
    batch = encoder.value_signatures(field, np.concatenate(hashes), owners, len(values))
    for (rule, group), signed in zip(encoder.readers[field], batch, strict=True):
        plan = encoder.plans[rule][1]
        alone = [value_signature(plan, group, value_hashes) for value_hashes in hashes]
        assert np.array_equal(signed, np.stack(alone))
