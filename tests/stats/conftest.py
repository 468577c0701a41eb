"""Fixtures for the statistics side: a synthetic entity table built the way the service builds it."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest

from linkage.protocol import Protocol
from stats.entities import entity_table

PARTIES = ("msd", "police", "haven")


def people(protocol: Protocol, n: int, seed: int = 0) -> tuple[list[tuple[int, str, str]], dict[str, dict[str, Any]]]:
    """A mapping and per-party attributes for ``n`` people, each known to one to three parties."""
    rng = np.random.default_rng(seed)
    regions = protocol.attribute("region").categories
    attributes: dict[str, dict[str, Any]] = {party: {} for party in PARTIES}
    mapping = []
    for person in range(n):
        parties = [party for party, share in zip(PARTIES, (0.7, 0.4, 0.15), strict=True) if rng.random() < share]
        parties = parties or ["msd"]
        for party in parties:
            token = f"{person:028x}{PARTIES.index(party):04x}"
            values: dict[str, Any] = {
                "region": None if rng.random() < 0.02 else regions[int(rng.integers(len(regions)))]
            }
            if party == "msd":
                values |= {"benefit_type": "jobseeker", "weeks_supported": int(rng.integers(0, 53))}
            elif party == "police":
                values |= {"offence_category": "property", "police_contacts": int(rng.integers(0, 31))}
            else:
                values |= {"housed_within_90_days": bool(rng.random() < 0.6), "months_in_nz": int(rng.integers(0, 121))}
            attributes[party][token] = values
            if len(parties) > 1:
                mapping.append((person, party, token))
    return mapping, attributes


@pytest.fixture(scope="session")
def table(protocol) -> pl.DataFrame:
    """3,000 people across the three parties of the example protocol."""
    return entity_table(protocol, *people(protocol, 3000))
