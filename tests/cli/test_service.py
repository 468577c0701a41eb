"""The service commands end to end against an in-process service, and `pprl serve`'s setup."""

import csv
import logging
import os
import stat

import click
import pytest

from cli.main import main
from cli.service import RedactQuery, log_config
from tests.helpers import ADMIN_SECRET, EXAMPLE_PROTOCOL, SERVER, invoke


@pytest.mark.usefixtures("service")
def test_three_agencies_from_the_command_line(runner, admin_file, agencies, tmp_path):
    tokens = tmp_path / "tokens"
    created = invoke(
        runner, "project", "create", "--server", SERVER, "--admin-secret-file", admin_file,
        "--protocol", EXAMPLE_PROTOCOL, "--out-dir", tokens,
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    assert "fingerprint: " in created.output
    for role in ("msd", "police", "haven", "analyst"):
        path = tokens / f"{role}.token"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert path.read_text().strip() not in created.output, "token files are not echoed"

    for party in ("msd", "police", "haven"):
        uploaded = invoke(runner, "upload", "--server", SERVER, "--token-file", tokens / f"{party}.token",
                          agencies[party], "--quiet")  # fmt: skip
        assert uploaded.exit_code == 0, uploaded.output
        assert "encodings: created" in uploaded.output
        assert "attributes: created" in uploaded.output
    again = invoke(
        runner, "upload", "--server", SERVER, "--token-file", tokens / "msd.token", agencies["msd"], "--quiet"
    )
    assert "encodings: unchanged" in again.output

    ran = invoke(runner, "run", "--server", SERVER, "--token-file", tokens / "haven.token", "--wait", "--quiet")
    assert ran.exit_code == 0, ran.output
    assert "run 1 queued" in ran.output
    assert "run 1: done (100%)" in ran.output
    shown = invoke(runner, "status", "--server", SERVER, "1", env={"PPRL_TOKEN": (tokens / "msd.token").read_text()})
    assert shown.exit_code == 0, shown.output
    assert "run 1: done" in shown.output

    shared = tmp_path / "shared.csv"
    results = invoke(runner, "results", "--server", SERVER, "--token-file", tokens / "msd.token",
                     "--keymap", agencies["msd"] / "keymap.csv", "--out", shared)  # fmt: skip
    assert results.exit_code == 0, results.output
    with shared.open() as handle:
        rows = list(csv.DictReader(handle))
    with (agencies["msd"].parent / "data" / "msd.csv").open() as handle:
        client_ids = {row["client_id"] for row in csv.DictReader(handle)}
    assert rows
    assert {row["client_id"] for row in rows} <= client_ids
    assert all(set(row["shared_with"].split(";")) <= {"police", "haven"} for row in rows)
    assert f"{len(rows)} of your clients are also known to other parties" in results.output

    refused = invoke(runner, "results", "--server", SERVER, "--token-file", tokens / "police.token",
                     "--keymap", agencies["police"] / "keymap.csv", "--out", tmp_path / "police.csv")  # fmt: skip
    assert refused.exit_code == 1
    assert "403 (forbidden): the protocol does not allow record-level results for party 'police'" in refused.output
    named = tmp_path / "named.txt"
    with (agencies["police"] / "keymap.csv").open() as handle:
        named.write_text("\n".join(row["token"] for row in csv.DictReader(handle))[:5 * 33] + "\n")
    reason = "threat to life reported by a family member, file 2231"
    threat = invoke(runner, "results", "--server", SERVER, "--token-file", tokens / "police.token",
                    "--keymap", agencies["police"] / "keymap.csv", "--out", tmp_path / "police.csv",
                    "--serious-threat", "--reason", reason, "--tokens-file", named)  # fmt: skip
    assert threat.exit_code == 0, threat.output

    audit = invoke(runner, "audit", "--server", SERVER, "--admin-secret-file", admin_file)
    assert audit.exit_code == 0, audit.output
    assert "results.serious_threat" in audit.output
    assert reason in audit.output
    for path in tokens.iterdir():
        assert path.read_text().strip() not in audit.output


def test_project_create_prints_the_credentials_once(runner, service, admin_file):
    created = invoke(runner, "project", "create", "--server", SERVER, "--admin-secret-file", admin_file,
                     "--protocol", EXAMPLE_PROTOCOL)  # fmt: skip
    assert created.exit_code == 0, created.output
    lines = [line.split(": ", 1)[1] for line in created.output.splitlines() if line.startswith("  ")]
    assert len(lines) == 4
    assert all(token.startswith("pprl_") and created.output.count(token) == 1 for token in lines)
    project_id = created.output.split()[1].rstrip(":")
    assert service.state.linkage_store.authenticate(lines[0]).project_id == project_id


def test_errors_are_clear_and_exit_1(runner, service, admin_file, tmp_path, monkeypatch):
    monkeypatch.delenv("PPRL_TOKEN", raising=False)
    missing = invoke(runner, "status", "--server", SERVER, "1")
    assert missing.exit_code == 1
    assert "no token: pass --token-file FILE or set PPRL_TOKEN" in missing.output
    wrong = tmp_path / "wrong.token"
    wrong.write_text("pprl_nonsense\n")
    unknown = invoke(runner, "status", "--server", SERVER, "--token-file", wrong, "1")
    assert unknown.exit_code == 1
    assert "401 (unauthorized): this credential is not valid on this server" in unknown.output
    short = tmp_path / "short.secret"
    short.write_text("abc")
    not_admin = invoke(runner, "audit", "--server", SERVER, "--admin-secret-file", short)
    assert not_admin.exit_code == 1
    assert "401 (unauthorized)" in not_admin.output
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    (tokens / "police.token").write_text("old\n")
    exists = invoke(runner, "project", "create", "--server", SERVER, "--admin-secret-file", admin_file,
                    "--protocol", EXAMPLE_PROTOCOL, "--out-dir", tokens)  # fmt: skip
    assert exists.exit_code == 1
    assert "never overwritten" in exists.output
    assert service.state.linkage_store.projects() == [], "nothing is created when the tokens could not be written"
    usage = invoke(runner, "results", "--server", SERVER, "--token-file", wrong, "--keymap", wrong,
                   "--out", tmp_path / "x.csv", "--serious-threat")  # fmt: skip
    assert usage.exit_code == 2
    assert "--serious-threat needs --reason TEXT and --tokens-file FILE" in usage.output


def test_an_unreachable_server_is_reported(runner, tmp_path):
    token = tmp_path / "t.token"
    token.write_text("pprl_x\n")
    result = invoke(runner, "status", "--server", "http://127.0.0.1:9", "--token-file", token, "1")
    assert result.exit_code == 1
    assert "cannot reach http://127.0.0.1:9" in result.output
    assert "pprl_x" not in result.output


def test_no_command_takes_a_secret_on_the_command_line():
    def options(group):
        for command in group.commands.values():
            if isinstance(command, click.Group):
                yield from options(command)
            else:
                for param in command.params:
                    yield from param.opts

    names = set(options(main))
    assert {"--token-file", "--admin-secret-file", "--secret-file"} <= names
    assert not {name for name in names if name in ("--token", "--admin-secret", "--secret", "--password")}


def test_serve_builds_the_app_and_keeps_secrets_and_queries_out_of_logs(runner, tmp_path, admin_file, monkeypatch):
    started = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: started.update(app=app, **kwargs))
    result = invoke(runner, "serve", "--data-dir", tmp_path / "data", "--admin-secret-file", admin_file,
                    "--port", "8123", "--workers", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    config = started["app"].state.config
    assert (config.data_dir, config.workers, started["port"], started["host"]) == (
        tmp_path / "data",
        1,
        8123,
        "127.0.0.1",
    )
    assert ADMIN_SECRET not in repr(config)
    assert (tmp_path / "data" / "linkage.db").exists()
    assert (tmp_path / "data" / "stats.db").exists()
    started["app"].state.linkage_store.close()  # uvicorn.run was replaced: no lifespan closes them
    started["app"].state.stats_store.close()
    assert "redact_query" in started["log_config"]["handlers"]["access"]["filters"]
    assert log_config()["loggers"]["pprl"]["level"] == "INFO"
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/audit?after=3&secret=x", "1.1", 200), None,
    )  # fmt: skip
    assert RedactQuery().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /audit HTTP/1.1" 200'
    short = tmp_path / "short"
    short.write_text("short")
    refused = invoke(runner, "serve", "--data-dir", tmp_path / "data", "--admin-secret-file", short)
    assert refused.exit_code == 1
    assert "fewer than 32" in refused.output
