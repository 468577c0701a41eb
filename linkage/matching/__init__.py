"""The linkage engine: encodings of two or more parties in, entities out.

Blocking (:mod:`~linkage.matching.block`), field comparison (:mod:`~linkage.matching.compare`),
the Fellegi-Sunter model (:mod:`~linkage.matching.model`), solving into entities
(:mod:`~linkage.matching.solve`), run in-process, on a process pool or on Dask
(:mod:`~linkage.matching.tasks`, :mod:`~linkage.matching.partition`). It compares
encodings; it never encodes, and never imports clkhash.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from linkage._lazy import lazy_exports

if TYPE_CHECKING:
    from linkage.matching.engine import (
        LinkResult,
        ScoredCandidates,
        check_inputs,
        link,
        load_inputs,
        score_candidates,
        select_and_solve,
    )
    from linkage.matching.model import FellegiSunterModel
    from linkage.matching.solve import Entity

__all__ = [
    "Entity",
    "FellegiSunterModel",
    "LinkResult",
    "ScoredCandidates",
    "check_inputs",
    "link",
    "load_inputs",
    "score_candidates",
    "select_and_solve",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Entity": "linkage.matching.solve",
        "FellegiSunterModel": "linkage.matching.model",
        "LinkResult": "linkage.matching.engine",
        "ScoredCandidates": "linkage.matching.engine",
        "check_inputs": "linkage.matching.engine",
        "link": "linkage.matching.engine",
        "load_inputs": "linkage.matching.engine",
        "score_candidates": "linkage.matching.engine",
        "select_and_solve": "linkage.matching.engine",
    },
)
