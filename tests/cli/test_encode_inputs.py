"""`pprl encode` with an agency's own files: spreadsheets, its column names, a mapping file, --check."""

import socket

import pytest

from linkage.agency.columns import format_columns
from tests.helpers import (
    EXAMPLE_PROTOCOL,
    EXPORT_COLUMNS,
    SECRET,
    agency_export,
    canonical,
    invoke,
    msd_row,
    write_xlsx,
)


def encode(runner, path, *extra, out=None, secret_file=None):
    args = ["encode", "--protocol", EXAMPLE_PROTOCOL, "--party", "msd", path, "--workers", "1", "--quiet", *extra]
    if out is not None:
        args += ["--out", out]
    if secret_file is not None:
        args += ["--secret-file", secret_file]
    return invoke(runner, *args)


@pytest.fixture
def export(agencies, tmp_path):
    header, rows = agency_export(agencies["msd"].parent / "data" / "msd.csv", 120)
    return write_xlsx(tmp_path / "clients.xlsx", {"Front page": [["Clients of March"]], "Clients": [header, *rows]})


def test_columns_by_option_and_by_mapping_file_give_the_same_output(runner, export, secret_file, tmp_path):
    by_option = encode(
        runner,
        export,
        "--sheet",
        "Clients",
        "--columns",
        format_columns(dict(list(EXPORT_COLUMNS.items())[:2])),
        "--columns",
        format_columns(dict(list(EXPORT_COLUMNS.items())[2:])),
        "--on-error",
        "skip",
        out=tmp_path / "a",
        secret_file=secret_file,
    )
    assert by_option.exit_code == 0, by_option.output
    assert "columns read by their usual names: 'Client Number' as client_id, 'First Name' as given_name" in (
        by_option.output
    )
    assert "encoded 116 records for msd (4 rejected)" in by_option.output
    assert "Never send keymap.csv, the secret or your client file" in by_option.output
    mapping = tmp_path / "msd-columns.yaml"
    lines = "".join(f"  {column}: {header}\n" for column, header in EXPORT_COLUMNS.items())
    mapping.write_text(f"sheet: Clients\ncolumns:\n{lines}")
    by_file = encode(
        runner, export, "--mapping", mapping, "--on-error", "skip", out=tmp_path / "b", secret_file=secret_file
    )
    assert by_file.exit_code == 0, by_file.output
    first, second = canonical(tmp_path / "a"), canonical(tmp_path / "b")
    assert first.pop("a/encodings.pprl") == second.pop("b/encodings.pprl")
    assert first == second
    rejected = first["rejected.csv"].splitlines()
    assert rejected[1] == "5,DOB,not a real calendar day (day is out of range for month)"


def test_an_unknown_column_in_the_option_fails_listing_them(runner, export, secret_file, tmp_path):
    result = encode(
        runner, export, "--sheet", "Clients", "--columns", "birthday=DOB", out=tmp_path / "o", secret_file=secret_file
    )
    assert result.exit_code == 1
    assert "'birthday' is not one of the protocol's columns for this party" in result.output
    assert "region: no column with its name or a usual name for it; candidates: 'Region Name'" in result.output
    assert not (tmp_path / "o").exists()


def test_check_prints_the_summary_writes_nothing_and_needs_no_secret(runner, export, tmp_path, monkeypatch):
    monkeypatch.delenv("PPRL_SECRET", raising=False)
    result = encode(runner, export, "--check", "--sheet", "Clients", "--columns", format_columns(EXPORT_COLUMNS))
    assert result.exit_code == 0, result.output
    output = result.output
    assert "clients.xlsx sheet 'Clients': 120 rows; 116 can be encoded, 4 would be rejected. Nothing was written." in (
        output
    )
    assert "date_of_birth    DOB" in output and "01/01/1900 x1" in output and "UNKNOWN x1" in output
    assert "date_of_birth: not a real calendar day (day is out of range for month) (1)" in output
    assert "client ids on more than one row: 1 (on 2 rows;" in output
    assert "sheet 'Clients' row 13, column E 'Gender' (sex): not one of the categories f, m, x" in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clients.xlsx"]


def test_check_refuses_an_output_folder(runner, write_csv, tmp_path):
    result = encode(runner, write_csv([msd_row("A1")]), "--check", out=tmp_path / "o")
    assert result.exit_code == 2 and "--check writes nothing" in result.output
    result = encode(runner, write_csv([msd_row("A1")]))
    assert result.exit_code == 2 and "Missing option '--out'" in result.output


def test_encoder_serves_only_loopback_and_removes_its_uploads(runner, tmp_path, monkeypatch):
    """The command's set-up, without running a server: where it listens, what it prints, what it leaves."""
    started = {}

    def run(server, sockets):
        listener = sockets[0]
        settings = server.config.app.state.settings
        started.update(address=listener.getsockname(), family=listener.family, settings=settings)
        assert settings.work_dir.is_dir() and (settings.work_dir.stat().st_mode & 0o077) == 0

    monkeypatch.setattr("uvicorn.Server.run", run)
    opened = []
    monkeypatch.setattr("webbrowser.open", opened.append)
    secret = tmp_path / "secret.key"
    secret.write_text(SECRET.hex())
    result = invoke(
        runner, "encoder", "--out-dir", tmp_path / "encoded", "--protocol", EXAMPLE_PROTOCOL, "--party", "msd",
        "--secret-file", secret,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    host, port = started["address"]
    assert host == "127.0.0.1" and started["family"] == socket.AF_INET
    assert opened == [next(w for w in result.output.split() if w.startswith("http://"))]
    assert opened[0].startswith(f"http://127.0.0.1:{port}/?token=") and len(opened[0].split("token=")[1]) >= 40
    assert SECRET.hex() not in result.output
    settings = started["settings"]
    assert settings.hosts == (f"127.0.0.1:{port}", f"localhost:{port}")
    assert settings.out_root == (tmp_path / "encoded").resolve() and settings.out_root.is_dir()
    assert settings.party == "msd" and settings.secret[0] == SECRET
    assert not settings.work_dir.exists(), "uploads are removed when the page stops"
