"""How a synthetic population's true pairs disagree: the error profile behind the quality numbers.

    .venv/bin/python bench/synth_errors.py [--people 20000] [--seed 7] [--profile realistic]

Synthesises the example protocol's parties, normalises every record as `pprl encode` does,
and prints, over all true cross-party pairs, the share whose two records differ (after
normalisation) or miss a value on one side, field by field, and the date situations that
decide what a salt keeps: the year differs, the day and month differ, both differ, or the
date is missing on one side (each such pair shares no year salt).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import tempfile
from pathlib import Path

from linkage.agency.risk import read_identifiers
from linkage.evaluation.scores import read_truth
from linkage.evaluation.synth import synthesise_population
from linkage.protocol import load_protocol

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "schemas" / "examples" / "social_services.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", default="realistic")
    args = parser.parse_args()
    protocol = load_protocol(EXAMPLE)
    names = [spec.name for spec in protocol.fields]
    date = names.index("date_of_birth")
    with tempfile.TemporaryDirectory() as tmp_name:
        folder = Path(tmp_name) / "synth"
        synthesise_population(protocol, args.people, args.seed, folder, profile=args.profile)
        values = {}
        for party in protocol.parties:
            ids, rows = read_identifiers(protocol, party.id, folder / f"{party.id}.csv")
            values.update({(party.id, client): row for client, row in zip(ids, rows, strict=True)})
        people = collections.defaultdict(list)
        for record, person in read_truth(folder / "truth.csv").items():
            if record in values:
                people[person].append(record)
    counts: collections.Counter[str] = collections.Counter()
    pairs = 0
    for records in people.values():
        for a, b in itertools.combinations(records, 2):
            if a[0] == b[0]:
                continue
            pairs += 1
            row_a, row_b = values[a], values[b]
            for position, name in enumerate(names):
                if (row_a[position] is None) != (row_b[position] is None):
                    counts[f"{name}: missing on one side"] += 1
                elif row_a[position] is not None and row_a[position] != row_b[position]:
                    counts[f"{name}: differs"] += 1
            da, db = row_a[date], row_b[date]
            if da is not None and db is not None:
                year = da.year != db.year
                month_day = sorted((da.day, da.month)) != sorted((db.day, db.month))
                counts["date: year differs"] += year
                counts["date: day and month differ"] += month_day
                counts["date: year and day-month both differ"] += year and month_day
            if da is None or db is None or da.year != db.year:
                counts["date: no shared year salt (missing or year differs)"] += 1
    print(f"synth ({args.profile}), {args.people:,} people, seed {args.seed}: {pairs:,} true cross-party pairs")
    for key in sorted(counts):
        print(f"  {key:<56} {counts[key]:6,} {counts[key] / pairs:7.2%}")


if __name__ == "__main__":
    main()
