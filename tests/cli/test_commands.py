"""The CLI contract: exit codes, messages, files written, help with examples."""

import json
import os
import stat
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from cli.main import main
from tests.helpers import EXAMPLE_PROTOCOL, SECRET, msd_row


@pytest.fixture
def runner():
    return CliRunner()


def all_commands(group=main, prefix=()):
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))
        else:
            yield (*prefix, name)


@pytest.mark.parametrize("path", list(all_commands()), ids=" ".join)
def test_every_command_has_help_with_an_example(runner, path):
    result = runner.invoke(main, [*path, "--help"])
    assert result.exit_code == 0
    assert "Example: " in result.output
    assert "\\b" not in result.output, "a raw docstring: click shows its \\b marker instead of keeping the lines"


def test_protocol_validate_prints_fingerprint(runner, protocol):
    result = runner.invoke(main, ["protocol", "validate", str(EXAMPLE_PROTOCOL)])
    assert result.exit_code == 0
    assert f"fingerprint: {protocol.fingerprint}" in result.output


def test_protocol_validate_lists_errors_with_paths(runner, tmp_path):
    document = json.loads(EXAMPLE_PROTOCOL.read_text())
    document["parties"][2]["mandate"] = "charity"
    del document["purpose"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    result = runner.invoke(main, ["protocol", "validate", str(path)])
    assert result.exit_code == 1
    assert "$.parties[2].mandate" in result.output
    assert "'purpose' is a required property" in result.output


def test_keygen_writes_a_private_file_once(runner, tmp_path):
    out = tmp_path / "secret.key"
    assert runner.invoke(main, ["keygen", "--out", str(out)]).exit_code == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert len(bytes.fromhex(out.read_text().strip())) == 32
    again = runner.invoke(main, ["keygen", "--out", str(out)])
    assert again.exit_code == 1
    assert "never overwritten" in again.output


def encode_args(csv_path, out, *extra):
    return [
        "encode",
        "--protocol",
        str(EXAMPLE_PROTOCOL),
        "--party",
        "msd",
        *extra,
        str(csv_path),
        "--out",
        str(out),
        "--workers",
        "1",
    ]


def test_encode_with_secret_file_then_inspect(runner, write_csv, secret_file, tmp_path):
    path = write_csv([msd_row("A1"), msd_row("A2", given="Mere")])
    result = runner.invoke(main, encode_args(path, tmp_path / "out", "--secret-file", str(secret_file), "--quiet"))
    assert result.exit_code == 0, result.output
    assert "encoded 2 records for msd (0 rejected)" in result.output
    assert SECRET.hex() not in result.output
    shown = runner.invoke(main, ["inspect", str(tmp_path / "out")])
    assert shown.exit_code == 0
    assert "party:        msd" in shown.output
    assert "records:      2" in shown.output


def test_encode_reads_secret_from_environment(runner, write_csv, tmp_path):
    path = write_csv([msd_row("A1")])
    result = runner.invoke(main, encode_args(path, tmp_path / "out", "--quiet"), env={"PPRL_SECRET": SECRET.hex()})
    assert result.exit_code == 0, result.output


def test_encode_without_secret_says_how(runner, write_csv, tmp_path):
    path = write_csv([msd_row("A1")])
    result = runner.invoke(main, encode_args(path, tmp_path / "out"), env={"PPRL_SECRET": None})
    assert result.exit_code == 1
    assert "pass --secret-file FILE" in result.output
    assert not (tmp_path / "out").exists()


def test_encode_bad_row_exit_code_and_message(runner, write_csv, secret_file, tmp_path):
    path = write_csv([msd_row("A1", dob="30/02/1990")])
    result = runner.invoke(main, encode_args(path, tmp_path / "out", "--secret-file", str(secret_file)))
    assert result.exit_code == 1
    assert "line 2, column 'date_of_birth': not a real calendar day" in result.output
    assert "--on-error skip" in result.output


def test_encode_warns_about_extra_columns(runner, write_csv, secret_file, tmp_path):
    from tests.helpers import MSD_HEADER

    path = write_csv([[*msd_row("A1"), "x"]], header=[*MSD_HEADER, "notes"])
    result = runner.invoke(main, encode_args(path, tmp_path / "out", "--secret-file", str(secret_file), "--quiet"))
    assert result.exit_code == 0
    assert "Warning: " in result.output and "'notes' is not in the protocol" in result.output


def test_inspect_refuses_other_files(runner, tmp_path):
    path = tmp_path / "x.pprl"
    path.write_bytes(b"hello world, not encodings")
    result = runner.invoke(main, ["inspect", str(path)])
    assert result.exit_code == 1
    assert "not a pprl encodings file" in result.output


OTHER_ROLES = ("linkage.matching.engine", "linkage.service.client", "httpx", "anonlink", "stats")


def test_the_agency_commands_do_not_load_the_service_or_the_engine():
    """`pprl encode` starts in a fraction of a second: the other roles' modules load only when used."""
    probe = f"import sys, cli.main; print(sorted(set(sys.modules) & {set(OTHER_ROLES)!r}))"
    # A fresh interpreter (this one has imported everything); our own code as its input.
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)  # noqa: S603
    assert result.stdout.strip() == "[]"


def test_the_command_line_loads_numpy_and_jsonschema_only_when_a_command_runs():
    """`pprl encode` starts parsing a spreadsheet before it loads them: they load while the sheet is parsed."""
    probe = "import sys, cli.main; print(sorted({'numpy', 'jsonschema', 'linkage.agency.check'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)  # noqa: S603
    assert result.stdout.strip() == "[]"
