"""Synthetic client lists for every party of a protocol, with known truth.

People belong to overlapping sets of agencies; each agency's copy of a person is
corrupted independently, the way real administrative records differ. Two profiles:

* ``realistic`` (the default; :mod:`linkage.evaluation.synth_realistic`): households,
  names by background from large pools, and errors at the rates real client lists show
  (year-of-birth typos, missing dates, transliterations, PO boxes, moves, per-agency
  formats); the rates and their sources are in ``docs/synthetic-data.md``.
* ``basic``: the earlier generator (independent people, a small name list, milder errors:
  typos, nicknames, a changed surname, day and month swapped, a moved address, missing
  values, case and spacing noise), kept for tests that need its numbers.

Outcome attributes differ between people known to several agencies and the rest, so
statistics on shared clients have something to find. Generation streams in chunks
(memory stays flat) and is deterministic per seed and profile.
"""

from __future__ import annotations

import csv
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from linkage.errors import InputError, OutputExistsError
from linkage.evaluation.synth_basic import BasicPopulation, Corruption
from linkage.evaluation.synth_population import Population
from linkage.evaluation.synth_realistic import RealisticErrors, RealisticPopulation
from linkage.protocol import FieldSpec, Protocol

__all__ = ["PROFILES", "Corruption", "SynthSummary", "synthesise_population"]

CHUNK_PEOPLE = 50_000
PROFILES = ("realistic", "basic")


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`synthesise_population` wrote."""

    people: int
    records_by_party: dict[str, int]
    files: tuple[Path, ...]


def _semantic(spec: FieldSpec) -> str:
    name = spec.name
    if spec.kind == "date":
        return "dob"
    if spec.kind == "category":
        return "sex"
    for key, words in (
        ("given", ("given", "first", "forename")),
        ("surname", ("surname", "family", "last")),
        ("address", ("address", "street")),
        ("city", ("city", "town", "suburb")),
        ("postcode", ("postcode", "zip", "post")),
    ):
        if any(word in name for word in words):
            return key
    return {"name": "surname", "text": "address", "code": "postcode"}[spec.kind]


def synthesise_population(
    protocol: Protocol,
    num_people: int,
    seed: int,
    out_dir: Path,
    *,
    corruption: Corruption | None = None,
    profile: str = "realistic",
    on_progress: Callable[[int, int], None] | None = None,
) -> SynthSummary:
    """Write ``out_dir/<party>.csv`` for every party and ``out_dir/truth.csv``.

    Args:
        protocol: the protocol whose parties, columns and attributes to use.
        num_people: distinct people to draw (each in one or more parties).
        seed: the random seed; the same seed gives the same files.
        out_dir: the folder to create (it may exist if empty).
        corruption: how messy the records of the ``basic`` profile are; default
            :class:`Corruption`.
        profile: ``realistic`` (default) or ``basic`` (see the module docstring).
        on_progress: called with (people done, people).

    Returns:
        What was written.

    Raises:
        InputError: ``num_people`` below 1, an unknown profile, or ``corruption`` with
            a profile other than ``basic`` (which would ignore it).
        OutputExistsError: ``out_dir`` exists and is not empty.
    """
    if num_people < 1:
        raise InputError("--people must be at least 1")
    if profile not in PROFILES:
        raise InputError(f"unknown synthetic profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if corruption is not None and profile != "basic":
        raise InputError("corruption rates apply to the basic profile only; pass profile='basic' with them")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise OutputExistsError(f"{out_dir} already exists and is not empty; choose a new folder or delete it")
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{secrets.token_hex(4)}")
    tmp.mkdir(parents=True)
    try:
        population = _population(protocol, seed, profile, corruption)
        counts = _write_all(protocol, num_people, seed, tmp, population, on_progress)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = tuple(out_dir / f"{p.id}.csv" for p in protocol.parties) + (out_dir / "truth.csv",)
    return SynthSummary(people=num_people, records_by_party=counts, files=files)


def _population(protocol: Protocol, seed: int, profile: str, corruption: Corruption | None) -> Population[Any]:
    if profile == "basic":
        return BasicPopulation(protocol, seed, corruption or Corruption())
    return RealisticPopulation(protocol, seed, RealisticErrors())


def _write_all(
    protocol: Protocol,
    num_people: int,
    seed: int,
    folder: Path,
    population: Population[Any],
    on_progress: Callable[[int, int], None] | None,
) -> dict[str, int]:
    id_rng = np.random.default_rng([seed, 1])
    prefixes = {p.id: p.id[:3].upper() for p in protocol.parties}
    semantics = [_semantic(spec) for spec in protocol.fields]
    counts = {p.id: 0 for p in protocol.parties}
    handles: list[IO[str]] = []
    try:
        writers = {}
        for party in protocol.parties:
            handle = (folder / f"{party.id}.csv").open("w", newline="", encoding="utf-8")
            handles.append(handle)
            writers[party.id] = csv.writer(handle, lineterminator="\n")
            writers[party.id].writerow(protocol.columns_for(party.id))
        truth_handle = (folder / "truth.csv").open("w", newline="", encoding="utf-8")
        handles.append(truth_handle)
        truth = csv.writer(truth_handle, lineterminator="\n")
        truth.writerow(["party", "client_id", "person_id"])
        # Client ids: a random permutation of numbers per party, so ids say nothing of people.
        id_space = {p.id: id_rng.permutation(num_people * 3)[: num_people + 1] for p in protocol.parties}
        for start in range(0, num_people, CHUNK_PEOPLE):
            rows: dict[str, list[tuple[list[str], str]]] = {p.id: [] for p in protocol.parties}
            for number in range(start, min(start + CHUNK_PEOPLE, num_people)):
                person = population.person(number)
                shared = len(person.parties) > 1
                for index in person.parties:
                    party = protocol.parties[index]
                    values = population.identifiers(person, party.id)
                    client_id = f"{prefixes[party.id]}-{int(id_space[party.id][counts[party.id]]):08d}"
                    counts[party.id] += 1
                    row = [client_id, *(values[s] for s in semantics)]
                    row.append("true" if population.rng.random() < 0.85 else "false")
                    for name in party.attributes:
                        row.append(population.attribute(protocol.attribute(name), shared, values["region"]))
                    rows[party.id].append((row, f"P{number:08d}"))
            for party_id, party_rows in rows.items():
                order = population.rng.permutation(len(party_rows))
                for position in order:
                    row, person_id = party_rows[position]
                    writers[party_id].writerow(row)
                    truth.writerow([party_id, row[0], person_id])
            if on_progress:
                on_progress(min(start + CHUNK_PEOPLE, num_people), num_people)
    finally:
        for opened in handles:
            opened.close()
    return counts
