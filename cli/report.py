"""``pprl report``: a ministry report from differentially private answers, as one HTML file.

Like ``pprl query``, it runs through the service (the analyst's credential) or on local
files with a ledger file. It checks the whole report against the remaining budget, and
every query where it will run, before it spends anything; then it releases all sections
as one spend, so that it is never left half spent.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import click

from cli.common import progress
from cli.query import choose_mode, local_study
from cli.service import read_token, token_file_option
from linkage.errors import OutputExistsError
from linkage.protocol import equivalent_delta, parse_protocol
from linkage.service.client import ServiceClient


@click.command("report")
@click.option(
    "--spec",
    "spec_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The report spec (YAML): sections, their queries and budget shares.",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The HTML file to write.")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.option("--server", metavar="URL", help="The service, e.g. http://127.0.0.1:8000.")
@token_file_option
@click.option("--protocol", type=click.Path(dir_okay=False, path_type=Path), help="Local: the protocol.")
@click.option(
    "--entities",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Local: the stable mapping `pprl link --statistics-out` wrote.",
)
@click.option("--attributes", multiple=True, metavar="PARTY=PATH", help="Local: a party's attributes.csv.")
@click.option("--ledger", type=click.Path(dir_okay=False, path_type=Path), help="Local: the ledger file.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def report(
    spec_path: Path,
    out: Path,
    force: bool,
    server: str | None,
    token_file: Path | None,
    protocol: Path | None,
    entities: Path | None,
    attributes: tuple[str, ...],
    ledger: Path | None,
    quiet: bool,
) -> None:
    """Write a publishable HTML report (charts with 95% intervals) from DP answers only.

    The spec says how much of the privacy budget the report may spend and each section's
    share; the report is refused before anything is spent if the budget has less left.
    An example spec: schemas/examples/quarterly_report.yaml.

    \b
    Example: pprl report --server URL --token-file analyst.token
               --spec schemas/examples/quarterly_report.yaml --out report.html
    """  # noqa: D301 - click's \b keeps the example's line breaks
    from stats.answers import Answer
    from stats.budget import Budget
    from stats.dp import answer_queries, answer_query
    from stats.report import build_report, read_report_spec

    if out.exists() and not force:
        raise OutputExistsError(f"{out} exists; pass --force to overwrite it or choose another --out")
    local = {"protocol": protocol, "entities": entities, "attributes": attributes, "ledger": ledger}
    with progress("steps", quiet=quiet) as on_progress:
        if choose_mode(local, server, "pprl report") == "server":
            with ServiceClient(server, read_token(token_file)) as client:  # type: ignore[arg-type]
                loaded = parse_protocol(client.protocol_document())
                spec = read_report_spec(loaded, spec_path)

                def plan_server(query: Any) -> Answer:
                    return Answer.from_json(client.query(query.to_json(), dry_run=True))

                def release_server(queries: list[Any], label: str) -> list[Answer]:
                    return [Answer.from_json(a) for a in client.query_batch(label, [q.to_json() for q in queries])]

                page = build_report(
                    loaded, spec, plan=plan_server, release=release_server,
                    budget=lambda: Budget.from_json(client.budget()), on_progress=on_progress,
                )  # fmt: skip
        else:
            loaded, table, book = local_study(protocol, entities, attributes, ledger)  # type: ignore[arg-type]
            spec = read_report_spec(loaded, spec_path)
            who = getpass.getuser()

            def plan_local(query: Any) -> Answer:
                return answer_query(table, query, loaded, book.spend, who, dry_run=True)

            def release_local(queries: list[Any], label: str) -> list[Answer]:
                return answer_queries(table, queries, loaded, book.spend, who, label)

            page = build_report(
                loaded, spec, plan=plan_local, release=release_local, budget=book.budget, on_progress=on_progress
            )
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_text(page, encoding="utf-8")
    temporary.replace(out)
    spent = spec.cost.shown(equivalent_delta(loaded))
    click.echo(f"wrote {out}: {len(spec.sections)} sections, spent {spent} of the privacy budget")
