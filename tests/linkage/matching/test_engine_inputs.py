"""The engine refuses inputs that do not belong together, saying which file differs in what."""

import json
import struct

import numpy as np
import pytest

from linkage.agency.encode import encode_csv
from linkage.errors import InputError, MismatchError
from linkage.matching.engine import link, load_inputs
from linkage.protocol import load_protocol
from linkage.token_files import read_keymap
from tests.helpers import EXAMPLE_PROTOCOL, MSD_HEADER, SECRET, msd_row

POLICE_HEADER = [*MSD_HEADER[:9], "region", "offence_category", "police_contacts"]


def police_row(client_id, **kwargs):
    row = msd_row(client_id, **kwargs)
    return [*row[:10], "violence", "3"]


@pytest.fixture
def encoded(protocol, write_csv, tmp_path):
    def make(party, rows, header, name, secret=SECRET, use_protocol=protocol):
        path = write_csv(rows, header=header, name=f"{name}.csv")
        return encode_csv(use_protocol, party, secret, path, tmp_path / name, workers=1).files[0].parent

    return make


def _strangers(make_row, prefix, seed):
    """Forty people no other list holds: the model needs non-matches to fit u and the prior on."""
    rng = np.random.default_rng(seed)

    def word(length):
        return "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), length)).title()

    return [
        make_row(
            f"{prefix}{n}",
            given=word(6),
            surname=word(8),
            dob=f"{rng.integers(1940, 2005)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}",
            address=f"{rng.integers(1, 300)} {word(7)} Road",
            postcode=f"{rng.integers(1000, 9999)}",
        )
        for n in range(40)
    ]


def test_links_the_same_person_across_two_parties(protocol, encoded):
    msd_rows = [msd_row("M1"), msd_row("M2", given="Wiremu", surname="Parata", dob="1970-01-02")]
    msd = encoded("msd", msd_rows + _strangers(msd_row, "MX", 1), MSD_HEADER, "msd")
    police_rows = [
        police_row("P1", given="AROHA", dob="7/3/1984"),
        police_row("P2", given="Hemi", surname="Walker", dob="1999-12-30"),
    ]
    police = encoded("police", police_rows + _strangers(police_row, "PX", 5), POLICE_HEADER, "police")
    result = link(protocol, load_inputs(protocol, [msd, police]))
    # Two records of two people each, alone, are too few to fit a model on: on main the
    # pair's probability sat at 0.00107, a hair over the floor below which candidates are dropped.
    # The encodings are not in the client file's order: name the records by client id.
    keymaps = [read_keymap(folder / "keymap.csv") for folder in (msd, police)]
    linked = [
        [keymaps[party][result.tokens[party][record].tobytes().hex()] for party, record in entity.records]
        for entity in result.entities
    ]
    assert linked == [["M1", "P1"]]


def test_one_party_only(protocol, encoded):
    msd = encoded("msd", [msd_row("M1")], MSD_HEADER, "msd")
    with pytest.raises(InputError, match="at least two parties"):
        load_inputs(protocol, [msd])


def test_same_party_twice(protocol, encoded):
    first = encoded("msd", [msd_row("M1")], MSD_HEADER, "msd1")
    second = encoded("msd", [msd_row("M2")], MSD_HEADER, "msd2")
    with pytest.raises(MismatchError, match="are both from party 'msd'"):
        load_inputs(protocol, [first, second])


def test_copied_records_have_duplicate_tokens(protocol, encoded, tmp_path):
    msd = encoded("msd", [msd_row("M1")], MSD_HEADER, "msd")
    data = (msd / "encodings.pprl").read_bytes()
    length = struct.unpack("<I", data[8:12])[0]
    header = json.loads(data[12 : 12 + length])
    header["party"] = "haven"  # the same records, passed off as another party's
    text = json.dumps(header, separators=(",", ":")).encode().ljust(length)
    copy = tmp_path / "copy.pprl"
    copy.write_bytes(data[:12] + text + data[12 + length :])
    with pytest.raises(InputError, match="the same record token appears twice"):
        load_inputs(protocol, [msd, copy])


def test_different_secrets(protocol, encoded):
    msd = encoded("msd", [msd_row("M1")], MSD_HEADER, "msd")
    police = encoded("police", [police_row("P1")], POLICE_HEADER, "police", secret=bytes(reversed(SECRET)))
    with pytest.raises(MismatchError, match="were encoded with different secrets"):
        load_inputs(protocol, [msd, police])


def test_different_protocols(protocol, encoded, tmp_path):
    document = json.loads(EXAMPLE_PROTOCOL.read_text())
    document["encoding"]["clk_bits"] = 512
    other_path = tmp_path / "other.json"
    other_path.write_text(json.dumps(document))
    other = load_protocol(other_path)
    msd = encoded("msd", [msd_row("M1")], MSD_HEADER, "msd")
    police = encoded("police", [police_row("P1")], POLICE_HEADER, "police", use_protocol=other)
    with pytest.raises(MismatchError, match="police.*was encoded under protocol fingerprint"):
        load_inputs(protocol, [msd, police])
    with pytest.raises(MismatchError, match="msd.*was encoded under protocol fingerprint"):
        load_inputs(other, [police, msd])


def test_not_an_encodings_path(protocol, tmp_path):
    with pytest.raises(InputError, match="no encodings file here"):
        load_inputs(protocol, [tmp_path, tmp_path])


def test_every_problem_is_listed_at_once(protocol, encoded, tmp_path):
    document = json.loads(EXAMPLE_PROTOCOL.read_text())
    document["encoding"]["clk_bits"] = 512
    other_path = tmp_path / "other.json"
    other_path.write_text(json.dumps(document))
    other = load_protocol(other_path)
    first = encoded("msd", [msd_row("M1")], MSD_HEADER, "msd1", use_protocol=other)
    second = encoded("msd", [msd_row("M2")], MSD_HEADER, "msd2", secret=bytes(reversed(SECRET)))
    with pytest.raises(MismatchError, match="these encodings cannot be linked together") as raised:
        load_inputs(protocol, [first, second])
    problems = "\n".join(raised.value.problems)
    assert "msd1" in problems and "was encoded under protocol fingerprint" in problems
    assert "are both from party 'msd'" in problems
    assert "were encoded with different secrets" in problems
