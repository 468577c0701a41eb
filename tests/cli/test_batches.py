"""`pprl upload --batch` and `pprl results --changes-out` end to end against an in-process service."""

import csv

import pytest

from linkage.agency.encode import encode_csv
from linkage.protocol import load_protocol
from tests.helpers import EXAMPLE_PROTOCOL, SECRET, SERVER, invoke, msd_row, write_rows


def _rows(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.usefixtures("service")
def test_a_quarterly_batch_from_the_command_line(runner, admin_file, agencies, tmp_path):
    tokens = tmp_path / "tokens"
    created = invoke(
        runner, "project", "create", "--server", SERVER, "--admin-secret-file", admin_file,
        "--protocol", EXAMPLE_PROTOCOL, "--out-dir", tokens,
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    msd = ("--server", SERVER, "--token-file", tokens / "msd.token")
    early = invoke(runner, "upload", *msd, agencies["msd"], "--batch", "--quiet")
    assert early.exit_code == 1
    assert "has not been linked yet" in early.output
    for party in ("msd", "police", "haven"):
        uploaded = invoke(runner, "upload", "--server", SERVER, "--token-file", tokens / f"{party}.token",
                          agencies[party], "--quiet")  # fmt: skip
        assert uploaded.exit_code == 0, uploaded.output
    assert invoke(runner, "run", *msd, "--wait", "--quiet").exit_code == 0

    keymap = agencies["msd"] / "keymap.csv"
    first = invoke(runner, "results", *msd, "--keymap", keymap, "--out", tmp_path / "shared1.csv",
                   "--changes-out", tmp_path / "changes1.csv")  # fmt: skip
    assert first.exit_code == 0, first.output
    assert "0 change(s) (your first download" in first.output
    shared = _rows(tmp_path / "shared1.csv")
    by_client = {row["client_id"]: row["token"] for row in _rows(keymap)}
    leaving = [by_client[row["client_id"]] for row in shared[:2]]
    withdraw = tmp_path / "leaving.txt"
    withdraw.write_text("\n".join(leaving) + "\n")

    csv_path = write_rows(tmp_path / "q2.csv", [msd_row("q2-1"), msd_row("q2-2", given="Mere", surname="Parata")])
    encode_csv(load_protocol(EXAMPLE_PROTOCOL), "msd", SECRET, csv_path, tmp_path / "msd-q2", workers=1)
    added = invoke(runner, "upload", *msd, tmp_path / "msd-q2", "--batch", "--withdraw", withdraw, "--quiet")
    assert added.exit_code == 0, added.output
    assert "batch 1: 2 added, 0 corrected, 2 withdrawn" in added.output
    # The batch's attributes follow it to the statistics side: the withdrawn two out, the new two in.
    held = len(_rows(agencies["msd"] / "attributes.csv"))
    assert f"attributes: merged ({held} records for msd)" in added.output
    assert invoke(runner, "run", *msd, "--wait", "--quiet").exit_code == 0
    # So the statistics answer from the new lists (stale attributes would be refused).
    analyst = ("--server", SERVER, "--token-file", tokens / "analyst.token")
    counted = invoke(runner, "query", *analyst, "count", "--rho", "0.1")
    assert counted.exit_code == 0, counted.output

    second = invoke(runner, "results", *msd, "--keymap", keymap, "--keymap", tmp_path / "msd-q2" / "keymap.csv",
                    "--out", tmp_path / "shared2.csv", "--changes-out", tmp_path / "changes2.csv")  # fmt: skip
    assert second.exit_code == 0, second.output
    assert "since your download of run 1" in second.output
    changes = _rows(tmp_path / "changes2.csv")
    withdrawn = {row["client_id"] for row in changes if row["change"] == "withdrawn"}
    assert withdrawn == {row["client_id"] for row in shared[:2]}
    assert all(not row["client_id"].startswith("token:") for row in changes), "every token is in a key map"
    assert {row["client_id"] for row in _rows(tmp_path / "shared2.csv")}.isdisjoint(withdrawn)
