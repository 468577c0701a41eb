"""pprl's CLKs are clkhash's CLKs; keys depend on the secret and the protocol."""

import datetime as dt

import clkhash.clk
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.agency.hashing import clkhash_schema, derive_keys, load_clkhash_schema, secret_check
from linkage.agency.records import RecordEncoder
from tests.helpers import SECRET

names = st.one_of(
    st.none(),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", min_size=1, max_size=12).map(str.strip).filter(bool),
)
dates = st.one_of(st.none(), st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2020, 12, 31)))
records = st.tuples(
    names,
    names,
    dates,
    st.sampled_from([None, "f", "m", "x"]),
    names,
    names,
    st.one_of(st.none(), st.from_regex(r"\A[0-9]{4}\Z")),
)


def as_clkhash_input(row):
    return ["" if v is None else v.strftime("%Y%m%d") if isinstance(v, dt.date) else v for v in row]


@settings(max_examples=30, deadline=None)
@given(st.lists(records, min_size=1, max_size=20))
def test_clks_equal_clkhash_for_the_derived_schema(plain_protocol, rows):
    protocol = plain_protocol
    ours = RecordEncoder(protocol, derive_keys(SECRET, protocol)).encode(rows)["clk"]
    theirs = clkhash.clk.generate_clks(
        [as_clkhash_input(r) for r in rows], load_clkhash_schema(protocol), SECRET, max_workers=1
    )
    assert [row.tobytes() for row in ours] == [clk.tobytes() for clk in theirs]


@settings(max_examples=20, deadline=None)
@given(st.lists(records, min_size=1, max_size=10))
def test_same_secret_same_encoding(protocol, rows):
    first = RecordEncoder(protocol, derive_keys(SECRET, protocol)).encode(rows)
    second = RecordEncoder(protocol, derive_keys(SECRET, protocol)).encode(list(reversed(rows)))
    assert first.tobytes() == second[::-1].tobytes()


def test_different_secrets_give_unrelated_encodings(protocol):
    row = ("aroha", "te awa", dt.date(1984, 3, 7), "f", "12 kauri street", "whangarei", "0110")
    one = RecordEncoder(protocol, derive_keys(SECRET, protocol)).encode([row])[0]
    other_secret = bytes(reversed(SECRET))
    two = RecordEncoder(protocol, derive_keys(other_secret, protocol)).encode([row])[0]
    a = np.unpackbits(one["clk"])
    b = np.unpackbits(two["clk"])
    dice = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert dice < 0.6  # what two unrelated records with ~40% of bits set share by chance
    assert (one["block"] != two["block"]).all()
    assert secret_check(derive_keys(SECRET, protocol)) != secret_check(derive_keys(other_secret, protocol))


def test_missing_values_set_no_bits(protocol):
    encoded = RecordEncoder(protocol, derive_keys(SECRET, protocol)).encode([(None,) * 7])[0]
    assert not encoded["clk"].any()
    assert not encoded["given_name"].any()
    assert not encoded["date_of_birth"].any()
    assert not encoded["block"].any()


def test_derived_schema_is_v3_with_xor_folds_key(protocol):
    schema = clkhash_schema(protocol)
    assert schema["version"] == 3
    assert schema["clkConfig"]["l"] == 1024
    assert "xor_folds" in schema["clkConfig"]
