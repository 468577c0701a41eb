"""Neighbouring populations: how far the statistics table moves when one person leaves.

Differential privacy for people promises that any release is about as likely with or
without one person. The releases see the statistics table (one row per entity, or per
record no entity holds), so what matters is how many of its rows one person's records
can move: take a person's records out of every agency's client file, encode again, link
again with the same frozen model, and count the rows that differ. The bound the releases
are calibrated at (:func:`linkage.matching.stable.rows_bound`) must hold for every person.

Rows are compared by the records they hold, ``(party, client id)``: a row that holds the
same records holds the same attributes, so this count is at least the distance between
the two tables as multisets of rows, the distance OpenDP calibrates at.
"""

from __future__ import annotations

import csv
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linkage.matching.engine import LinkResult
from linkage.matching.solve import Entity
from linkage.token_files import read_keymap

__all__ = ["Move", "delete_person", "entity_rows", "measure_move", "people_of"]

Record = tuple[str, str]  # (party, client id)
Row = frozenset[Record]


@dataclass(frozen=True)
class Move:
    """How far the statistics table moved when one person's records were taken out.

    Attributes:
        rows: rows in one table and not the other (the symmetric difference).
        others: of those, rows that hold none of the person's records: other people's rows
            that moved (a row that held the person's records is expected to go).
        overlap_l2: the L2 norm of the change of the overlap cells (people by the set of
            parties that know them).
    """

    rows: int
    others: int
    overlap_l2: float


def people_of(truth: Mapping[Record, str]) -> dict[str, list[Record]]:
    """Each person's records, from a truth file's ``{(party, client id): person id}``."""
    people: dict[str, list[Record]] = defaultdict(list)
    for record, person in truth.items():
        people[person].append(record)
    return dict(people)


def entity_rows(result: LinkResult, folders: Sequence[Path], entities: Sequence[Entity] | None = None) -> list[Row]:
    """The rows of the statistics table, as the records each holds.

    Args:
        result: a link result.
        folders: each party's encode folder, in the result's party order (for the key maps).
        entities: the entities to use (default: the stable mapping, else the greedy one).

    Returns:
        One row per entity and one per record no entity holds.
    """
    if entities is None:
        entities = result.stable.entities if result.stable is not None else result.entities
    keymaps = [read_keymap(folder / "keymap.csv") for folder in folders]
    clients = [[keymaps[p][token.tobytes().hex()] for token in tokens] for p, tokens in enumerate(result.tokens)]
    rows: list[Row] = []
    linked: set[tuple[int, int]] = set()
    for entity in entities:
        rows.append(frozenset((result.parties[p], clients[p][r]) for p, r in entity.records))
        linked.update(entity.records)
    for party, names in enumerate(clients):
        rows += [frozenset({(result.parties[party], name)}) for r, name in enumerate(names) if (party, r) not in linked]
    return rows


def measure_move(before: Sequence[Row], after: Sequence[Row], person: Sequence[Record]) -> Move:
    """How far the table moved from ``before`` (everyone) to ``after`` (without ``person``)."""
    old, new = Counter(before), Counter(after)
    moved = (old - new) + (new - old)
    theirs = set(person)
    others = sum(count for row, count in moved.items() if not row & theirs)

    def cells(rows: Counter[Row]) -> Counter[frozenset[str]]:
        out: Counter[frozenset[str]] = Counter()
        for row, count in rows.items():
            out[frozenset(party for party, _ in row)] += count
        return out

    old_cells, new_cells = cells(old), cells(new)
    change = [old_cells[key] - new_cells[key] for key in old_cells.keys() | new_cells.keys()]
    return Move(rows=sum(moved.values()), others=others, overlap_l2=math.sqrt(float(np.sum(np.square(change)))))


def delete_person(data: Path, person: Sequence[Record], out: Path, client_id_column: str) -> dict[str, Path]:
    """Write every party's client file of ``data`` without the person's rows, into ``out``.

    Args:
        data: a folder of ``<party>.csv`` client files (as ``pprl synth`` writes).
        person: the person's ``(party, client id)`` records.
        out: a new folder.
        client_id_column: the protocol's client id column.

    Returns:
        Per party whose file lost a row, its new file (the others are unchanged).
    """
    out.mkdir(parents=True, exist_ok=True)
    by_party: dict[str, set[str]] = defaultdict(set)
    for party, client in person:
        by_party[party].add(client)
    written = {}
    for party, clients in by_party.items():
        source = data / f"{party}.csv"
        target = out / f"{party}.csv"
        with source.open(newline="", encoding="utf-8") as reader, target.open("w", newline="", encoding="utf-8") as w:
            rows = csv.reader(reader)
            writer = csv.writer(w, lineterminator="\n")
            header = next(rows)
            column = header.index(client_id_column)
            writer.writerow(header)
            writer.writerows(row for row in rows if row[column] not in clients)
        written[party] = target
    return written
