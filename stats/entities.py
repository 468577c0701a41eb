"""The entity table: one row per person, built from record tokens and the entity mapping only.

A person is an entity of the latest linkage run's stable mapping (records of several
parties found to be the same person; :mod:`linkage.matching.stable`), or a record no other
party shares. The linkage is not perfect, so a row is not always a person: a missed link
makes one person two rows, a false one two people one row. What the releases protect is
therefore stated in rows one person can move (:func:`privacy_unit`): with a frozen model,
at most the square of the number of parties. Each row says which parties know the person
(``member:PARTY``), whether two or more do (``shared``), the membership pattern (``pattern``,
e.g. ``msd+police``), and the person's outcome attributes, combined across the parties that
report them as the protocol says (``first`` in protocol party order, ``max``, ``min``, ``any``).

This is the private input of every statistic; it never leaves the statistics side.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from linkage.errors import InputError
from linkage.protocol import AttributeSpec, Protocol
from linkage.token_files import read_entities
from stats.store import read_attributes

__all__ = ["entity_table", "membership_patterns", "privacy_unit", "read_entity_table"]

_DTYPES = {"categorical": pl.String, "integer": pl.Int64, "boolean": pl.Boolean}


def membership_patterns(protocol: Protocol) -> list[str]:
    """Every non-empty combination of parties, in protocol order, as ``a+b`` labels (2^K − 1).

    >>> from tests.conftest import EXAMPLE_PROTOCOL
    >>> from linkage.protocol import load_protocol
    >>> membership_patterns(load_protocol(EXAMPLE_PROTOCOL))
    ['msd', 'police', 'haven', 'msd+police', 'msd+haven', 'police+haven', 'msd+police+haven']
    """
    ids = [party.id for party in protocol.parties]
    return ["+".join(combo) for size in range(1, len(ids) + 1) for combo in itertools.combinations(ids, size)]


def privacy_unit(protocol: Protocol) -> str:
    """What every release protects, in one sentence (for ``pprl query`` and the service's answers).

    >>> from tests.conftest import EXAMPLE_PROTOCOL
    >>> from linkage.protocol import load_protocol
    >>> privacy_unit(load_protocol(EXAMPLE_PROTOCOL))[:72]
    'Privacy unit: one person, whose records (at most one per agency) move at'
    """
    rows = protocol.rows_per_person
    return (
        f"Privacy unit: one person, whose records (at most one per agency) move at most {rows} rows of the "
        f"statistics table, the distance every release is calibrated at; this holds where the frozen linkage "
        f"model puts no two records of one agency in one cluster, and the model's own fit on the agencies' "
        f"records is not protected (docs/privacy-unit.md)."
    )


def _combine(spec: AttributeSpec, values: list[Any]) -> Any:
    present = [value for value in values if value is not None]
    if not present:
        return None
    if spec.combine == "first":
        return present[0]
    if spec.combine == "max":
        return max(present)
    if spec.combine == "min":
        return min(present)
    return any(present)  # "any", for booleans


def entity_table(
    protocol: Protocol,
    mapping: Iterable[tuple[Any, str, str]],
    attributes: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> pl.DataFrame:
    """Build the entity table.

    Args:
        protocol: the project's protocol.
        mapping: ``(entity id, party, token)`` rows of the linked entities.
        attributes: per party, ``{token: {attribute: value}}`` from its attributes file.
            Every record of a party is in it, so records outside the mapping become
            people known to that party alone.

    Raises:
        InputError: a linked party has no attributes, an unknown party, or a token in
            two entities.
    """
    order = [party.id for party in protocol.parties]
    for party in attributes:
        protocol.party(party)
    people: dict[Any, dict[str, str]] = defaultdict(dict)
    linked: set[tuple[str, str]] = set()
    for entity, party, token in mapping:
        if party not in attributes:
            raise InputError(
                f"party {party!r} is in the linkage results but has sent no attributes; "
                f"it must upload the attributes.csv `pprl encode --party {party}` wrote"
            )
        if (party, token) in linked:
            # Never the token: the message reaches analysts, as the refusal of every query.
            raise InputError(
                f"a token of party {party!r} is in two entities; the mapping is damaged: run the linkage again "
                "(`pprl run`)"
            )
        linked.add((party, token))
        people[("e", entity)][party] = token
    for party, by_token in attributes.items():
        for token in by_token:
            if (party, token) not in linked:
                people[("r", party, token)][party] = token
    specs = protocol.attributes
    columns: dict[str, list[Any]] = {f"member:{party}": [] for party in order}
    columns["shared"] = []
    columns["pattern"] = []
    for spec in specs:
        columns[spec.name] = []
    for records in people.values():
        members = [party for party in order if party in records]
        for party in order:
            columns[f"member:{party}"].append(party in records)
        columns["shared"].append(len(members) > 1)
        columns["pattern"].append("+".join(members))
        for spec in specs:
            reported = [attributes[party][records[party]].get(spec.name) for party in members]
            columns[spec.name].append(_combine(spec, reported))
    schema: dict[str, Any] = {f"member:{party}": pl.Boolean for party in order}
    schema |= {"shared": pl.Boolean, "pattern": pl.String}
    schema |= {spec.name: _DTYPES[spec.type] for spec in specs}
    return pl.DataFrame(columns, schema=schema)


def read_entity_table(protocol: Protocol, entities: Path, attribute_files: Sequence[tuple[str, Path]]) -> pl.DataFrame:
    """Build the entity table from ``pprl link``'s stable mapping and the parties' attributes.csv files.

    ``entities`` must be the stable mapping (``pprl link --statistics-out``), made with a
    frozen model: the record-level entities file is refused, since with a model fitted on
    each population one person's records can move other people's rows without bound.

    Raises:
        InputError: a file is missing or malformed (or not a stable mapping), or a party is
            named twice.
    """
    if not entities.is_file():
        raise InputError(
            f"{entities}: entities file not found; write it with `pprl link ... --save-model model.json "
            f"--statistics-out {entities}`"
        )
    parties = [party for party, _ in attribute_files]
    twice = sorted({party for party in parties if parties.count(party) > 1})
    if twice:
        raise InputError(f"--attributes names party {twice[0]!r} twice; give each party's attributes.csv once")
    attributes: dict[str, dict[str, Mapping[str, Any]]] = {}
    for party, path in attribute_files:
        if not path.is_file():
            raise InputError(f"{path}: attributes file of party {party!r} not found")
        attributes[party] = {row.token: row.values for row in read_attributes(protocol, party, path)}
    grouped = read_entities(entities, stable=True)
    mapping = [(entity, party, token) for entity, records in grouped.items() for party, token in records]
    return entity_table(protocol, mapping, attributes)
