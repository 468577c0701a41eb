"""The end-to-end tour behind ``make demo``: every step runs the real ``pprl`` command.

Run ``python -m cli.demo [--people N] [--out DIR]``. It synthesises three agencies'
client lists, makes a shared secret, encodes each list as that agency would on its own
machine, starts the linkage service on loopback (SQLite in a folder of its own), creates
a project, uploads each agency's encodings, runs the linkage, downloads each permitted
agency's results, answers an analyst's questions with differential privacy, writes the
ministry's report, shows the budget ledger, withdraws one of Haven's clients; then a
quarter later each agency sends its new clients as a batch, the service links only them,
and the Ministry downloads what changed for its clients; it shows the audit log, stops the
service, scores a local link against the synthetic truth, and adds the next quarter's new
clients and two withdrawals to that link. Each step says what it does and who would run it.
"""

from __future__ import annotations

import csv
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

EXAMPLES = Path(__file__).resolve().parents[1] / "schemas" / "examples"
PROTOCOL = EXAMPLES / "social_services.json"
REPORT_SPEC = EXAMPLES / "quarterly_report.yaml"
PARTIES = ("msd", "police", "haven")


def _step(title: str, who: str, args: list[str], *, expect_failure: bool = False) -> None:
    click.secho(f"\n== {title}", bold=True)
    click.echo(f"   ({who})")
    shown = " ".join(["pprl", *args])
    click.secho(f"   $ {shown}", fg="cyan")
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", "cli.main", *args], check=False)  # noqa: S603 - our own CLI
    if (completed.returncode != 0) != expect_failure:
        raise click.ClickException(f"step ended with exit code {completed.returncode}: {shown}")
    click.echo(f"   done in {time.perf_counter() - started:.1f} s")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


STARTUP_SECONDS = 120


@contextmanager
def _service(data_dir: Path, admin_secret: Path, log: Path) -> Iterator[str]:
    """`pprl serve` on a free loopback port for the duration of the block."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        "serve", "--data-dir", str(data_dir), "--admin-secret-file", str(admin_secret), "--port", str(port),
        "--api-docs",
    ]  # fmt: skip
    click.secho("\n== Start the linkage service", bold=True)
    click.echo("   (the trusted linkage unit: SQLite in its data folder, on loopback only)")
    click.secho(f"   $ pprl {' '.join(args)} &", fg="cyan")
    with log.open("w") as output:
        server = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "cli.main", *args], stdout=output, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):  # noqa: S310 - loopback URL we built
                    break
            except OSError:
                if server.poll() is not None:
                    raise click.ClickException(f"the service did not start; see {log}") from None
                if time.monotonic() > deadline:
                    raise click.ClickException(
                        f"the service did not answer on {url} within {STARTUP_SECONDS} s; see {log} "
                        "(a very busy machine: run `make demo` again)"
                    ) from None
                time.sleep(0.2)
        click.echo(f"   listening on {url} (API description at {url}/openapi.json; log in {log})")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        click.secho("\n== Stop the linkage service", bold=True)


@click.command()
@click.option("--people", type=click.IntRange(min=100), default=20_000, show_default=True, help="People to synthesise.")
@click.option("--seed", type=int, default=2026, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"), show_default=True)
def demo(people: int, seed: int, out: Path) -> None:
    """Run the whole story: synth, keygen, encode, serve, upload, run, results, query, report, audit, evaluate.

    Example: python -m cli.demo --people 5000 --out /tmp/pprl-demo
    """
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    data, secret, entities, state = out / "data", out / "secret.key", out / "entities.csv", out / "state.pprl"
    admin, tokens = out / "admin.secret", out / "tokens"
    click.secho("pprl demo: three agencies find the clients they share, without sharing who they are", bold=True)
    _step(
        "Check the information-sharing protocol",
        "every party, before anything else",
        ["protocol", "validate", str(PROTOCOL)],
    )
    _step(
        f"Synthesise {people:,} people across three agencies",
        "test data: overlapping clients with typos, nicknames, moves, swapped dates",
        [
            "synth",
            "--protocol",
            str(PROTOCOL),
            "--people",
            str(people),
            "--seed",
            str(seed),
            "--out",
            str(data),
            "--quiet",
        ],
    )
    _step(
        "Make the shared secret",
        "one agency, shared with the others, never with the linkage service",
        ["keygen", "--out", str(secret), "--purpose", "shared"],
    )
    for party in PARTIES:
        _step(
            f"Encode {party}'s client list",
            f"{party}'s data team, on its own machine: only encodings and outcome attributes leave it",
            ["encode", "--protocol", str(PROTOCOL), "--party", party, "--secret-file", str(secret),
             str(data / f"{party}.csv"), "--out", str(out / party), "--quiet"],
        )  # fmt: skip
    _step(
        "Inspect what the linkage service receives",
        "anyone: the header of an encodings file",
        ["inspect", str(out / "msd")],
    )
    _step(
        "Make the service's admin secret",
        "the linkage unit's operator",
        ["keygen", "--out", str(admin), "--purpose", "admin"],
    )
    with _service(out / "service", admin, out / "service.log") as url:
        _step(
            "Create the project from the agreed protocol",
            "the linkage unit's operator: one credential per agency and one for analysts, shown once",
            ["project", "create", "--server", url, "--admin-secret-file", str(admin), "--protocol", str(PROTOCOL),
             "--out-dir", str(tokens)],
        )  # fmt: skip
        for party in PARTIES:
            _step(
                f"Upload {party}'s encodings and outcome attributes",
                f"{party}'s data team: the key map never leaves its machine",
                [
                    "upload",
                    "--server",
                    url,
                    "--token-file",
                    str(tokens / f"{party}.token"),
                    str(out / party),
                    "--quiet",
                ],
            )
        _step(
            "Link the three agencies' encodings",
            "any agency starts the run; the service sees tokens and encodings only, no names, dates or ids",
            ["run", "--server", url, "--token-file", str(tokens / "msd.token"), "--wait", "--quiet"],
        )
        for party in ("msd", "haven"):
            _step(
                f"Download {party}'s results",
                f"{party}'s data team: which of its consenting clients other agencies know, as its own client ids",
                ["results", "--server", url, "--token-file", str(tokens / f"{party}.token"),
                 "--keymap", str(out / party / "keymap.csv"), "--out", str(out / f"{party}-shared.csv")],
            )  # fmt: skip
        _step(
            "Police ask for record-level results, which this protocol does not allow them",
            "police's data team: the service refuses and says why (the serious-threat route is separate and audited)",
            ["results", "--server", url, "--token-file", str(tokens / "police.token"),
             "--keymap", str(out / "police" / "keymap.csv"), "--out", str(out / "police-shared.csv")],
            expect_failure=True,
        )  # fmt: skip
        analyst = ["--server", url, "--token-file", str(tokens / "analyst.token")]
        for title, query in (
            ("How many clients do the agencies share?", ["overlap", "--rho", "0.1"]),
            ("Where are the clients both Police and the Ministry know?",
             ["count", "--by", "region", "--where", "member:police,msd", "--rho", "0.05"]),
            ("Are Haven clients also known to Police housed as quickly?",
             ["mean", "housed_within_90_days", "--where", "member:haven", "--by", "member:police", "--rho", "0.05"]),
        ):  # fmt: skip
            _step(
                title,
                "an outcome analyst: differentially private answers with 95% intervals, each spending privacy budget",
                ["query", *analyst, *query],
            )
        _step(
            "Write the quarterly report for the ministry",
            "ministry reporting: charts with intervals from DP answers only, checked against the budget first",
            ["report", *analyst, "--spec", str(REPORT_SPEC), "--out", str(out / "report.html"), "--quiet"],
        )
        _step(
            "Ask for more than the budget has left",
            "an outcome analyst: refused, nothing spent",
            ["query", *analyst, "count", "--rho", "0.9"],
            expect_failure=True,
        )
        _step("Show the privacy budget ledger", "the analyst or an auditor: every release, who, when, cost",
              ["budget", *analyst])  # fmt: skip
        # A client asks Haven to withdraw their record: Haven copies its key map's row of that client.
        keymap = (out / "haven" / "keymap.csv").read_text("utf-8").splitlines()
        leaving = out / "haven-leaving.csv"
        leaving.write_text("\n".join(keymap[:2]) + "\n", "utf-8")
        _step(
            "One of Haven's clients withdraws",
            "haven's data team: the record leaves the stored encodings, the results and the statistics; the audit "
            "log keeps the count and the token's SHA-256, the budget ledger what was released",
            ["withdraw", "--server", url, "--token-file", str(tokens / "haven.token"), "--tokens-file", str(leaving),
             "--yes"],
        )  # fmt: skip
        _encode_next_quarter(out, secret, max(people // 20, 10), seed + 1)
        _service_quarter(out, url, tokens)
        _step(
            "Read the audit log",
            "the linkage unit's operator, or an auditor",
            ["audit", "--server", url, "--admin-secret-file", str(admin)],
        )
    _step(
        "Link the same encodings locally, keeping the linkage state",
        "development: the same engine in one process, to score it against the truth",
        ["link", "--protocol", str(PROTOCOL), *(str(out / p) for p in PARTIES), "--out", str(entities),
         "--state-out", str(state), "--quiet"],
    )  # fmt: skip
    _step(
        "Score the linkage against the synthetic truth",
        "development only: real data has no truth file",
        ["evaluate", "--truth", str(data / "truth.csv"), "--entities", str(entities),
         *(arg for p in PARTIES for arg in ("--keymap", f"{p}={out / p / 'keymap.csv'}"))],
    )  # fmt: skip
    _next_quarter(out, state)
    click.secho("\nWhere things are:", bold=True)
    click.echo(f"  client lists (raw, stay at each agency):            {data}/<party>.csv")
    click.echo(f"  key maps (token -> client id, stay at each agency): {out}/<party>/keymap.csv")
    click.echo(f"  encodings (sent to the linkage service):            {out}/<party>/encodings.pprl")
    click.echo(f"  results of each permitted agency:                   {out}/msd-shared.csv, {out}/haven-shared.csv")
    click.echo(f"  msd's changes after its batch:                      {out}/msd-changes.csv")
    click.echo(f"  the ministry's report (open in a browser, print):   {out}/report.html")
    click.echo(f"  the service's data and log:                         {out}/service/, {out}/service.log")
    click.echo(f"  entities of the local link:                         {entities}")
    click.echo(f"  the next quarter's entities (and retired ids):      {out}/entities-q2.csv (.retired.csv)")


def _encode_next_quarter(out: Path, secret: Path, people: int, seed: int) -> None:
    """A quarter later: new people arrive, and each agency encodes only its new clients."""
    data = out / "data-q2"
    _step(
        f"Next quarter: {people:,} new people arrive",
        "test data: each agency's new clients since the last quarter",
        ["synth", "--protocol", str(PROTOCOL), "--people", str(people), "--seed", str(seed), "--out", str(data),
         "--quiet"],
    )  # fmt: skip
    for party in PARTIES:
        _step(
            f"Encode {party}'s new clients",
            f"{party}'s data team: only the new and changed records, with the same secret",
            ["encode", "--protocol", str(PROTOCOL), "--party", party, "--secret-file", str(secret),
             str(data / f"{party}.csv"), "--out", str(out / f"{party}-q2"), "--quiet"],
        )  # fmt: skip


def _service_quarter(out: Path, url: str, tokens: Path) -> None:
    """Each agency sends its new clients as a batch, the service links them, the Ministry downloads its changes."""
    for party in PARTIES:
        _step(
            f"Send {party}'s new clients to the service as a batch",
            f"{party}'s data team: only the new clients; the service adds them to {party}'s list",
            ["upload", "--server", url, "--token-file", str(tokens / f"{party}.token"), str(out / f"{party}-q2"),
             "--batch", "--quiet"],
        )  # fmt: skip
    msd = ["--server", url, "--token-file", str(tokens / "msd.token")]
    _step(
        "Link the batches",
        "any agency: the new records are linked against what the service holds; entity ids are kept",
        ["run", *msd, "--wait", "--quiet"],
    )
    changes = out / "msd-changes.csv"
    _step(
        "Download what changed for msd's clients since its last download",
        "msd's data team: its clients newly known to, or no longer known to, other agencies",
        ["results", *msd, "--keymap", str(out / "msd" / "keymap.csv"), "--keymap", str(out / "msd-q2" / "keymap.csv"),
         "--out", str(out / "msd-shared-q2.csv"), "--changes-out", str(changes)],
    )  # fmt: skip
    with changes.open(encoding="utf-8") as handle:
        kinds = Counter(row["change"] for row in csv.DictReader(handle))
    counted = ", ".join(f"{kinds[kind]} {kind}" for kind in ("linked", "unlinked", "withdrawn") if kinds[kind])
    click.echo(f"   what changed for msd's clients: {counted or 'nothing'}")


def _next_quarter(out: Path, state: Path) -> None:
    """The same quarter locally: the new clients and two of Haven's withdrawals are added to the local link."""
    withdrawn = out / "haven-withdrawn.csv"
    keymap = (out / "haven" / "keymap.csv").read_text().splitlines()
    withdrawn.write_text("\n".join(keymap[:3]) + "\n")  # the header and two clients who left Haven
    _step(
        "Add the quarter to the linkage: only the new records are compared",
        "development here, as the service did with the batches",
        ["link", "--protocol", str(PROTOCOL), *(str(out / f"{p}-q2") for p in PARTIES), "--previous", str(state),
         "--state-out", str(state), "--withdraw", f"haven={withdrawn}", "--out", str(out / "entities-q2.csv")],
    )  # fmt: skip


if __name__ == "__main__":
    demo()
