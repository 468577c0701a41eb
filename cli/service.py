"""The linkage service from the command line: ``pprl serve`` and the commands that talk to it.

Credentials come from files (``--token-file``, ``--admin-secret-file``) or the environment
(``PPRL_TOKEN``, ``PPRL_ADMIN_SECRET``), never from the command line, and are never
printed except once, by ``pprl project create``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any

import click

from cli.common import PprlGroup, progress
from linkage.errors import SecretError
from linkage.protocol import load_protocol
from linkage.service.client import (
    RunStatus,
    ServiceClient,
    credential_files,
    read_tokens_file,
    upload_files,
    write_credentials,
    write_shared,
)

TOKEN_ENV = "PPRL_TOKEN"  # noqa: S105 - the name of a variable, not a secret
ADMIN_ENV = "PPRL_ADMIN_SECRET"
DATABASE_ENV = "PPRL_DATABASE_URL"


def _read_credential(path: Path | None, env: str, option: str, what: str) -> str:
    if path is not None:
        try:
            text = path.read_text("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretError(f"{path}: cannot read the {what} file ({exc.__class__.__name__})") from exc
        if not text:
            raise SecretError(f"{path}: the {what} file is empty")
        return text
    text = os.environ.get(env, "").strip()
    if text:
        return text
    raise SecretError(f"no {what}: pass {option} FILE or set {env}; a {what} is never accepted on the command line")


def read_token(path: Path | None) -> str:
    """The project credential from --token-file, else from $PPRL_TOKEN."""
    return _read_credential(path, TOKEN_ENV, "--token-file", "token")


def read_admin_secret(path: Path | None) -> str:
    """The admin secret from --admin-secret-file, else from $PPRL_ADMIN_SECRET."""
    return _read_credential(path, ADMIN_ENV, "--admin-secret-file", "admin secret")


server_option = click.option(
    "--server", required=True, metavar="URL", help="The linkage service, e.g. http://127.0.0.1:8000."
)
token_file_option = click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Your project credential (from `pprl project create`). Default: ${TOKEN_ENV}.",
)
admin_secret_option = click.option(
    "--admin-secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"The server's admin secret. Default: ${ADMIN_ENV}.",
)


class RedactQuery(logging.Filter):
    """Drops query strings from uvicorn's access log lines (headers are never logged)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the request path of an access log record without its query."""
        if isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, http_version, status = record.args
            record.args = (client, method, str(path).split("?", 1)[0], http_version, status)
        return True


def log_config() -> dict[str, Any]:
    """The uvicorn logging setup with query strings redacted from the access log, and pprl's log."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_query"] = {"()": RedactQuery}
    config["handlers"]["access"]["filters"] = ["redact_query"]
    config["loggers"]["pprl"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


@click.command()
@click.option(
    "--data-dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for data and blobs."
)
@click.option(
    "--database-url",
    envvar=DATABASE_ENV,
    help=f"postgresql+psycopg://USER@HOST/DB (default: SQLite files in the data folder). Also ${DATABASE_ENV}; "
    "keep the password in ~/.pgpass or $PGPASSWORD, not in the URL.",
)
@click.option("--stats-database-url", help="A separate database for the statistics side (default: --database-url).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@admin_secret_option
@click.option("--workers", type=click.IntRange(min=1), help="Processes per linkage run (default: every core).")
@click.option(
    "--dask",
    metavar="tcp://HOST:PORT",
    help="Run linkage comparisons on this Dask scheduler; a run's encodings are sent to each worker once.",
)
@click.option(
    "--max-upload-mb", default=4096, show_default=True, type=click.IntRange(min=1), help="Largest upload accepted."
)
def serve(
    data_dir: Path,
    database_url: str | None,
    stats_database_url: str | None,
    host: str,
    port: int,
    admin_secret_file: Path | None,
    workers: int | None,
    dask: str | None,
    max_upload_mb: int,
) -> None:
    """Run the linkage service (HTTP API with OpenAPI at /openapi.json).

    Keeps the linkage store (encodings, runs, entities, audit log) and the statistics
    store (attributes, entity mapping) apart: DATA_DIR/linkage.db and DATA_DIR/stats.db,
    or the PostgreSQL schemas pprl_linkage and pprl_stats. Runs left unfinished by a
    stop are queued again at start. Without an admin secret, projects cannot be created.
    Put it behind a TLS-terminating proxy when it listens beyond localhost.

    Example: pprl serve --data-dir /srv/pprl --admin-secret-file /etc/pprl/admin.secret --port 8000
    """
    import uvicorn

    from server.app import ServiceConfig, create_app, hash_admin_secret

    admin_hash = None
    if admin_secret_file is not None or os.environ.get(ADMIN_ENV):
        source = str(admin_secret_file) if admin_secret_file else f"${ADMIN_ENV}"
        admin_hash = hash_admin_secret(read_admin_secret(admin_secret_file), source)
    else:
        click.echo("Warning: no admin secret; projects cannot be created (pass --admin-secret-file)", err=True)
    config = ServiceConfig(
        data_dir=data_dir,
        database_url=database_url,
        stats_database_url=stats_database_url,
        admin_secret_sha256=admin_hash,
        workers=workers or os.cpu_count() or 1,
        dask=dask,
        max_upload_bytes=max_upload_mb << 20,
    )
    app = create_app(config)
    click.echo(f"pprl linkage service on http://{host}:{port} (data in {data_dir})", err=True)
    uvicorn.run(app, host=host, port=port, log_config=log_config(), server_header=False, workers=1)


@click.group(cls=PprlGroup)
def project() -> None:
    """Create linkage projects on a service (administrator).

    Example: pprl project create --server http://127.0.0.1:8000 --admin-secret-file admin.secret --protocol p.json
    """


@project.command("create")
@server_option
@admin_secret_option
@click.option(
    "--protocol", "protocol_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Protocol."
)
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one token file per role here (mode 0600) instead of printing the tokens.",
)
def project_create(server: str, admin_secret_file: Path | None, protocol_path: Path, out_dir: Path | None) -> None:
    """Create a project from a protocol; its credentials are shown this once.

    One credential per party and one for analysts, each scoped to this project and role;
    the service keeps only their hashes. Hand each party its own token by a secure channel.

    Example: pprl project create --server http://pprl:8000 --admin-secret-file admin.key --protocol p.json --out-dir t
    """
    protocol = load_protocol(protocol_path)
    if out_dir is not None:
        credential_files(out_dir, [*(p.id for p in protocol.parties), "analyst"])
    with ServiceClient(server, read_admin_secret(admin_secret_file)) as client:
        created = client.create_project(protocol.document)
    click.echo(f"project {created.project_id}: {created.name}")
    click.echo(f"fingerprint: {created.fingerprint}")
    if out_dir is not None:
        for path in write_credentials(created.credentials, out_dir):
            click.echo(f"  {path.stem}: {path} (mode 0600)")
        return
    click.echo("credentials (shown once; the server keeps only their hashes):")
    for role, token in created.credentials.items():
        click.echo(f"  {role}: {token}")


@click.command()
@server_option
@token_file_option
@click.argument("out_dir", metavar="OUTDIR", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--replace", is_flag=True, help="Replace different encodings or attributes uploaded before.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def upload(server: str, token_file: Path | None, out_dir: Path, replace: bool, quiet: bool) -> None:
    """Send your encodings to the linkage side and your attributes to the statistics side.

    OUTDIR is the folder `pprl encode` wrote; keymap.csv never leaves it. The same files
    again change nothing; different files are refused unless --replace. A stopped upload
    stores nothing.

    Example: pprl upload --server http://127.0.0.1:8000 --token-file msd.token msd-out
    """
    with ServiceClient(server, read_token(token_file)) as client:
        receipts = []
        for kind, path in upload_files(out_dir):
            with progress(f"uploading {path.name}", quiet=quiet) as on_progress:
                receipts.append(client.upload_file(kind, path, replace=replace, on_progress=on_progress))
    for receipt in receipts:
        click.echo(f"{receipt.kind}: {receipt.status} ({receipt.record_count} records for {receipt.party})")


@click.command("run")
@server_option
@token_file_option
@click.option("--wait", is_flag=True, help="Wait until the run is done, with a progress bar.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run_command(server: str, token_file: Path | None, wait: bool, quiet: bool) -> None:
    """Start a linkage run once every party has uploaded; prints its id.

    At most one run per project is queued or running; asking again returns that one.

    Example: pprl run --server http://127.0.0.1:8000 --token-file msd.token --wait
    """
    with ServiceClient(server, read_token(token_file)) as client:
        run = client.start_run()
        click.echo(f"run {run.run_id} {'queued' if run.created else 'already ' + run.status}")
        if not wait:
            return
        with progress("linking", quiet=quiet) as on_progress:
            run = client.wait_for_run(run.run_id, on_progress=on_progress)
    _show_run(run)


def _show_run(run: RunStatus) -> None:
    click.echo(f"run {run.run_id}: {run.status} ({run.progress:.0%})")
    if run.message:
        click.echo(f"  {run.message}")
    if run.status == "failed":
        raise click.exceptions.Exit(1)


@click.command()
@server_option
@token_file_option
@click.argument("run_id", type=int)
def status(server: str, token_file: Path | None, run_id: int) -> None:
    """Show a run's status and progress.

    Example: pprl status --server http://127.0.0.1:8000 --token-file msd.token 3
    """
    with ServiceClient(server, read_token(token_file)) as client:
        run = client.run_status(run_id)
    _show_run(run)
    if run.started_at:
        click.echo(f"  started {run.started_at}" + (f", finished {run.finished_at}" if run.finished_at else ""))


@click.command()
@server_option
@token_file_option
@click.option(
    "--keymap", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Your keymap.csv."
)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="CSV to write.")
@click.option("--serious-threat", is_flag=True, help="Invoke the serious-threat exception for named tokens.")
@click.option("--reason", help="Why disclosure prevents a serious threat (written to the audit log).")
@click.option(
    "--tokens-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="With --serious-threat: the tokens (from keymap.csv), one per line.",
)
def results(
    server: str,
    token_file: Path | None,
    keymap: Path,
    out: Path,
    serious_threat: bool,
    reason: str | None,
    tokens_file: Path | None,
) -> None:
    """Download which of your clients other parties also know, as your own client ids.

    Writes client_id,shared_with (other parties' ids, ';'-separated). Only if the protocol
    allows record-level results for your party, and only for clients whose consent is set
    at both ends. A public-safety party may name tokens under the serious-threat exception,
    with a reason that goes to the audit log.

    Example: pprl results --server http://127.0.0.1:8000 --token-file msd.token --keymap out/keymap.csv --out shared.csv
    """
    if serious_threat and (not reason or tokens_file is None):
        raise click.UsageError("--serious-threat needs --reason TEXT and --tokens-file FILE")
    if not serious_threat and (reason or tokens_file):
        raise click.UsageError("--reason and --tokens-file go with --serious-threat")
    with ServiceClient(server, read_token(token_file)) as client:
        if serious_threat:
            assert reason is not None and tokens_file is not None  # noqa: S101 - checked above
            released = client.serious_threat(read_tokens_file(tokens_file), reason)
        else:
            released = client.results()
    summary = write_shared(released, keymap, out)
    click.echo(f"run {released.run_id}: {summary.clients} of your clients are also known to other parties -> {out}")
    if not released.records and not serious_threat:
        click.echo(
            "Note: a client is listed only where consent is set at both ends; check that every party "
            "uploaded its attributes.csv (`pprl upload`)",
            err=True,
        )
    if summary.unknown_tokens:
        click.echo(
            f"Warning: {summary.unknown_tokens} released token(s) are not in {keymap}; is it the key map of the "
            "encodings you uploaded?",
            err=True,
        )


@click.command()
@server_option
@admin_secret_option
@click.option("--project", "project_id", help="Only this project's lines.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def audit(server: str, admin_secret_file: Path | None, project_id: str | None, as_json: bool) -> None:
    """Show the append-only audit log: who did what, when, with what outcome.

    Example: pprl audit --server http://127.0.0.1:8000 --admin-secret-file admin.secret
    """
    with ServiceClient(server, read_admin_secret(admin_secret_file)) as client:
        lines = client.audit(project_id=project_id)
    for line in lines:
        if as_json:
            click.echo(json.dumps(line.__dict__))
        else:
            click.echo(
                f"{line.at}  {line.actor:<14} {line.action:<24} {line.project_id or '-':<16} {line.outcome:<14} "
                f"{line.detail}"
            )
