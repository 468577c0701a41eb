"""Hardening is declared in the protocol, enters the fingerprint and is deterministic."""

import datetime as dt
import json

import clkhash.clk
import clkhash.schema
import numpy as np
import pytest

from linkage.agency.hashing import apply_hardening, clkhash_schema, derive_keys, filter_hardening
from linkage.agency.records import RecordEncoder
from linkage.agency.risk import linkage_quality
from linkage.errors import ProtocolError
from linkage.evaluation.synth import synthesise_population
from linkage.matching.compare import PartyFeatures, compare_pairs, comparisons_for
from linkage.protocol import Hardening, parse_protocol, with_hardening
from tests.helpers import EXAMPLE_PROTOCOL, SECRET

SALT = ("date_of_birth", "year")
ROWS = [
    ("aroha", "te awa", dt.date(1984, 3, 7), "f", "12 kauri street", "whangarei", "0110"),
    ("aroha", "te awa", dt.date(1990, 3, 7), "f", "12 kauri street", "whangarei", "0110"),
    ("john", "smith", dt.date(1970, 1, 2), "m", "1 queen street", "auckland", "1010"),
    (None, None, None, None, None, None, None),
]


def document(hardening=None):
    doc = json.loads(EXAMPLE_PROTOCOL.read_text())
    doc["encoding"].pop("hardening", None)
    if hardening is not None:
        doc["encoding"]["hardening"] = hardening
    return doc


def encode(protocol, rows=ROWS, secret=SECRET):
    return RecordEncoder(protocol, derive_keys(secret, protocol)).encode(rows)


def test_hardening_enters_the_fingerprint():
    plain = parse_protocol(document())
    assert parse_protocol(document({})).fingerprint == plain.fingerprint  # empty: none
    fingerprints = {
        parse_protocol(document(settings)).fingerprint
        for settings in (
            {"salt": "date_of_birth:year"},
            {"balance": True},
            {"xor_fold": True},
            {"diffusion": 3},
            {"diffusion": 4},
            {"diffusion": 3, "apply_to": ["clk"]},
        )
    }
    assert len(fingerprints) == 6
    assert plain.fingerprint not in fingerprints
    written_out = parse_protocol(document({"diffusion": 3, "apply_to": ["fields", "clk"], "balance": False}))
    assert written_out.fingerprint == parse_protocol(document({"diffusion": 3})).fingerprint


def test_with_hardening_round_trips(protocol, plain_protocol):
    hardened = with_hardening(protocol, Hardening(salt=SALT, diffusion=3))
    assert hardened.hardening == Hardening(salt=SALT, diffusion=3)
    assert hardened.hardening.label == "salt+diffusion3"
    assert with_hardening(hardened, Hardening()).fingerprint == plain_protocol.fingerprint
    assert with_hardening(plain_protocol, protocol.hardening).fingerprint == protocol.fingerprint


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"diffusion": 1}, r"\$\.encoding\.hardening\.diffusion: 1 is less than the minimum of 2"),
        ({"double_hashing": True}, r"\$\.encoding\.hardening: Additional properties are not allowed"),
        ({"apply_to": ["clk", "blocks"]}, r"\$\.encoding\.hardening\.apply_to\[1\]"),
        ({"salt": "year_of_birth"}, r"\$\.encoding\.hardening\.salt: field 'year_of_birth' is not an identifier field"),
        ({"salt": "date_of_birth:soundex"}, r"transform 'soundex' does not apply to a date field \(allowed: month_day"),
        ({"salt": "surname"}, r"salt: salt with a part of a date \(e\.g\. date_of_birth:year"),
        ({"salt": "date_of_birth"}, r"or a category field, not 'date_of_birth'"),
    ],
)
def test_bad_hardening_is_a_clear_error(settings, message):
    with pytest.raises(ProtocolError, match=message):
        parse_protocol(document(settings))


@pytest.mark.parametrize(
    "hardening",
    [
        Hardening(salt=SALT),
        Hardening(balance=True),
        Hardening(xor_fold=True),
        Hardening(diffusion=3),
        Hardening(salt=SALT, balance=True, xor_fold=True, diffusion=5),
    ],
    ids=lambda h: h.label,
)
def test_hardening_is_deterministic_and_keyed(protocol, hardening):
    hardened = with_hardening(protocol, hardening)
    first, second = encode(hardened), encode(hardened)
    assert first.tobytes() == second.tobytes()
    other = encode(hardened, secret=bytes(reversed(SECRET)))
    assert (first["clk"][0] != other["clk"][0]).any()
    plain = encode(protocol)
    assert (first["clk"][0] != plain["clk"][0]).any()
    assert first.dtype == plain.dtype  # every filter keeps its declared length
    assert not first["clk"][3].any() and not first["given_name"][3].any()  # missing stays missing


def test_no_double_hashing_in_the_derived_schema(protocol):
    for feature in clkhash_schema(protocol)["features"]:
        assert feature["hashing"]["hash"] == {"type": "blakeHash"}


def clkhash_clks(protocol, xor_folds=0):
    schema = clkhash_schema(protocol)
    schema["clkConfig"]["xor_folds"] = xor_folds
    clks = clkhash.clk.generate_clks(
        [["" if v is None else v.strftime("%Y%m%d") if isinstance(v, dt.date) else v for v in row] for row in ROWS],
        clkhash.schema.from_json_dict(schema),
        SECRET,
        max_workers=1,
    )
    return np.array([np.frombuffer(clk.tobytes(), dtype=np.uint8) for clk in clks])


def test_xor_fold_is_clkhash_folding(protocol):
    hardened = with_hardening(protocol, Hardening(xor_fold=True))
    assert encode(hardened)["clk"].tobytes() == clkhash_clks(hardened, xor_folds=1).tobytes()


def test_balanced_filters_have_half_their_bits_set(protocol):
    records = encode(with_hardening(protocol, Hardening(balance=True)))
    for name, bits in (("clk", 1024), ("given_name", 256), ("postcode", 128)):
        counts = np.unpackbits(records[name][:3], axis=1).sum(axis=1)
        assert counts.tolist() == [bits // 2] * 3


def test_salt_separates_the_same_name_in_other_years(plain_protocol):
    protocol = plain_protocol
    plain = encode(protocol)
    fields_only = with_hardening(protocol, Hardening(salt=SALT, apply_to=frozenset({"fields"})))
    salted = encode(fields_only)
    assert plain["given_name"][0].tobytes() == plain["given_name"][1].tobytes()
    assert salted["given_name"][0].tobytes() != salted["given_name"][1].tobytes()
    assert salted["clk"].tobytes() == clkhash_clks(fields_only).tobytes()  # fields only: the CLK is clkhash's
    again = encode(with_hardening(protocol, Hardening(salt=SALT, apply_to=frozenset({"fields"}))), rows=[ROWS[0]])
    assert again["given_name"][0].tobytes() == salted["given_name"][0].tobytes()


def test_diffusion_xors_keyed_taps():
    plan = filter_hardening(bytes(64), Hardening(diffusion=4), 64, "clk")
    assert plan.taps.shape == (64, 4)
    assert all(len(set(row)) == 4 for row in plan.taps.tolist())
    bits = np.random.default_rng(1).random((5, 64)) < 0.3
    out = apply_hardening(bits, plan)
    expected = np.array([[np.logical_xor.reduce(row[taps]) for taps in plan.taps] for row in bits])
    assert (out == expected).all()
    other = filter_hardening(bytes(range(64)), Hardening(diffusion=4), 64, "clk")
    assert (other.taps != plan.taps).any()


def test_a_salted_protocol_links_as_precisely_as_a_plain_one(plain_protocol, tmp_path):
    protocol = plain_protocol
    # Salted names agree only within a birth year: weighed as if independent of the year,
    # each salted field counted the year again, and precision fell from 0.997 to 0.94.
    synthesise_population(protocol, 3000, 7, tmp_path / "synth", profile="basic")
    plain = linkage_quality(protocol, SECRET, tmp_path / "synth", tmp_path / "plain").overall
    salted = with_hardening(protocol, Hardening(salt=SALT))
    hardened = linkage_quality(salted, SECRET, tmp_path / "synth", tmp_path / "salted").overall
    assert hardened.precision >= plain.precision - 0.005
    # What salting must lose: a pair whose date of birth is missing on one side only.
    assert hardened.recall >= plain.recall - 0.03


def test_a_salted_field_is_neutral_across_salts(protocol):
    salted = with_hardening(protocol, Hardening(salt=SALT))
    comparisons = comparisons_for(salted)
    features = PartyFeatures.from_records(encode(salted), comparisons)
    # Rows 0 and 1: the same person but for the birth year; row 0 against itself.
    levels = compare_pairs(features, features, np.array([0, 0]), np.array([1, 0]), comparisons)
    given_name = [c.field.name for c in comparisons].index("given_name")
    assert levels[0, given_name] == comparisons[given_name].missing
    assert levels[1, given_name] == comparisons[given_name].levels - 1
    date = [c.field.name for c in comparisons].index("date_of_birth")
    assert levels[0, date] == 1  # two of three parts: the year is weighed once, here


def test_a_group_cannot_mix_salted_and_unsalted_fields():
    doc = document({"salt": "date_of_birth:year"})
    doc["matching"]["comparison_groups"] = [["address", "city", "postcode", "sex"]]
    with pytest.raises(ProtocolError, match=r"comparison_groups\[0\]: mixes fields salted with 'date_of_birth'"):
        parse_protocol(doc)
    doc["encoding"]["hardening"]["apply_to"] = ["clk"]  # the fields' own filters are not salted
    parse_protocol(doc)
