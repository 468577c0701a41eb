"""The linkage service from the command line: ``pprl serve`` and the commands that talk to it.

Credentials come from files (``--token-file``, ``--admin-secret-file``) or the environment
(``PPRL_TOKEN``, ``PPRL_ADMIN_SECRET``), never from the command line, and are never
printed except once, by ``pprl project create``.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import logging
import os
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from cli.common import PprlGroup, progress
from linkage.errors import SecretError
from linkage.free_text import escape_text
from linkage.protocol import load_protocol
from linkage.service.client import (
    PendingRequest,
    Results,
    RunStatus,
    ServiceClient,
    credential_files,
    read_tokens_file,
    read_withdrawal_tokens,
    upload_files,
    write_changes,
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
@click.option(
    "--behind-tls-proxy",
    is_flag=True,
    help="A TLS-terminating reverse proxy is in front (see docs/deployment.md); adds HSTS. Without it, a "
    "--host beyond loopback gets a warning.",
)
@click.option("--api-docs", is_flag=True, help="Serve the API description at /docs and /openapi.json.")
@click.option(
    "--rate-limit",
    default=50.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Requests per second each client address may send (bursts of 4 seconds' worth); 0 for no limit. "
    "Counted in this process.",
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
    behind_tls_proxy: bool,
    api_docs: bool,
    rate_limit: float,
) -> None:
    """Run the linkage service (HTTP API; its description at /docs with --api-docs).

    Keeps the linkage store (encodings, runs, entities, audit log) and the statistics
    store (attributes, entity mapping, ledger) apart: DATA_DIR/linkage.db and
    DATA_DIR/stats.db (folder 0700, files 0600), or the PostgreSQL schemas pprl_linkage and
    pprl_stats. Runs left unfinished by a stop are queued again at start; the audit log's
    and ledgers' hash chains are checked. Without an admin secret, projects cannot be
    created. Beyond localhost, put it behind a TLS-terminating proxy (docs/deployment.md)
    and say so with --behind-tls-proxy. Connections whose headers take over 10 s are
    closed, idle ones after 5 s.

    Example: pprl serve --data-dir /srv/pprl --admin-secret-file /etc/pprl/admin.secret --port 8000
    """
    import uvicorn

    from server.app import ServiceConfig, create_app, hash_admin_secret
    from server.middleware import uvicorn_settings

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
        api_docs=api_docs,
        behind_tls_proxy=behind_tls_proxy,
        rate_limit=rate_limit or None,
        rate_burst=max(1, int(rate_limit * 4)),
    )
    if not behind_tls_proxy and not is_loopback(host):
        click.echo(
            f"Warning: listening on {host} without TLS: credentials, encodings and results would cross the network "
            "in clear. Put a TLS-terminating reverse proxy in front (docs/deployment.md), keep --host 127.0.0.1, "
            "and pass --behind-tls-proxy",
            err=True,
        )
    app = create_app(config)
    click.echo(f"pprl linkage service on http://{host}:{port} (data in {data_dir})", err=True)
    uvicorn.run(app, host=host, port=port, log_config=log_config(), workers=1, **uvicorn_settings())


def is_loopback(host: str) -> bool:
    """Whether a listening address is only reachable from this machine.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0"), is_loopback("::1")
    (True, True, False, True)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.group(cls=PprlGroup)
def project() -> None:
    """Create, erase and delete linkage projects on a service (administrator).

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
    roles = [*(p.id for p in protocol.parties), "analyst"]
    # The tokens exist nowhere else (the server keeps their hashes): write them before any
    # print, which can fail (a closed pipe) and would lose them.
    written = write_credentials(created.credentials, out_dir, roles) if out_dir is not None else None
    click.echo(f"project {created.project_id}: {created.name}")
    click.echo(f"fingerprint: {created.fingerprint}")
    if written is not None:
        for path in written:
            click.echo(f"  {path.stem}: {path} (mode 0600)")
        return
    click.echo("credentials (shown once; the server keeps only their hashes):")
    for role, token in created.credentials.items():
        click.echo(f"  {escape_text(role)}: {escape_text(token)}")


@project.command("add-analyst")
@server_option
@admin_secret_option
@click.option("--project", "project_id", required=True, help="The project's id.")
@click.argument("name")
@click.option("--rho", type=float, help="This analyst's own budget, in a zCDP project (within the project's).")
@click.option("--epsilon", type=float, help="This analyst's own budget, in an ε-DP project (within the project's).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the token to this new file (mode 0600) instead of printing it.",
)
def project_add_analyst(
    server: str,
    admin_secret_file: Path | None,
    project_id: str,
    name: str,
    rho: float | None,
    epsilon: float | None,
    out: Path | None,
) -> None:
    """Give one analyst a credential of their own; it is shown (or written) this once.

    The ledger and the audit log name the analyst (analyst:NAME) instead of the shared
    analyst credential. With --rho or --epsilon the analyst may spend at most that much,
    within what is left of the project's budget. The server keeps only the token's hash.

    Example: pprl project add-analyst --server http://pprl:8000 --admin-secret-file admin.key --project ID ana --rho 0.3
    """
    if rho is not None and epsilon is not None:
        raise click.UsageError("give the analyst's budget as --rho or --epsilon, not both")
    budget = {"rho": rho} if rho is not None else {"epsilon": epsilon} if epsilon is not None else None
    if out is not None and out.exists():
        raise click.UsageError(f"{out} exists already; token files are never overwritten")
    with ServiceClient(server, read_admin_secret(admin_secret_file)) as client:
        added = client.add_analyst(project_id, name, budget)
    if out is not None:  # before any print, as in `project create`
        descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(added.credential + "\n")
    limit = f", own budget {json.dumps(dict(added.budget))}" if added.budget else ""
    click.echo(f"analyst {added.name} of project {added.project_id}{limit}")
    if out is not None:
        click.echo(f"  token: {out} (mode 0600)")
        return
    click.echo(f"  token (shown once; the server keeps only its hash): {added.credential}")


@click.command()
@server_option
@token_file_option
@click.argument("out_dir", metavar="OUTDIR", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--replace", is_flag=True, help="Replace different encodings or attributes uploaded before.")
@click.option(
    "--batch",
    is_flag=True,
    help="Add OUTDIR's encodings (new and corrected clients) to a linked project instead; the next run "
    "compares only them (docs/refresh.md).",
)
@click.option(
    "--withdraw",
    "withdraw_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="With --batch: tokens to withdraw in the same batch (keymap.csv rows or one token per line); a "
    "corrected client is its new record plus its old token here.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def upload(
    server: str,
    token_file: Path | None,
    out_dir: Path,
    replace: bool,
    batch: bool,
    withdraw_file: Path | None,
    quiet: bool,
) -> None:
    """Send your encodings to the linkage side and your attributes to the statistics side.

    OUTDIR is the folder `pprl encode` wrote; keymap.csv never leaves it. The same files
    again change nothing; different files are refused unless --replace. A stopped upload
    stores nothing. With --batch, OUTDIR holds only new and corrected clients (its
    encodings.pprl may be missing for withdrawals only): the batch goes to the linkage side,
    then its attributes.csv is added to yours on the statistics side.

    Example: pprl upload --server http://127.0.0.1:8000 --token-file msd.token msd-out
    """
    if withdraw_file is not None and not batch:
        raise click.UsageError("--withdraw goes with --batch (or use `pprl withdraw` to erase records)")
    if batch:
        if replace:
            raise click.UsageError("--replace replaces a whole list; a batch adds to it: pass one of them")
        withdraw = read_withdrawal_tokens(withdraw_file) if withdraw_file is not None else []
        with ExitStack() as bars, ServiceClient(server, read_token(token_file)) as client:

            def bar(name: str) -> Callable[[int, int], None]:
                return bars.enter_context(progress(f"uploading the batch's {name}", quiet=quiet))

            added, merged = client.upload_batch_folder(out_dir, withdraw, on_progress=bar)
        click.echo(
            f"batch {added.batch_id}: {added.added} added, {added.corrected} corrected, {added.withdrawn} "
            f"withdrawn; {added.record_count} records for {added.party}, linked by the next run (`pprl run`)"
        )
        if merged is not None:
            click.echo(f"attributes: {merged.status} ({merged.record_count} records for {merged.party})")
        return
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
@click.option("--project", "project_id", help="The project's id, with the admin secret as --token-file.")
@click.option("--wait", is_flag=True, help="Wait until the run is done, with a progress bar.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run_command(server: str, token_file: Path | None, project_id: str | None, wait: bool, quiet: bool) -> None:
    """Start a linkage run once every party has uploaded; prints its id.

    At most one run per project is queued or running; asking again returns that one. A
    party may start only as many runs as the protocol allows
    (releases.safeguards.max_runs_per_party); the administrator may always start one.

    Example: pprl run --server http://127.0.0.1:8000 --token-file msd.token --wait
    """
    with ServiceClient(server, read_token(token_file)) as client:
        run = client.start_run(project_id)
        click.echo(f"run {run.run_id} {'queued' if run.created else 'already ' + run.status}")
        if not wait:
            return
        with progress("linking", quiet=quiet) as on_progress:
            run = client.wait_for_run(run.run_id, on_progress=on_progress, project_id=project_id)
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
@click.option("--project", "project_id", help="The project's id, with the admin secret as --token-file.")
@click.argument("run_id", type=int)
def status(server: str, token_file: Path | None, project_id: str | None, run_id: int) -> None:
    """Show a run's status and progress (its counts to the administrator only).

    Example: pprl status --server http://127.0.0.1:8000 --token-file msd.token 3
    """
    with ServiceClient(server, read_token(token_file)) as client:
        run = client.run_status(run_id, project_id)
    _show_run(run)
    if run.started_at:
        click.echo(f"  started {run.started_at}" + (f", finished {run.finished_at}" if run.finished_at else ""))


@click.command()
@server_option
@token_file_option
@click.option(
    "--keymap",
    required=True,
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Your keymap.csv; repeat it for each batch's key map.",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="CSV to write.")
@click.option(
    "--changes-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write what changed for your clients since your last download (new links, links gone, "
    "withdrawn), one row per client: client_id,change,parties.",
)
@click.option("--serious-threat", is_flag=True, help="Invoke the serious-threat exception for named tokens.")
@click.option("--reason", help="Why disclosure prevents a serious threat (written to the audit log).")
@click.option(
    "--tokens-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="With --serious-threat: the tokens (from keymap.csv), one per line; at most the protocol's "
    "serious_threat_max_tokens (5 by default).",
)
@click.option("--request", "request_id", help="Fetch an approved serious-threat request's release (once).")
def results(
    server: str,
    token_file: Path | None,
    keymap: tuple[Path, ...],
    out: Path,
    changes_out: Path | None,
    serious_threat: bool,
    reason: str | None,
    tokens_file: Path | None,
    request_id: str | None,
) -> None:
    """Download which of your clients other parties also know, as your own client ids.

    Writes client_id,shared_with (other parties' ids, ';'-separated; file mode 0600). Only
    if the protocol allows record-level results for your party, and only for clients whose
    consent is set at both ends. A public-safety party may name a few tokens under the
    serious-threat exception, with a written reason that goes to the audit log; if the
    protocol wants the administrator's approval, the request waits, and --request ID
    fetches it once approved.

    Example: pprl results --server http://127.0.0.1:8000 --token-file msd.token --keymap out/keymap.csv --out shared.csv
    """
    if serious_threat and (not reason or tokens_file is None):
        raise click.UsageError("--serious-threat needs --reason TEXT and --tokens-file FILE")
    if not serious_threat and (reason or tokens_file):
        raise click.UsageError("--reason and --tokens-file go with --serious-threat")
    if serious_threat and request_id:
        raise click.UsageError("--request fetches a request made before; leave --serious-threat out")
    with ServiceClient(server, read_token(token_file)) as client:
        released: Results | PendingRequest
        if serious_threat:
            assert reason is not None and tokens_file is not None  # noqa: S101 - checked above
            released = client.serious_threat(read_tokens_file(tokens_file), reason)
        elif request_id:
            released = client.fetch_threat_results(request_id)
        else:
            released = client.results()
    if isinstance(released, PendingRequest):
        click.echo(
            f"serious-threat request {released.request_id} ({released.token_count} tokens) waits for the "
            "administrator's approval (`pprl serious-threat approve`); then fetch it once with "
            f"`pprl results --request {released.request_id} ...`. Nothing was written."
        )
        return
    summary = write_shared(released, list(keymap), out)
    click.echo(f"run {released.run_id}: {summary.clients} of your clients are also known to other parties -> {out}")
    if changes_out is not None:
        count = write_changes(released, list(keymap), changes_out)
        since = (
            f"since your download of run {released.changes_since_run}"
            if released.changes_since_run is not None
            else "(your first download: nothing to compare with)"
        )
        click.echo(f"{count} change(s) {since} -> {changes_out}")
    if not released.records and not serious_threat:
        click.echo(
            "Note: a client is listed only where consent is set at both ends; check that every party "
            "uploaded its attributes.csv (`pprl upload`)",
            err=True,
        )
    if summary.unknown_tokens:
        click.echo(
            f"Warning: {summary.unknown_tokens} released token(s) are not in {', '.join(map(str, keymap))}; are "
            "they the key maps of the encodings you uploaded?",
            err=True,
        )


@click.command()
@server_option
@admin_secret_option
@click.option("--project", "project_id", help="Only this project's lines.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option(
    "--verify",
    is_flag=True,
    help="Check the hash chains of the audit log and of every project's ledger instead; exit 4 if one is broken.",
)
def audit(server: str, admin_secret_file: Path | None, project_id: str | None, as_json: bool, verify: bool) -> None:
    """Show the append-only audit log: who did what, when, with what outcome.

    The log and every privacy ledger are hash chains: --verify checks that no line was
    edited, deleted or reordered, and prints each chain's head hash (keep those somewhere
    else: they anchor the chains). Control characters in lines are shown escaped.

    Example: pprl audit --server http://127.0.0.1:8000 --admin-secret-file admin.secret
    """
    with ServiceClient(server, read_admin_secret(admin_secret_file)) as client:
        if verify:
            chains = client.verify_audit()
        else:
            lines = client.audit(project_id=project_id)
    if verify:
        for chain in chains:
            state = "ok" if chain.ok else "BROKEN"
            click.echo(f"{state:<7} {chain.name}: {chain.rows} rows, head {chain.head}")
            if not chain.ok:
                click.echo(f"        {escape_text(chain.problem)}")
        if not all(chain.ok for chain in chains):
            click.echo("Error: a hash chain is broken; restore that store from a backup", err=True)
            raise click.exceptions.Exit(4)
        return
    for line in lines:
        if as_json:
            click.echo(json.dumps(line.__dict__))
        else:
            fields = [escape_text(value or "-") for value in (line.actor, line.action, line.project_id, line.outcome)]
            click.echo(
                f"{line.at}  {fields[0]:<14} {fields[1]:<24} {fields[2]:<16} {fields[3]:<14} {escape_text(line.detail)}"
            )


@click.group("serious-threat", cls=PprlGroup)
def serious_threat_group() -> None:
    """Decide on serious-threat requests that wait for the administrator's approval.

    Example: pprl serious-threat list --server http://127.0.0.1:8000 --admin-secret-file admin.secret --project ID
    """


@serious_threat_group.command("list")
@server_option
@admin_secret_option
@click.option("--project", "project_id", required=True, help="The project's id.")
def serious_threat_list(server: str, admin_secret_file: Path | None, project_id: str) -> None:
    """List a project's serious-threat requests: who, when, how many tokens, why, and the decision.

    Example: pprl serious-threat list --server http://127.0.0.1:8000 --admin-secret-file admin.secret --project ID
    """
    with ServiceClient(server, read_admin_secret(admin_secret_file)) as client:
        requests = client.threat_requests(project_id)
    if not requests:
        click.echo("no serious-threat requests")
    for item in requests:
        decided = f" by {item.decided_by} ({escape_text(item.note) or 'no note'})" if item.decided_by else ""
        click.echo(
            f"{item.request_id}  {item.created_at}  {item.party:<12} {item.status:<9}{decided}  "
            f"{item.token_count} token(s); reason: {escape_text(item.reason)}"
        )


def _decide(
    server: str, admin_secret_file: Path | None, project_id: str, request_id: str, what: str, note: str
) -> None:
    with ServiceClient(server, read_admin_secret(admin_secret_file)) as client:
        decided = client.decide_threat_request(project_id, request_id, what, note)
    click.echo(f"request {decided.request_id} of {decided.party}: {decided.status}")


@serious_threat_group.command("approve")
@server_option
@admin_secret_option
@click.option("--project", "project_id", required=True, help="The project's id.")
@click.option("--note", default="", help="Why (written to the audit log).")
@click.argument("request_id")
def serious_threat_approve(
    server: str, admin_secret_file: Path | None, project_id: str, note: str, request_id: str
) -> None:
    """Approve a pending request: its party may then fetch the release once (audited).

    Example: pprl serious-threat approve --server URL --admin-secret-file admin.secret --project ID --note "checked" REQ
    """
    _decide(server, admin_secret_file, project_id, request_id, "approve", note)


@serious_threat_group.command("refuse")
@server_option
@admin_secret_option
@click.option("--project", "project_id", required=True, help="The project's id.")
@click.option("--note", required=True, help="Why (written to the audit log and shown to the party).")
@click.argument("request_id")
def serious_threat_refuse(
    server: str, admin_secret_file: Path | None, project_id: str, note: str, request_id: str
) -> None:
    """Refuse a pending request: nothing is released (audited).

    Example: pprl serious-threat refuse --server URL --admin-secret-file admin.secret --project ID --note "vague" REQ
    """
    _decide(server, admin_secret_file, project_id, request_id, "refuse", note)
