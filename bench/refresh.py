"""Quarterly refresh: link N people, add four batches, compare with linking the final lists from scratch.

    .venv/bin/python -m bench.refresh [--people 20000] [--batches 4] [--new 0.05] [--corrected 0.02]
        [--withdrawn 0.01] [--seed 11] [--keep DIR]

The population is `pprl synth` data for the example protocol (3 agencies), drawn for the
people of the first link and of every batch at once; each party's list is encoded once.
The first link (`pprl link --state-out`) fits and freezes a model on the first quarter's
people. Each batch, per agency: the records of new people (about --new of its list),
--corrected of its clients' records corrected (their identifiers replaced by another
agency's copy of the same person, or a typo in the surname for people one agency knows;
re-encoded and sent under the client's token), --withdrawn of its clients withdrawn.

Per batch: the time of adding it (read the state, compare, solve, write the state) against
a full re-link of the same lists with the same frozen model (one process each; each timed
--repeat times in the run and the fastest kept, as the machine is shared: only the ratio
means anything), and the share of people whose
records did not change in the batch whose entity id did not change either. After the last
batch: pairwise F1 of the state against the truth, of a full re-link with the same model
(which must give the same entities), and of a full re-link that fits a new model.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import itertools
import math
import pstats
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.recall_causes import state_causes
from linkage.agency.encode import encode_csv
from linkage.encodings import EncodingsWriter, read_encodings
from linkage.evaluation.scores import pairwise_scores, read_truth, true_pairs
from linkage.evaluation.synth import synthesise_population
from linkage.matching.link_state import LinkState, read_state, write_state
from linkage.matching.refresh import refresh_state, start_state
from linkage.protocol import Protocol, load_protocol
from linkage.token_files import read_keymap

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "schemas" / "examples" / "social_services.json"
SECRET = bytes(range(32))
Record = tuple[str, str]


def read_rows(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, {row[0]: row for row in reader}


def write_batch(protocol: Protocol, party: str, check: str, records: np.ndarray, folder: Path) -> Path:
    folder.mkdir(parents=True)
    with EncodingsWriter(folder / "encodings.pprl", protocol=protocol, party=party, secret_check=check) as writer:
        writer.write(np.ascontiguousarray(records))
    return folder


def typo(text: str) -> str:
    """Swap two letters in the middle (a correction of a surname)."""
    if len(text) < 4:
        return text + "a"
    at = len(text) // 2
    return text[: at - 1] + text[at] + text[at - 1] + text[at + 1 :]


def entity_ids(state: LinkState, clients: dict[str, dict[bytes, str]]) -> dict[Record, int]:
    out = {}
    for index, party in enumerate(state.parties):
        tokens = state.records[index]["token"]
        for record, number in enumerate(state.entity[index].tolist()):
            out[(party, clients[party][tokens[record].tobytes()])] = number
    return out


def members(ids: dict[Record, int]) -> dict[int, frozenset[Record]]:
    """Each entity id's records."""
    groups: dict[int, set[Record]] = {}
    for record, number in ids.items():
        groups.setdefault(number, set()).add(record)
    return {number: frozenset(records) for number, records in groups.items()}


def f1_of(
    state: LinkState, clients: dict[str, dict[bytes, str]], truth: dict[Record, str]
) -> tuple[float, float, float]:
    present = {}
    groups = []
    for records in state.entities().values():
        group = [
            (state.parties[p], clients[state.parties[p]][state.records[p]["token"][r].tobytes()]) for p, r in records
        ]
        present.update(dict.fromkeys(group))
        if len(group) > 1:
            groups.append(group)
    actual, _ = true_pairs({record: person for record, person in truth.items() if record in present}, state.parties)
    scores = pairwise_scores(groups, actual)
    return scores.precision, scores.recall, scores.f1


def altered_row(
    protocol: Protocol,
    headers: dict[str, list[str]],
    rows: dict[str, dict[str, list[str]]],
    person: list[Record],
    party: str,
    client: str,
) -> list[str]:
    """The client's row with its identifiers from another agency's copy of the person (else a surname typo)."""
    row = list(rows[party][client])
    others = [r for r in person if r[0] != party]
    names = {f.name for f in protocol.fields}
    for column, name in enumerate(headers[party]):
        if name not in names:
            continue
        if others:
            row[column] = rows[others[0][0]][others[0][1]][headers[others[0][0]].index(name)]
        elif name == "surname":
            row[column] = typo(row[column])
    return row


def encode_rows(
    protocol: Protocol, party: str, header: list[str], rows: dict[str, list[str]], folder: Path
) -> dict[str, np.ndarray]:
    """Encode rows (keyed by client id) as the agency would: each client's record, under a new token."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    source = folder.parent / f"{party}.csv"
    with source.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for client, row in rows.items():
            writer.writerow([client, *row[1:]])
    encode_csv(protocol, party, SECRET, source, folder, workers=1)
    keymap = read_keymap(folder / "keymap.csv")
    return {keymap[r["token"].tobytes().hex()]: r.copy() for r in np.asarray(read_encodings(folder).records)}


def f1_all(
    state: LinkState, clients: dict[str, dict[bytes, str]], truth: dict[Record, str]
) -> tuple[float, float, float, str]:
    """Pairwise scores over every pair of records, within and across parties, and the errors of each kind."""
    predicted, people = set(), defaultdict(list)
    for records in state.entities().values():
        group = sorted(
            (state.parties[p], clients[state.parties[p]][state.records[p]["token"][r].tobytes()]) for p, r in records
        )
        predicted |= set(itertools.combinations(group, 2))
        for record in group:
            people[truth[record]].append(record)
    actual = {pair for group in people.values() for pair in itertools.combinations(sorted(group), 2)}
    found = len(predicted & actual)
    precision, recall = found / max(len(predicted), 1), found / max(len(actual), 1)
    parts = []
    for kind, within in (("within parties", True), ("across", False)):
        mine = {pair for pair in predicted if (pair[0][0] == pair[1][0]) == within}
        wanted = {pair for pair in actual if (pair[0][0] == pair[1][0]) == within}
        parts.append(f"{kind}: {len(mine - wanted):,} false and {len(wanted - mine):,} missed of {len(wanted):,}")
    return precision, recall, 2 * precision * recall / max(precision + recall, 1e-12), "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--new", type=float, default=0.05)
    parser.add_argument("--corrected", type=float, default=0.02)
    parser.add_argument("--withdrawn", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--duplicates", type=float, default=0.0, help="share of each agency's clients held twice")
    parser.add_argument("--dedupe", action="store_true", help="link and dedupe (pprl link --dedupe)")
    parser.add_argument("--repeat", type=int, default=3, help="time each side this many times, keep the fastest")
    parser.add_argument("--profile", action="store_true", help="print where the first batch's time goes")
    parser.add_argument(
        "--causes",
        type=int,
        metavar="N",
        help="after the last batch, put every missed true pair in a cause (bench/recall_causes.py); show N",
    )
    args = parser.parse_args()
    protocol = load_protocol(EXAMPLE)
    parties = [p.id for p in protocol.parties]
    work = args.keep or Path(tempfile.mkdtemp(prefix="pprl-refresh-"))
    try:
        run(args, protocol, parties, work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, protocol: Protocol, parties: list[str], work: Path) -> None:
    per_batch = math.ceil(args.new * args.people)
    total = args.people + args.batches * per_batch
    started = time.perf_counter()
    synthesise_population(protocol, total, args.seed, work / "data")
    truth = read_truth(work / "data" / "truth.csv")
    rng = np.random.default_rng(args.seed)
    people = sorted(set(truth.values()))
    # The first --people people (in a random order) are in the first link; then per_batch arrive per batch.
    ranks = rng.permutation(len(people)).tolist()
    arrival = {
        person: 0 if rank < args.people else min(args.batches, 1 + (rank - args.people) // per_batch)
        for rank, person in zip(ranks, people, strict=True)
    }
    headers, rows, records, tokens_of, clients = {}, {}, {}, {}, {}
    for party in parties:
        folder = work / "encoded" / party
        encode_csv(protocol, party, SECRET, work / "data" / f"{party}.csv", folder, workers=1)
        headers[party], rows[party] = read_rows(work / "data" / f"{party}.csv")
        keymap = read_keymap(folder / "keymap.csv")
        encoded = np.asarray(read_encodings(folder).records)
        records[party] = {keymap[row.tobytes().hex()]: encoded[i] for i, row in enumerate(encoded["token"])}
        tokens_of[party] = {client: record["token"].tobytes() for client, record in records[party].items()}
        clients[party] = {token: client for client, token in tokens_of[party].items()}
    check = read_encodings(work / "encoded" / parties[0]).header.secret_check
    person_records: dict[str, list[Record]] = defaultdict(list)
    for record, person in truth.items():
        person_records[person].append(record)
    for party in parties if args.duplicates else []:
        held = sorted(records[party])
        twins = [held[i] for i in rng.choice(len(held), round(args.duplicates * len(held)), replace=False)]
        new_rows = {
            f"DUP-{party}-{number:07d}": altered_row(
                protocol, headers, rows, person_records[truth[(party, c)]], party, c
            )
            for number, c in enumerate(twins)
        }
        for (client, row), twin in zip(new_rows.items(), twins, strict=True):
            rows[party][client] = [client, *row[1:]]
            truth[(party, client)] = truth[(party, twin)]
            person_records[truth[(party, twin)]].append((party, client))
        for client, record in encode_rows(
            protocol, party, headers[party], new_rows, work / "duplicates" / party
        ).items():
            records[party][client] = record
            tokens_of[party][client] = record["token"].tobytes()
            clients[party][record["token"].tobytes()] = client
    current = {party: {c for c in records[party] if arrival[truth[(party, c)]] == 0} for party in parties}
    print(
        f"{args.people:,} people in the first link, {per_batch:,} new people per batch; "
        f"records {', '.join(f'{p} {len(current[p]):,}' for p in parties)}; synthesised and encoded in "
        f"{time.perf_counter() - started:.0f} s"
    )

    def lists_folder(name: str) -> list[Path]:
        return [
            write_batch(
                protocol,
                party,
                check,
                np.stack([records[party][c] for c in sorted(current[party])]),
                work / name / party,
            )
            for party in parties
        ]

    first = lists_folder("first")
    started = time.perf_counter()
    state = start_state(protocol, [read_encodings(f) for f in first], dedupe=args.dedupe)
    print(
        f"first link (fit and freeze a model): {time.perf_counter() - started:.1f} s, "
        f"{len(state.pairs):,} accepted pairs, threshold {state.model.threshold:.3f}"
    )
    write_state(state, work / "state")
    precision, recall, f1 = f1_of(state, clients, truth)
    print(f"first link: pairwise precision {precision:.4f} recall {recall:.4f} F1 {f1:.4f}")
    ids_first = entity_ids(state, clients)
    never_touched = {person for person, value in arrival.items() if value == 0}
    ratios = []
    for batch in range(1, args.batches + 1):
        batch_records: dict[str, list[np.ndarray]] = {party: [] for party in parties}
        withdrawn: dict[str, list[str]] = {}
        touched: set[str] = set()
        for party in parties:
            added = [c for c in sorted(records[party]) if arrival[truth[(party, c)]] == batch]
            batch_records[party] += [records[party][c] for c in added]
            touched |= {truth[(party, c)] for c in added}
            held = sorted(current[party])
            chosen = rng.permutation(len(held))
            corrected = [held[i] for i in chosen[: round(args.corrected * len(held))]]
            gone = [held[i] for i in chosen[len(corrected) : len(corrected) + round(args.withdrawn * len(held))]]
            if corrected:
                new_rows = {
                    c: altered_row(protocol, headers, rows, person_records[truth[(party, c)]], party, c)
                    for c in corrected
                }
                for client, record in encode_rows(
                    protocol, party, headers[party], new_rows, work / f"corrections{batch}" / party
                ).items():
                    record["token"] = np.frombuffer(tokens_of[party][client], dtype=np.uint8)
                    rows[party][client] = new_rows[client]
                    records[party][client] = record
                    batch_records[party].append(record)
            withdrawn[party] = [tokens_of[party][c].hex() for c in gone]
            current[party] = (current[party] | set(added)) - set(gone)
            touched |= {truth[(party, c)] for c in corrected + gone}
        never_touched -= touched
        batch_folders = [
            write_batch(protocol, party, check, np.stack(batch_records[party]), work / f"batch{batch}" / party)
            for party in parties
            if batch_records[party]
        ]
        before = entity_ids(state, clients)
        profiler = cProfile.Profile() if args.profile and batch == 1 else None
        if profiler:
            profiler.enable()
        incremental, full = math.inf, math.inf
        for _ in range(args.repeat):
            started = time.perf_counter()
            previous = read_state(work / "state", protocol)
            new_state, summary = refresh_state(
                protocol, previous, [read_encodings(f) for f in batch_folders], withdrawn
            )
            write_state(new_state, work / "state.new")
            incremental = min(incremental, time.perf_counter() - started)
        (work / "state.new").replace(work / "state")
        state = new_state
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
        final = lists_folder(f"final{batch}")
        for _ in range(args.repeat):
            started = time.perf_counter()
            again = start_state(protocol, [read_encodings(f) for f in final], model=state.model, dedupe=args.dedupe)
            full = min(full, time.perf_counter() - started)
        after = entity_ids(state, clients)
        unchanged = [p for p, value in arrival.items() if value < batch and p not in touched]
        moved = [p for p in unchanged if any(before[r] != after[r] for r in person_records[p] if r in before)]
        stable = len(unchanged) - len(moved)
        # An unchanged person's id may go only when their entity's records changed: a new
        # or corrected record joined it, or it merged with another entity.
        members_before, members_after = members(before), members(after)
        evidence = sum(
            any(members_before[before[r]] != members_after[after[r]] for r in person_records[p] if r in before)
            for p in moved
        )
        same = {frozenset(m) for m in again.entities().values()} == {frozenset(m) for m in state.entities().values()}
        ratios.append(incremental / full)
        print(
            f"batch {batch}: {sum(summary.added.values()):,} added, {sum(summary.corrected.values()):,} corrected, "
            f"{sum(summary.withdrawn.values()):,} withdrawn; {summary.pairs_compared:,} pairs compared, "
            f"{summary.records_solved:,} records re-solved, {len(summary.retired):,} ids retired; "
            f"add {incremental:.2f} s vs full re-link {full:.2f} s (ratio {incremental / full:.3f}); "
            f"unchanged people with unchanged id {stable:,}/{len(unchanged):,} ({stable / len(unchanged):.4%}; "
            f"of the {len(moved):,} others, {evidence:,} had their entity's records change); "
            f"same entities as the full re-link: {same}"
        )
    last = entity_ids(state, clients)
    kept = sum(all(ids_first[r] == last[r] for r in person_records[p]) for p in never_touched)
    print(
        f"people untouched by every batch whose id is the first link's: {kept:,}/{len(never_touched):,} "
        f"({kept / len(never_touched):.4%})"
    )
    precision, recall, f1 = f1_of(state, clients, truth)
    print(f"after {args.batches} batches: pairwise precision {precision:.4f} recall {recall:.4f} F1 {f1:.4f}")
    p_same, r_same, f1_same = f1_of(again, clients, truth)
    print(f"full re-link, same frozen model: precision {p_same:.4f} recall {r_same:.4f} F1 {f1_same:.4f}")
    started = time.perf_counter()
    refit = start_state(protocol, [read_encodings(f) for f in final], dedupe=args.dedupe)
    refit_seconds = time.perf_counter() - started
    p_refit, r_refit, f1_refit = f1_of(refit, clients, truth)
    print(
        f"full re-link, model fitted again on the final lists ({refit_seconds:.1f} s): precision {p_refit:.4f} "
        f"recall {r_refit:.4f} F1 {f1_refit:.4f}; F1 difference (batches - refit) {f1 - f1_refit:+.4f}"
    )
    if args.duplicates or args.dedupe:
        for name, linked in (("after the batches", state), ("full re-link, model fitted again", refit)):
            p_all, r_all, f1_all_pairs, errors = f1_all(linked, clients, truth)
            print(
                f"{name}, every pair within and across parties: precision {p_all:.4f} recall {r_all:.4f} "
                f"F1 {f1_all_pairs:.4f} ({errors})"
            )
    print(f"time ratio per batch: {', '.join(f'{r:.3f}' for r in ratios)} (max {max(ratios):.3f})")
    if args.causes is not None:

        def client_of(party: int, record: int) -> Record:
            name = state.parties[party]
            return name, clients[name][state.records[party]["token"][record].tobytes()]

        def plaintext(party: int, record: int) -> dict[str, str]:
            name, client = client_of(party, record)
            return dict(zip(headers[name], rows[name][client], strict=True))

        state_causes(protocol, state, plaintext, lambda party, record: truth[client_of(party, record)], args.causes)


if __name__ == "__main__":
    main()
