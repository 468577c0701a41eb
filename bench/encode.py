"""Encoding speed: `pprl encode` against plain single-process clkhash, on the same records.

    .venv/bin/python bench/encode.py [--sizes 10000,100000] [--workers 2] [--seed 7]

For each size it synthesises that many people for the example protocol, takes the
`msd` client list, and
  (a) runs `pprl encode` (a subprocess, as an agency would), timing it and reading its
      peak memory (resident memory of the command and its pool workers, summed, sampled);
  (b) normalises the same rows the way pprl does and hands them to
      `clkhash.clk.generate_clks(..., max_workers=1)` with the derived linkage schema.
It prints records/s for both and their ratio, and the CPU seconds of each (pprl's summed over
the command and its pool workers) and clkhash CPU / pprl CPU, which a loaded machine disturbs
far less than wall time. Targets (issue 3): ratio >= 2 on 2 cores, memory flat from 10k to 1M
records; issue 17: the hardened example at least as fast as clkhash.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import clkhash.clk
import psutil

from linkage.agency.hashing import load_clkhash_schema
from linkage.agency.records import prepare_rows
from linkage.evaluation.synth import synthesise_population
from linkage.protocol import Hardening, load_protocol, with_hardening

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "schemas" / "examples" / "social_services.json"


def clkhash_rows(protocol, path: Path) -> list[list[str]]:
    columns = protocol.columns_for("msd")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        positions = [header.index(c) for c in columns]
        raw = [(n, [row[i] for i in positions]) for n, row in enumerate(reader, start=2)]
    prepared = prepare_rows(protocol, "msd", raw)
    return [
        ["" if v is None else v.strftime("%Y%m%d") if isinstance(v, dt.date) else v for v in values]
        for values in prepared.values
    ]


def peak_rss_mib(command: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Run a command; return (seconds, peak of the summed resident memory of it and its workers, CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=ROOT)  # noqa: S603 - our own CLI, from this checkout
    tree = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            peak = max(peak, sum(p.memory_info().rss for p in [tree, *tree.children(recursive=True)]))
        except psutil.Error:
            pass
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit(f"command failed: {' '.join(command)}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, peak / 2**20, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated numbers of people")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--clkhash-limit", type=int, default=100_000, help="largest size to time clkhash on")
    args = parser.parse_args()
    protocol = load_protocol(PROTOCOL)
    schema = load_clkhash_schema(protocol)
    secret = bytes(range(32))
    print(
        f"{'people':>9} {'records':>9} {'hardening':>16} {'pprl rec/s':>11} {'peak MiB':>9} "
        f"{'clkhash rec/s':>14} {'ratio':>6} {'pprl CPU s':>10} {'clkhash CPU s':>13} {'CPU ratio':>9}"
    )
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        secret_file = tmp / "secret.key"
        secret_file.write_text(secret.hex())
        # clkhash hashes unhardened values: pprl is timed without hardening against it,
        # and with the protocol's hardening for what that costs.
        plain = tmp / "plain.json"
        plain.write_text(json.dumps(with_hardening(protocol, Hardening()).document))
        variants = [("none", plain)]
        if protocol.hardening.active:
            variants.append((protocol.hardening.label, PROTOCOL))
        for size in (int(s) for s in args.sizes.split(",")):
            data = tmp / f"data-{size}"
            synthesise_population(protocol, size, args.seed, data)
            clients = data / "msd.csv"
            records = sum(1 for _ in clients.open()) - 1
            clk_text, clk_rate, clk_cpu = f"{'(skipped)':>14}", None, None
            if size <= args.clkhash_limit:
                rows = clkhash_rows(protocol, clients)
                started, started_cpu = time.perf_counter(), time.process_time()
                clkhash.clk.generate_clks(rows, schema, secret, max_workers=1)
                clk_rate = len(rows) / (time.perf_counter() - started)
                clk_cpu = time.process_time() - started_cpu
                clk_text = f"{clk_rate:14,.0f}"
            for label, protocol_path in variants:
                out = tmp / f"out-{size}-{label}"
                command = [
                    sys.executable,
                    "-m",
                    "cli.main",
                    "encode",
                    "--protocol",
                    str(protocol_path),
                    "--party",
                    "msd",
                    "--secret-file",
                    str(secret_file),
                    str(clients),
                    "--out",
                    str(out),
                    "--quiet",
                    "--workers",
                    str(args.workers),
                ]
                seconds, peak, cpu = peak_rss_mib(command, {**os.environ, "PYTHONPATH": str(ROOT)})
                pprl_rate = records / seconds
                ratio = f"{pprl_rate / clk_rate:6.2f}" if clk_rate else f"{'-':>6}"
                cpu_text = f"{clk_cpu:13.1f} {clk_cpu / cpu:9.2f}" if clk_cpu else f"{'-':>13} {'-':>9}"
                print(
                    f"{size:9,} {records:9,} {label:>16} {pprl_rate:11,.0f} {peak:9.0f} {clk_text} {ratio} "
                    f"{cpu:10.1f} {cpu_text}",
                    flush=True,
                )
    print(
        "pprl: whole `pprl encode` command (CSV parsing, normalisation, CLK + field encodings + block keys, "
        "writing three files) with its process pool;"
    )
    print("clkhash: generate_clks on already-normalised rows, one process, CLKs only.")


if __name__ == "__main__":
    main()
