"""Does the linkage depend on the order of its input, and where are its misses?

    .venv/bin/python -m bench.ties [--people 20000] [--seed 7] [--febrl] [--orders 3]
                                   [--workers 1] [--work DIR] [--variants hardened,unhardened]
                                   [--freeze] [--no-similarity]

Synthesises the realistic profile (or writes FEBRL4 mapped onto the example protocol's
columns, `--febrl`), encodes every party once per variant (the example protocol hardened,
and the same protocol with its hardening removed, one secret), then links each variant
(`--freeze`: weighed as the service's frozen model weighs, without term frequencies)
with the records of every party in `--orders` orders: order 0 as `pprl encode` wrote
them, order k a seeded shuffle of each file's records (same tokens, same key maps). Each
link is `pprl link`'s: fitted model, `auto` threshold, greedy solver.

Prints over ALL records: pairwise precision, recall and F1 per order; for order 0 the
true pairs missed by how their two dates relate (and how many of those fell below the
threshold, the rest lost in the solver, and how many had their given and family names
swapped); the false pairs by what their two records share (a household: the same
normalised surname and address); with `--freeze`, the ambiguous clusters of the stable
mapping (docs/privacy-unit.md). With `--work DIR` the data
and encodings are kept and reused by the next run (so code changes can be compared on
the same encodings).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from linkage.agency.encode import encode_csv
from linkage.agency.risk import read_identifiers
from linkage.encodings import Encodings, EncodingsWriter
from linkage.evaluation.febrl import febrl_protocol, write_febrl4
from linkage.evaluation.scores import pairwise_scores, read_truth, true_pairs
from linkage.evaluation.synth import synthesise_population
from linkage.matching import solve
from linkage.matching.engine import load_inputs, score_candidates, select_and_solve
from linkage.matching.stable import stable_entities
from linkage.protocol import Hardening, Protocol, load_protocol, with_hardening
from linkage.token_files import read_keymap

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "schemas" / "examples" / "social_services.json"
SECRET = bytes(range(32))
Record = tuple[str, str]


def shuffled(protocol: Protocol, outs: Sequence[Path], folder: Path, seed: int) -> list[Path]:
    """Each party's encodings with its records in a seeded random order (tokens unchanged)."""
    rng = np.random.default_rng(seed)
    paths = []
    for item in load_inputs(protocol, outs):
        out = folder / item.header.party
        out.mkdir(parents=True, exist_ok=True)
        path = out / "encodings.pprl"
        if not path.exists():
            records = np.asarray(item.records)[rng.permutation(item.header.record_count)]
            with EncodingsWriter(
                path, protocol=protocol, party=item.header.party, secret_check=item.header.secret_check
            ) as writer:
                writer.write(records)
        paths.append(path)
    return paths


def client_records(encodings: Sequence[Encodings], keymaps: Sequence[dict[str, str]]) -> list[list[str]]:
    return [
        [keymap[token.tobytes().hex()] for token in np.ascontiguousarray(item.records["token"])]
        for item, keymap in zip(encodings, keymaps, strict=True)
    ]


def date_relation(a: object, b: object) -> str:
    if not isinstance(a, dt.date) or not isinstance(b, dt.date):
        return "a date missing"
    if a == b:
        return "same date"
    same_year = a.year == b.year
    same_day_month = sorted((a.day, a.month)) == sorted((b.day, b.month))
    if same_year:
        return "same year, day/month differ" + (" (swapped)" if same_day_month else "")
    if same_day_month:
        return "year differs, same day/month"
    return "both differ (no shared salt)"


def names_swapped(row_a: Sequence[object], row_b: Sequence[object], given: int, surname: int) -> bool:
    """The two records' names hold the same words, but the given name is not the same (given and family swapped)."""
    words = [sorted(f"{row[given] or ''} {row[surname] or ''}".split()) for row in (row_a, row_b)]
    return bool(words[0]) and words[0] == words[1] and row_a[given] != row_b[given]


def run(protocol: Protocol, data: Path, folder: Path, args: argparse.Namespace) -> None:
    truth = read_truth(data / "truth.csv")
    parties = [p.id for p in protocol.parties]
    actual, _ = true_pairs(truth, parties)
    plain: dict[Record, tuple[object, ...]] = {}
    names = [spec.name for spec in protocol.fields]
    for party in parties:
        ids, rows = read_identifiers(protocol, party, data / f"{party}.csv")
        plain.update({(party, client): row for client, row in zip(ids, rows, strict=True)})
    date, given, surname, address = (names.index(n) for n in ("date_of_birth", "given_name", "surname", "address"))
    print(f"\n{data.name}: {len(actual):,} true cross-party pairs")
    for variant in args.variants.split(","):
        chosen = protocol if variant == "hardened" else with_hardening(protocol, Hardening())
        base = folder / variant
        outs = [base / party for party in parties]
        for party, out in zip(parties, outs, strict=True):
            if not (out / "encodings.pprl").exists():
                encode_csv(chosen, party, SECRET, data / f"{party}.csv", out, workers=args.workers)
        keymaps = [read_keymap(out / "keymap.csv") for out in outs]
        for order in range(args.orders):
            paths = list(outs) if order == 0 else shuffled(chosen, outs, folder / f"{variant}-order-{order}", order)
            encodings = load_inputs(chosen, paths)
            clients = client_records(encodings, keymaps)
            scored = score_candidates(chosen, encodings, workers=args.workers, freeze=args.freeze)
            threshold = scored.threshold()
            entities, accepted = select_and_solve(scored, threshold)
            clusters = [[(parties[p], clients[p][r]) for p, r in entity.records] for entity in entities]
            scores = pairwise_scores(clusters, actual)
            print(
                f"  {variant:<10} order {order}: P {scores.precision:.4f} R {scores.recall:.4f} F1 {scores.f1:.4f}"
                f"  (TP {scores.true_positives}, FP {scores.false_positives}, FN {scores.false_negatives};"
                f" threshold {threshold:.3f}, accepted {accepted})"
            )
            if order:
                continue
            if args.freeze:
                keep = scored.probability >= threshold
                stable = stable_entities(
                    scored.party_a[keep],
                    scored.party_b[keep],
                    scored.record_a[keep],
                    scored.record_b[keep],
                    scored.weight[keep],
                    scored.sizes,
                    audit=False,
                )
                print(
                    f"    ambiguous clusters (where the per-person bound does not hold): {stable.ambiguous_clusters}"
                    f" holding {stable.ambiguous_records} records"
                )
            predicted = {(a, b) for group in clusters for a in group for b in group if a[0] != b[0] and a < b}
            probability = {
                tuple(sorted(((parties[pa], clients[pa][ra]), (parties[pb], clients[pb][rb])))): p
                for pa, pb, ra, rb, p in zip(
                    scored.party_a.tolist(),
                    scored.party_b.tolist(),
                    scored.record_a.tolist(),
                    scored.record_b.tolist(),
                    scored.probability.tolist(),
                    strict=True,
                )
            }
            by_relation: collections.Counter[str] = collections.Counter()
            missed: collections.Counter[str] = collections.Counter()
            below: collections.Counter[str] = collections.Counter()
            swapped: collections.Counter[str] = collections.Counter()
            for pair in actual:
                a, b = pair
                if a not in plain or b not in plain:
                    relation = "a record refused at encoding"
                else:
                    relation = date_relation(plain[a][date], plain[b][date])
                by_relation[relation] += 1
                if pair not in predicted:
                    missed[relation] += 1
                    swapped[relation] += a in plain and b in plain and names_swapped(plain[a], plain[b], given, surname)
                    if probability.get(pair, 0.0) < threshold:
                        below[relation] += 1
            print(
                "    misses by date relation (true pairs; missed; of those below the threshold;"
                " missed with given and family name swapped):"
            )
            for relation, count in by_relation.most_common():
                print(
                    f"      {relation:<40} {count:6,} {missed[relation]:5,} {below[relation]:5,} {swapped[relation]:5,}"
                )
            kinds: collections.Counter[str] = collections.Counter()
            for a, b in predicted - actual:
                row_a, row_b = plain.get(a), plain.get(b)
                if row_a is None or row_b is None:
                    kinds["a record refused at encoding"] += 1
                    continue
                same_surname = bool(row_a[surname]) and row_a[surname] == row_b[surname]
                same_address = bool(row_a[address]) and row_a[address] == row_b[address]
                kinds[
                    "household (same surname and address)"
                    if same_surname and same_address
                    else "same address only"
                    if same_address
                    else "same surname only"
                    if same_surname
                    else "neither"
                ] += 1
            print(
                "    false links by what the two records share: "
                + ", ".join(f"{k} {v}" for k, v in kinds.most_common())
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--febrl", action="store_true", help="FEBRL4 instead of the synth")
    parser.add_argument("--orders", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--variants", default="hardened,unhardened")
    parser.add_argument(
        "--freeze", action="store_true", help="weigh as a frozen model does (no term frequencies), as the service links"
    )
    parser.add_argument(
        "--no-similarity", action="store_true", help="ablation: break ties by token rank only (TIE_BREAK 0)"
    )
    parser.add_argument("--work", type=Path, default=None, help="keep data and encodings here and reuse them")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.no_similarity:
        solve.TIE_BREAK = 0.0  # read at each call; with --workers 1 every call is in this process
    with tempfile.TemporaryDirectory() as tmp_name:
        work = args.work or Path(tmp_name)
        protocol = load_protocol(EXAMPLE)
        if args.febrl:
            protocol = febrl_protocol(protocol, ("msd", "police"))
            data = work / "febrl4"
            if not (data / "truth.csv").exists():
                write_febrl4(protocol, data, ("msd", "police"))
        else:
            data = work / f"synth-{args.people}-{args.seed}"
            if not (data / "truth.csv").exists():
                synthesise_population(protocol, args.people, args.seed, data, profile="realistic")
        run(protocol, data, work / f"{data.name}-encodings", args)


if __name__ == "__main__":
    main()
