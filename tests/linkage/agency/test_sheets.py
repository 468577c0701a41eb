"""A sheet parsed ahead in a background thread reads, checks and fails as one parsed when it is opened."""

import dataclasses
import datetime as dt
import gc
import threading

import pytest

from linkage.agency import sheets
from linkage.agency.check import check_file
from linkage.agency.sheets import read_ahead
from linkage.agency.sources import open_client_file
from linkage.errors import InputError
from tests.helpers import MSD_HEADER, msd_row, write_ods, write_xlsx


def client_rows(count):
    """Rows as a spreadsheet holds them: date cells, numbers, multi-line addresses, a few bad rows."""
    rows = []
    for number in range(count):
        row = msd_row(f"A{number}", address=f"{number} Kauri Street" + ("\nRD 6" if number % 5 == 0 else ""))
        row[MSD_HEADER.index("date_of_birth")] = dt.date(1950 + number % 40, 1 + number % 12, 1 + number % 28)
        row[MSD_HEADER.index("weeks_supported")] = number % 50
        rows.append(row)
    rows[3][MSD_HEADER.index("date_of_birth")] = "31/02/1990"
    rows[7][0] = rows[6][0]
    rows[11][MSD_HEADER.index("sex")] = "unknown"
    return rows


@pytest.fixture
def workbook(tmp_path):
    return write_xlsx(
        tmp_path / "clients.xlsx", {"Front page": [["Clients of March"]], "Clients": [MSD_HEADER, *client_rows(60)]}
    )


def read_all(path, sheet=None):
    with open_client_file(path, sheet=sheet) as source:
        return source.sheet, source.header, list(source.chunks())


def ahead_running():
    return [thread for thread in threading.enumerate() if thread.name == "pprl-read-ahead"]


@pytest.mark.parametrize("writer", [write_xlsx, write_ods])
def test_a_sheet_read_ahead_is_read_as_a_sheet_parsed_when_opened(writer, tmp_path):
    path = writer(tmp_path / f"clients.{writer.__name__[6:]}", {"Clients": [MSD_HEADER, *client_rows(60)]})
    now = read_all(path)
    read_ahead(path)
    assert read_all(path) == now
    assert not ahead_running() and sheets._ahead is None


def test_a_read_ahead_is_taken_only_for_its_own_file_and_sheet(workbook, tmp_path):
    other = write_xlsx(tmp_path / "other.xlsx", {"Clients": [MSD_HEADER, *client_rows(12)]})
    named = read_all(workbook, "Clients")
    read_ahead(other)
    assert read_all(workbook, "Clients") == named  # the other file's parse is waited for and dropped
    assert not ahead_running()
    read_ahead(workbook)  # the first visible sheet: the front page, not the one asked for
    assert read_all(workbook, "Clients") == named
    assert not ahead_running()


def test_a_read_ahead_fails_as_opening_the_file_does(workbook, tmp_path):
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"PK\x03\x04 not really a workbook")
    read_ahead(broken)
    with pytest.raises(InputError, match="broken.xlsx: cannot read this spreadsheet"):
        open_client_file(broken)
    read_ahead(workbook, "May")
    with pytest.raises(InputError, match="no sheet 'May'; its sheets are 'Front page', 'Clients'"):
        open_client_file(workbook, sheet="May")
    assert not ahead_running()


def test_a_csv_is_not_read_ahead(write_csv):
    read_ahead(write_csv([msd_row("A1")]))
    assert sheets._ahead is None


def test_the_check_of_a_sheet_read_ahead_forks_its_workers_with_no_read_ahead_running(protocol, workbook):
    """Workers forked while a parse still ran would inherit a thread that is gone: it is joined first."""
    summary = check_file(protocol, "msd", workbook, sheet="Clients", workers=2)
    read_ahead(workbook, "Clients")
    ahead = check_file(protocol, "msd", workbook, sheet="Clients", workers=2)
    assert dataclasses.replace(ahead, seconds=0) == dataclasses.replace(summary, seconds=0)
    assert (summary.rows, summary.rejected) == (60, 4)
    assert summary.preview[0][5] == "0 kauri street rd 6"


def test_an_open_sheet_holds_no_list_per_row_and_makes_its_rows_a_slice_at_a_time(tmp_path):
    """Its cells stay in columns (no 2,000 row lists for the collector to scan); slices, items and walks agree."""
    path = write_xlsx(tmp_path / "clients.xlsx", {"Clients": [MSD_HEADER, *client_rows(2000)]})
    read_all(path)  # fastexcel and pyarrow imported, whatever they keep made
    gc.collect()
    before = len(gc.get_objects())
    with open_client_file(path) as source:
        rows = source.shared_rows
        gc.collect()
        assert len(gc.get_objects()) - before < 500
        everything = list(rows)
        assert len(everything) == len(rows) == 2001 and everything[0] == MSD_HEADER
        assert rows[0 : len(rows)] == everything and [rows[i] for i in range(len(rows))] == everything
        assert rows[-1] == everything[-1] and rows[5:3] == [] and rows[1990:5000] == everything[1990:]
    assert gc.get_freeze_count() == 0
