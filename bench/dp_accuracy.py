"""DP accuracy: repeat every query type many times and compare the errors with what is stated.

    .venv/bin/python bench/dp_accuracy.py [--people 20000] [--reps 400] [--rho 0.05] [--seed 7]

The entity table comes from the real pipeline: `pprl synth` people for the example protocol,
encoded per party and linked by the engine. Each query is planned once (its noise calibrated
to the cost) and released `--reps` times; the truth is the same plan released without noise.

For every query the table prints, over all cells and repetitions:
  stated ±95%   the half-width the answer states (median over cells);
  coverage      the share of releases whose interval holds the truth (goal: 93-97%; the
                quantile's rank bound is conservative by design and reads higher);
  RMSE / σ      empirical root-mean-square error next to the analytic standard deviation
                of the mechanism's noise at that cost (goal: no worse, i.e. ratio <= ~1;
                post-processing such as the overlap projection may make it smaller);
  plan ms       planning the query with OpenDP and calibrating its noise, once;
  release ms    one release and its post-processing (mean over the repetitions).
"""

from __future__ import annotations

import argparse
import math
import shlex
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from linkage.evaluation.scores import encode_and_link
from linkage.protocol import Protocol, load_protocol
from linkage.token_files import write_entities
from stats.dp import Prepared, condition_expr, prepare
from stats.entities import read_entity_table
from stats.query import parse_query

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "schemas" / "examples" / "social_services.json"
SECRET = bytes(range(32))
NOISELESS = "1000000"


def build_table(protocol: Protocol, people: int, seed: int, folder: Path) -> pl.DataFrame:
    """Synthesise, encode and link; then the entity table as the statistics side builds it."""
    from linkage.evaluation.synth import synthesise_population

    synthesise_population(protocol, people, seed, folder / "data")
    result, _ = encode_and_link(protocol, SECRET, folder / "data", folder, workers=2)
    write_entities(result, folder / "entities.csv")
    files = [(party.id, folder / party.id / "attributes.csv") for party in protocol.parties]
    return read_entity_table(protocol, folder / "entities.csv", files)


def analytic_sigma(prepared: Prepared) -> float:
    """The standard deviation of the mechanism's noise on one cell."""
    row = prepared.summary.row(0, named=True)
    return math.sqrt(row["scale"] ** 2 * (2 if "Laplace" in row["distribution"] else 1))


def run(table: pl.DataFrame, protocol: Protocol, text: str, reps: int) -> list[dict[str, object]]:
    """Release one query ``reps`` times; one result row per table of the answer."""
    spec = parse_query(protocol, shlex.split(text))
    started = time.perf_counter()
    prepared = prepare(table, spec, protocol)
    plan_seconds = time.perf_counter() - started
    exact_spec = parse_query(protocol, shlex.split(text.replace(text.split("--rho ")[1], NOISELESS)))
    exact = prepare(table, exact_spec, protocol).release()
    truth = {c.key: c.value for c in exact.cells}
    truth_derived = {c.key: c.value for c in exact.derived}
    errors: dict[str, list[float]] = {"cells": [], "derived": []}
    covered: dict[str, list[bool]] = {"cells": [], "derived": []}
    widths: dict[str, list[float]] = {"cells": [], "derived": []}
    ranked = np.array([])
    if spec.kind == "quantile":  # the people the quantile is over, sorted, to find a value's rank
        name = spec.attribute.name
        people = table.filter(*(condition_expr(c) for c in spec.where), pl.col(name).is_not_null())
        ranked = np.sort(people[name].to_numpy())
    started = time.perf_counter()
    for _ in range(reps):
        answer = prepared.release()
        for part, cells, reference in (("cells", answer.cells, truth), ("derived", answer.derived, truth_derived)):
            for cell in cells:
                true = reference[cell.key]
                if cell.value is None or true is None or cell.half_width is None:
                    continue
                if spec.kind == "quantile":
                    rank_low = np.searchsorted(ranked, cell.value, side="left")
                    rank_high = np.searchsorted(ranked, cell.value, side="right")
                    target = (spec.q or 0.5) * len(ranked)
                    error = (
                        0.0 if rank_low <= target <= rank_high else min(abs(rank_low - target), abs(rank_high - target))
                    )
                else:
                    error = float(cell.value) - float(true)
                errors[part].append(error)
                covered[part].append(abs(error) <= cell.half_width)
                widths[part].append(cell.half_width)
    seconds = (time.perf_counter() - started) / reps
    rows = []
    for part in ("cells", "derived"):
        if not errors[part]:
            continue
        error = np.asarray(errors[part])
        if spec.kind == "mean":
            sigma = float(np.median(widths[part])) / 1.959964
            basis = "delta method"
        elif spec.kind == "quantile":
            sigma = float("nan")
            basis = "rank bound"
        elif part == "derived":
            sigma = float(np.median(widths[part])) / 1.959964
            basis = "normal approx."
        else:
            sigma = analytic_sigma(prepared)
            basis = "mechanism"
        rows.append(
            {
                "query": text if part == "cells" else "  ... 'known to all of' sets",
                "cells": len(errors[part]) // reps,
                "stated": float(np.median(widths[part])),
                "coverage": float(np.mean(covered[part])),
                "rmse": float(np.sqrt(np.mean(error**2))),
                "sigma": sigma,
                "basis": basis,
                "plan_ms": plan_seconds * 1000,
                "release_ms": seconds * 1000,
            }
        )
    return rows


QUERIES = (
    "count --rho {rho}",
    "count --by region --where member:police,msd --rho {rho}",
    "overlap --rho {rho}",
    "sum weeks_supported --where member:msd --rho {rho}",
    "mean housed_within_90_days --by member:police --where member:haven --rho {rho}",
    "mean weeks_supported --where shared --rho {rho}",
    "quantile months_in_nz --where member:haven --rho {rho}",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=400)
    parser.add_argument("--rho", type=float, default=0.05, help="The cost of each query.")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    protocol = load_protocol(PROTOCOL)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        table = build_table(protocol, args.people, args.seed, Path(folder))
        print(f"entity table: {table.height:,} people from {args.people:,} synthetic ones "
              f"({time.perf_counter() - started:.0f} s to synthesise, encode and link)")  # fmt: skip
    print(f"each query costs rho={args.rho}; {args.reps} releases each\n")
    header = (
        f"{'query':<78} {'cells':>5} {'stated ±95%':>11} {'coverage':>8} {'RMSE':>8} {'σ':>8} {'RMSE/σ':>7} "
        f"{'plan ms':>7} {'release ms':>10}  basis"
    )
    print(header)
    print("-" * len(header))
    for template in QUERIES:
        for row in run(table, protocol, template.format(rho=args.rho), args.reps):
            ratio = row["rmse"] / row["sigma"] if not math.isnan(row["sigma"]) else float("nan")
            print(
                f"{row['query']:<78} {row['cells']:>5} {row['stated']:>11.3g} {row['coverage']:>8.3f} "
                f"{row['rmse']:>8.3g} {row['sigma']:>8.3g} {ratio:>7.2f} {row['plan_ms']:>7.0f} "
                f"{row['release_ms']:>10.1f}  {row['basis']}"
            )


if __name__ == "__main__":
    main()
