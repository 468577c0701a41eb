"""``pprl query`` and ``pprl budget``: differentially private answers, locally or through the service.

Locally, a study on one machine reads ``pprl link``'s entities.csv and the parties'
attributes.csv files and keeps its ledger in a file. Through the service, the analyst's
credential reaches nothing but answers and the budget. The statistics modules (OpenDP,
Polars) are imported inside the commands, so that other commands start fast.
"""

from __future__ import annotations

import getpass
import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cli.service import read_token, token_file_option
from linkage.errors import InputError
from linkage.protocol import Protocol, load_protocol, parse_protocol
from linkage.service.client import ServiceClient

if TYPE_CHECKING:  # imported inside the commands: OpenDP and Polars are slow to import
    import polars as pl

    from stats.budget import FileLedger

QUERY_HELP = """Ask a differentially private question about the people the parties share.

\b
QUERY is a kind, an attribute for sum/mean/quantile, options, and its cost:
  count    [--by COL[,COL]] [--where COND]...
  sum      ATTR [--by ...] [--where ...]     (a bounded integer, or a boolean as 0/1)
  mean     ATTR [--by ...] [--where ...]     (the mean of a boolean is a share)
  quantile ATTR [--q 0.5] [--by ...] [--where ...]
  overlap  [--by COL] [--where ...]          (people by the set of parties that know them)
  and --rho R (zCDP) or --epsilon E [--delta D], as the protocol's budget is written.
COL is an attribute of the protocol, member:PARTY or shared. COND is COL=V1,V2,
COL>=N, COL<=N, member:A,B (known to A and B) or nonmember:A. QUERY may also be a
.json or .yaml file with the JSON form ({"kind": "count", "by": ["region"], "cost": {"rho": 0.05}}).

\b
An integer attribute groups by public bins: --by weeks_supported (bins the protocol
declares) or --by 'weeks_supported[0,13,26,39]' (lower edges; quote the brackets).

\b
The entities are the stable mapping of a frozen linkage model (`pprl link --statistics-out`),
and every release protects one person as the rows their records can move (the parties
squared: 9 for three); the answer says so, and docs/privacy-unit.md says where it holds.
Every number comes with its 95% interval. Each answer spends its cost from the project's
budget, recorded in a ledger (a ρ is also shown as (ε, δ)); a query the budget cannot pay
for is refused and spends nothing. --dry-run shows the stated accuracy without spending;
with --target-half-width W it leaves the cost out and finds the least cost that gives ± W.

\b
Example: pprl query --server URL --token-file analyst.token count --where member:police,msd --rho 0.05
Example: pprl query --protocol P --entities stable.csv --attributes msd=msd-out/attributes.csv
           --attributes police=police-out/attributes.csv --ledger study.ledger count --by region --rho 0.05
Example: pprl query --server URL --token-file analyst.token --dry-run --target-half-width 5 count --by region
"""


def attribute_files(values: tuple[str, ...]) -> list[tuple[str, Path]]:
    """``--attributes PARTY=PATH`` values as (party, path) pairs."""
    files = []
    for value in values:
        party, sep, path = value.partition("=")
        if not sep or not party or not path:
            raise InputError(f"--attributes {value!r}: write PARTY=PATH, e.g. --attributes msd=msd-out/attributes.csv")
        files.append((party.strip(), Path(path)))
    return files


def local_study(
    protocol: Path, entities: Path, attributes: tuple[str, ...], ledger: Path
) -> tuple[Protocol, pl.DataFrame, FileLedger]:
    """The protocol, entity table and ledger of a study on local files (``--protocol`` ... ``--ledger``)."""
    from stats.budget import FileLedger
    from stats.entities import read_entity_table

    loaded = load_protocol(protocol)
    return loaded, read_entity_table(loaded, entities, attribute_files(attributes)), FileLedger(ledger, loaded)


def choose_mode(local: dict[str, Any], server: str | None, what: str) -> str:
    """``server`` or ``local``, refusing a mix of both or an incomplete local set of options."""
    given = [f"--{name.replace('_', '-')}" for name, value in local.items() if value]
    if server and given:
        raise InputError(f"use --server (the service) or {', '.join(given)} (local files), not both")
    if server:
        return "server"
    missing = [f"--{name.replace('_', '-')}" for name, value in local.items() if not value]
    if missing:
        raise InputError(f"{what} needs --server URL, or for a local study {' and '.join(missing)}")
    return "local"


@click.command(
    "query",
    help=QUERY_HELP,
    short_help="Ask a differentially private question (counts, sums, means, quantiles, overlaps).",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option("--protocol", type=click.Path(dir_okay=False, path_type=Path), help="Local: the protocol.")
@click.option(
    "--entities",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Local: the stable mapping `pprl link --statistics-out` wrote.",
)
@click.option(
    "--attributes", "attributes", multiple=True, metavar="PARTY=PATH", help="Local: a party's attributes.csv."
)
@click.option("--ledger", type=click.Path(dir_okay=False, path_type=Path), help="Local: the ledger file (created).")
@click.option("--server", metavar="URL", help="The service, e.g. http://127.0.0.1:8000.")
@token_file_option
@click.option("--dry-run", is_flag=True, help="Show the stated accuracy and cost; release and spend nothing.")
@click.option(
    "--target-half-width",
    type=click.FloatRange(min=0, min_open=True),
    metavar="W",
    help="With --dry-run: leave the cost out and plan at the least cost that gives ± W (count, sum, overlap).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@click.argument("query", nargs=-1, required=True, type=click.UNPROCESSED)
def query(
    protocol: Path | None,
    entities: Path | None,
    attributes: tuple[str, ...],
    ledger: Path | None,
    server: str | None,
    token_file: Path | None,
    dry_run: bool,
    target_half_width: float | None,
    as_json: bool,
    query: tuple[str, ...],
) -> None:
    """Answer QUERY with differential privacy (the help text is QUERY_HELP)."""
    from stats.answers import Answer
    from stats.budget import Budget, Loss
    from stats.dp import answer_query, cost_for_half_width
    from stats.entities import privacy_unit
    from stats.query import load_query_document, parse_query, query_file
    from stats.render import format_answer

    if target_half_width is not None and not dry_run:
        raise InputError("--target-half-width plans only: add --dry-run, then ask again at the cost it prints")
    local = {"protocol": protocol, "entities": entities, "attributes": attributes, "ledger": ledger}
    path = query_file(query)
    if choose_mode(local, server, "pprl query") == "server":
        with ServiceClient(server, read_token(token_file)) as client:  # type: ignore[arg-type]
            sent: Any = shlex.join(query) if path is None else load_query_document(path)
            answer = Answer.from_json(client.query(sent, dry_run=dry_run, target_half_width=target_half_width))
            budget = Budget.from_json(client.budget())
            unit = privacy_unit(parse_protocol(client.protocol_document()))
    else:
        loaded, table, book = local_study(protocol, entities, attributes, ledger)  # type: ignore[arg-type]
        placeholder = Loss.of(**{next(iter(loaded.budget)): 1}) if target_half_width is not None else None
        spec = parse_query(loaded, query, default_cost=placeholder)
        if target_half_width is not None:
            spec = cost_for_half_width(table, spec, loaded, target_half_width)
        answer = answer_query(table, spec, loaded, book.spend, getpass.getuser(), dry_run=dry_run)
        budget = book.budget()
        unit = privacy_unit(loaded)
    if as_json:
        body = {**answer.to_json(), "remaining": budget.remaining.to_json(), "privacy_unit": unit}
        click.echo(json.dumps(body, indent=2))
    else:
        if target_half_width is not None:
            click.echo(f"the least cost that gives ± {target_half_width:g}: {answer.cost_shown}\n")
        click.echo(format_answer(answer, str(budget.remaining)))
        click.echo(unit)


@click.command("budget")
@click.option("--protocol", type=click.Path(dir_okay=False, path_type=Path), help="Local: the protocol.")
@click.option("--ledger", type=click.Path(dir_okay=False, path_type=Path), help="Local: the ledger file.")
@click.option("--server", metavar="URL", help="The service, e.g. http://127.0.0.1:8000.")
@token_file_option
@click.option("--json", "as_json", is_flag=True, help="Print the budget and ledger as JSON.")
def budget(
    protocol: Path | None, ledger: Path | None, server: str | None, token_file: Path | None, as_json: bool
) -> None:
    """Show the privacy budget: total, spent, left, and every release so far (who, when, query, cost).

    \b
    Example: pprl budget --server URL --token-file analyst.token
    Example: pprl budget --protocol protocol.json --ledger study.ledger
    """  # noqa: D301 - not raw on purpose: click's no-rewrap marker is the backspace character itself
    from stats.budget import Budget, FileLedger
    from stats.render import format_budget

    if choose_mode({"protocol": protocol, "ledger": ledger}, server, "pprl budget") == "server":
        with ServiceClient(server, read_token(token_file)) as client:  # type: ignore[arg-type]
            result = Budget.from_json(client.budget())
    else:
        if not ledger.exists():  # type: ignore[union-attr]
            raise InputError(f"{ledger}: no such ledger; it is created by the first `pprl query --ledger {ledger}`")
        result = FileLedger(ledger, load_protocol(protocol)).budget()  # type: ignore[arg-type]
    click.echo(json.dumps(result.to_json(), indent=2) if as_json else format_budget(result))
