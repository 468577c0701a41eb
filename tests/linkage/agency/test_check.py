"""The check: what it counts per column, that it agrees with encoding, and that it writes nothing."""

import datetime as dt
import json
import random
import subprocess
import sys
from collections import Counter

import pytest

from linkage.agency import sources
from linkage.agency.check import check_file
from linkage.agency.encode import encode_csv
from linkage.agency.prepare import prepare_rows
from linkage.agency.sources import open_client_file, read_rows
from linkage.errors import InputError
from tests.helpers import EXAMPLE_PROTOCOL, EXPORT_COLUMNS, ROOT, SECRET, agency_export, msd_row, write_xlsx

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


def messy_export(count, seed):
    """Rows with every kind of trouble the check counts, some spanning lines or of the wrong width."""
    rng = random.Random(seed)  # noqa: S311 - fixed test data, not a secret
    rows = []
    for number in range(count):
        row = msd_row(
            rng.choice([f"C{number}", f"C{number}", "C7", "", " ", "TEST", "x" * 130]),
            given=rng.choice(["Aroha", "", " ", "UNKNOWN", "Unknown", "n/a", "-"]),
            surname=rng.choice(["Te Awa", "", "NULL", "O'Brien"]),
            dob=rng.choice(["1984-03-07", "01/01/1900", "1/1/1970", "31/02/1990", "", "07.03.1984", "2999-01-01"]),
            sex=rng.choice(["f", "M", "", "q"]),
            address=rng.choice(["12 Kauri Street", "461 Whangatipu Street\nRD 6", "", "NFA", "a" * 210]),
            city=rng.choice(["Whangārei", "", "UNKNOWN"]),
            postcode=rng.choice(["0110", "0000", "", "9999"]),
            consent=rng.choice(["true", "Yes", "no", "maybe", ""]),
            region=rng.choice(["Northland", "", "Mars"]),
            benefit_type=rng.choice(["jobseeker", "dole", ""]),
            weeks_supported=rng.choice(["12", "x", "", "999"]),
        )
        if rng.random() < 0.05:
            row[1:8] = [""] * 7
        if rng.random() < 0.03:
            row = row[: rng.randrange(len(row))]
        if rng.random() < 0.03:
            row = [""] * len(row)
        rows.append(row)
    return rows


@pytest.mark.parametrize("chunk_rows", [4000, 37])
def test_the_check_counts_as_reading_row_by_row_does(protocol, write_csv, tmp_path, monkeypatch, chunk_rows):
    """The check works on whole columns; what it reports is what the row-by-row reading finds."""
    monkeypatch.setattr(sources, "CHUNK_ROWS", chunk_rows)
    path = write_csv(messy_export(700, seed=5))
    summary = check_file(protocol, "msd", path, workers=1)
    with open_client_file(path) as source:
        positions = list(range(len(source.header)))
        rows, problems = [], []
        for chunk in source.chunks():
            read, refused = read_rows(chunk, positions, len(source.header))
            rows += read
            problems += refused
    prepared = prepare_rows(protocol, "msd", rows)
    problems += prepared.problems
    columns = protocol.columns_for("msd")
    assert summary.rows == len(rows) + len({p.line for p in problems if p.column is None} - {line for line, _ in rows})
    assert summary.row_problems == tuple(Counter(p.reason for p in problems if p.column is None).most_common())
    for index, column in enumerate(columns):
        found = quality(summary)[column]
        assert found.missing == sum(1 for _, values in rows if not values[index].strip())
        assert dict(found.reasons) == Counter(p.reason for p in problems if p.column == column)
    assert summary.preview_lines == tuple(prepared.lines[:5])
    assert [values[0] for values in summary.preview] == prepared.client_ids[:5]
    encoded = encode_csv(protocol, "msd", SECRET, path, tmp_path / "out", on_error="skip", workers=1)
    assert (summary.encodable, summary.rejected) == (encoded.records, encoded.rejected)
    assert summary.rejected > 100 and summary.duplicate_ids > 0
    assert quality(summary)["given_name"].suspicious and quality(summary)["date_of_birth"].suspicious


def test_the_check_loads_no_hashing():
    """`pprl encode --check` needs no secret: it must not pay for importing clkhash and the hashing layers."""
    code = "import json, sys, cli.main, linkage.agency.check\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)  # noqa: S603
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert not [name for name in loaded if name.split(".")[0] == "clkhash" or name == "linkage.agency.hashing"]
    assert "linkage.agency.prepare" in loaded


def test_the_check_runs_without_numpy(write_csv):
    """Importing numpy costs a tenth of a second of CPU, which the check, counting in lists, need not pay."""
    path = write_csv([msd_row("A1"), msd_row("A1"), msd_row("A2", dob="31/02/1990")])
    code = (
        "import sys\nfrom pathlib import Path\nfrom linkage.protocol import load_protocol\n"
        "from linkage.agency.check import check_file\n"
        f"summary = check_file(load_protocol(Path({str(EXAMPLE_PROTOCOL)!r})), 'msd', Path({str(path)!r}), workers=1)\n"
        "print(summary.rejected, summary.duplicate_ids, 'numpy' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)  # noqa: S603
    assert result.stdout.split() == ["3", "1", "False"]
