"""The service commands end to end against an in-process service, and `pprl serve`'s setup."""

import csv
import json
import logging
import os
import stat

import click
import pytest

from cli.main import main
from cli.service import RedactQuery, log_config
from linkage.agency.encode import encode_csv
from server.app import create_app
from tests.helpers import (
    ADMIN_SECRET,
    EXAMPLE_PROTOCOL,
    SECRET,
    SERVER,
    TestClient,
    bearer,
    create_project,
    invoke,
    make_factory,
    msd_row,
    put_encodings,
)


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
        named.write_text("\n".join(row["token"] for row in csv.DictReader(handle))[: 5 * 33] + "\n")
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
        context = click.Context(group)
        for command in (group.get_command(context, name) for name in group.list_commands(context)):
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


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def loose_umask():
    """The umask most machines have (022): files would be readable by everyone unless pprl says otherwise."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("loose_umask")
def test_what_either_side_writes_is_for_its_owner_only(protocol, write_csv, tmp_path):
    """Issue 15 row 9: the data folder was 0755; linkage.db, stats.db, blobs, keymap.csv,
    attributes.csv and the results CSV were 0644."""
    clients = write_csv([msd_row("c1"), msd_row("c2", given="Mere", dob="1990-01-02"), ["x"] * 12])
    out = tmp_path / "agency" / "msd-out"
    encode_csv(protocol, "msd", SECRET, clients, out, on_error="skip", workers=1)
    assert mode(out) == 0o700
    files = ("encodings.pprl", "attributes.csv", "keymap.csv", "rejected.csv")
    assert {path.name: mode(path) for path in out.iterdir()} == dict.fromkeys(files, 0o600)

    make, _ = make_factory(tmp_path, None)
    config = make(run_worker=False)
    app = create_app(config)
    with TestClient(app) as client:
        project_id, credentials = create_project(client)
        assert put_encodings(client, project_id, credentials["msd"], (out / "encodings.pprl").read_bytes()).is_success
    data = config.data_dir
    assert {mode(data / name) for name in ("", "blobs", "stats-incoming")} == {0o700}
    assert {mode(data / name) for name in ("linkage.db", "stats.db")} == {0o600}
    assert {path.name: mode(path) for path in data.iterdir() if path.is_file()} == {
        path.name: 0o600 for path in data.iterdir() if path.is_file()
    }, "the databases' -wal and -shm files too"
    assert [mode(path) for path in (data / "blobs").iterdir()] == [0o600]


@pytest.mark.usefixtures("service", "loose_umask")
def test_results_and_token_files_are_for_the_agency_only(runner, admin_file, agencies, tmp_path):
    tokens = tmp_path / "tokens"
    created = invoke(runner, "project", "create", "--server", SERVER, "--admin-secret-file", admin_file,
                     "--protocol", EXAMPLE_PROTOCOL, "--out-dir", tokens)  # fmt: skip
    assert created.exit_code == 0, created.output
    assert mode(tokens) == 0o700 and {mode(path) for path in tokens.iterdir()} == {0o600}
    for party in ("msd", "police", "haven"):
        uploaded = invoke(runner, "upload", "--server", SERVER, "--token-file", tokens / f"{party}.token",
                          agencies[party], "--quiet")  # fmt: skip
        assert uploaded.exit_code == 0, uploaded.output
    assert invoke(runner, "run", "--server", SERVER, "--token-file", tokens / "msd.token", "--wait").exit_code == 0
    shared = tmp_path / "shared.csv"
    results = invoke(runner, "results", "--server", SERVER, "--token-file", tokens / "msd.token",
                     "--keymap", agencies["msd"] / "keymap.csv", "--out", shared)  # fmt: skip
    assert results.exit_code == 0, results.output
    assert mode(shared) == 0o600


def test_project_create_writes_token_files_only_under_the_protocols_names(runner, admin_file, tmp_path, monkeypatch):
    """Issue 15 row 13: a server answering with the role '../../escaped' got a file written outside --out-dir."""
    from linkage.service.client import NewProject

    evil = {"msd": "pprl_a", "police": "pprl_b", "haven": "pprl_c", "analyst": "pprl_d", "../../escaped": "pprl_e"}
    monkeypatch.setattr(
        "linkage.service.client.ServiceClient.create_project",
        lambda *_: NewProject("p1", "evil", "f" * 64, evil),
    )
    out = tmp_path / "deep" / "er" / "tokens"
    result = invoke(runner, "project", "create", "--server", SERVER, "--admin-secret-file", admin_file,
                    "--protocol", EXAMPLE_PROTOCOL, "--out-dir", out)  # fmt: skip
    assert result.exit_code == 1
    assert "'../../escaped', which is not a party of the protocol" in result.output
    assert not (tmp_path / "deep" / "escaped.token").exists()
    assert not out.exists(), "nothing was written"


def test_project_create_writes_the_token_files_before_it_prints(runner, admin_file, tmp_path, monkeypatch):
    """Found by attack: `pprl project create --out-dir D | head -1` made a project and wrote no token.

    The server keeps only the tokens' hashes, so a print that fails (a closed pipe) must not
    come between the project's creation and its token files.
    """
    from linkage.service.client import NewProject

    tokens = {"msd": "pprl_a", "police": "pprl_b", "haven": "pprl_c", "analyst": "pprl_d"}
    monkeypatch.setattr(
        "linkage.service.client.ServiceClient.create_project",
        lambda *_: NewProject("p1", "example", "f" * 64, tokens),
    )

    def closed_pipe(*_args, **_kwargs):
        raise BrokenPipeError

    monkeypatch.setattr("cli.service.click.echo", closed_pipe)
    out = tmp_path / "tokens"
    invoke(runner, "project", "create", "--server", SERVER, "--admin-secret-file", admin_file,
           "--protocol", EXAMPLE_PROTOCOL, "--out-dir", out)  # fmt: skip
    assert {path.name: path.read_text().strip() for path in out.iterdir()} == {
        f"{role}.token": token for role, token in tokens.items()
    }


def test_add_analyst_writes_the_token_file_before_it_prints(runner, admin_file, tmp_path, monkeypatch):
    from linkage.service.client import NewAnalyst

    monkeypatch.setattr(
        "linkage.service.client.ServiceClient.add_analyst",
        lambda *_: NewAnalyst("p1", "ana", None, "pprl_e"),
    )

    def closed_pipe(*_args, **_kwargs):
        raise BrokenPipeError

    monkeypatch.setattr("cli.service.click.echo", closed_pipe)
    out = tmp_path / "ana.token"
    invoke(runner, "project", "add-analyst", "--server", SERVER, "--admin-secret-file", admin_file,
           "--project", "p1", "ana", "--out", out)  # fmt: skip
    assert out.read_text() == "pprl_e\n"


def test_keygen_says_what_the_secret_is_for(runner, tmp_path):
    """Issue 15 row 14: an admin secret was told to be kept away from the linkage service it is for."""
    admin = invoke(runner, "keygen", "--out", tmp_path / "admin.secret", "--purpose", "admin")
    assert admin.exit_code == 0
    assert "keep it away from the linkage service" not in admin.output
    assert "give it to `pprl serve --admin-secret-file` and to the administrator only" in admin.output
    shared = invoke(runner, "keygen", "--out", tmp_path / "secret.key", "--purpose", "shared")
    assert "never to the linkage service" in shared.output and "admin secret" not in shared.output
    either = invoke(runner, "keygen", "--out", tmp_path / "other.key")
    assert "if it is the agencies' shared secret" in either.output
    assert "if it is the service's admin secret" in either.output


def test_serve_warns_beyond_loopback_without_tls_and_sets_its_guards(runner, tmp_path, admin_file, monkeypatch):
    started = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: started.update(app=app, **kwargs))
    everywhere = "0.0.0.0"  # noqa: S104 - uvicorn.run is replaced: nothing listens
    exposed = invoke(runner, "serve", "--data-dir", tmp_path / "a", "--admin-secret-file", admin_file,
                     "--host", everywhere)  # fmt: skip
    assert exposed.exit_code == 0, exposed.output
    assert "Warning: listening on 0.0.0.0 without TLS" in exposed.output
    assert started["timeout_keep_alive"] == 5 and started["h11_max_incomplete_event_size"] == 16 * 1024
    assert started["http"].header_timeout == 10.0
    assert not started["app"].state.config.api_docs
    proxied = invoke(runner, "serve", "--data-dir", tmp_path / "b", "--admin-secret-file", admin_file,
                     "--host", everywhere, "--behind-tls-proxy", "--api-docs", "--rate-limit", "5")  # fmt: skip
    assert "Warning: listening" not in proxied.output
    config = started["app"].state.config
    assert (config.behind_tls_proxy, config.api_docs, config.rate_limit, config.rate_burst) == (True, True, 5.0, 20)
    local = invoke(runner, "serve", "--data-dir", tmp_path / "c", "--admin-secret-file", admin_file)
    assert "Warning: listening" not in local.output


@pytest.mark.usefixtures("service")
def test_audit_and_budget_show_forged_lines_escaped_and_verify_the_chains(runner, admin_file, service, tmp_path):
    """Issue 15 rows 7 and 8: a reason or a label holding a line break printed as a line of its own."""
    from stats.budget import Loss

    created = invoke(runner, "project", "create", "--server", SERVER, "--admin-secret-file", admin_file,
                     "--protocol", EXAMPLE_PROTOCOL, "--out-dir", tmp_path / "t")  # fmt: skip
    project_id = created.output.split()[1].rstrip(":")
    forged = "ok\n2026-01-01 00:00:00+00:00  admin  project.create  -  ok  forged"
    service.state.linkage_store.append_audit("party:police", "results.serious_threat", project_id, "ok", forged)
    with service.state.stats_store.spend(project_id, "analyst", forged, Loss.of(rho=0.1)) as receipt:
        receipt.mechanism = "test"
    audit = invoke(runner, "audit", "--server", SERVER, "--admin-secret-file", admin_file)
    assert audit.exit_code == 0, audit.output
    assert "ok\\n2026-01-01" in audit.output
    assert not any(line.startswith("2026-01-01") for line in audit.output.splitlines())
    budget = invoke(runner, "budget", "--server", SERVER, "--token-file", tmp_path / "t" / "analyst.token")
    assert budget.exit_code == 0, budget.output
    assert "ok\\n2026-01-01" in budget.output
    assert not any(line.startswith("2026-01-01") for line in budget.output.splitlines())

    verified = invoke(runner, "audit", "--server", SERVER, "--admin-secret-file", admin_file, "--verify")
    assert verified.exit_code == 0, verified.output
    assert "ok      the audit log:" in verified.output
    assert f"ok      the ledger of project {project_id}: 1 rows, head " in verified.output
    stats = service.state.stats_store
    with stats._engine.begin() as conn:
        conn.execute(stats._metadata.tables["releases"].delete())
    broken = invoke(runner, "audit", "--server", SERVER, "--admin-secret-file", admin_file, "--verify")
    assert broken.exit_code == 4
    assert f"BROKEN  the ledger of project {project_id}" in broken.output


def test_an_analyst_of_their_own_is_named_in_the_ledger_and_kept_to_their_budget(
    runner, service, admin_file, agencies, tmp_path
):
    tokens = tmp_path / "t"
    created = invoke(runner, "project", "create", "--server", SERVER, "--admin-secret-file", admin_file,
                     "--protocol", EXAMPLE_PROTOCOL, "--out-dir", tokens)  # fmt: skip
    project_id = created.output.split()[1].rstrip(":")
    added = invoke(runner, "project", "add-analyst", "--server", SERVER, "--admin-secret-file", admin_file,
                   "--project", project_id, "ana", "--rho", "0.15", "--out", tokens / "ana.token")  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "analyst ana of project" in added.output and '"rho": 0.15' in added.output
    assert mode(tokens / "ana.token") == 0o600 and (tokens / "ana.token").read_text() not in added.output
    again = invoke(runner, "project", "add-analyst", "--server", SERVER, "--admin-secret-file", admin_file,
                   "--project", project_id, "ana")  # fmt: skip
    assert again.exit_code == 1 and "has an analyst named 'ana' already" in again.output
    for party in ("msd", "police", "haven"):
        invoke(
            runner, "upload", "--server", SERVER, "--token-file", tokens / f"{party}.token", agencies[party], "--quiet"
        )
    assert invoke(runner, "run", "--server", SERVER, "--token-file", tokens / "msd.token", "--wait").exit_code == 0
    ana = ["--server", SERVER, "--token-file", tokens / "ana.token"]
    assert invoke(runner, "query", *ana, "count", "--rho", "0.1").exit_code == 0
    over = invoke(runner, "query", *ana, "count", "--rho", "0.1")
    assert over.exit_code == 3
    assert "only ρ=0.05 of analyst:ana's own budget ρ=0.15 is left" in over.output
    shared = ["--server", SERVER, "--token-file", tokens / "analyst.token"]
    assert invoke(runner, "query", *shared, "count", "--rho", "0.1").exit_code == 0
    budget = invoke(runner, "budget", *shared, "--json")
    assert [entry["who"] for entry in json.loads(budget.output)["releases"]] == ["analyst:ana", "analyst"]
    ana_token = (tokens / "ana.token").read_text().strip()
    own = TestClient(service).get(f"/projects/{project_id}/budget", headers=bearer(ana_token))  # already started
    shown = own.json()["own"]
    assert {key: shown[key] for key in ("total", "spent", "remaining")} == {
        "total": {"rho": 0.15},
        "spent": {"rho": 0.1},
        "remaining": {"rho": 0.05},
    }
    assert shown["remaining_approx_dp"]["epsilon"] > 0.05, "shown as (epsilon, delta) too"
    audit = invoke(runner, "audit", "--server", SERVER, "--admin-secret-file", admin_file, "--json")
    actors = {json.loads(line)["actor"] for line in audit.output.splitlines()}
    assert {"analyst:ana", "analyst"} <= actors


@pytest.mark.usefixtures("service")
def test_serious_threat_requests_wait_for_the_administrator_from_the_command_line(
    runner, admin_file, agencies, tmp_path
):
    document = json.loads(EXAMPLE_PROTOCOL.read_text())
    document["releases"]["safeguards"] = {"serious_threat_approval": True}
    protocol_file = tmp_path / "protocol.json"
    protocol_file.write_text(json.dumps(document))
    tokens = tmp_path / "t"
    created = invoke(runner, "project", "create", "--server", SERVER, "--admin-secret-file", admin_file,
                     "--protocol", protocol_file, "--out-dir", tokens)  # fmt: skip
    project_id = created.output.split()[1].rstrip(":")
    for party in ("msd", "police", "haven"):
        invoke(
            runner, "upload", "--server", SERVER, "--token-file", tokens / f"{party}.token", agencies[party], "--quiet"
        )
    admin_run = invoke(runner, "run", "--server", SERVER, "--token-file", admin_file, "--project", project_id, "--wait")
    assert admin_run.exit_code == 0, admin_run.output
    assert "linked" in admin_run.output and "records into" in admin_run.output, "the administrator sees the counts"
    named = tmp_path / "named.txt"
    with (agencies["police"] / "keymap.csv").open() as handle:
        named.write_text("\n".join(row["token"] for row in list(csv.DictReader(handle))[:5]) + "\n")
    police = [
        "--server",
        SERVER,
        "--token-file",
        tokens / "police.token",
        "--keymap",
        agencies["police"] / "keymap.csv",
    ]
    reason = "threat to life reported by a family member, file 2231"
    asked = invoke(runner, "results", *police, "--out", tmp_path / "p.csv", "--serious-threat", "--reason", reason,
                   "--tokens-file", named)  # fmt: skip
    assert asked.exit_code == 0, asked.output
    assert "waits for the administrator's approval" in asked.output and not (tmp_path / "p.csv").exists()
    request_id = asked.output.split()[2]
    admin = ["--server", SERVER, "--admin-secret-file", admin_file, "--project", project_id]
    listed = invoke(runner, "serious-threat", "list", *admin)
    assert f"{request_id}" in listed.output and "pending" in listed.output and reason in listed.output
    approved = invoke(runner, "serious-threat", "approve", *admin, "--note", "checked with the inspector", request_id)
    assert approved.exit_code == 0 and "approved" in approved.output
    fetched = invoke(runner, "results", *police, "--out", tmp_path / "p.csv", "--request", request_id)
    assert fetched.exit_code == 0, fetched.output
    assert mode(tmp_path / "p.csv") == 0o600
    twice = invoke(runner, "results", *police, "--out", tmp_path / "p2.csv", "--request", request_id)
    assert twice.exit_code == 1 and "fetched already" in twice.output
