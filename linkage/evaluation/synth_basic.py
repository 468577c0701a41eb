"""The ``basic`` synthetic profile: independent people, a small name list, milder errors.

Typos, nicknames, a changed surname, day and month swapped, a moved address, missing
values, case and spacing noise, each at the rate :class:`Corruption` gives; kept for tests
that need its numbers (the benches use :mod:`linkage.evaluation.synth_realistic`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from linkage.evaluation import synth_data as data
from linkage.evaluation.synth_population import Population, zipf
from linkage.protocol import Protocol

__all__ = ["BasicPopulation", "Corruption"]

_DATE_FORMATS = ("iso", "dmy", "d/m")
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


class BasicPopulation(Population[_Person]):
    """Independent people, each agency's copy corrupted at the rates of a :class:`Corruption`."""

    def __init__(self, protocol: Protocol, seed: int, corruption: Corruption) -> None:
        super().__init__(protocol, seed)
        self.corruption = corruption
        self.female = zipf(len(data.FEMALE_NAMES))
        self.male = zipf(len(data.MALE_NAMES))
        self.surnames = zipf(len(data.SURNAMES), 0.8)
        self.streets = zipf(len(data.STREETS), 0.5)
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
        """An independent person; a latent need makes the agencies that know them correlated."""
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
