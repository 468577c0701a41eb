"""Differentially private answers to queries, computed with OpenDP over the entity table.

Every noisy number comes from OpenDP's Polars measurements (``make_private_lazyframe``);
nothing here draws noise. The privacy unit is one person (one row of the entity table).
Each query is one measurement whose loss, by OpenDP's privacy map, is at most the query's
cost, so the ledger's sum of costs bounds the total loss by sequential composition.

What happens after OpenDP's release is post-processing, which cannot weaken the guarantee:
a mean is the released sum over the released count; overlap cells are made non-negative
integers that add up (and the overlaps of every set of parties are sums of cells); the
protocol's output rules clamp, round and suppress counts.

Each cell carries the half-width of a 95% interval:
- counts and sums: from OpenDP's accuracy for the mechanism and scale (exact for the noise;
  as the noise is a whole number, the half-width is OpenDP's accuracy less one);
- sums of several noisy cells (overlaps of a set of parties): the normal approximation;
- means: the delta method on the released sum and count (approximate, good when the count
  is large against its noise);
- quantiles: a bound on the rank of the released value (with 95% probability the value's
  rank is within that many people of the target rank), from the exponential mechanism's
  utility guarantee; it is a bound, so it holds more often than 95%.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any
from typing import Protocol as Protocol_

import numpy as np
import opendp.prelude as dp
import polars as pl

from linkage.errors import InputError
from linkage.protocol import Protocol
from stats.budget import Loss, Receipt
from stats.entities import membership_patterns
from stats.query import Column, Condition, QuerySpec

__all__ = [
    "CONFIDENCE",
    "Answer",
    "Cell",
    "Prepared",
    "Spend",
    "answer_queries",
    "answer_query",
    "condition_expr",
    "prepare",
    "project_to_counts",
]

dp.enable_features("contrib")  # OpenDP's Polars API is in its "contrib" (not yet vetted) tier

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
Z = 1.959963984540054  # the normal quantile for a two-sided 95% interval
MAX_PEOPLE = 1_000_000_000  # a public upper bound on rows per group, which OpenDP needs for sums
MAX_CANDIDATES = 1000


@dataclass(frozen=True)
class Cell:
    """One released number, its group key, and the half-width of its 95% interval.

    ``value`` is ``None`` when an output rule suppressed it or it cannot be computed
    (a mean over no one); ``note`` says which.
    """

    key: tuple[str | bool | None, ...]
    value: float | int | None
    half_width: float | None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """The cell as plain JSON values."""
        return {"key": list(self.key), "value": self.value, "half_width": self.half_width, "note": self.note}


@dataclass(frozen=True)
class Answer:
    """A differentially private answer, with how accurate it is and what it cost.

    ``columns`` name the parts of each cell's key. For ``overlap``, ``derived`` holds the
    number of people known to every party of a set (key: the grouping values, then the
    set as ``a+b``), computed from the cells.
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

    def to_json(self) -> dict[str, Any]:
        """The answer as plain JSON values (what the service sends and ``--json`` prints)."""
        return {
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

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Answer:
        """The inverse of :meth:`to_json` (for clients of the service)."""

        def cells(items: Sequence[dict[str, Any]]) -> tuple[Cell, ...]:
            return tuple(Cell(tuple(c["key"]), c["value"], c["half_width"], c.get("note", "")) for c in items)

        return cls(
            query=document["query"],
            kind=document["kind"],
            statistic=document["statistic"],
            columns=tuple(document["columns"]),
            cells=cells(document["cells"]),
            mechanism=document["mechanism"],
            cost=Loss.from_json(document["cost"]),
            interval=document["interval"],
            derived=cells(document.get("derived", [])),
            notes=tuple(document.get("notes", [])),
            confidence=document.get("confidence", CONFIDENCE),
            released=document.get("released", True),
        )


def condition_expr(condition: Condition) -> pl.Expr:
    """A ``--where`` condition as a Polars expression OpenDP can plan."""
    column = pl.col(condition.column.name)
    if condition.op == ">=":
        return column >= condition.values[0]
    if condition.op == "<=":
        return column <= condition.values[0]
    matches = [column == value for value in condition.values]  # OpenDP plans == and |, not is_in
    return functools.reduce(operator.or_, matches)


def _keys(columns: Sequence[tuple[str, str, Sequence[Any]]]) -> pl.DataFrame:
    """Every combination of the public keys of the grouping columns."""
    dtypes = {"categorical": pl.String, "boolean": pl.Boolean, "pattern": pl.String}
    rows = list(itertools.product(*(keys for _, _, keys in columns)))
    return pl.DataFrame(rows, schema={name: dtypes[kind] for name, kind, _ in columns}, orient="row")


def _variance(distribution: str, scale: float) -> float:
    if "Laplace" in distribution:
        return 2 * scale * scale
    return scale * scale


def _describe(distribution: str, scale: float) -> str:
    names = {
        "Integer Gaussian": "discrete Gaussian",
        "Integer Laplace": "discrete Laplace",
        "GumbelMin": "exponential mechanism (report noisy min)",
    }
    return f"OpenDP {names.get(distribution, distribution)}, scale {scale:.4g}"


def _sum_accuracy(distribution: str, scale: float, cells: int) -> float:
    """95% half-width of the sum of ``cells`` independent noisy cells.

    OpenDP states accuracy ``a`` as ``P(|error| >= a) <= 0.05``; the noise on counts and
    integer sums is a whole number, so the truth is within ``a - 1`` with probability at
    least 95%, and that is the half-width an answer states.
    """
    if cells == 1:
        if "Laplace" in distribution:
            return float(dp.discrete_laplacian_scale_to_accuracy(scale, ALPHA)) - 1
        return float(dp.discrete_gaussian_scale_to_accuracy(scale, ALPHA)) - 1
    return Z * math.sqrt(cells * _variance(distribution, scale))


def project_to_counts(noisy: Sequence[float]) -> list[int]:
    """The non-negative integers closest (least squares) to ``noisy`` with the same total.

    The total is the noisy total clamped at zero; the projection onto the simplex is then
    rounded by largest remainders, so the cells still add up exactly.

    >>> project_to_counts([10, -3, 4])
    [9, 0, 2]
    >>> sum(project_to_counts([5.2, 5.2, -1.0, 0.7]))
    10
    """
    values = np.asarray(noisy, dtype=float)
    total = max(0.0, float(np.rint(values.sum())))
    if total == 0 or values.size == 0:
        return [0] * values.size
    ordered = np.sort(values)[::-1]
    cumulative = np.cumsum(ordered) - total
    index = np.arange(1, values.size + 1)
    last = np.nonzero(ordered - cumulative / index > 0)[0][-1]
    shift = cumulative[last] / (last + 1)
    projected = np.maximum(values - shift, 0.0)
    floors = np.floor(projected)
    short = int(total - floors.sum())
    order = np.argsort(-(projected - floors), kind="stable")
    floors[order[:short]] += 1
    return [int(v) for v in floors]


@dataclass
class Prepared:
    """A query planned on the entity table with its noise calibrated, ready to release.

    Build it with :func:`prepare`; ``mechanism`` and the stated accuracy are known before
    anything is released. Every call of :meth:`release` is a new release that costs the
    query's loss again, so only :func:`answer_query` (which records it) should make one.
    """

    spec: QuerySpec
    protocol: Protocol
    measurement: Any
    data: pl.LazyFrame
    group_columns: tuple[str, ...]
    keys: pl.DataFrame | None
    summary: pl.DataFrame
    candidates: list[int] = field(default_factory=list)

    @property
    def mechanism(self) -> str:
        """The mechanisms OpenDP chose, with their noise scales."""
        rows = self.summary.unique(subset=["distribution", "scale"], maintain_order=True).iter_rows(named=True)
        return "; ".join(_describe(row["distribution"], row["scale"]) for row in rows)

    def _row(self, aggregate: str) -> dict[str, Any]:
        for row in self.summary.iter_rows(named=True):
            if aggregate in row["aggregate"]:
                return row
        raise KeyError(aggregate)  # pragma: no cover - the plan always has the aggregate it made

    def _statistic(self) -> str:
        spec = self.spec
        if spec.kind == "overlap":
            return "people by the parties that know them"
        if spec.kind == "count":
            return "people"
        assert spec.attribute is not None  # noqa: S101 - checked when the query was parsed
        name = spec.attribute.name
        if spec.kind == "quantile":
            return f"{spec.q:g}-quantile of {name}"
        return f"{spec.kind} of {name}"

    def _answer(self, cells: list[Cell], derived: list[Cell], interval: str, notes: list[str]) -> Answer:
        return Answer(
            query=self.spec.text(),
            kind=self.spec.kind,
            statistic=self._statistic(),
            columns=self.group_columns,
            cells=tuple(cells),
            derived=tuple(derived),
            mechanism=self.mechanism,
            cost=self.spec.cost,
            interval=interval,
            notes=tuple(notes),
        )

    def release(self) -> Answer:
        """Run the OpenDP measurement once, then post-process its output into an answer."""
        frame = self.measurement(self.data).collect()
        if self.keys is not None:  # rows in the order of the public keys
            frame = self.keys.join(
                frame, on=list(self.group_columns), how="left", nulls_equal=True, maintain_order="left"
            )
        return self.release_from(list(frame.iter_rows(named=True)))

    def preview(self) -> Answer:
        """The answer's shape and stated accuracy, with no values: spends nothing."""
        placeholder = [dict(zip(self.group_columns, row, strict=True)) for row in self._key_rows()]
        answer = self.release_from(placeholder)
        return replace(answer, released=False)

    def _key_rows(self) -> list[tuple[Any, ...]]:
        if self.keys is None:
            return [()]
        return list(self.keys.iter_rows())

    def release_from(self, rows: list[dict[str, Any]]) -> Answer:
        """Post-process given output rows (``None`` values give an answer without values)."""
        kind = self.spec.kind
        if kind in ("count", "overlap"):
            return self._counts(rows)
        if kind == "sum":
            return self._sums(rows)
        if kind == "mean":
            return self._means(rows)
        return self._quantiles(rows)

    # -- post-processing, one per kind ------------------------------------------------

    def _key(self, row: dict[str, Any], columns: Sequence[str] | None = None) -> tuple[Any, ...]:
        return tuple(row.get(name) for name in (columns if columns is not None else self.group_columns))

    def _rules(self) -> tuple[int, int]:
        rules = self.protocol.output_rules
        return int(rules.get("suppress_below", 0)), max(1, int(rules.get("round_to_base", 1)))

    def _rounded(self, value: int) -> int:
        """A noisy count as published: at least 0, rounded to the protocol's base."""
        _, base = self._rules()
        return int(base * round(max(0, value) / base))

    def _count_cell(self, key: tuple[Any, ...], value: int | None, half_width: float) -> Cell:
        suppress_below, base = self._rules()
        if value is None:
            return Cell(key, None, half_width + base // 2)
        rounded = self._rounded(value)
        if rounded < suppress_below:
            return Cell(key, None, half_width + base // 2, f"suppressed: below {suppress_below}")
        return Cell(key, rounded, half_width + base // 2)

    def _count_notes(self) -> list[str]:
        suppress_below, base = self._rules()
        notes = ["negative noisy counts are shown as 0"]
        if base > 1:
            notes.append(f"counts are rounded to a multiple of {base} (the interval includes the rounding)")
        if suppress_below:
            notes.append(f"counts below {suppress_below} are suppressed (the protocol's output rule)")
        return notes

    def _counts(self, rows: list[dict[str, Any]]) -> Answer:
        row = self._row("Length")
        distribution, scale = row["distribution"], row["scale"]
        single = _sum_accuracy(distribution, scale, 1)
        if self.spec.kind == "count":
            cells = [self._count_cell(self._key(r), r.get("len"), single) for r in rows]
            return self._answer(cells, [], "OpenDP accuracy of the count's noise", self._count_notes())
        return self._overlap(rows, distribution, scale)

    def _overlap(self, rows: list[dict[str, Any]], distribution: str, scale: float) -> Answer:
        patterns = membership_patterns(self.protocol)
        outer = self.group_columns[:-1]
        groups: dict[tuple[Any, ...], dict[str, int | None]] = {}
        for row in rows:
            groups.setdefault(self._key(row, outer), {})[row["pattern"]] = row.get("len")
        cells: list[Cell] = []
        derived: list[Cell] = []
        single = _sum_accuracy(distribution, scale, 1)
        party_sets = [p.split("+") for p in patterns]
        for outer_key, noisy in groups.items():
            released = all(noisy.get(p) is not None for p in patterns)
            counts: list[int | None] = [None] * len(patterns)
            if released:  # cells rounded before they are added up, so the sums stay consistent
                projected = project_to_counts([float(noisy[p]) for p in patterns])  # type: ignore[arg-type]
                counts = [self._rounded(count) for count in projected]
            by_pattern = dict(zip(patterns, counts, strict=True))
            for pattern in patterns:
                cells.append(self._count_cell((*outer_key, pattern), by_pattern[pattern], single))
            for parties in [*party_sets, None]:
                members = [p for p in patterns if parties is None or set(parties) <= set(p.split("+"))]
                values = [by_pattern[p] for p in members]
                total = None if None in values else sum(values)  # type: ignore[arg-type]
                label = "any" if parties is None else "+".join(parties)
                width = _sum_accuracy(distribution, scale, len(members))
                derived.append(self._count_cell((*outer_key, label), total, width))
        notes = [
            "cells are made non-negative whole numbers that add up to the noisy total (least squares)",
            "'known to all of' a set of parties adds up the cells of every pattern that includes the set; "
            "its interval uses the normal approximation",
            *self._count_notes()[1:],
        ]
        return self._answer(cells, derived, "OpenDP accuracy per cell; normal approximation for sums of cells", notes)

    def _sums(self, rows: list[dict[str, Any]]) -> Answer:
        row = self._row("Sum")
        width = _sum_accuracy(row["distribution"], row["scale"], 1)
        name = self.spec.attribute.name  # type: ignore[union-attr]
        cells = [Cell(self._key(r), r.get(name), width) for r in rows]
        return self._answer(cells, [], "OpenDP accuracy of the sum's noise", [f"people with no {name} add nothing"])

    def _means(self, rows: list[dict[str, Any]]) -> Answer:
        attribute = self.spec.attribute
        assert attribute is not None and attribute.lower is not None and attribute.upper is not None  # noqa: S101
        total, count = self._row("Sum"), self._row("Length")
        cells = []
        for row in rows:
            noisy_sum, noisy_count = row.get(attribute.name), row.get("len")
            if noisy_sum is None or noisy_count is None:
                cells.append(Cell(self._key(row), None, None))
                continue
            if noisy_count < 1:
                cells.append(Cell(self._key(row), None, None, "too few people for a mean"))
                continue
            mean = min(max(noisy_sum / noisy_count, attribute.lower), attribute.upper)
            variance = _variance(total["distribution"], total["scale"]) + mean * mean * _variance(
                count["distribution"], count["scale"]
            )
            cells.append(Cell(self._key(row), mean, Z * math.sqrt(variance) / noisy_count))
        notes = [
            f"the mean is the noisy sum over the noisy count of people with a recorded {attribute.name}, "
            f"kept within {attribute.lower}..{attribute.upper}"
        ]
        if attribute.type == "boolean":
            notes.append(f"{attribute.name} counts as 1 when true, so its mean is the share of people for whom it is")
        return self._answer(cells, [], "delta method on the noisy sum and count (approximate)", notes)

    def _quantiles(self, rows: list[dict[str, Any]]) -> Answer:
        row = self._row("Quantile")
        q = self.spec.q or 0.5
        rank = row["scale"] * math.log(len(self.candidates) / ALPHA) * max(q, 1 - q)
        name = self.spec.attribute.name  # type: ignore[union-attr]
        cells = [Cell(self._key(r), r.get(name), rank) for r in rows]
        notes = [
            "the half-width is in people, not in units of the value: with 95% probability the released "
            f"value's rank among people with a recorded {name} is within that many places of the target rank"
        ]
        return self._answer(cells, [], "rank bound of the exponential mechanism (conservative)", notes)


def _calibrate(make: Any, cost: Loss, rows: int = 1) -> Any:
    """The measurement with the least noise whose privacy loss, by OpenDP's own map, fits ``cost``.

    The loss is that of adding or removing one person, who may make up to ``rows`` rows
    (a symmetric distance of ``rows``). Every mechanism here has a loss that falls as one
    over the (global) noise scale, or its square under zCDP, so the loss at scale 1 gives
    the scale directly; it is then nudged up until OpenDP's map agrees despite rounding.
    Losses with a delta are found by OpenDP's binary search instead.
    """
    if cost.delta:
        d_out = (float(cost.amount), float(cost.delta))
        return make(dp.binary_search_param(make, d_in=rows, d_out=d_out, T=float))
    budget = float(cost.amount)
    at_one = make(1.0).map(rows)
    scale = math.sqrt(at_one / budget) if cost.measure == "rho" else at_one / budget
    for _ in range(60):
        measurement = make(scale)
        if measurement.map(rows) <= budget:
            return measurement
        scale *= 1 + 1e-9
    raise InputError(f"could not calibrate the noise to {cost}")  # pragma: no cover - the loss is monotone


def _output_measure(cost: Loss) -> Any:
    if cost.measure == "rho":
        return dp.zero_concentrated_divergence()
    if cost.delta:
        return dp.approximate(dp.max_divergence())
    return dp.max_divergence()


def prepare(table: pl.DataFrame, spec: QuerySpec, protocol: Protocol) -> Prepared:
    """Plan a query on the entity table with OpenDP and calibrate its noise, releasing nothing.

    The plan is a Polars query OpenDP makes private (``make_private_lazyframe``) with one
    person as the privacy unit, who makes up to the protocol's ``rows_per_person`` rows;
    its noise is the least that keeps OpenDP's privacy map of the whole measurement
    within the query's cost.

    Raises:
        InputError: the plan is one OpenDP cannot make private (the message says why).
    """
    keys_spec: list[tuple[str, str, Sequence[Any]]] = [(c.name, c.type, c.keys) for c in spec.by]
    if spec.kind == "overlap":
        keys_spec.append(("pattern", "pattern", membership_patterns(protocol)))
    group_columns = tuple(name for name, _, _ in keys_spec)
    data = table.lazy()
    domain = dp.with_margin(dp.domain_of(data, infer=True), dp.polars.Margin(by=(), max_length=MAX_PEOPLE))
    if group_columns:
        domain = dp.with_margin(domain, dp.polars.Margin(by=list(group_columns), max_length=MAX_PEOPLE))
    plan = data
    for condition in spec.where:
        plan = plan.filter(condition_expr(condition))
    candidates: list[int] = []
    aggregates: list[Any]
    if spec.kind in ("count", "overlap"):
        aggregates = [dp.len(signed=True)]
    else:
        attribute: Column = spec.attribute  # type: ignore[assignment]
        plan = plan.filter(pl.col(attribute.name).is_not_null())
        value = pl.col(attribute.name).cast(pl.Int64)
        bounds = (int(attribute.lower), int(attribute.upper))  # type: ignore[arg-type]
        if spec.kind == "sum":
            aggregates = [value.dp.sum(bounds)]
        elif spec.kind == "mean":
            aggregates = [value.dp.sum(bounds), dp.len(signed=True)]
        else:
            step = max(1, math.ceil((bounds[1] - bounds[0] + 1) / MAX_CANDIDATES))
            candidates = list(range(bounds[0], bounds[1] + 1, step))
            aggregates = [value.dp.quantile(spec.q, candidates)]
    keys = None
    if group_columns:
        keys = _keys(keys_spec)
        grouped = plan.group_by(list(group_columns)).agg(*aggregates)
        plan = keys.lazy().join(grouped, on=list(group_columns), how="left", nulls_equal=True)
    else:
        plan = plan.select(*aggregates)

    def make(scale: float) -> Any:
        return dp.m.make_private_lazyframe(
            domain, dp.symmetric_distance(), _output_measure(spec.cost), plan, global_scale=scale
        )

    try:
        measurement = _calibrate(make, spec.cost, protocol.rows_per_person)
        summary = dp.summarize_polars_measurement(measurement, ALPHA)
    except Exception as exc:  # OpenDP raises its own error types for plans it cannot make private
        raise InputError(f"OpenDP cannot make this query private: {exc}") from exc
    return Prepared(spec, protocol, measurement, data, group_columns, keys, summary, candidates)


class Spend(Protocol_):
    """How a ledger lets a release happen: check, run the body, record (see ``FileLedger.spend``)."""

    def __call__(self, who: str, query: str, cost: Loss) -> AbstractContextManager[Receipt]:
        """Check ``cost`` fits, run the body (which fills in the receipt), then record the release."""


def answer_query(
    table: pl.DataFrame, spec: QuerySpec, protocol: Protocol, spend: Spend, who: str, *, dry_run: bool = False
) -> Answer:
    """Check the budget, plan, release once and record the release; or, with ``dry_run``, only plan.

    The ledger is held from the budget check to the record, so nothing is released that
    is not recorded, and a refused or failed query records nothing.

    Raises:
        BudgetExceeded: the ledger cannot pay for it (nothing is released or recorded).
        InputError: OpenDP cannot make the plan private.
    """
    if dry_run:
        return prepare(table, spec, protocol).preview()
    with spend(who, spec.text(), spec.cost) as receipt:
        prepared = prepare(table, spec, protocol)
        receipt.mechanism = prepared.mechanism
        return prepared.release()


def answer_queries(
    table: pl.DataFrame, specs: Sequence[QuerySpec], protocol: Protocol, spend: Spend, who: str, label: str
) -> list[Answer]:
    """Release several queries as one spend (a report): all are paid for and released, or none.

    The ledger records one release, ``label`` with every query, at their summed cost; it
    is held from the budget check to the record, so no other release can slip in between.

    Raises:
        BudgetExceeded: the ledger cannot pay for them all (nothing is released or recorded).
        InputError: no query, or OpenDP cannot make one of them private (nothing is recorded).
    """
    if not specs:
        raise InputError("send at least one query")
    total = sum((spec.cost for spec in specs[1:]), specs[0].cost)
    text = f"{label}: " + "; ".join(spec.text() for spec in specs)
    with spend(who, text, total) as receipt:
        prepared = [prepare(table, spec, protocol) for spec in specs]
        receipt.mechanism = "; ".join(dict.fromkeys(item.mechanism for item in prepared))
        return [item.release() for item in prepared]
