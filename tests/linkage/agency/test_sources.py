"""Reading client files: CSV with quoted line breaks, .xlsx and .ods with their dates, places in messages."""

import dataclasses
import datetime as dt
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from linkage.agency import sources
from linkage.agency.check import check_file
from linkage.agency.encode import encode_csv
from linkage.agency.sheets import SheetCells
from linkage.agency.sources import list_sheets, open_client_file, read_columns, read_rows
from linkage.encodings import read_encodings
from linkage.errors import InputError
from tests.helpers import MSD_HEADER, SECRET, canonical, msd_row, write_ods, write_xlsx

WRITERS = {"xlsx": write_xlsx, "ods": write_ods}


def rows_of(source, positions):
    rows, problems = [], []
    for task in source.chunks():
        read, refused = read_rows(task, positions, len(source.header))
        rows += read
        problems += refused
    return rows, problems


def typed_row(client_id, dob=dt.date(1984, 3, 7), address="12 Kauri Street", postcode=110, weeks=12):
    """An msd row as a spreadsheet holds it: a date cell, numbers as numbers."""
    row = msd_row(client_id, address=address)
    row[MSD_HEADER.index("date_of_birth")] = dob
    row[MSD_HEADER.index("postcode")] = postcode
    row[MSD_HEADER.index("weeks_supported")] = weeks
    return row


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_spreadsheet_reads_as_the_same_csv_would(kind, protocol, write_csv, tmp_path):
    """Date cells, whole numbers and line breaks in cells give the text a CSV export gives."""
    sheet = [
        MSD_HEADER,
        typed_row("A1", address="461 Whangatipu Street\nRD 6", postcode=110),
        typed_row("A2", dob="07/03/1984", postcode="0110"),
    ]
    path = WRITERS[kind](tmp_path / f"clients.{kind}", {"Clients": sheet})
    csv_path = write_csv(
        [
            msd_row("A1", address="461 Whangatipu Street RD 6", postcode="110"),
            msd_row("A2", dob="07/03/1984", postcode="0110"),
        ]
    )
    with open_client_file(path) as source:
        assert source.sheet == "Clients" and source.header == tuple(MSD_HEADER)
        rows, problems = rows_of(source, list(range(len(MSD_HEADER))))
    assert problems == []
    assert rows[0] == (2, msd_row("A1", address="461 Whangatipu Street RD 6", postcode="110"))
    assert rows[1][1][MSD_HEADER.index("date_of_birth")] == "07/03/1984"
    encode_csv(protocol, "msd", SECRET, path, tmp_path / "sheet", workers=1)
    encode_csv(protocol, "msd", SECRET, csv_path, tmp_path / "csv", workers=1)
    sheet_files, csv_files = canonical(tmp_path / "sheet"), canonical(tmp_path / "csv")
    assert sheet_files.pop("sheet/encodings.pprl") == csv_files.pop("csv/encodings.pprl")
    assert sheet_files == csv_files


def test_a_date_cell_encodes_as_the_typed_date(protocol, tmp_path):
    dates = [dt.date(1984, 3, 7), dt.datetime(1984, 3, 7, 0, 0), "7/3/1984", "1984-03-07"]
    sheet = [MSD_HEADER, *(typed_row(f"A{i}", dob=d) for i, d in enumerate(dates))]
    path = write_xlsx(tmp_path / "clients.xlsx", {"Clients": sheet})
    records = read_encodings(encode_csv(protocol, "msd", SECRET, path, tmp_path / "out", workers=1).files[0]).records
    for name in ("date_of_birth", "clk", "block"):
        assert all(np.array_equal(records[name][0], records[name][i]) for i in range(1, len(dates)))


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_errors_name_the_sheet_row_and_column(kind, protocol, tmp_path):
    """Rows and column letters are the spreadsheet's own, above and left of the data included."""
    title = ["Client list, March"]  # a title row above the header is skipped
    header = ["", *MSD_HEADER]
    rows = [["", *typed_row("A1")], ["", *typed_row("A2", dob="31/02/1990")], [], ["", *typed_row("A3")]]
    path = WRITERS[kind](tmp_path / f"clients.{kind}", {"Other": [["x", "y"]], "Clients": [title, [], header, *rows]})
    with pytest.raises(InputError) as info:
        encode_csv(protocol, "msd", SECRET, path, tmp_path / "out", sheet="Clients", workers=1)
    assert f"clients.{kind} sheet 'Clients': 1 row(s) cannot be encoded" in str(info.value)
    assert info.value.problems == (
        f"{tmp_path}/clients.{kind} sheet 'Clients' row 5, column E 'date_of_birth': not a real calendar day "
        "(day is out of range for month)",
    )


def test_the_first_sheet_by_default_and_an_unknown_sheet_lists_them(tmp_path):
    path = write_xlsx(tmp_path / "clients.xlsx", {"March": [MSD_HEADER], "April": [MSD_HEADER[:3]]})
    assert list_sheets(path) == ("March", "April")
    with open_client_file(path) as source:
        assert source.sheet == "March"
    with open_client_file(path, sheet="April") as source:
        assert source.header == tuple(MSD_HEADER[:3])
    with pytest.raises(InputError, match="no sheet 'May'; its sheets are 'March', 'April'"):
        open_client_file(path, sheet="May")


def test_a_hidden_first_sheet_is_passed_over(tmp_path):
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.active.title = "Lookups"
    workbook.active.append(["code", "label"])
    workbook.active.sheet_state = "hidden"
    workbook.create_sheet("Clients").append(MSD_HEADER)
    workbook.save(tmp_path / "clients.xlsx")
    assert list_sheets(tmp_path / "clients.xlsx") == ("Clients",)
    with open_client_file(tmp_path / "clients.xlsx") as source:
        assert (source.sheet, source.header) == ("Clients", tuple(MSD_HEADER))


def test_cells_of_every_type_read_as_calamine_read_them(tmp_path):
    """A date-time cell is its date, a time of day its time, numbers as a CSV writes them, errors empty."""
    cells = [
        (dt.datetime(1984, 3, 7, 13, 5), "1984-03-07"),
        (dt.time(13, 5), "13:05:00"),
        (110, "110"),
        (12.5, "12.5"),
        (True, "true"),
        ("=NA()", ""),
        (None, ""),
        ("07/03/1984 ", "07/03/1984 "),
        ("Main St: RD 6", "Main St: RD 6"),
    ]
    path = write_xlsx(tmp_path / "cells.xlsx", {"Cells": [["a", "b"], *([value, "x"] for value, _ in cells)]})
    with open_client_file(path) as source:
        rows, problems = rows_of(source, [0, 1])
    assert problems == []
    assert [values[0] for _, values in rows] == [text for _, text in cells]


def test_unreadable_and_empty_spreadsheets(tmp_path):
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"PK\x03\x04 not really a workbook")
    with pytest.raises(InputError, match="broken.xlsx: cannot read this spreadsheet"):
        open_client_file(broken)
    empty = write_xlsx(tmp_path / "empty.xlsx", {"Clients": [["only a title"]]})
    with pytest.raises(InputError, match="sheet 'Clients': no header row"):
        open_client_file(empty)
    with pytest.raises(InputError, match="this is a CSV file, which has none"):
        open_client_file(write_text(tmp_path / "c.csv", "a,b\n"), sheet="x")


def write_text(path, text):
    path.write_text(text)
    return path


def test_csv_rows_spanning_lines_keep_their_first_line_and_lose_their_breaks(tmp_path):
    path = write_text(
        tmp_path / "c.csv", 'id,address\r\nA1,"461 Whangatipu Street\r\nRD 6"\r\nA2,"a\rb"\r\n\r\nA3,x,extra\r\n'
    )
    with open_client_file(path) as source:
        rows, problems = rows_of(source, [0, 1])
    assert rows == [(2, ["A1", "461 Whangatipu Street RD 6"]), (4, ["A2", "a b"])]
    assert [(p.line, p.reason) for p in problems] == [(7, "has 3 columns where the header has 2")]


def _columns_of(rows, count):
    """What read_columns gives, from what read_rows gives."""
    columns = [tuple(column) for column in zip(*(values for _, values in rows), strict=True)]
    columns = columns or [() for _ in range(count)]
    return [line for line, _ in rows], columns


CSV_CHUNKS = [
    "A1,Aroha,x\nA2,Mere,y\n",  # the usual export: taken whole
    "A1,Aroha,x\r\nA2,Mere,y\r\n",
    "A1,Aroha,x\nA2,Mere,y",  # no line break at the end
    "A1,Aroha,x\n\nA2,Mere,y\n",  # an empty line
    "A1,Aroha,x\n , ,\t\nA2,Mere,y\n",  # a row of blank cells
    " ,Aroha,x\nA2,Mere,y\n",  # no client id, yet not empty
    'A1,"461 Whangatipu Street\nRD 6",x\nA2,Mere,y\n',  # a quoted line break
    'A1,"461 Whangatipu Street\rRD 6",x\nA2,Mere,y\n',
    "A1,Aroha\nA2,Mere,y\n",  # too few columns
    "A1,Aroha,x,z\nA2,Mere,y\n",  # too many
    'A1,Aroha,x\nA2,"Mere,y\n',  # an unbalanced quote
    'A1,Ar"oha,x\nA2,Mere,y\n',  # a quote inside a cell
    "A1,Aroha,x\nA2,Me\x00re,y\n",  # a NUL byte
    "",
]


@pytest.mark.parametrize("payload", CSV_CHUNKS)
def test_read_columns_reads_as_read_rows_does(payload):
    """The whole-chunk path is taken only where it gives what reading row by row gives."""
    rows, problems = read_rows((7, payload), [2, 0], 3)
    assert read_columns((7, payload), [2, 0], 3) == (*_columns_of(rows, 2), problems)


@given(st.lists(st.sampled_from(["A1", "", " ", '"', '"a\nb"', "x,y", "\r\n", "\n", "Ā"]), max_size=40))
def test_read_columns_reads_any_chunk_as_read_rows_does(pieces):
    payload = ",".join(pieces)
    rows, problems = read_rows((2, payload), [1, 0, 2], 3)
    assert read_columns((2, payload), [1, 0, 2], 3) == (*_columns_of(rows, 3), problems)


# Chunks of a sheet's rows as SheetCells makes them: every cell text, every row the sheet's width.
SHEET_CHUNKS = [
    [["A1", "Aroha", "1984-03-07"], ["A2", "Mere", "110"]],  # taken whole
    [["A1", "461 Whangatipu Street\nRD 6", "12.5"], ["A2", "Mere\r", ""]],  # line breaks
    [["A1", "Aroha", "x"], ["", "", ""], ["A2", "Mere", "y"]],  # an empty row
    [["A1", "Aroha", "x", ""], ["", " ", "", "notes"], ["A2", "Mere", "y", ""]],  # only an unread column
    [["A1", "Aroha", "x"], [" ", "Mere", "y"]],  # no client id, yet not empty
    [],
]


def sheet_rows(payload):
    """The payload as a chunk of a sheet held by this process: a view of the sheet's Arrow columns."""
    import pyarrow as pa

    width = len(payload[0]) if payload else 0
    columns = [pa.array([row[i] or None for row in payload], type=pa.string()) for i in range(width)]
    batch = pa.RecordBatch.from_arrays(columns, names=[str(i) for i in range(width)]) if payload else None
    return SheetCells(0, batch).span(0, len(payload))


@pytest.mark.parametrize("payload", SHEET_CHUNKS)
def test_read_columns_reads_a_sheet_as_read_rows_does(payload):
    """Rows carried to a worker and rows viewed in the sheet read as row by row."""
    rows, problems = read_rows((4, payload), [2, 0, 1], 3)
    expected = (*_columns_of(rows, 3), problems)
    for chunk in (payload, sheet_rows(payload)):
        lines, columns, found = read_columns((4, chunk), [2, 0, 1], 3)
        assert (lines, [tuple(column) for column in columns], found) == expected
    assert read_rows((4, sheet_rows(payload)), [2, 0, 1], 3) == (rows, problems)


CELLS = st.sampled_from(["", " ", "Aroha", "31/02/1990", "1984-03-07", "a\nb", "x\r", "#N/A"])


@given(st.lists(st.lists(CELLS, min_size=4, max_size=4), max_size=12))
def test_a_sheet_is_read_a_column_at_a_time_as_row_by_row(payload):
    """Whichever way a sheet's chunk reaches read_columns, it reads as read_rows reads it."""
    rows, problems = read_rows((4, payload), [2, 0, 1], 3)
    assert problems == []
    expected = (*_columns_of(rows, 3), problems)
    for chunk in (payload, sheet_rows(payload)):
        lines, columns, found = read_columns((4, chunk), [2, 0, 1], 3)
        assert (lines, [tuple(column) for column in columns], found) == expected


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_pool_workers_read_a_sheet_by_reference_as_one_process_reads_it(kind, protocol, tmp_path, monkeypatch):
    """Forked workers look a chunk's rows up in the sheet they hold: same check, same encodings, as one process."""
    monkeypatch.setattr(sources, "CHUNK_ROWS", 7)
    rows = [typed_row(f"A{i}", dob=dt.date(1950 + i % 40, 1 + i % 12, 1 + i % 28), weeks=i % 50) for i in range(60)]
    rows[9][MSD_HEADER.index("date_of_birth")] = "31/02/1990"
    rows[20][MSD_HEADER.index("address")] = "461 Whangatipu Street\nRD 6"
    rows[33] = [""] * len(MSD_HEADER)
    rows[41][0] = "A40"
    path = WRITERS[kind](tmp_path / f"clients.{kind}", {"Clients": [["Client list"], MSD_HEADER, *rows]})
    assert sources.rows_by_reference(2)  # Linux forks its pool workers
    one, two = (check_file(protocol, "msd", path, workers=workers) for workers in (1, 2))
    assert dataclasses.replace(one, seconds=0) == dataclasses.replace(two, seconds=0)
    assert one.rows == 59 and one.rejected == 3
    for workers in (1, 2):
        encode_csv(protocol, "msd", SECRET, path, tmp_path / str(workers) / "out", on_error="skip", workers=workers)
    assert canonical(tmp_path / "1" / "out") == canonical(tmp_path / "2" / "out")


_offset = 0


def _set_offset(offset):
    global _offset
    _offset = offset


def _square(task):
    return task[0] ** 2 + _offset


@pytest.mark.parametrize("here", [False, True])
def test_map_in_order_gives_results_in_the_chunks_order_wherever_they_ran(here, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "_offset", 0)
    chunks = iter([(number, "") for number in range(40)])
    results = list(sources.map_in_order(_square, chunks, 2, _set_offset, (7,), here=here))
    assert results == [number**2 + 7 for number in range(40)]
    # With here=True this process takes chunks too, set up as a worker is; else only the pool does.
    assert _offset == (7 if here else 0)


@given(st.lists(st.tuples(st.integers(-3, 3), st.integers(1, 10**6)), max_size=40, unique_by=lambda pair: pair[1]))
def test_repeated_lines_in_lists_are_the_duplicate_lines_numpy_finds(pairs):
    hashes, lines = [h for h, _ in pairs], [line for _, line in pairs]
    assert sources.repeated_lines(hashes, lines) == sources.duplicate_lines(
        np.array(hashes, dtype=np.int64), np.array(lines, dtype=np.int64)
    )


def test_client_id_hashes_are_the_numpy_hashes():
    ids = ["A1", "A2", "Ā3", "A1", ""]
    assert sources.client_id_hashes(ids) == sources.hash_client_ids(ids).tolist()
