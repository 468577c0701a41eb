"""A query planned on the entity table, its OpenDP measurements calibrated, not yet released.

:func:`stats.dp.prepare` makes one; :func:`stats.dp.release` runs its measurements once and
:mod:`stats.figures` turns their rows into an answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from linkage.protocol import Protocol
from stats.query import Column, QuerySpec

__all__ = ["Part", "Prepared"]


@dataclass
class Part:
    """One OpenDP measurement of a query, the public keys its rows come in, and its noise.

    ``global_scale`` is the noise per unit of what one person can change (OpenDP's
    ``global_scale``); ``summary`` is OpenDP's description of each noisy aggregate.
    """

    measurement: Any
    keys: pl.DataFrame | None
    columns: tuple[str, ...]
    summary: pl.DataFrame
    global_scale: float
    approx: bool = False

    def rows(self, data: pl.LazyFrame) -> dict[tuple[Any, ...], dict[str, Any]]:
        """Run the measurement once: its rows by key (the empty key when ungrouped)."""
        frame = self.measurement(data).collect()
        return {tuple(row[name] for name in self.columns): row for row in frame.iter_rows(named=True)}

    def noise(self, aggregate: str) -> tuple[str, float]:
        """The distribution and scale of the aggregate whose name contains ``aggregate``."""
        for row in self.summary.iter_rows(named=True):
            if aggregate in row["aggregate"]:
                return row["distribution"], float(row["scale"])
        raise KeyError(aggregate)  # pragma: no cover - the plan always has the aggregate it made


@dataclass
class Prepared:
    """A query planned on the entity table with its noise calibrated, ready to release.

    Build it with :func:`prepare`; ``mechanism`` and the stated accuracy are known before
    anything is released. Every call of :func:`stats.dp.release` is a new release that costs
    the query's loss again, so only :func:`stats.dp.answer_query` (which records it) should
    make one.

    ``keys`` are every group key of the answer (the membership pattern last, for an
    overlap), ``possible`` says which of them anyone can have under the filter: only those
    go to OpenDP.
    """

    spec: QuerySpec
    protocol: Protocol
    data: pl.LazyFrame
    columns: tuple[Column, ...]
    keys: list[tuple[Any, ...]]
    possible: list[bool]
    parts: dict[str, Part]
    candidates: list[int] = field(default_factory=list)
    bins: list[tuple[int, int]] = field(default_factory=list)

    @property
    def group_columns(self) -> tuple[str, ...]:
        """The names of the key's parts."""
        return tuple(column.name for column in self.columns)

    @property
    def summary(self) -> pl.DataFrame:
        """OpenDP's summary of the main measurement's noise."""
        return self.parts["main"].summary

    @property
    def measurement(self) -> Any:
        """The main OpenDP measurement (a quantile also has a histogram's, in ``parts``)."""
        return self.parts["main"].measurement

    @property
    def mechanism(self) -> str:
        """The mechanisms OpenDP chose, with their noise scales."""
        described = []
        for name, part in self.parts.items():
            for row in part.summary.unique(subset=["distribution", "scale"], maintain_order=True).iter_rows(named=True):
                described.append(_describe(self.spec, name, part, row["distribution"], row["scale"]))
        return "; ".join(dict.fromkeys(described))


def _describe(spec: QuerySpec, name: str, part: Part, distribution: str, scale: float) -> str:
    if distribution in ("GumbelMin", "ExponentialMin"):  # the exponential mechanism under zCDP, under pure DP
        q = spec.q or 0.5
        return f"OpenDP exponential mechanism (report noisy min), scale {part.global_scale * max(q, 1 - q):.4g} ranks"
    names = {"Integer Gaussian": "discrete Gaussian", "Integer Laplace": "discrete Laplace"}
    shown = f"OpenDP {names.get(distribution, distribution)}, scale {scale:.4g}"
    if part.approx:
        shown += " (its zCDP loss converted to (ε, δ) by OpenDP)"
    return shown + {"histogram": " on a histogram", "count": " on the group's count, for the suppression rule"}.get(
        name, ""
    )
