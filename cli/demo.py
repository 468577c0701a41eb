"""The end-to-end tour behind ``make demo``: every step runs the real ``pprl`` command.

Run ``python -m cli.demo [--people N] [--out DIR]``. It synthesises three agencies'
client lists, makes a shared secret, encodes each list as that agency would on its own
machine, links the encodings as the linkage service would, and scores the result against
the synthetic truth. Each step says what it does and who would run it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

PROTOCOL = Path(__file__).resolve().parents[1] / "schemas" / "examples" / "social_services.json"
PARTIES = ("msd", "police", "haven")


def _step(title: str, who: str, args: list[str]) -> None:
    click.secho(f"\n== {title}", bold=True)
    click.echo(f"   ({who})")
    shown = " ".join(["pprl", *args])
    click.secho(f"   $ {shown}", fg="cyan")
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", "cli.main", *args], check=False)  # noqa: S603 - our own CLI
    if completed.returncode != 0:
        raise click.ClickException(f"step failed with exit code {completed.returncode}: {shown}")
    click.echo(f"   done in {time.perf_counter() - started:.1f} s")


@click.command()
@click.option("--people", type=click.IntRange(min=100), default=20_000, show_default=True, help="People to synthesise.")
@click.option("--seed", type=int, default=2026, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"), show_default=True)
def demo(people: int, seed: int, out: Path) -> None:
    """Run the whole local story: synth, keygen, encode per agency, link, evaluate.

    Example: python -m cli.demo --people 5000 --out /tmp/pprl-demo
    """
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    data, secret, entities = out / "data", out / "secret.key", out / "entities.csv"
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
        ["keygen", "--out", str(secret)],
    )
    for party in PARTIES:
        _step(
            f"Encode {party}'s client list",
            f"{party}'s data team, on its own machine: only encodings and outcome attributes leave it",
            [
                "encode",
                "--protocol",
                str(PROTOCOL),
                "--party",
                party,
                "--secret-file",
                str(secret),
                str(data / f"{party}.csv"),
                "--out",
                str(out / party),
                "--quiet",
            ],
        )
    _step(
        "Inspect what the linkage service receives",
        "anyone: the header of an encodings file",
        ["inspect", str(out / "msd")],
    )
    _step(
        "Link the three agencies' encodings",
        "the linkage service: sees tokens and encodings only, no names, dates or client ids",
        ["link", "--protocol", str(PROTOCOL), *(str(out / p) for p in PARTIES), "--out", str(entities), "--quiet"],
    )
    _step(
        "Score the linkage against the synthetic truth",
        "development only: real data has no truth file",
        [
            "evaluate",
            "--truth",
            str(data / "truth.csv"),
            "--entities",
            str(entities),
            *(arg for p in PARTIES for arg in ("--keymap", f"{p}={out / p / 'keymap.csv'}")),
        ],
    )
    click.secho("\nWhere things are:", bold=True)
    click.echo(f"  client lists (raw, stay at each agency): {data}/<party>.csv")
    click.echo(f"  key maps (token -> client id, stay at each agency): {out}/<party>/keymap.csv")
    click.echo(f"  encodings (sent to the linkage service): {out}/<party>/encodings.pprl")
    click.echo(f"  entities (linkage service output): {entities}")


if __name__ == "__main__":
    demo()
