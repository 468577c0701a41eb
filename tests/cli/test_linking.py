"""`pprl synth`, `encode`, `link` and `evaluate` together, as a user runs them."""

import csv

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from linkage.agency.secret import write_secret
from linkage.encodings import read_encodings
from linkage.protocol import load_protocol
from tests.helpers import EXAMPLE_PROTOCOL, SECRET, write_encodings

PARTIES = ("msd", "police", "haven")


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    root = tmp_path_factory.mktemp("story")
    runner = CliRunner()
    protocol = str(EXAMPLE_PROTOCOL)
    result = runner.invoke(
        main,
        # The basic profile: this checks the commands together against a fixed F1 bound.
        [
            "synth",
            "--protocol",
            protocol,
            "--people",
            "600",
            "--seed",
            "4",
            "--profile",
            "basic",
            "--out",
            str(root / "data"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    # A fixed secret, so that a failure here reproduces (keygen has its own tests).
    write_secret(root / "secret.key", SECRET)
    for party in PARTIES:
        result = runner.invoke(
            main,
            [
                "encode",
                "--protocol",
                protocol,
                "--party",
                party,
                "--secret-file",
                str(root / "secret.key"),
                str(root / "data" / f"{party}.csv"),
                "--out",
                str(root / party),
                "--quiet",
                "--workers",
                "1",
            ],
        )
        assert result.exit_code == 0, result.output
    return root


def test_link_then_evaluate(encoded):
    runner = CliRunner()
    entities = encoded / "entities.csv"
    result = runner.invoke(
        main,
        [
            "link",
            "--protocol",
            str(EXAMPLE_PROTOCOL),
            *(str(encoded / p) for p in PARTIES),
            "--out",
            str(entities),
            "--quiet",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "candidate pairs" in result.output and "entities of two or more records" in result.output
    with entities.open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["entity_id", "party", "token"]
    assert "score" not in entities.read_text() and "probab" not in entities.read_text()
    keymaps = [arg for p in PARTIES for arg in ("--keymap", f"{p}={encoded / p / 'keymap.csv'}")]
    plot = encoded / "pr.png"
    result = runner.invoke(
        main,
        [
            "evaluate",
            "--truth",
            str(encoded / "data" / "truth.csv"),
            "--entities",
            str(entities),
            *keymaps,
            "--protocol",
            str(EXAMPLE_PROTOCOL),
            *(a for p in PARTIES for a in ("--encodings", str(encoded / p))),
            "--plot",
            str(plot),
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    f1 = float(result.output.split("F1 ")[1].split()[0])
    assert f1 > 0.95
    assert "pair completeness" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_link_refuses_one_party_and_bad_threshold(encoded):
    runner = CliRunner()
    one = runner.invoke(
        main, ["link", "--protocol", str(EXAMPLE_PROTOCOL), str(encoded / "msd"), "--out", str(encoded / "x.csv")]
    )
    assert one.exit_code == 1
    assert "at least two parties" in one.output
    bad = runner.invoke(
        main,
        [
            "link",
            "--protocol",
            str(EXAMPLE_PROTOCOL),
            str(encoded / "msd"),
            str(encoded / "police"),
            "--threshold",
            "1.5",
            "--out",
            str(encoded / "x.csv"),
        ],
    )
    assert bad.exit_code == 2
    assert "between 0 and 1" in bad.output


def test_evaluate_needs_every_keymap(encoded):
    runner = CliRunner()
    entities = encoded / "e2.csv"
    runner.invoke(
        main,
        [
            "link",
            "--protocol",
            str(EXAMPLE_PROTOCOL),
            str(encoded / "msd"),
            str(encoded / "police"),
            "--out",
            str(entities),
            "--quiet",
            "--workers",
            "1",
        ],
    )
    result = runner.invoke(
        main,
        [
            "evaluate",
            "--truth",
            str(encoded / "data" / "truth.csv"),
            "--entities",
            str(entities),
            "--keymap",
            f"msd={encoded / 'msd' / 'keymap.csv'}",
        ],
    )
    assert result.exit_code == 1
    assert "pass --keymap police=FILE" in result.output


def test_evaluate_analyses_blocking_without_truth(encoded):
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "evaluate",
            "--protocol",
            str(EXAMPLE_PROTOCOL),
            *(a for p in PARTIES for a in ("--encodings", str(encoded / p))),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "candidates of" in result.output and "per record of the largest party" in result.output
    assert "date_of_birth" in result.output and "largest blocks" in result.output
    assert "pair completeness" not in result.output and "pairwise" not in result.output


def test_evaluate_says_which_inputs_go_together(encoded):
    runner = CliRunner()
    nothing = runner.invoke(main, ["evaluate"])
    assert nothing.exit_code == 1
    assert "nothing to evaluate" in nothing.output
    plot = runner.invoke(
        main,
        ["evaluate", "--protocol", str(EXAMPLE_PROTOCOL), "--encodings", str(encoded / "msd"), "--plot", "x.png"],
    )
    assert plot.exit_code == 1
    assert "need --truth, --protocol and --encodings" in plot.output


def test_link_freezes_a_model_reuses_it_and_writes_the_stable_mapping(encoded, tmp_path):
    runner = CliRunner()
    inputs = [str(encoded / p) for p in PARTIES]
    base = ["link", "--protocol", str(EXAMPLE_PROTOCOL), *inputs, "--quiet", "--workers", "1"]
    model, stable = tmp_path / "model.json", tmp_path / "stable.csv"
    first = runner.invoke(
        main, [*base, "--out", str(tmp_path / "a.csv"), "--save-model", str(model), "--statistics-out", str(stable)]
    )
    assert first.exit_code == 0, first.output
    assert "froze the model (threshold" in first.output and "wrote the stable mapping" in first.output
    assert "the protocol calibrates at 9" in first.output
    assert stable.read_text().splitlines()[0] == "stable_entity_id,party,token"
    again = runner.invoke(
        main, [*base, "--out", str(tmp_path / "b.csv"), "--model", str(model), "--statistics-out", str(tmp_path / "s")]
    )
    assert again.exit_code == 0, again.output
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    assert [line.split(",")[1:] for line in stable.read_text().splitlines()[1:]] == [
        line.split(",")[1:] for line in (tmp_path / "s").read_text().splitlines()[1:]
    ]
    both = runner.invoke(main, [*base, "--out", str(tmp_path / "c.csv"), "--model", str(model), "--save-model", "m"])
    assert both.exit_code == 1 and "not both" in both.output
    missing = runner.invoke(main, [*base, "--out", str(tmp_path / "c.csv"), "--model", str(tmp_path / "none.json")])
    assert missing.exit_code == 1 and "no such model file" in missing.output


def _rows(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_link_keeps_a_state_and_adds_a_batch_to_it(encoded, tmp_path):
    runner = CliRunner()
    protocol = str(EXAMPLE_PROTOCOL)
    state = tmp_path / "state.pprl"
    first = tmp_path / "q1.csv"
    result = runner.invoke(
        main,
        ["link", "--protocol", protocol, *(str(encoded / p) for p in PARTIES), "--out", str(first)]
        + ["--state-out", str(state), "--workers", "1", "--quiet"],
    )
    assert result.exit_code == 0, result.output
    assert "kept the linkage state" in result.output and state.exists()
    linked = _rows(first)
    # msd withdraws three linked clients, named by their key map rows; police corrects five records.
    withdrawn = [row["token"] for row in linked if row["party"] == "msd"][:3]
    keymap = _rows(encoded / "msd" / "keymap.csv")
    (tmp_path / "gone.csv").write_text(
        "token,client_id\n" + "".join(f"{r['token']},{r['client_id']}\n" for r in keymap if r["token"] in withdrawn)
    )
    police = read_encodings(encoded / "police")
    batch = write_encodings(
        load_protocol(EXAMPLE_PROTOCOL), "police", police.header.secret_check, police.records[:5], tmp_path / "q2"
    )
    second = tmp_path / "q2.csv"
    result = runner.invoke(
        main,
        ["link", "--protocol", protocol, str(batch), "--previous", str(state), "--state-out", str(state)]
        + ["--withdraw", f"msd={tmp_path / 'gone.csv'}", "--out", str(second), "--quiet"],
    )
    assert result.exit_code == 0, result.output
    assert "msd: 0 added, 0 corrected, 3 withdrawn" in result.output
    assert "police: 0 added, 5 corrected, 0 withdrawn" in result.output
    after = _rows(second)
    assert not {row["token"] for row in after} & set(withdrawn)

    # Every entity that lost no record is still there, under its id (the corrections changed nothing).
    def members(rows):
        out = {}
        for row in rows:
            out.setdefault(row["entity_id"], set()).add(row["token"])
        return out

    hit = {number for number, tokens in members(linked).items() if tokens & set(withdrawn)}
    assert {n: t for n, t in members(linked).items() if n not in hit}.items() <= members(after).items()
    # Only an entity whose evidence changed may be retired: it lost a record, holds a corrected one, or was a
    # record on its own (not written) that a re-solve joined to what another entity has left. It retires into
    # an entity that is written, and the older id survives, which is the documented rule.
    corrected = {bytes(t).hex() for t in police.records[:5]["token"]}
    changed = hit | {n for n, tokens in members(linked).items() if tokens & corrected}
    retired = _rows(tmp_path / "q2.retired.csv")
    assert all(r["retired_entity_id"] in changed or r["retired_entity_id"] not in members(linked) for r in retired)
    assert all(r["entity_id"] in members(after) for r in retired)
    assert all(r["retired_entity_id"] > r["entity_id"] for r in retired)
    gone = {r["retired_entity_id"] for r in retired}
    kept = [n for n in hit if n in members(after) and n not in gone]
    assert all(members(after)[n] >= members(linked)[n] - set(withdrawn) for n in kept)


def test_link_refuses_a_bad_state_with_the_fix(encoded, tmp_path):
    runner = CliRunner()
    (tmp_path / "state").write_text("not a state")
    args = ["link", "--protocol", str(EXAMPLE_PROTOCOL), str(encoded / "msd"), "--out", str(tmp_path / "e.csv")]
    result = runner.invoke(main, [*args, "--previous", str(tmp_path / "state"), "--state-out", str(tmp_path / "s")])
    assert result.exit_code == 1
    assert "not a pprl linkage state" in result.output and "--state-out" in result.output
    result = runner.invoke(main, [*args, "--previous", str(tmp_path / "state")])
    assert result.exit_code == 1 and "--previous needs --state-out" in result.output
    result = runner.invoke(main, [*args, str(encoded / "police"), "--withdraw", "msd=x.txt"])
    assert result.exit_code == 1 and "pass --previous STATE" in result.output
    result = runner.invoke(main, [*args, str(encoded / "police"), "--refit"])
    assert result.exit_code == 1 and "pass --previous STATE" in result.output
    result = runner.invoke(main, [*args, str(encoded / "police"), "--dedupe"])
    assert result.exit_code == 1 and "pass --state-out STATE" in result.output
    state = ["--state-out", str(tmp_path / "s"), "--dedupe", "--statistics-out", str(tmp_path / "stable.csv")]
    result = runner.invoke(main, [*args, str(encoded / "police"), *state])
    assert result.exit_code == 1 and "privacy unit" in result.output and not (tmp_path / "s").exists()


def test_link_dedupes_and_reports_duplicates(encoded, tmp_path):
    runner = CliRunner()
    msd = read_encodings(encoded / "msd")
    twin = msd.records[:2].copy()
    twin["token"] = np.arange(32, dtype=np.uint8).reshape(2, 16)  # the same two clients under new ids
    both = np.concatenate([np.asarray(msd.records), twin])
    folder = write_encodings(load_protocol(EXAMPLE_PROTOCOL), "msd", msd.header.secret_check, both, tmp_path / "msd")
    result = runner.invoke(
        main,
        ["link", "--protocol", str(EXAMPLE_PROTOCOL), str(folder), str(encoded / "police"), str(encoded / "haven")]
        + ["--out", str(tmp_path / "e.csv"), "--state-out", str(tmp_path / "s"), "--dedupe"]
        + ["--dedupe-out", str(tmp_path / "dup.csv"), "--workers", "1", "--quiet"],
    )
    assert result.exit_code == 0, result.output
    groups = {}
    for row in _rows(tmp_path / "dup.csv"):
        groups.setdefault(row["duplicate_group"], set()).add(row["token"])
    for original, copy in zip(msd.records[:2]["token"], twin["token"], strict=True):
        assert {original.tobytes().hex(), copy.tobytes().hex()} in [
            g & {original.tobytes().hex(), copy.tobytes().hex()} for g in groups.values()
        ]
