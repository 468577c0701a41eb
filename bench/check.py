"""`pprl encode --check` against `pprl encode` on the same 100k-row client list (issue 20).

    .venv/bin/python bench/check.py [--rows 100000] [--rounds 3] [--workers N] [--xlsx]

Synthesises people for the example protocol until msd has ``--rows`` clients, writes them
as a CSV (and with ``--xlsx`` also as a spreadsheet with other column names and date cells),
then runs the two commands as an agency would (subprocesses), alternating check and
encode in each round so that both see the same load. Prints each round's wall and CPU
seconds (the command and its pool workers) and the check/encode ratios, and their median.
Goal: the check takes under a quarter of the encode time.
"""

from __future__ import annotations

import argparse
import csv
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from linkage.agency.columns import format_columns
from linkage.evaluation.synth import synthesise_population
from linkage.protocol import load_protocol

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "schemas" / "examples" / "social_services.json"
PPRL = [sys.executable, "-m", "cli.main"]


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, children included) of a command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)  # noqa: S603 - our own CLI
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def client_list(root: Path, rows: int) -> Path:
    protocol = load_protocol(PROTOCOL)
    synthesise_population(protocol, int(rows * 1.36) + 1000, 20, root / "data")
    path = root / "clients.csv"
    with (root / "data" / "msd.csv").open(newline="") as source, path.open("w", newline="") as target:
        reader, writer = csv.reader(source), csv.writer(target)
        writer.writerow(next(reader))
        count = 0
        for row in reader:
            writer.writerow(row)
            count += 1
            if count == rows:
                break
    assert count == rows, f"the synth gave {count} msd rows, fewer than {rows}"
    return path


def spreadsheet(root: Path, path: Path) -> tuple[Path, list[str]]:
    sys.path.insert(0, str(ROOT))
    from tests.helpers import EXPORT_COLUMNS, agency_export, write_xlsx

    header, rows = agency_export(path)
    return write_xlsx(root / "clients.xlsx", {"Clients": [header, *rows]}), [
        "--columns",
        format_columns(EXPORT_COLUMNS),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--xlsx", action="store_true", help="also a spreadsheet of the same rows")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        secret = root / "secret.key"
        secret.write_text("ab" * 32 + "\n")
        inputs = [(client_list(root, args.rows), [])]
        if args.xlsx:
            inputs.append(spreadsheet(root, inputs[0][0]))
        workers = ["--workers", str(args.workers)] if args.workers else []
        for path, extra in inputs:
            common = [*PPRL, "encode", "--protocol", str(PROTOCOL), "--party", "msd", str(path), "--quiet", *extra]
            ratios, cpu_ratios = [], []
            for number in range(args.rounds):
                check = timed([*common, *workers, "--check"])
                out = root / f"out-{path.suffix[1:]}-{number}"
                encode = timed(
                    [*common, *workers, "--secret-file", str(secret), "--out", str(out), "--on-error", "skip"]
                )
                ratios.append(check[0] / encode[0])
                cpu_ratios.append(check[1] / encode[1])
                print(
                    f"{path.name} round {number + 1}: check {check[0]:.1f} s wall / {check[1]:.1f} s CPU, "
                    f"encode {encode[0]:.1f} s wall / {encode[1]:.1f} s CPU, "
                    f"ratio {ratios[-1]:.3f} wall, {cpu_ratios[-1]:.3f} CPU"
                )
            print(
                f"{path.name}, {args.rows} rows: median check/encode {statistics.median(ratios):.3f} wall, "
                f"{statistics.median(cpu_ratios):.3f} CPU (goal < 0.25)"
            )


if __name__ == "__main__":
    main()
