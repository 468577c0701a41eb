"""What a differentially private query answers: cells of numbers with their intervals.

Plain data with its JSON form (what the service sends and ``pprl query --json`` prints);
:mod:`stats.figures` makes them from OpenDP's output, :mod:`stats.dp` hands them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stats.accuracy import CONFIDENCE
from stats.budget import Loss

__all__ = ["Answer", "Cell"]


@dataclass(frozen=True)
class Cell:
    """One released number, its group key, and its 95% interval.

    ``value`` is ``None`` when an output rule suppressed it or it cannot be computed
    (a mean over no one); ``note`` says which. The interval is ``lower``..``upper`` when
    given (a quantile's is not centred on its value; a mean's stays within the attribute's
    bounds), else ``value`` ± ``half_width``; ``half_width`` always covers it.
    """

    key: tuple[str | bool | None, ...]
    value: float | int | None
    half_width: float | None
    note: str = ""
    lower: float | None = None
    upper: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The cell as plain JSON values."""
        return {
            "key": list(self.key),
            "value": self.value,
            "half_width": self.half_width,
            "lower": self.lower,
            "upper": self.upper,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Cell:
        """The inverse of :meth:`to_json`."""
        return cls(
            tuple(document["key"]),
            document["value"],
            document["half_width"],
            document.get("note", ""),
            document.get("lower"),
            document.get("upper"),
        )


@dataclass(frozen=True)
class Answer:
    """A differentially private answer, with how accurate it is and what it cost.

    ``columns`` name the parts of each cell's key. For ``overlap``, ``derived`` holds the
    number of people known to every party of a set (key: the grouping values, then the
    set as ``a+b``), computed from the cells. ``equivalent_delta`` is the δ at which a ρ
    cost is also shown as (ε, δ).
    """

    query: str
    kind: str
    statistic: str
    columns: tuple[str, ...]
    cells: tuple[Cell, ...]
    mechanism: str
    cost: Loss
    interval: str
    derived: tuple[Cell, ...] = ()
    notes: tuple[str, ...] = ()
    confidence: float = CONFIDENCE
    released: bool = True
    equivalent_delta: float | None = None

    @property
    def cost_shown(self) -> str:
        """The cost, with its (ε, δ) equivalent when it is a ρ."""
        return self.cost.shown(self.equivalent_delta) if self.equivalent_delta else str(self.cost)

    def to_json(self) -> dict[str, Any]:
        """The answer as plain JSON values (what the service sends and ``--json`` prints)."""
        document = {
            "query": self.query,
            "kind": self.kind,
            "statistic": self.statistic,
            "columns": list(self.columns),
            "cells": [cell.to_json() for cell in self.cells],
            "derived": [cell.to_json() for cell in self.derived],
            "mechanism": self.mechanism,
            "cost": self.cost.to_json(),
            "confidence": self.confidence,
            "interval": self.interval,
            "notes": list(self.notes),
            "released": self.released,
        }
        if self.equivalent_delta is not None and self.cost.measure == "rho":
            epsilon, delta = self.cost.approx_dp(self.equivalent_delta)
            document["approx_dp"] = {"epsilon": epsilon, "delta": delta}
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Answer:
        """The inverse of :meth:`to_json` (for clients of the service)."""
        approx = document.get("approx_dp")
        return cls(
            query=document["query"],
            kind=document["kind"],
            statistic=document["statistic"],
            columns=tuple(document["columns"]),
            cells=tuple(Cell.from_json(c) for c in document["cells"]),
            mechanism=document["mechanism"],
            cost=Loss.from_json(document["cost"]),
            interval=document["interval"],
            derived=tuple(Cell.from_json(c) for c in document.get("derived", [])),
            notes=tuple(document.get("notes", [])),
            confidence=document.get("confidence", CONFIDENCE),
            released=document.get("released", True),
            equivalent_delta=approx["delta"] if approx else None,
        )
