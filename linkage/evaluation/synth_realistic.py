"""The ``realistic`` synthetic profile: client lists whose errors look like real agencies' lists.

Compared with the ``basic`` profile (:mod:`linkage.evaluation.synth`), people live in
households (a surname and an address shared, twins now and then), carry names of their
background from large pools with a gentle frequency fall-off
(:mod:`linkage.evaluation.synth_names`), and every agency's copy of a person is corrupted
the way client lists really differ: a mistyped birth year (a digit slip, two digits
swapped, a year off by one), day and month swapped, a refugee's date of birth recorded as
1 January, a missing date of birth or address, nicknames and transliterations, given and
family name swapped, a double or hyphenated surname cut short, a surname taken or dropped
on marriage, a PO box or a rural delivery line instead of the street address, a move
between the agencies' contacts, and each agency's own formats (case, abbreviations, unit
numbers, date layout). The rates, and where each comes from, are in
``docs/synthetic-data.md``; :class:`RealisticErrors` holds them.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from linkage.evaluation import synth_data as places
from linkage.evaluation.synth_names import NICKNAMES, SPELLINGS, name_pool
from linkage.evaluation.synth_population import Population
from linkage.protocol import Protocol

__all__ = ["RealisticErrors"]

# Client-population shares by background (social services and police clients in New
# Zealand are more often Māori and Pacific than the population; see the docs).
_BACKGROUNDS = {
    "european": 0.44,
    "maori": 0.27,
    "pacific": 0.11,
    "chinese": 0.03,
    "indian": 0.04,
    "asian": 0.03,
    "arabic": 0.03,
    "east_african": 0.02,
    "myanmar": 0.02,
    "latin": 0.01,
}
_REFUGEE = frozenset({"arabic", "east_african", "myanmar", "latin"})
# Chance a person's given name / surname comes from their own background's pool (else a
# European one: many Māori and Pacific people have English given names or surnames).
_OWN_GIVEN = {"maori": 0.45, "pacific": 0.6, "chinese": 0.75, "asian": 0.8, "indian": 0.92}
_OWN_SURNAME = {"maori": 0.55, "pacific": 0.85}
# Family name written first at some agencies.
_FAMILY_FIRST = frozenset({"chinese", "asian", "myanmar"})
# The third party of a protocol plays the example's refugee resettlement trust: people
# of refugee backgrounds are far likelier to be its clients, others rarely are.
_RESETTLEMENT = 2
_FIRST_YEAR, _LAST_YEAR = 1938, 2010
_TODAY = dt.date(2026, 1, 1)
_STREET_ABBREVIATIONS = {
    "Street": "St",
    "Road": "Rd",
    "Avenue": "Ave",
    "Place": "Pl",
    "Crescent": "Cres",
    "Drive": "Dr",
    "Lane": "Ln",
    "Terrace": "Tce",
    "Way": "Way",
    "Close": "Cl",
}
# Another name a city's people are often recorded under (a suburb, or the older name).
_CITY_ALIASES = {
    "Auckland": ("Auckland Central", "Mt Eden", "Ponsonby", "Epsom"),
    "Manukau": ("South Auckland", "Otara", "Mangere", "Manurewa", "Papatoetoe"),
    "North Shore": ("Takapuna", "Glenfield", "Albany"),
    "Waitakere": ("Henderson", "West Auckland", "Te Atatu"),
    "Hamilton": ("Hamilton East", "Frankton"),
    "Wellington": ("Wellington Central", "Newtown", "Kilbirnie"),
    "Lower Hutt": ("Hutt City", "Naenae", "Taita"),
    "Porirua": ("Cannons Creek", "Porirua East"),
    "Christchurch": ("Christchurch Central", "Aranui", "Hornby", "Riccarton"),
    "Dunedin": ("South Dunedin", "Caversham"),
    "Tauranga": ("Mount Maunganui", "Greerton"),
}


@dataclass(frozen=True)
class RealisticErrors:
    """Chance of each error in one agency's copy of a person (see ``docs/synthetic-data.md``).

    Date errors are drawn in this order and at most one applies per copy: a missing date,
    a year typo (a digit substituted, the last two digits transposed, or a year off by
    one, in the shares ``year_typo_kinds``), a day and month swap, a day or month typo.
    ``missing_date_of_birth`` is scaled per agency by ``agency_missing``.
    """

    missing_date_of_birth: float = 0.035
    agency_missing: tuple[float, ...] = (0.5, 1.3, 1.6)
    year_typo: float = 0.022
    year_typo_kinds: tuple[float, float, float] = (0.4, 0.2, 0.4)
    day_month_swap: float = 0.025
    day_typo: float = 0.015
    month_typo: float = 0.005
    first_january: float = 0.45
    first_january_copy: float = 0.8
    estimated_year_off: float = 0.3
    typo_given_name: float = 0.04
    typo_surname: float = 0.04
    nickname: float = 0.25
    spelling: float = 0.3
    spelling_english: float = 0.08
    name_order_swap: float = 0.015
    name_order_swap_family_first: float = 0.12
    middle_name: float = 0.05
    english_name: float = 0.25
    surname_change: float = 0.06
    double_surname_cut: float = 0.35
    missing_given_name: float = 0.004
    missing_surname: float = 0.002
    moved: float = 0.16
    po_box: float = 0.05
    rural: float = 0.08
    missing_address: float = 0.04
    missing_city: float = 0.03
    missing_postcode: float = 0.07
    postcode_typo: float = 0.01
    city_alias: float = 0.15
    address_typo: float = 0.03
    missing_sex: float = 0.03
    wrong_sex: float = 0.003
    space_noise: float = 0.04


@dataclass
class _Household:
    surname: str
    background: str
    addresses: list[tuple[str, int, str]]
    po_box: tuple[str, int, str] | None
    need: float
    members: deque[_Client] = field(default_factory=deque)


@dataclass
class _Client:
    number: int
    background: str
    sex: str
    given_name: str
    middle_name: str
    surname: str
    other_surname: str
    date_of_birth: dt.date
    documented_date: dt.date | None
    addresses: list[tuple[str, int, str]]
    po_box: tuple[str, int, str] | None
    english_name: str = ""
    parties: list[int] = field(default_factory=list)


class RealisticPopulation(Population["_Client"]):
    """People in households, drawn by background, and their copies at each agency."""

    def __init__(self, protocol: Protocol, seed: int, errors: RealisticErrors) -> None:
        super().__init__(protocol, seed)
        self.errors = errors
        self.backgrounds = tuple(_BACKGROUNDS)
        self.background_weights = np.array(list(_BACKGROUNDS.values()))
        self.background_weights /= self.background_weights.sum()
        self.party_index = {p.id: i for i, p in enumerate(protocol.parties)}
        names, weights = name_pool("european", "surname")
        self.street_names = tuple(places.STREETS) + tuple(names[:300])
        self.street_weights = np.concatenate([np.full(len(places.STREETS), 2.0), 1.0 / np.arange(1, 301) ** 0.5])
        self.street_weights /= self.street_weights.sum()
        self.pending: deque[_Client] = deque()
        self.number = 0

    # -- drawing people ---------------------------------------------------------------

    def _name(self, background: str, kind: str) -> str:
        names, weights = name_pool(background, kind)
        return names[int(self.rng.choice(len(names), p=weights))]

    def _given(self, background: str, sex: str) -> str:
        kind = "female" if sex == "f" else "male" if sex == "m" else str(self.rng.choice(["female", "male"]))
        own = _OWN_GIVEN.get(background, 0.97 if background != "european" else 1.0)
        return self._name(background if self.rng.random() < own else "european", kind)

    def _surname(self, background: str) -> str:
        own = _OWN_SURNAME.get(background, 0.99 if background != "european" else 1.0)
        if background == "latin":
            return f"{self._name('latin', 'surname')} {self._name('latin', 'surname')}"
        return self._name(background if self.rng.random() < own else "european", "surname")

    def _address(self, city: int | None = None) -> tuple[str, int, str]:
        rng = self.rng
        if city is None:
            city = int(rng.choice(len(places.CITIES), p=self.cities))
        _, _, first, span, _ = places.CITIES[city]
        postcode = f"{first + int(rng.integers(span)):04d}"
        kind = places.STREET_TYPES[int(rng.integers(len(places.STREET_TYPES)))]
        if rng.random() < self.errors.rural:
            number = int(rng.integers(10, 3000))
            road = self.street_names[int(rng.choice(len(self.street_names), p=self.street_weights))]
            return f"{number} {road} Road, RD {int(rng.integers(1, 9))}", city, postcode
        number = int(min(rng.zipf(1.6), 400)) if rng.random() < 0.6 else int(rng.integers(1, 400))
        suffix = "ABC"[int(rng.integers(3))] if rng.random() < 0.04 else ""
        unit = f"{int(rng.integers(1, 12))}/" if rng.random() < 0.1 else ""
        street = self.street_names[int(rng.choice(len(self.street_names), p=self.street_weights))]
        return f"{unit}{number}{suffix} {street} {kind}", city, postcode

    def _household(self) -> _Household:
        rng = self.rng
        background = self.backgrounds[int(rng.choice(len(self.backgrounds), p=self.background_weights))]
        home = self._address()
        addresses = [home]
        need = float(rng.beta(0.6, 1.6))
        # Clients with complex needs move more: earlier addresses an agency may still hold.
        for _ in range(int(rng.random() < self.errors.moved * (0.6 + 1.6 * need)) + int(rng.random() < 0.05)):
            same_city = home[1] if rng.random() < 0.7 else None
            addresses.append(self._address(same_city))
        po_box = None
        if rng.random() < self.errors.po_box:
            _, _, first, span, _ = places.CITIES[home[1]]
            po_box = (f"PO Box {int(rng.integers(1, 99999))}", home[1], f"{first + span + int(rng.integers(40)):04d}")
        household = _Household(self._surname(background), background, addresses, po_box, need)
        size = int(rng.choice([1, 2, 3, 4, 5], p=[0.8, 0.1, 0.05, 0.03, 0.02]))
        parent_year = int(rng.integers(_FIRST_YEAR, _LAST_YEAR - 18))
        documented = background in _REFUGEE and rng.random() < self.errors.first_january
        previous_child: dt.date | None = None
        for member in range(size):
            if member < min(size, 2):
                year = parent_year + (int(rng.integers(-6, 7)) if member else 0)
            else:
                year = parent_year + int(rng.integers(18, 41))
                if year > _LAST_YEAR:  # too young to be a client: an adult relative instead
                    year = parent_year + int(rng.integers(-8, 9))
            year = int(np.clip(year, _FIRST_YEAR, _LAST_YEAR))
            dob = dt.date(year, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365)))
            if member >= 2 and previous_child is not None and rng.random() < 0.03:
                dob = previous_child  # twins
            if member >= 2:
                previous_child = dob
            sex = "f" if rng.random() < 0.5 else "m"
            if rng.random() < 0.004:
                sex = "x"
            surname = household.surname
            other = ""
            if member == 1 and rng.random() < 0.4:
                # A partner who kept their own surname (or took the household's on marriage).
                other = self._surname(background)
                surname, other = (other, surname) if rng.random() < 0.5 else (surname, other)
            dob_documented = None
            if documented:
                off = int(rng.choice([-1, 1])) if rng.random() < self.errors.estimated_year_off else 0
                dob_documented = dt.date(int(np.clip(year + off, _FIRST_YEAR, _LAST_YEAR)), 1, 1)
            client = _Client(
                number=0,
                background=background,
                sex=sex,
                given_name=self._given(background, sex),
                middle_name=self._given(background, sex) if rng.random() < 0.6 else "",
                surname=surname,
                other_surname=other,
                date_of_birth=dob,
                documented_date=dob_documented,
                addresses=addresses if rng.random() < 0.85 else [*addresses, self._address()],
                po_box=po_box,
                english_name=self._given("european", sex) if background == "chinese" else "",
            )
            household.members.append(client)
        return household

    def person(self, number: int) -> _Client:
        """The next person (households are drawn whole and handed out one member at a time)."""
        rng = self.rng
        if not self.pending:
            household = self._household()
            self.pending.extend(household.members)
            self._household_need = household.need
        client = self.pending.popleft()
        client.number = number
        need = min(1.0, self._household_need * 0.6 + float(rng.beta(0.6, 1.6)) * 0.4)
        chances = np.clip(self.membership * (0.35 + 1.8 * need), 0, 0.97)
        if len(chances) > _RESETTLEMENT:
            chances[_RESETTLEMENT] = 0.75 if client.background in _REFUGEE else 0.004
        client.parties = [i for i, chance in enumerate(chances) if rng.random() < chance]
        if not client.parties:
            client.parties = [int(rng.choice(len(chances), p=chances / chances.sum()))]
        return client

    # -- one agency's copy ------------------------------------------------------------

    def _date_of_birth(self, client: _Client, style: int) -> dt.date | None:
        rng, e = self.rng, self.errors
        dob = client.date_of_birth
        if client.documented_date is not None and rng.random() < e.first_january_copy:
            dob = client.documented_date
        missing = e.missing_date_of_birth * e.agency_missing[style % len(e.agency_missing)]
        draw = rng.random()
        if draw < missing:
            return None
        draw -= missing
        if draw < e.year_typo:
            return _year_typo(dob, rng, e.year_typo_kinds)
        draw -= e.year_typo
        if draw < e.day_month_swap:
            return dt.date(dob.year, dob.day, dob.month) if dob.day <= 12 and dob.day != dob.month else dob
        draw -= e.day_month_swap
        if draw < e.day_typo:
            day = _digit_slip(dob.day, rng, 1, 28)
            return dob.replace(day=day)
        draw -= e.day_typo
        if draw < e.month_typo:
            return _valid(dob.year, _digit_slip(dob.month, rng, 1, 12), dob.day)
        return dob

    def _names(self, client: _Client, style: int) -> tuple[str, str]:
        rng, e = self.rng, self.errors
        given, surname = client.given_name, client.surname
        if client.english_name and rng.random() < e.english_name:
            given = client.english_name
        elif given in NICKNAMES and rng.random() < e.nickname:
            given = str(rng.choice(NICKNAMES[given]))
        spelling = e.spelling if client.background != "european" else e.spelling_english
        if given in SPELLINGS and rng.random() < spelling:
            given = str(rng.choice(SPELLINGS[given]))
        if client.middle_name and rng.random() < e.middle_name:
            given = f"{given} {client.middle_name}"
        if surname in SPELLINGS and rng.random() < spelling:
            surname = str(rng.choice(SPELLINGS[surname]))
        if client.other_surname and rng.random() < e.surname_change * 4:
            # Recorded under the surname before (or after) marriage, or both, hyphenated.
            surname = client.other_surname if rng.random() < 0.6 else f"{surname}-{client.other_surname}"
        elif client.sex == "f" and rng.random() < e.surname_change:
            surname = f"{surname}-{self._surname('european')}" if rng.random() < 0.4 else self._surname("european")
        if " " in surname and rng.random() < e.double_surname_cut:
            surname = surname.split(" ")[0]  # a double surname cut to its first part
        elif "-" in surname and rng.random() < e.double_surname_cut:
            surname = surname.split("-")[int(rng.integers(2))]
        if rng.random() < e.typo_given_name:
            given = self._typo(given)
        if rng.random() < e.typo_surname:
            surname = self._typo(surname)
        swap = e.name_order_swap_family_first if client.background in _FAMILY_FIRST else e.name_order_swap
        if rng.random() < swap:
            given, surname = surname, given
        if rng.random() < e.missing_given_name:
            given = ""
        if rng.random() < e.missing_surname:
            surname = ""
        if style % 3 == 1:
            given, surname = given.upper(), surname.upper()
        return given, surname

    def _place(self, client: _Client, style: int) -> tuple[str, int, str]:
        rng = self.rng
        addresses = client.addresses
        # The current address mostly; an agency that saw the client earlier holds an older one.
        weights = (
            np.array([0.75] + [0.25 / (len(addresses) - 1)] * (len(addresses) - 1)) if len(addresses) > 1 else None
        )
        address, city, postcode = addresses[int(rng.choice(len(addresses), p=weights))]
        if client.po_box is not None and rng.random() < (0.6 if style % 3 == 0 else 0.15):
            address, city, postcode = client.po_box
        return address, city, postcode

    def _format_address(self, address: str, style: int) -> str:
        rng = self.rng
        if style % 3 == 1:
            for long, short in _STREET_ABBREVIATIONS.items():
                address = address.replace(f" {long}", f" {short}")
            if "/" in address.split(" ")[0]:
                unit, rest = address.split("/", 1)
                address = f"Flat {unit} {rest}"
            address = address.upper()
        elif style % 3 == 2:
            if "/" in address.split(" ")[0] and rng.random() < 0.5:
                unit, rest = address.split("/", 1)
                address = f"Unit {unit}, {rest}"
            if rng.random() < 0.3:
                for long, short in _STREET_ABBREVIATIONS.items():
                    address = address.replace(f" {long}", f" {short}")
        if rng.random() < self.errors.address_typo:
            address = self._typo(address)
        return address

    def identifiers(self, person: _Client, party_id: str) -> dict[str, str]:
        """One agency's copy of a person's identifiers (by semantic name)."""
        rng, e = self.rng, self.errors
        style = self.party_index[party_id]
        given, surname = self._names(person, style)
        dob = self._date_of_birth(person, style)
        address, city, postcode = self._place(person, style)
        city_name = places.CITIES[city][0]
        if city_name in _CITY_ALIASES and rng.random() < e.city_alias:
            city_name = str(rng.choice(_CITY_ALIASES[city_name]))
        if rng.random() < e.postcode_typo:
            postcode = f"{postcode[:2]}{postcode[3]}{postcode[2]}"
        sex = person.sex
        if rng.random() < e.wrong_sex:
            sex = "m" if sex == "f" else "f"
        values = {
            "given": self._spaces(given),
            "surname": self._spaces(surname),
            "dob": "" if dob is None else self._write_date(dob, _STYLES[style % 3]),
            "sex": {0: sex, 1: {"f": "F", "m": "M", "x": "X"}[sex], 2: {"f": "Female", "m": "Male", "x": "X"}[sex]}[
                style % 3
            ],
            "address": self._format_address(address, style),
            "city": city_name.upper() if style % 3 == 1 else city_name,
            "postcode": postcode,
            "region": places.CITIES[city][1],
        }
        for key, chance in (
            ("address", e.missing_address),
            ("city", e.missing_city),
            ("postcode", e.missing_postcode),
            ("sex", e.missing_sex),
        ):
            if rng.random() < chance:
                values[key] = ""
        return values

    def _write_date(self, date: dt.date, preferred: str) -> str:
        if preferred == "iso":
            return date.isoformat()
        if preferred == "dmy":
            return f"{date.day:02d}/{date.month:02d}/{date.year}"
        return f"{date.day}/{date.month}/{date.year}"

    def _spaces(self, text: str) -> str:
        if text and self.rng.random() < self.errors.space_noise:
            return " " + text.replace(" ", "  ", 1) + " "
        return text


_STYLES = ("iso", "dmy", "d/m")


def _valid(year: int, month: int, day: int) -> dt.date:
    """The date, with the day cut to the month's last day (29 February in a common year)."""
    for last in (day, 30, 29, 28):
        try:
            return dt.date(year, month, min(day, last))
        except ValueError:
            continue
    raise AssertionError("unreachable: every month has 28 days")


def _digit_slip(value: int, rng: np.random.Generator, low: int, high: int) -> int:
    """``value`` with one decimal digit replaced, kept within ``low..high`` (retried, then nudged)."""
    text = f"{value:02d}"
    for _ in range(10):
        at = int(rng.integers(len(text)))
        candidate = int(text[:at] + str(int(rng.integers(10))) + text[at + 1 :])
        if low <= candidate <= high and candidate != value:
            return candidate
    return value + 1 if value < high else value - 1


def _year_typo(date: dt.date, rng: np.random.Generator, kinds: tuple[float, float, float]) -> dt.date:
    """A mistyped year: a digit substituted, the last two digits transposed, or off by one.

    >>> rng = np.random.default_rng(0)
    >>> sorted({_year_typo(dt.date(1984, 3, 7), rng, (0.0, 1.0, 0.0)).year for _ in range(5)})
    [1948]
    """
    kind = int(rng.choice(3, p=np.asarray(kinds) / sum(kinds)))
    year = date.year
    if kind == 1 and year % 10 != (year // 10) % 10:
        year = year // 100 * 100 + (year % 10) * 10 + (year // 10) % 10
    elif kind == 2 or kind == 1:
        year += int(rng.choice([-1, 1]))
    else:
        text = str(year)
        at = 2 + int(rng.integers(2))  # the decade or the year: the century digits are rarely wrong
        year = int(text[:at] + str(int(rng.integers(10))) + text[at + 1 :])
        if year == date.year:
            year += 1
    year = int(np.clip(year, 1901, _TODAY.year - 1))
    return _valid(year, date.month, date.day)
