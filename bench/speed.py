"""Linkage speed: pairs per second against anonlink, and scaling of a two-party link.

    .venv/bin/python bench/speed.py [--dice-people 40000] [--sizes 100000,300000,1000000] [--workers 2]

Part 1, comparison throughput, on the same CLKs (msd and police of a synthetic population):
  (a) anonlink: `dice_coefficient_accelerated` over all pairs, one thread, as anonlink
      users run it;
  (b) pprl: the engine's candidate stage with the protocol's CLK prefilter switched on, so
      that it scans all pairs with anonlink's Dice on every core *and* blocks and compares
      field by field the pairs it keeps. Pairs per second = all pairs / wall time.
Part 2, a two-party link (msd against police) of synthetic populations of each size, with
the example protocol's blocking: wall time, peak memory (this process and its workers,
sampled), candidates (and per record of the larger party), and blocking's pair
completeness from the truth.
Targets (issue 4): (b)/(a) >= 1.8 on 2 cores; 1M people in under 10 minutes with pair
completeness >= 0.99.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from memory_sampler import MemorySampler

from linkage.agency.encode import encode_csv
from linkage.evaluation.blocking import analyse_blocking
from linkage.evaluation.scores import read_truth, record_people
from linkage.evaluation.synth import synthesise_population
from linkage.matching.anonlink_bridge import clk_dataset, clk_dice_pairs
from linkage.matching.block import rule_spans
from linkage.matching.compare import comparisons_for, features_for
from linkage.matching.engine import load_inputs, score_candidates, select_and_solve
from linkage.matching.tasks import count_slice, executor, run_tasks
from linkage.protocol import load_protocol
from linkage.token_files import read_keymap

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "schemas" / "examples" / "social_services.json"
SECRET = bytes(range(32))
PARTIES = ("msd", "police")


def prepare(protocol, people: int, seed: int, root: Path, workers: int) -> tuple[list[Path], Path]:
    data = root / f"data-{people}"
    synthesise_population(protocol, people, seed, data)
    outs = []
    for party in PARTIES:
        out = root / f"{party}-{people}"
        encode_csv(protocol, party, SECRET, data / f"{party}.csv", out, workers=workers)
        outs.append(out)
    return outs, data


def throughput(protocol, outs: list[Path], workers: int) -> None:
    encodings = load_inputs(protocol, outs)
    clks = [clk_dataset(np.ascontiguousarray(item.records["clk"])) for item in encodings]
    pairs = len(clks[0]) * len(clks[1])
    started = time.perf_counter()
    clk_dice_pairs(clks[0], clks[1], 0.8)
    anonlink_seconds = time.perf_counter() - started
    scanning = dataclasses.replace(protocol, clk_prefilter=0.8)
    started = time.perf_counter()
    comparisons = comparisons_for(protocol)
    features = features_for(comparisons, protocol.comparison_groups)
    with executor(scanning, encodings, workers) as (runner, setup, parallelism):
        spans = rule_spans(rule.columns for rule in protocol.blocking)
        arguments = (setup, comparisons, features, spans)
        for _ in run_tasks(encodings, count_slice, arguments, runner, parallelism, None):
            pass
    pprl_seconds = time.perf_counter() - started
    print(f"\nPart 1: all {pairs:,} pairs of {len(clks[0]):,} x {len(clks[1]):,} CLKs, Dice threshold 0.8")
    print(f"  anonlink dice_coefficient_accelerated, 1 thread: {pairs / anonlink_seconds / 1e6:8.1f} M pairs/s")
    print(f"  pprl candidate stage, {workers} workers:           {pairs / pprl_seconds / 1e6:8.1f} M pairs/s")
    print(f"  ratio pprl / anonlink: {anonlink_seconds / pprl_seconds:.2f}")


def scaling(protocol, people: int, outs: list[Path], data: Path, workers: int) -> None:
    with MemorySampler() as memory:
        started = time.perf_counter()
        encodings = load_inputs(protocol, outs)
        scored = score_candidates(protocol, encodings, workers=workers)
        threshold = scored.threshold()
        entities, _ = select_and_solve(scored, threshold)
        seconds = time.perf_counter() - started
    keymaps = {party: read_keymap(out / "keymap.csv") for party, out in zip(PARTIES, outs, strict=True)}
    people_ids = record_people(encodings, keymaps, read_truth(data / "truth.csv"))
    blocking = analyse_blocking(protocol, encodings, people_ids)
    sizes = " x ".join(f"{item.header.record_count:,}" for item in encodings)
    print(
        f"{people:>10,} {sizes:>22} {seconds:9.1f} {memory.total / 2**20:9.0f} {blocking.candidate_pairs:>13,} "
        f"{blocking.candidates_per_record:>10.1f} {blocking.pair_completeness:8.4f} {len(entities):>9,}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dice-people", type=int, default=40_000)
    parser.add_argument("--sizes", default="100000,300000,1000000")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    protocol = load_protocol(PROTOCOL)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        outs, _ = prepare(protocol, args.dice_people, args.seed, tmp, args.workers)
        throughput(protocol, outs, args.workers)
        print("\nPart 2: two-party link (msd x police), example protocol blocking, auto threshold")
        columns = (
            ("people", 10),
            ("records", 22),
            ("seconds", 9),
            ("peak MiB", 9),
            ("candidates", 13),
            ("per record", 10),
            ("PC", 8),
        )
        print(" ".join(f"{name:>{width}}" for name, width in columns), f"{'entities':>9}")
        for people in (int(s) for s in args.sizes.split(",") if s):
            outs, data = prepare(protocol, people, args.seed, tmp, args.workers)
            scaling(protocol, people, outs, data, args.workers)


if __name__ == "__main__":
    main()
