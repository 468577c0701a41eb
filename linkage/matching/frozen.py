"""A frozen linkage model: fitted once per protocol, stored, and reused by every later run.

A model fitted on the records being linked depends on everyone in them: m and u, the
match priors, the ``auto`` threshold and the blocks too large to compare all move a little
when one person's records come or go, and with them the decisions on other people's
pairs. Frozen, the model is a fixed function of two records: whether a pair is accepted
depends on those two records alone (:mod:`linkage.matching.stable` builds on that).

What is frozen: the features and their m and u, the overall prior and one prior per pair
of parties, the match-probability threshold, and per pair of parties and blocking rule the
block keys that were too large to compare (their keys are keyed hashes, as in the
encodings). Term frequencies are not: a frozen model never adjusts for how common a name
is, since those shares are counted over everyone linked (on the synthetic data and
FEBRL4 this moved pairwise F1 by less than 0.005 either way; ``docs/privacy-unit.md``).

What is not protected: the fit itself. A model fitted on the first run's records depends,
a little, on each person in them; fit it on other records (an earlier period, a test
extract) and pass it with ``pprl link --model`` to remove even that.

The file is JSON: every number as written by Python (floats round-trip exactly), block
keys as decimal strings. It is linkage-side data, as sensitive as the encodings' block keys.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from linkage.encodings import Encodings
from linkage.errors import InputError, MismatchError
from linkage.matching.block import oversized_keys
from linkage.matching.compare import Feature, comparisons_for, features_for
from linkage.matching.model import FellegiSunterModel
from linkage.protocol import Protocol, matching_digest

__all__ = ["FORMAT", "FrozenModel", "oversized_blocks", "read_model", "write_model"]

FORMAT = "pprl-frozen-model"
VERSION = 1
_KEYS = frozenset(
    {"format", "version", "fingerprint", "parties", "records", "features", "m", "u", "prior", "priors", "threshold"}
    | {"oversized", "iterations"}
)
_OPTIONAL_KEYS = frozenset({"matching"})  # absent from models written before it was kept


@dataclass(frozen=True)
class FrozenModel:
    """Everything a run needs to decide each pair from its two records alone.

    Attributes:
        fingerprint: the protocol fingerprint it was fitted under.
        parties: the parties it was fitted on, in protocol order.
        records: how many records each of them had then (for the record, not used).
        model: m, u and the overall prior (without term-frequency adjustment).
        priors: per pair of parties ``(a, b)`` (ids), the chance that a pair of their
            records is a match.
        threshold: accept a pair whose match probability reaches this.
        oversized: per pair of parties, per block key column (one per exact rule, one per
            band of a similarity rule), the block keys skipped.
        matching: the digest of the protocol's matching settings it was fitted under
            (:func:`linkage.protocol.matching_digest`); empty for a model written before
            it was kept, which is then not checked.
    """

    fingerprint: str
    parties: tuple[str, ...]
    records: Mapping[str, int]
    model: FellegiSunterModel
    priors: Mapping[tuple[str, str], float]
    threshold: float
    oversized: Mapping[tuple[str, str], tuple[np.ndarray, ...]]
    matching: str = ""

    def prior_of(self, party_a: str, party_b: str) -> float:
        """The prior of a pair of parties; the overall prior for a pair it was not fitted on."""
        prior = self.priors.get((party_a, party_b), self.priors.get((party_b, party_a)))
        return self.model.prior if prior is None else prior

    def priors_for(self, parties: Sequence[str]) -> dict[tuple[int, int], float]:
        """The priors of a run's pairs of parties, keyed by their indices in the run."""
        return {
            (a, b): self.prior_of(parties[a], parties[b]) for a, b in itertools.combinations(range(len(parties)), 2)
        }

    def oversized_for(self, parties: Sequence[str], columns: int) -> dict[tuple[int, int], tuple[np.ndarray, ...]]:
        """The blocks to skip for a run's pairs of parties, keyed by their indices in the run.

        A pair of parties the model was not fitted on skips no block.
        """
        none = tuple(np.zeros(0, dtype=np.uint64) for _ in range(columns))
        out = {}
        for a, b in itertools.combinations(range(len(parties)), 2):
            keys = self.oversized.get((parties[a], parties[b]), self.oversized.get((parties[b], parties[a]), none))
            out[(a, b)] = keys
        return out

    def to_json(self) -> dict[str, Any]:
        """The model as plain JSON values (see :func:`write_model`)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "fingerprint": self.fingerprint,
            "parties": list(self.parties),
            "records": dict(self.records),
            "features": [
                {"name": f.name, "members": list(f.members), "radices": list(f.radices), "neutral": f.neutral}
                for f in self.model.features
            ],
            "m": [[float(x) for x in level] for level in self.model.m],
            "u": [[float(x) for x in level] for level in self.model.u],
            "prior": float(self.model.prior),
            "iterations": self.model.iterations,
            "priors": {f"{a}+{b}": float(p) for (a, b), p in self.priors.items()},
            "threshold": float(self.threshold),
            "oversized": {
                f"{a}+{b}": [[str(int(k)) for k in rule] for rule in keys] for (a, b), keys in self.oversized.items()
            },
            **({"matching": self.matching} if self.matching else {}),
        }

    @classmethod
    def from_json(cls, document: Any, protocol: Protocol, *, source: str = "the model") -> FrozenModel:
        """Read a model written by :meth:`to_json`, checking that it fits the protocol.

        Raises:
            InputError: not a frozen model, an unknown or missing key, a bad value.
            MismatchError: fitted under another protocol, for other comparisons, or under
                other matching settings.
        """
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise InputError(f"{source} is not a pprl frozen model; write one with `pprl link --save-model FILE`")
        unknown = sorted(set(document) - _KEYS - _OPTIONAL_KEYS)
        missing = sorted(_KEYS - set(document))
        if unknown or missing or document["version"] != VERSION:
            raise InputError(
                f"{source}: unknown keys {unknown}, missing keys {missing} or version {document.get('version')!r} "
                f"(this pprl reads version {VERSION}); fit the model again with `pprl link --save-model FILE`"
            )
        if document["fingerprint"] != protocol.fingerprint:
            raise MismatchError(
                f"{source} was fitted under protocol fingerprint {str(document['fingerprint'])[:12]}..., but the "
                f"protocol given has {protocol.fingerprint[:12]}...; fit a model under this protocol with "
                "`pprl link --save-model FILE`"
            )
        features = features_for(comparisons_for(protocol), protocol.comparison_groups)
        try:
            stored = tuple(
                Feature(f["name"], tuple(f["members"]), tuple(f["radices"]), int(f["neutral"]))
                for f in document["features"]
            )
            m = tuple(np.asarray(level, dtype=np.float64) for level in document["m"])
            u = tuple(np.asarray(level, dtype=np.float64) for level in document["u"])
            prior, threshold = float(document["prior"]), float(document["threshold"])
            priors = {_pair(key): float(value) for key, value in document["priors"].items()}
            oversized = {
                _pair(key): tuple(np.asarray([int(k) for k in rule], dtype=np.uint64) for rule in rules)
                for key, rules in document["oversized"].items()
            }
            parties = tuple(str(p) for p in document["parties"])
            records = {str(p): int(n) for p, n in document["records"].items()}
            iterations = int(document["iterations"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"{source} is damaged ({exc}); fit it again with `pprl link --save-model FILE`") from exc
        if stored != features or any(len(level) != f.size for f, level in zip(features, m + u, strict=False)):
            raise MismatchError(
                f"{source} weighs other features than this protocol's comparisons (its comparison_groups "
                "changed?); fit a model under this protocol with `pprl link --save-model FILE`"
            )
        matching = str(document.get("matching", ""))
        if matching and matching != matching_digest(protocol):
            raise MismatchError(
                f'{source} was fitted under other matching settings (the protocol\'s "matching" section has '
                "changed since: its rules decide pairs and its m, u and threshold were fitted under them); link "
                "every list again to fit a model under this protocol (`pprl link --save-model FILE`, or without "
                "--previous), or pass the protocol it was fitted under"
            )
        values = [prior, *priors.values(), *(x for level in m + u for x in level.tolist())]
        if not all(math.isfinite(v) and v > 0 for v in values) or not 0 < threshold < 1:
            raise InputError(f"{source} holds a probability that is not positive or a threshold outside (0, 1)")
        if any(len(columns) != len(protocol.block_limits) for columns in oversized.values()):
            raise MismatchError(f"{source} has oversized blocks for another number of block key columns")
        known = {p.id for p in protocol.parties}
        if not set(parties) <= known or not {p for pair in priors for p in pair} <= known:
            raise MismatchError(f"{source} names a party that is not in the protocol")
        model = FellegiSunterModel(features, m, u, prior, iterations, term_frequencies=False)
        return cls(document["fingerprint"], parties, records, model, priors, threshold, oversized, matching)


def _pair(key: str) -> tuple[str, str]:
    a, sep, b = key.partition("+")
    if not sep or not a or not b:
        raise ValueError(f"{key!r} is not a pair of parties written a+b")
    return a, b


def oversized_blocks(
    encodings: Sequence[Encodings], max_block_pairs: int | Sequence[int]
) -> dict[tuple[int, int], tuple[np.ndarray, ...]]:
    """Per pair of parties (indices), per block key column, the keys of blocks over its pair limit."""
    keys = [np.asarray(item.records["block"]).reshape(item.header.record_count, -1) for item in encodings]
    return {
        (a, b): oversized_keys(keys[a], keys[b], max_block_pairs)
        for a, b in itertools.combinations(range(len(encodings)), 2)
    }


def write_model(model: FrozenModel, path: Path) -> None:
    """Write the model as JSON, to a temporary file renamed into place (never half a file)."""
    text = json.dumps(model.to_json(), indent=1, sort_keys=True) + "\n"
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def read_model(path: Path, protocol: Protocol) -> FrozenModel:
    """Read a model file written by :func:`write_model`, checked against the protocol.

    Raises:
        InputError: no such file, not JSON, not a frozen model.
        MismatchError: fitted under another protocol.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such model file; write one with `pprl link --save-model {path}`") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not a JSON model file ({exc})", path=str(path)) from exc
    return FrozenModel.from_json(document, protocol, source=str(path))
