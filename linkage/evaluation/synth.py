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
import datetime as dt
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from linkage.errors import InputError, OutputExistsError
from linkage.evaluation import synth_data as data
from linkage.protocol import AttributeSpec, FieldSpec, Protocol

__all__ = ["PROFILES", "Corruption", "SynthSummary", "synthesise_population"]

CHUNK_PEOPLE = 50_000
PROFILES = ("realistic", "basic")
_DATE_FORMATS = ("iso", "dmy", "d/m")
_BASE_MEMBERSHIP = (0.65, 0.35, 0.08, 0.2, 0.15, 0.1)
_FIRST_DAY = dt.date(1940, 1, 1).toordinal()
_LAST_DAY = dt.date(2008, 12, 31).toordinal()


@dataclass(frozen=True)
class Corruption:
    """Chance of each kind of error in one agency's copy of a person (defaults: realistic)."""

    typo_given_name: float = 0.06
    typo_surname: float = 0.06
    nickname: float = 0.04
    surname_change: float = 0.03
    day_month_swap: float = 0.02
    date_digit: float = 0.02
    moved: float = 0.10
    missing_address: float = 0.03
    missing_postcode: float = 0.04
    missing_sex: float = 0.02
    missing_date_of_birth: float = 0.01
    missing_given_name: float = 0.005
    case_noise: float = 0.10
    space_noise: float = 0.05
    other_date_format: float = 0.10


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`synthesise_population` wrote."""

    people: int
    records_by_party: dict[str, int]
    files: tuple[Path, ...]


@dataclass
class _Person:
    number: int
    sex: str
    given_name: str
    surname: str
    date_of_birth: dt.date
    address: str
    city: int
    postcode: str
    parties: list[int] = field(default_factory=list)


def _zipf(count: int, exponent: float = 0.9) -> np.ndarray:
    weights = 1.0 / np.arange(1, count + 1) ** exponent
    shares: np.ndarray = weights / weights.sum()
    return shares


class _Population:
    """Draws people and corrupts their records with one random generator."""

    def __init__(self, protocol: Protocol, seed: int, corruption: Corruption) -> None:
        self.protocol = protocol
        self.rng = np.random.default_rng(seed)
        self.corruption = corruption
        self.female = _zipf(len(data.FEMALE_NAMES))
        self.male = _zipf(len(data.MALE_NAMES))
        self.surnames = _zipf(len(data.SURNAMES), 0.8)
        self.streets = _zipf(len(data.STREETS), 0.5)
        city_weights = np.array([c[4] for c in data.CITIES], dtype=float)
        self.cities = city_weights / city_weights.sum()
        count = len(protocol.parties)
        self.membership = np.array([_BASE_MEMBERSHIP[i % len(_BASE_MEMBERSHIP)] for i in range(count)])
        self.date_format = {p.id: _DATE_FORMATS[i % 3] for i, p in enumerate(protocol.parties)}

    def _choice(self, items: tuple[str, ...] | list[str], weights: np.ndarray) -> str:
        return items[int(self.rng.choice(len(items), p=weights))]

    def _address(self) -> tuple[str, int, str]:
        rng = self.rng
        city = int(rng.choice(len(data.CITIES), p=self.cities))
        _, _, first, span, _ = data.CITIES[city]
        number = int(rng.integers(1, 400))
        unit = f"{int(rng.integers(1, 12))}/" if rng.random() < 0.08 else ""
        street = self._choice(data.STREETS, self.streets)
        kind = data.STREET_TYPES[int(rng.integers(len(data.STREET_TYPES)))]
        postcode = f"{first + int(rng.integers(span)):04d}"
        return f"{unit}{number} {street} {kind}", city, postcode

    def person(self, number: int) -> _Person:
        rng = self.rng
        sex = "f" if rng.random() < 0.52 else "m"
        if rng.random() < 0.005:
            sex = "x"
        names, weights = (data.FEMALE_NAMES, self.female) if sex != "m" else (data.MALE_NAMES, self.male)
        given = self._choice(names, weights)
        surname = self._choice(data.SURNAMES, self.surnames)
        dob = dt.date.fromordinal(int(rng.integers(_FIRST_DAY, _LAST_DAY)))
        address, city, postcode = self._address()
        person = _Person(number, sex, given, surname, dob, address, city, postcode)
        # A latent "complexity of needs" makes membership correlated: people known to one
        # agency are likelier to be known to the others.
        need = rng.beta(0.6, 1.6)
        chances = np.clip(self.membership * (0.35 + 1.8 * need), 0, 0.97)
        person.parties = [i for i, chance in enumerate(chances) if rng.random() < chance]
        if not person.parties:
            person.parties = [int(rng.choice(len(chances), p=chances / chances.sum()))]
        return person

    # -- corruption -------------------------------------------------------------------

    def _typo(self, text: str) -> str:
        rng = self.rng
        if len(text) < 3:
            return text
        at = int(rng.integers(1, len(text) - 1))
        kind = rng.integers(4)
        letter = "abcdefghijklmnopqrstuvwxyz"[int(rng.integers(26))]
        if kind == 0:
            return text[:at] + letter + text[at:]
        if kind == 1:
            return text[:at] + text[at + 1 :]
        if kind == 2:
            return text[:at] + letter + text[at + 1 :]
        return text[: at - 1] + text[at] + text[at - 1] + text[at + 1 :]

    def _write_date(self, date: dt.date, preferred: str) -> str:
        style = preferred
        if self.rng.random() < self.corruption.other_date_format:
            style = _DATE_FORMATS[int(self.rng.integers(3))]
        if style == "iso":
            return date.isoformat()
        if style == "dmy":
            return f"{date.day:02d}/{date.month:02d}/{date.year}"
        return f"{date.day}/{date.month}/{date.year}"

    def _noise(self, text: str) -> str:
        rng, c = self.rng, self.corruption
        if text and rng.random() < c.case_noise:
            text = text.upper() if rng.random() < 0.6 else text.lower()
        if text and rng.random() < c.space_noise:
            text = rng.choice(["  ", " ", ""]) + text.replace(" ", "  ", 1) + rng.choice([" ", ""])
        return text

    def identifiers(self, person: _Person, party_id: str) -> dict[str, str]:
        """One agency's corrupted copy of a person's identifiers (by semantic name)."""
        rng, c = self.rng, self.corruption
        given, surname, dob = person.given_name, person.surname, person.date_of_birth
        address, city, postcode = person.address, person.city, person.postcode
        if given in data.NICKNAMES and rng.random() < c.nickname * 4:
            given = str(rng.choice(data.NICKNAMES[given]))
        elif rng.random() < c.nickname:
            given = given[: max(3, len(given) - 2)]
        if rng.random() < c.typo_given_name:
            given = self._typo(given)
        if person.sex == "f" and rng.random() < c.surname_change:
            other = self._choice(data.SURNAMES, self.surnames)
            surname = f"{surname}-{other}" if rng.random() < 0.3 else other
        if rng.random() < c.typo_surname:
            surname = self._typo(surname)
        if rng.random() < c.day_month_swap and dob.day <= 12 and dob.day != dob.month:
            dob = dt.date(dob.year, dob.day, dob.month)
        if rng.random() < c.date_digit:
            try:
                dob = dob.replace(day=min(28, (dob.day + int(rng.integers(1, 9))) % 28 + 1))
            except ValueError:
                pass
        if rng.random() < c.moved:
            address, city, postcode = self._address()
        values = {
            "given": self._noise(given),
            "surname": self._noise(surname),
            "dob": self._write_date(dob, self.date_format[party_id]),
            "sex": person.sex.upper() if rng.random() < 0.3 else person.sex,
            "address": self._noise(address),
            "city": self._noise(data.CITIES[city][0]),
            "postcode": postcode,
            "region": data.CITIES[city][1],
        }
        for key, chance in (
            ("address", c.missing_address),
            ("postcode", c.missing_postcode),
            ("sex", c.missing_sex),
            ("dob", c.missing_date_of_birth),
            ("given", c.missing_given_name),
        ):
            if rng.random() < chance:
                values[key] = ""
        return values

    # -- attributes -------------------------------------------------------------------

    def attribute(self, spec: AttributeSpec, shared: bool, region: str) -> str:
        rng = self.rng
        if rng.random() < 0.02:
            return ""
        if spec.name == "region" and spec.type == "categorical":
            return region if region in spec.categories else spec.categories[-1]
        if spec.type == "boolean":
            # Shared clients fare worse: less often true for a good outcome.
            return "true" if rng.random() < (0.45 if shared else 0.7) else "false"
        if spec.type == "integer":
            assert spec.lower is not None and spec.upper is not None  # noqa: S101 - schema requires bounds
            width = spec.upper - spec.lower
            mean = (0.45 if shared else 0.2) * width
            return str(int(np.clip(round(rng.exponential(mean) if mean else 0), 0, width)) + spec.lower)
        count = len(spec.categories)
        weights = _zipf(count, 1.2 if not shared else 0.3)
        return spec.categories[int(rng.choice(count, p=weights))]


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


def _population(protocol: Protocol, seed: int, profile: str, corruption: Corruption | None) -> _Population:
    if profile == "basic":
        return _Population(protocol, seed, corruption or Corruption())
    # Imported here: the realistic profile subclasses _Population, defined in this module.
    from linkage.evaluation.synth_realistic import RealisticErrors, RealisticPopulation

    return RealisticPopulation(protocol, seed, RealisticErrors())


def _write_all(
    protocol: Protocol,
    num_people: int,
    seed: int,
    folder: Path,
    population: _Population,
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
