"""The ``pprl`` command line: thin shells over the library (parse, call, render)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import click

from cli.checking import SHARING_NOTE, render_check, render_choice
from cli.common import PprlGroup, progress, protocol_file_option, protocol_option, read_secret
from linkage.agency.columns import parse_columns, read_mapping_file
from linkage.agency.secret import generate_secret, write_secret
from linkage.agency.sheets import read_ahead
from linkage.protocol import Protocol, load_protocol

# Commands defined in other modules, imported when one of them is run or listed: `pprl encode`
# then loads neither the linking engine nor the service's HTTP client (a quarter of a second).
_ELSEWHERE = {
    "link": ("cli.linking", "link"),
    "evaluate": ("cli.linking", "evaluate"),
    "risk": ("cli.risk", "risk"),
    "encoder": ("cli.encoder", "encoder"),
    "serve": ("cli.service", "serve"),
    # cli.erasure adds remove-party and delete to cli.service's project group.
    "project": ("cli.erasure", "project"),
    "upload": ("cli.service", "upload"),
    "run": ("cli.service", "run_command"),
    "status": ("cli.service", "status"),
    "results": ("cli.service", "results"),
    "audit": ("cli.service", "audit"),
    "serious-threat": ("cli.service", "serious_threat_group"),
    "withdraw": ("cli.erasure", "withdraw"),
    "query": ("cli.query", "query"),
    "budget": ("cli.query", "budget"),
    "report": ("cli.report", "report"),
}


class _MainGroup(PprlGroup):
    """The top group: the commands of :data:`_ELSEWHERE` are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, sorted, without importing any."""
        return sorted({*super().list_commands(ctx), *_ELSEWHERE})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, imported from its module the first time."""
        if cmd_name not in self.commands and cmd_name in _ELSEWHERE:
            module, attribute = _ELSEWHERE[cmd_name]
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_MainGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pprl")
def main() -> None:
    """Privacy-preserving record linkage and statistics for agencies that share clients.

    Agencies encode their client lists locally (keygen, encode), a linkage service matches
    the encodings (link), and analysts get differentially private statistics.

    Example: pprl protocol validate schemas/examples/social_services.json
    """


@main.group(cls=PprlGroup)
def protocol() -> None:
    """Check information-sharing protocol files.

    Example: pprl protocol validate schemas/examples/social_services.json
    """


@protocol.command("validate")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def protocol_validate(file: Path) -> None:
    """Validate a protocol and print its fingerprint.

    The fingerprint is the SHA-256 of everything in the protocol that affects encodings;
    every agency must see the same one before encoding. On error, every problem is listed
    with its JSON path.

    Example: pprl protocol validate schemas/examples/social_services.json
    """
    loaded = load_protocol(file)
    click.echo(f"{file}: valid protocol {loaded.name!r} with parties {', '.join(p.id for p in loaded.parties)}")
    click.echo(f"fingerprint: {loaded.fingerprint}")


KEYGEN_ADVICE = {
    "shared": "the agencies' shared secret: give it to the other agencies by a secure channel, never to the "
    "linkage service or the statistics side",
    "admin": "the service's admin secret: give it to `pprl serve --admin-secret-file` and to the administrator "
    "only, never to an agency or an analyst",
}


@main.command()
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="File to create.")
@click.option(
    "--purpose",
    type=click.Choice(["shared", "admin"]),
    help="shared: the secret the agencies encode with; admin: the service's admin secret. Only changes the advice.",
)
def keygen(out: Path, purpose: str | None) -> None:
    """Create a new 256-bit secret in a file only you can read (mode 0600).

    The same kind of secret serves two purposes: the agencies' shared secret (share it
    with the other agencies by a secure channel, never with the service) or the service's
    admin secret (for `pprl serve` and the administrator only). An existing file is never
    overwritten.

    Example: pprl keygen --out secret.key --purpose shared
    """
    write_secret(out, generate_secret())
    click.echo(f"wrote a new 256-bit secret to {out} (mode 0600)")
    for name, advice in KEYGEN_ADVICE.items():
        if purpose in (None, name):
            click.echo(f"  {'if it is ' if purpose is None else ''}{advice}")


@main.command()
@protocol_option
@click.option("--people", type=click.IntRange(min=1), required=True, help="Number of distinct people.")
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed, same files.")
@click.option(
    "--profile",
    type=click.Choice(["realistic", "basic"]),
    default="realistic",
    show_default=True,
    help="realistic: households and the errors real client lists show (docs/synthetic-data.md); "
    "basic: the earlier, milder generator.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to create.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def synth(protocol: Protocol, people: int, seed: int, profile: str, out: Path, quiet: bool) -> None:
    """Generate realistic synthetic client files for every party of a protocol.

    People overlap between parties and their records are corrupted as real records are
    (typos, mistyped years, nicknames and transliterations, changed surnames, swapped day
    and month, moves, PO boxes, missing values; households share an address and a surname).
    Writes OUT/<party>.csv and OUT/truth.csv (party,client_id,person_id).

    Example: pprl synth --protocol schemas/examples/social_services.json --people 20000 --seed 7 --out data
    """
    from linkage.evaluation.synth import synthesise_population

    with progress("synthesising", quiet=quiet) as on_progress:
        summary = synthesise_population(protocol, people, seed, out, profile=profile, on_progress=on_progress)
    for party, count in summary.records_by_party.items():
        click.echo(f"{party}: {count} records -> {out / (party + '.csv')}")
    click.echo(f"truth: {out / 'truth.csv'} ({summary.people} people)")


@main.command()
@protocol_file_option
@click.option("--party", required=True, help="Your party id in the protocol.")
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File written by `pprl keygen`. Default: the PPRL_SECRET environment variable.",
)
@click.argument("input_file", metavar="INPUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Folder to create (not with --check).")
@click.option("--sheet", help="The spreadsheet's sheet to read (default: the first).")
@click.option(
    "--columns",
    "column_options",
    multiple=True,
    metavar="COL=NAME,...",
    help='Your file\'s name for protocol columns, e.g. given_name="First Name",date_of_birth=DOB.',
)
@click.option(
    "--mapping",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A saved mapping file (YAML: columns, and optionally sheet); --columns and --sheet win over it.",
)
@click.option("--check", is_flag=True, help="Read and normalise everything, print a quality summary, write nothing.")
@click.option(
    "--on-error",
    type=click.Choice(["fail", "skip"]),
    default="fail",
    show_default=True,
    help="fail: stop on any bad row, listing all; skip: encode the rest, list bad rows in rejected.csv.",
)
@click.option("--workers", type=click.IntRange(min=1), help="Processes to use (default: every core).")
@click.option(
    "--dask",
    metavar="tcp://HOST:PORT",
    help="Encode on this Dask scheduler instead. Its workers receive the keys derived from the secret "
    "and your clients' rows: use only a cluster inside your agency, never the linkage service's.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def encode(
    protocol_file: Path,
    party: str,
    secret_file: Path | None,
    input_file: Path,
    out: Path | None,
    sheet: str | None,
    column_options: tuple[str, ...],
    mapping: Path | None,
    check: bool,
    on_error: str,
    workers: int | None,
    dask: str | None,
    quiet: bool,
) -> None:
    """Encode your client list for linkage, on your own machine.

    INPUT is a CSV (UTF-8, comma-separated) or a spreadsheet (.xlsx, .ods) with a header row.
    Columns are found by the protocol's names or their usual names (First Name, Surname,
    DOB...); the choice is printed. Name the others with --columns or a --mapping file.
    With --check, nothing is written and no secret is needed: a summary per column says what
    is missing, refused or suspicious (placeholders such as UNKNOWN or 01/01/1900).

    Writes OUT/encodings.pprl (for the linkage service), OUT/attributes.csv (token, consent
    and outcome columns, for the statistics side) and OUT/keymap.csv (token -> your client
    id: it never leaves your agency). Nothing is written unless all of it is complete.
    With --dask, the rows are encoded on your agency's own Dask cluster: its workers hold
    the derived keys while encoding, so it must be trusted like this machine.

    Example: pprl encode --protocol protocol.json --party msd --secret-file secret.key clients.xlsx --out msd-out
    """
    columns: dict[str, str] = {}
    if mapping is not None:
        saved = read_mapping_file(mapping)
        columns.update(saved.columns)
        sheet = sheet or saved.sheet
    for option in column_options:
        columns.update(parse_columns(option))
    if check and (out is not None or dask is not None):
        raise click.UsageError("--check writes nothing and runs here: leave out --out and --dask")
    if not check and out is None:
        raise click.UsageError("Missing option '--out' (the folder to create), or pass --check")
    # A spreadsheet's sheet is parsed in the background (about a second for 100,000 rows)
    # while the protocol is validated and numpy, the normaliser and, to encode, the hashing
    # layers are imported here.
    read_ahead(input_file, sheet)
    protocol = load_protocol(protocol_file)
    if check:
        from linkage.agency.check import check_file

        with progress(f"checking {input_file.name}", quiet=quiet) as on_progress:
            checked = check_file(
                protocol, party, input_file, sheet=sheet, columns=columns, workers=workers, on_progress=on_progress
            )
        click.echo(render_check(checked))
        return
    assert out is not None  # noqa: S101 - refused above without --check
    secret = read_secret(secret_file)
    # Imported here: the encoder brings clkhash and the hashing layers, which --check never needs.
    from linkage.agency.encode import encode_csv

    with progress(f"encoding {input_file.name}", quiet=quiet) as on_progress:
        summary = encode_csv(
            protocol,
            party,
            secret,
            input_file,
            out,
            sheet=sheet,
            columns=columns,
            on_error=on_error,
            workers=workers,
            dask=dask,
            on_progress=on_progress,
        )
    if summary.columns is not None:
        for line in render_choice(summary.columns):
            click.echo(line, err=True)
    for warning in summary.warnings:
        click.echo(f"Warning: {warning}", err=True)
    rate = summary.records / summary.seconds if summary.seconds else 0.0
    click.echo(
        f"encoded {summary.records} records for {party} ({summary.rejected} rejected) "
        f"in {summary.seconds:.1f} s ({rate:,.0f} records/s)"
    )
    for file in summary.files:
        click.echo(f"  {file}")
    click.echo(f"protocol fingerprint: {summary.fingerprint}")
    click.echo(SHARING_NOTE)


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the header as JSON.")
def inspect(file: Path, as_json: bool) -> None:
    """Show the header of an encodings file (or of the folder `pprl encode` wrote).

    Example: pprl inspect msd-out/encodings.pprl
    """
    from linkage.encodings import read_header  # numpy, which most commands need not wait for

    header = read_header(file)
    if as_json:
        click.echo(header.to_json())
        return
    click.echo(f"format:       {header.format} v{header.format_version}")
    click.echo(f"protocol:     {header.protocol}")
    click.echo(f"fingerprint:  {header.fingerprint}")
    click.echo(f"party:        {header.party}")
    click.echo(f"records:      {header.record_count}")
    click.echo(f"clk bits:     {header.clk_bits}")
    click.echo(f"secret check: {header.secret_check}")
    click.echo(f"record bytes: {header.dtype.itemsize}")
    click.echo("layout:       " + json.dumps([list(item) for item in header.layout]))
    click.echo("blocking:     " + ", ".join(header.blocking))


if __name__ == "__main__":
    main()
