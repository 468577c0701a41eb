"""What the synthetic profiles share: one random generator, membership, typos, attributes.

A profile (:mod:`linkage.evaluation.synth_basic`, :mod:`linkage.evaluation.synth_realistic`)
draws people one at a time (:meth:`Population.person`) and writes each agency's copy of
them (:meth:`Population.identifiers`); :mod:`linkage.evaluation.synth` writes the files.
"""

from __future__ import annotations

from typing import Generic, TypeVar
from typing import Protocol as Protocol_

import numpy as np

from linkage.evaluation import synth_data as data
from linkage.protocol import AttributeSpec, Protocol

__all__ = ["Drawn", "Population", "zipf"]

# How likely each agency is to know a person of average need, by the party's position.
_BASE_MEMBERSHIP = (0.65, 0.35, 0.08, 0.2, 0.15, 0.1)


class Drawn(Protocol_):
    """A drawn person: which agencies (by position in the protocol) know them."""

    parties: list[int]


PersonT = TypeVar("PersonT", bound=Drawn)


def zipf(count: int, exponent: float = 0.9) -> np.ndarray:
    """Shares of ``count`` ranked items falling off as rank to the power ``-exponent``."""
    weights = 1.0 / np.arange(1, count + 1) ** exponent
    shares: np.ndarray = weights / weights.sum()
    return shares


class Population(Generic[PersonT]):
    """Draws people and their copies at each agency with one random generator."""

    def __init__(self, protocol: Protocol, seed: int) -> None:
        self.protocol = protocol
        self.rng = np.random.default_rng(seed)
        city_weights = np.array([c[4] for c in data.CITIES], dtype=float)
        self.cities = city_weights / city_weights.sum()
        count = len(protocol.parties)
        self.membership = np.array([_BASE_MEMBERSHIP[i % len(_BASE_MEMBERSHIP)] for i in range(count)])

    def person(self, number: int) -> PersonT:
        """The person numbered ``number``, with the agencies that know them."""
        raise NotImplementedError

    def identifiers(self, person: PersonT, party_id: str) -> dict[str, str]:
        """One agency's copy of a person's identifiers (by semantic name)."""
        raise NotImplementedError

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

    # -- attributes -------------------------------------------------------------------

    def attribute(self, spec: AttributeSpec, shared: bool, region: str) -> str:
        """An outcome attribute's value as text (2% missing); shared clients fare worse."""
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
        weights = zipf(count, 1.2 if not shared else 0.3)
        return spec.categories[int(rng.choice(count, p=weights))]
