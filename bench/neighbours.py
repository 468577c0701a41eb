"""Neighbour test: delete one person's records, encode and link again, count the rows that moved.

    .venv/bin/python -m bench.neighbours [--people 3000] [--seed 7] [--deletions 200]
        [--febrl] [--baseline 28] [--workers 1] [--keep DIR]

The population is `pprl synth` data for the example protocol (3 agencies), or FEBRL4 as
two of its agencies (--febrl). Every party is encoded once; a model is fitted on everyone
and frozen (`pprl link --save-model`); that run's stable mapping is the statistics table
with everyone. Then, for each of --deletions people, their rows are taken out of every
client file, the files that changed are encoded again (encoding is per record, so the
other parties' encodings are what they would be), and the records are linked again with
the frozen model. The rows of the statistics table that differ (a row is the set of
(party, client id) records it holds) must be at most the declared bound, rows_bound(P) = P²,
for every person.

People are chosen, with the seed, so that every hard case is in: every person with a
record in an ambiguous cluster (two records of one party linked together), every person
whose records the linkage split over several rows (up to a quarter of the deletions),
then people known to 1, 2 and 3 parties in equal shares.

--baseline N also runs N deletions through the linkage as it was before (a model fitted
on each population, term frequencies, the `auto` threshold, the greedy solver), counting
the trials in which other people's rows moved.

--harder F multiplies every corruption rate of the synthetic population by F (capped at
0.9): more typos, moves and missing values, so more missed and false links.

--half-widths prints what the bound costs in accuracy: the stated 95% half-width (median
cell) of the example report's queries, and a few more, at rows_per_person 1 (before) and
at the derived bound (after), on this population's stable mapping (a mean's half-width
depends on its noisy count: per cell, the median over 21 releases).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linkage.agency.encode import encode_csv
from linkage.evaluation.febrl import write_febrl4
from linkage.evaluation.neighbours import Move, delete_person, entity_rows, measure_move, people_of
from linkage.evaluation.scores import pairwise_scores, read_truth, true_pairs
from linkage.evaluation.synth import Corruption, synthesise_population
from linkage.matching.engine import LinkResult, link, load_inputs
from linkage.matching.frozen import FrozenModel
from linkage.matching.stable import rows_bound
from linkage.protocol import Protocol, load_protocol
from linkage.token_files import read_keymap

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "schemas" / "examples" / "social_services.json"
SECRET = bytes(range(32))
Record = tuple[str, str]


@dataclass(frozen=True)
class Trial:
    person: str
    kind: str
    parties: int
    move: Move


def encode_all(protocol: Protocol, parties: list[str], data: Path, out: Path, workers: int) -> list[Path]:
    folders = []
    for party in parties:
        folder = out / party
        encode_csv(protocol, party, SECRET, data / f"{party}.csv", folder, workers=workers)
        folders.append(folder)
    return folders


def f1_of(result: LinkResult, folders: list[Path], truth: dict[Record, str], entities: list) -> float:  # type: ignore[type-arg]
    actual, _ = true_pairs(truth, result.parties)
    rows = [sorted(row) for row in entity_rows(result, folders, entities) if len(row) > 1]
    return pairwise_scores(rows, actual).f1


def choose_people(
    people: dict[str, list[Record]], before: list[frozenset[Record]], ambiguous: set[Record], count: int, seed: int
) -> list[tuple[str, str]]:
    """(person, why chosen): every ambiguous-cluster person, split people, then 1/2/3-party people."""
    rng = np.random.default_rng(seed)
    row_of = {record: row for row in before for record in row}
    chosen: list[tuple[str, str]] = []
    taken: set[str] = set()

    def take(candidates: list[str], kind: str, limit: int) -> None:
        order = rng.permutation(len(candidates))
        for index in order[: max(0, limit)]:
            chosen.append((candidates[index], kind))
            taken.add(candidates[index])

    names = sorted(people)
    take([p for p in names if any(r in ambiguous for r in people[p])], "ambiguous cluster", count // 4)
    split = [p for p in names if p not in taken and len({row_of[r] for r in people[p]}) > 1]
    take(split, "split over rows", count // 4)
    by_size: dict[int, list[str]] = defaultdict(list)
    for person in names:
        if person not in taken:
            by_size[len({party for party, _ in people[person]})].append(person)
    sizes = sorted(by_size)
    left = count - len(chosen)
    for position, size in enumerate(sizes):
        share = left // (len(sizes) - position)
        before_count = len(chosen)
        take(by_size[size], f"known to {size}", share)
        left -= len(chosen) - before_count
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--deletions", type=int, default=200)
    parser.add_argument("--febrl", action="store_true", help="FEBRL4 as msd and police instead of synth")
    parser.add_argument("--baseline", type=int, default=0, help="deletions to run through the old linkage too")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--half-widths", action="store_true", help="also print the half-widths before and after")
    parser.add_argument("--harder", type=float, default=1.0, help="multiply the synth corruption rates by this")
    args = parser.parse_args()

    protocol = load_protocol(EXAMPLE)
    work = args.keep or Path(tempfile.mkdtemp(prefix="pprl-neighbours-"))
    data = work / "data"
    if not data.exists():
        if args.febrl:
            write_febrl4(protocol, data, ("msd", "police"))
        else:
            rates = {
                f.name: min(0.9, getattr(Corruption(), f.name) * args.harder) for f in dataclasses.fields(Corruption)
            }
            # The basic profile: --harder scales its rates (the realistic profile has its own),
            # and docs/privacy-unit.md's numbers were measured on that generator.
            synthesise_population(
                protocol, args.people, args.seed, data, corruption=Corruption(**rates), profile="basic"
            )
    parties = [p.id for p in protocol.parties if (data / f"{p.id}.csv").exists()]
    truth = read_truth(data / "truth.csv")
    people = people_of(truth)
    bound = rows_bound(len(parties))
    print(
        f"population: {'FEBRL4' if args.febrl else f'synth {args.people} people, seed {args.seed}'}; "
        f"{len(truth)} records of {len(parties)} parties; declared bound {bound} rows"
    )

    started = time.perf_counter()
    folders = encode_all(protocol, parties, data, work / "everyone", args.workers)
    fresh = link(protocol, load_inputs(protocol, folders), workers=args.workers)
    frozen_run = link(protocol, load_inputs(protocol, folders), workers=args.workers, freeze=True)
    model: FrozenModel = frozen_run.model  # type: ignore[assignment]
    stable = frozen_run.stable
    assert stable is not None
    before = entity_rows(frozen_run, folders)
    print(
        f"fitted and froze the model in {time.perf_counter() - started:.1f} s (machine shared); "
        f"threshold {model.threshold:.4f}"
    )
    print(
        f"pairwise F1: greedy, model fitted per run (as before) {f1_of(fresh, folders, truth, fresh.entities):.4f}; "
        f"greedy, frozen model {f1_of(frozen_run, folders, truth, frozen_run.entities):.4f}; "
        f"stable mapping {f1_of(frozen_run, folders, truth, stable.entities):.4f}; "
        f"stable == greedy: {stable.entities == frozen_run.entities}"
    )
    print(
        f"ambiguous clusters {stable.ambiguous_clusters} ({stable.ambiguous_records} records); "
        f"audit: any one deletion moves at most {stable.worst_deletion} rows of these records"
    )

    if args.half_widths:
        half_widths(protocol, frozen_run, folders, work)
    ambiguous_records = _ambiguous_records(frozen_run, folders)
    chosen = choose_people(people, before, ambiguous_records, args.deletions, args.seed)
    trials: list[Trial] = []
    for number, (person, kind) in enumerate(chosen, start=1):
        records = people[person]
        step = work / f"without-{number}"
        changed = delete_person(data, records, step / "data", protocol.client_id_column)
        inputs = []
        for party, folder in zip(parties, folders, strict=True):
            if party in changed:
                encode_csv(protocol, party, SECRET, changed[party], step / party, workers=1)
                inputs.append(step / party)
            else:
                inputs.append(folder)
        result = link(protocol, load_inputs(protocol, inputs), workers=args.workers, model=model)
        move = measure_move(before, entity_rows(result, inputs), records)
        trials.append(Trial(person, kind, len({p for p, _ in records}), move))
        if move.rows > bound:
            print(f"  BOUND EXCEEDED: person {person} ({kind}) moved {move.rows} rows")
        shutil.rmtree(step)
    if trials:
        _summary(trials, bound)

    if args.baseline:
        print(
            f"\nbaseline (model fitted per run, term frequencies, auto threshold, greedy), {args.baseline} deletions:"
        )
        fresh_before = entity_rows(fresh, folders, fresh.entities)
        moved_others = 0
        worst = (0, 0, 0.0)
        for number, (person, _) in enumerate(chosen[-args.baseline :], start=1):
            records = people[person]
            step = work / f"baseline-{number}"
            changed = delete_person(data, records, step / "data", protocol.client_id_column)
            inputs = []
            for party, folder in zip(parties, folders, strict=True):
                if party in changed:
                    encode_csv(protocol, party, SECRET, changed[party], step / party, workers=1)
                    inputs.append(step / party)
                else:
                    inputs.append(folder)
            result = link(protocol, load_inputs(protocol, inputs), workers=args.workers)
            move = measure_move(fresh_before, entity_rows(result, inputs, result.entities), records)
            moved_others += move.others > 0
            worst = (max(worst[0], move.rows), max(worst[1], move.others), max(worst[2], move.overlap_l2))
            shutil.rmtree(step)
        print(
            f"  other people's rows moved in {moved_others} of {args.baseline} trials; "
            f"max rows {worst[0]}, max others' rows {worst[1]}, max overlap L2 {worst[2]:.2f}"
        )
    print(f"\ntotal {time.perf_counter() - started:.0f} s (machine shared)")
    if not args.keep:
        shutil.rmtree(work)


def _ambiguous_records(result: LinkResult, folders: list[Path]) -> set[Record]:
    """The records of the run's ambiguous clusters, as (party, client id)."""
    clients = [_clients(folder, tokens) for folder, tokens in zip(folders, result.tokens, strict=True)]
    clusters = result.stable.ambiguous if result.stable is not None else []
    return {(result.parties[p], clients[p][r]) for cluster in clusters for p, r in cluster}


def _clients(folder: Path, tokens: np.ndarray) -> list[str]:
    keymap = read_keymap(folder / "keymap.csv")
    return [keymap[token.tobytes().hex()] for token in tokens]


def half_widths(protocol: Protocol, result: LinkResult, folders: list[Path], work: Path) -> None:
    """Median-cell 95% half-widths of the example report's queries at one row per person and at the bound."""
    import shlex

    import yaml

    from linkage.token_files import write_entities
    from stats.dp import prepare, preview, release
    from stats.entities import read_entity_table
    from stats.query import parse_query

    write_entities(result, work / "stable.csv", stable=True)
    attributes = [(folder.name, folder / "attributes.csv") for folder in folders]
    table = read_entity_table(protocol, work / "stable.csv", attributes)
    spec = yaml.safe_load((ROOT / "schemas" / "examples" / "quarterly_report.yaml").read_text())
    queries = [(section["query"], section["share"] * spec["spend"]["rho"]) for section in spec["sections"]]
    queries.append(("sum weeks_supported --where weeks_supported>=10", 0.05))
    before = dataclasses.replace(protocol, rows_per_person=1)  # what releases were calibrated at
    print(f"\nhalf-widths (95%, median cell) on {table.height} rows: rows_per_person 1 -> {protocol.rows_per_person}")
    for query, rho in queries:
        widths = []
        for calibrated in (before, protocol):
            prepared = prepare(table, parse_query(calibrated, shlex.split(f"{query} --rho {rho:g}")), calibrated)
            cells = [c.half_width for c in preview(prepared).cells if c.half_width is not None]
            if not cells:  # a mean's half-width needs its noisy count: the median over 21 releases
                runs = [[c.half_width or 0.0 for c in release(prepared).cells] for _ in range(21)]
                cells = [float(np.median(column)) for column in zip(*runs, strict=True)]
            widths.append(float(np.median(cells)))
        print(f"  {query:<66} rho {rho:<6g} ±{widths[0]:<10.4g} ±{widths[1]:.4g}")


def _summary(trials: list[Trial], bound: int) -> None:
    print(f"\n{len(trials)} deletions; declared bound {bound} rows")
    print(
        f"{'chosen as':<22}{'n':>4}{'max rows':>10}{'mean rows':>11}{'others moved':>14}"
        f"{'max others':>12}{'max L2':>8}{'> bound':>9}"
    )
    kinds = Counter(t.kind for t in trials)
    for kind in sorted(kinds):
        group = [t for t in trials if t.kind == kind]
        _line(kind, group, bound)
    _line("all", trials, bound)


def _line(label: str, group: list[Trial], bound: int) -> None:
    rows = [t.move.rows for t in group]
    print(
        f"{label:<22}{len(group):>4}{max(rows):>10}{np.mean(rows):>11.2f}"
        f"{sum(t.move.others > 0 for t in group):>14}{max(t.move.others for t in group):>12}"
        f"{max(t.move.overlap_l2 for t in group):>8.2f}{sum(r > bound for r in rows):>9}"
    )


if __name__ == "__main__":
    main()
