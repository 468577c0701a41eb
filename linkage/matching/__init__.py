"""The linkage engine: encodings of two or more parties in, entities out.

Blocking (:mod:`~linkage.matching.block`), field comparison (:mod:`~linkage.matching.compare`),
the Fellegi-Sunter model (:mod:`~linkage.matching.model`), solving into entities
(:mod:`~linkage.matching.solve`), adding a quarter's batch to a kept linkage
(:mod:`~linkage.matching.refresh`), run in-process, on a process pool or on Dask
(:mod:`~linkage.matching.tasks`). It compares
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
    from linkage.matching.link_state import LinkState, read_state, write_state
    from linkage.matching.model import FellegiSunterModel
    from linkage.matching.refresh import BatchSummary, refit_state, refresh_state, start_state
    from linkage.matching.solve import Entity

__all__ = [
    "BatchSummary",
    "Entity",
    "FellegiSunterModel",
    "LinkResult",
    "LinkState",
    "ScoredCandidates",
    "check_inputs",
    "link",
    "load_inputs",
    "read_state",
    "refit_state",
    "refresh_state",
    "score_candidates",
    "select_and_solve",
    "start_state",
    "write_state",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "BatchSummary": "linkage.matching.refresh",
        "Entity": "linkage.matching.solve",
        "FellegiSunterModel": "linkage.matching.model",
        "LinkResult": "linkage.matching.engine",
        "LinkState": "linkage.matching.link_state",
        "ScoredCandidates": "linkage.matching.engine",
        "check_inputs": "linkage.matching.engine",
        "link": "linkage.matching.engine",
        "load_inputs": "linkage.matching.engine",
        "score_candidates": "linkage.matching.engine",
        "select_and_solve": "linkage.matching.engine",
        "read_state": "linkage.matching.link_state",
        "refit_state": "linkage.matching.refresh",
        "refresh_state": "linkage.matching.refresh",
        "start_state": "linkage.matching.refresh",
        "write_state": "linkage.matching.link_state",
    },
)
