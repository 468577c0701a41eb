"""Withdrawal and erasure from the command line: `pprl withdraw`, `pprl project remove-party`, `expire`, `delete`.

Each asks for confirmation (``--yes`` skips it), calls the service once, and prints what
the service journalled: counts, never tokens. The erasure is done when the command
returns; a server stopped half way finishes it at its next start.
"""

from __future__ import annotations

from pathlib import Path

import click

from cli.service import admin_secret_option, project, read_admin_secret, read_token, server_option, token_file_option
from linkage.service.client import ErasureSummary, ServiceClient, read_withdrawal_tokens


def _show(erasure: ErasureSummary) -> None:
    click.echo(f"erasure {erasure.erasure_id} ({erasure.kind}) of project {erasure.project_id}: {erasure.status}")
    click.echo(f"  {erasure.summary}")


@click.command()
@server_option
@token_file_option
@click.option(
    "--tokens-file",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The records to withdraw: one token per line, or keymap.csv's rows under its header token,client_id "
    "(only the tokens are sent).",
)
@click.confirmation_option(prompt="Withdraw these records from the service? This cannot be undone")
def withdraw(server: str, token_file: Path | None, tokens_file: Path) -> None:
    """Withdraw some of your records: erased from your stored encodings, the results and the statistics.

    The service rewrites your stored encodings without them, drops them from the latest
    results and from the statistics side (attributes, entity mapping); the next run links
    only the records left. The audit log keeps their count and each token's SHA-256, never
    the tokens. Keep your key map: a token not in your last upload is refused, and then
    nothing is withdrawn.

    Example: pprl withdraw --server http://127.0.0.1:8000 --token-file msd.token --tokens-file leaving.txt --yes
    """
    tokens = read_withdrawal_tokens(tokens_file)
    with ServiceClient(server, read_token(token_file)) as client:
        erasure = client.withdraw(tokens)
    _show(erasure)


@project.command("remove-party")
@server_option
@admin_secret_option
@click.option("--project", "project_id", required=True, help="The project's id.")
@click.option("--party", required=True, help="The party whose data to erase (its id in the protocol).")
@click.confirmation_option(prompt="Erase this party's data from the project? This cannot be undone")
def project_remove_party(server: str, admin_secret_file: Path | None, project_id: str, party: str) -> None:
    """Erase one party's data from a project: encodings, attributes, results, mapping rows, credential.

    The blob of its encodings is overwritten, its rows deleted on both sides, and the
    databases rewritten so that no byte of them remains in the data folder. Runs go on
    without the party; the ledger and the audit log keep what was released and say what
    was erased.

    Example: pprl project remove-party --server http://pprl:8000 --admin-secret-file a.key --project ID --party haven
    """
    with ServiceClient(server, read_admin_secret(admin_secret_file)) as client:
        erasure = client.remove_party(project_id, party)
    _show(erasure)


@project.command("delete")
@server_option
@admin_secret_option
@click.option("--project", "project_id", required=True, help="The project's id.")
@click.confirmation_option(prompt="Erase the whole project? This cannot be undone")
def project_delete(server: str, admin_secret_file: Path | None, project_id: str) -> None:
    """Erase a whole project: every party's encodings and attributes, every run, every credential.

    The project's ledger of releases and the audit log are kept (they hold no personal
    data): what was released, when, and that the project was erased.

    Example: pprl project delete --server http://pprl:8000 --admin-secret-file admin.key --project ID --yes
    """
    with ServiceClient(server, read_admin_secret(admin_secret_file)) as client:
        erasure = client.delete_project(project_id)
    _show(erasure)


@project.command("expire")
@server_option
@admin_secret_option
@click.option("--project", "project_id", required=True, help="The project's id.")
@click.confirmation_option(prompt="Erase the uploads older than the protocol's retention? This cannot be undone")
def project_expire(server: str, admin_secret_file: Path | None, project_id: str) -> None:
    """Erase the uploads the protocol's retention has run out for (releases.safeguards.upload_retention_days).

    A party whose encodings were not uploaded again within that many days loses its
    encodings, attributes, result and mapping rows, as with remove-party, but keeps its
    credential: it may upload again, and runs wait for it. Run it from cron, e.g. daily.

    Example: pprl project expire --server http://pprl:8000 --admin-secret-file admin.key --project ID --yes
    """
    with ServiceClient(server, read_admin_secret(admin_secret_file)) as client:
        erasures = client.expire(project_id)
    if not erasures:
        click.echo(f"project {project_id}: no upload is older than the protocol's retention")
    for erasure in erasures:
        _show(erasure)
