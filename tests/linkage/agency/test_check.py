"""The check: what it counts per column, that it agrees with encoding, and that it writes nothing."""

import datetime as dt

import pytest

from linkage.agency.check import check_file
from linkage.agency.encode import encode_csv
from linkage.errors import InputError
from tests.helpers import EXPORT_COLUMNS, SECRET, agency_export, msd_row, write_xlsx

EXPORT = {"client_id": "Client Number", **EXPORT_COLUMNS}


def quality(summary):
    return {q.column: q for q in summary.quality}


def test_counts_missing_refused_placeholders_and_duplicates(protocol, write_csv, tmp_path):
    rows = [
        msd_row("A1"),
        msd_row("A2", given="", dob="01/01/1900"),
        msd_row("A3", given="UNKNOWN", dob="31/02/1990"),
        msd_row("A4", surname="n/a", dob="1900-01-01", postcode="0000"),
        msd_row("A1", given="Mere"),
        msd_row("TEST", sex="q", address="NFA"),
        ["A7", "too", "short"],
    ]
    path = write_csv(rows)
    summary = check_file(protocol, "msd", path, workers=1)
    assert (summary.rows, summary.encodable, summary.rejected) == (7, 2, 5)
    columns = quality(summary)
    assert columns["given_name"].missing == 1 and columns["given_name"].suspicious == (("UNKNOWN", 1),)
    assert columns["surname"].suspicious == (("N/A", 1),)
    assert columns["date_of_birth"].suspicious == (("01/01/1900", 2),)
    assert columns["date_of_birth"].unparsed == 1
    assert columns["date_of_birth"].reasons == (("not a real calendar day (day is out of range for month)", 1),)
    assert columns["sex"].reasons == (("not one of the categories f, m, x", 1),)
    assert columns["postcode"].suspicious == (("0000", 1),)
    assert columns["address"].suspicious == (("NFA", 1),)
    assert columns["client_id"].suspicious == (("TEST", 1),)
    assert summary.row_problems == (("has 3 columns where the header has 12", 1),)
    assert (summary.duplicate_ids, summary.duplicate_rows) == (1, 2)
    assert summary.problem_count == 5
    assert f"{path} line 2, column 'client_id': the client id is also on line 6; each client must appear once" in (
        summary.problems
    )
    assert summary.preview[1] == (
        *("A2", "", "te awa", "1900-01-01", "f", "12 kauri street", "whangarei", "0110", "true"),
        *("Northland", "jobseeker", "12"),
    )
    assert summary.preview_lines == (2, 3, 5, 6)
    assert [p.name for p in tmp_path.iterdir()] == ["clients.csv"]


def test_the_check_predicts_what_encoding_does(protocol, agencies, tmp_path):
    """On an export with other names, spreadsheet dates, multi-line addresses and bad rows."""
    header, rows = agency_export(agencies["msd"].parent / "data" / "msd.csv", 400)
    path = write_xlsx(tmp_path / "clients.xlsx", {"Clients": [header, *rows]})
    summary = check_file(protocol, "msd", path, columns=EXPORT, workers=2)
    encoded = encode_csv(protocol, "msd", SECRET, path, tmp_path / "out", columns=EXPORT, on_error="skip", workers=2)
    assert (summary.encodable, summary.rejected) == (encoded.records, encoded.rejected)
    assert summary.rejected == 4  # the impossible date, both copies of the repeated id, the unknown sex
    assert summary.columns.header_of("date_of_birth") == "DOB"
    assert quality(summary)["date_of_birth"].suspicious == (("01/01/1900", 1),)
    assert summary.warnings == (f"{path} sheet 'Clients': column 'Case Notes' is not in the protocol and is ignored",)
    assert dt.date.fromisoformat(summary.preview[0][3])


def test_columns_that_cannot_be_found_stop_the_check(protocol, write_csv):
    path = write_csv([msd_row("A1")[1:]], header=["First Name", *[f"c{i}" for i in range(10)]])
    with pytest.raises(InputError, match="line 1: some of the protocol's columns are not found"):
        check_file(protocol, "msd", path, workers=1)
