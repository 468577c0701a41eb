"""Differentially private answers to queries, computed with OpenDP over the entity table.

Every noisy number comes from OpenDP's Polars measurements (``make_private_lazyframe``);
nothing here draws noise. The privacy unit is one person, counted as the rows of the entity
table their records can move: the protocol's ``rows_per_person``, at least the parties
squared (:func:`stats.entities.privacy_unit`, ``docs/privacy-unit.md``). A query is one
OpenDP measurement (a quantile: two, an exponential mechanism and a histogram, on shares of
the cost; under a suppression rule a quantile or a mean also has the group's count, on a
share) whose loss, by OpenDP's privacy map, is at most the query's cost, so the ledger's sum
of costs bounds the total loss by sequential composition.

A query is planned and its noise calibrated first, then released, and only then recorded
in the ledger and handed out; the ledger is held only for its own check and record, never
while OpenDP computes, and planning and release each have a time limit. A computed answer
that the ledger refuses is thrown away unseen, which spends nothing.

What happens after OpenDP's release is post-processing (:mod:`stats.figures`), which cannot
weaken the guarantee; how accurate each figure is, is in :mod:`stats.accuracy`, and which
cells can hold anyone and what the output rules let out, in :mod:`stats.cells`.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, TypeVar
from typing import Protocol as Protocol_

import opendp.prelude as dp
import polars as pl

from linkage.errors import InputError, PprlError
from linkage.protocol import Protocol, equivalent_delta
from stats.accuracy import CONFIDENCE, noise_variance, scale_for_half_width
from stats.budget import Loss, Receipt, epsilon_of_rho
from stats.cells import OutputRules, Possible
from stats.entities import membership_patterns
from stats.query import Column, Condition, QuerySpec

__all__ = [
    "CONFIDENCE",
    "RELEASE_TIMEOUT",
    "Answer",
    "Cell",
    "Prepared",
    "ReleaseTimeout",
    "Spend",
    "answer_queries",
    "answer_query",
    "condition_expr",
    "cost_for_half_width",
    "prepare",
]

dp.enable_features("contrib")  # OpenDP's Polars API is in its "contrib" (not yet vetted) tier

MAX_PEOPLE = 1_000_000_000  # a public upper bound on rows per group, which OpenDP needs for sums
MAX_CANDIDATES = 1000  # values the exponential mechanism chooses a quantile from
HISTOGRAM_BINS = 64  # bins of the histogram a quantile's interval is read from
QUANTILE_SHARE = Fraction(1, 4)  # of a quantile's cost, for the exponential mechanism; the rest, the histogram
# Under a suppression rule, of a quantile's or a mean's cost, for the group's own noisy count that decides
# it: the histogram's total or the mean's divisor cannot, since releasing only when their noise is high
# biases the interval read off them.
SUPPRESSION_SHARE = Fraction(1, 8)
# Noise above a million people's worth (per unit a person can change a figure) answers
# nothing; refusing it also keeps OpenDP from slow work on absurd scales (issue 15, row 2).
MAX_GLOBAL_SCALE = 1e6
RELEASE_TIMEOUT = 30.0  # seconds for planning, and again for releasing, one query or batch
BIN = "__bin"  # the histogram's bin column (never an attribute name: those are [a-z][a-z0-9_]*)


class ReleaseTimeout(PprlError):
    """Planning or releasing a query took too long and was abandoned; nothing was released or spent."""

    http_status = 503


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


def condition_expr(condition: Condition) -> pl.Expr:
    """A ``--where`` condition as a Polars expression OpenDP can plan."""
    column = pl.col(condition.column.name)
    if condition.op == ">=":
        return column >= condition.values[0]
    if condition.op == "<=":
        return column <= condition.values[0]
    matches = [column == value for value in condition.values]  # OpenDP plans == and |, not is_in
    return functools.reduce(operator.or_, matches)


def _bins_expr(source: str, edges: Sequence[int], labels: Sequence[str], name: str) -> pl.Expr:
    """A column of bin labels for an integer column, with public lower ``edges`` (OpenDP plans ``cut``)."""
    breaks = [edge - 1 for edge in edges[1:]]  # cut's bins are right-closed: (-inf, b1], (b1, b2], ...
    return pl.col(source).cut(breaks, labels=list(labels)).cast(pl.String).alias(name)


_DTYPES = {"categorical": pl.String, "boolean": pl.Boolean, "pattern": pl.String, "binned": pl.String, "bin": pl.String}


def _keys(names: Sequence[str], kinds: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> pl.DataFrame:
    schema = {name: _DTYPES[kind] for name, kind in zip(names, kinds, strict=True)}
    return pl.DataFrame(list(rows), schema=schema, orient="row")


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
    anything is released. Every call of :meth:`release` is a new release that costs the
    query's loss again, so only :func:`answer_query` (which records it) should make one.

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

    def release(self) -> Answer:
        """Run each OpenDP measurement once, then post-process the output into an answer."""
        return self.release_from({name: part.rows(self.data) for name, part in self.parts.items()})

    def preview(self) -> Answer:
        """The answer's shape and stated accuracy, with no values: spends nothing."""
        return replace(self.release_from({name: {} for name in self.parts}), released=False)

    def release_from(self, rows: dict[str, dict[tuple[Any, ...], dict[str, Any]]]) -> Answer:
        """Post-process given output rows by key (no rows: an answer without values)."""
        from stats import figures  # the post-processing, one function per query kind

        return figures.answer(self, rows)


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


def _share(loss: Loss, share: Fraction) -> Loss:
    return Loss(loss.measure, loss.amount * share, loss.delta * share)


def _fit(make: Callable[[float], Any], measure: str, budget: float, rows: int) -> tuple[Any, float]:
    """The least-noise measurement whose loss (OpenDP's map at ``rows``) is at most ``budget``.

    Every mechanism here has a loss that falls as one over the (global) noise scale, or
    its square under zCDP, so the loss at scale 1 gives the scale directly; it is then
    nudged up until OpenDP's map agrees despite rounding.

    Raises:
        InputError: the scale would be above :data:`MAX_GLOBAL_SCALE` (the cost is too small).
    """
    at_one = make(1.0).map(rows)
    if isinstance(at_one, tuple):  # approximate DP: (epsilon, delta)
        at_one = at_one[0]
    scale = math.sqrt(at_one / budget) if measure == "rho" else at_one / budget
    if scale > MAX_GLOBAL_SCALE:
        least = at_one / MAX_GLOBAL_SCALE**2 if measure == "rho" else at_one / MAX_GLOBAL_SCALE
        raise InputError(
            f"{measure}={budget:g} is so small that the noise would be {scale:.3g} times what one person can change, "
            f"which answers nothing; ask for at least {measure}={least:.2g} (or none at all)"
        )
    for _ in range(60):
        measurement = make(scale)
        loss = measurement.map(rows)
        if (loss[0] if isinstance(loss, tuple) else loss) <= budget:
            return measurement, scale
        scale *= 1 + 1e-9
    raise InputError(f"could not calibrate the noise to {measure}={budget:g}")  # pragma: no cover - monotone


def _rho_within(epsilon: float, delta: float) -> float:
    """The largest ρ whose (ε, δ) conversion (OpenDP's, as :func:`epsilon_of_rho`) is within ``epsilon``."""
    low, high = 0.0, epsilon  # rho <= epsilon always fits below: the conversion adds to rho
    for _ in range(60):
        middle = (low + high) / 2
        if epsilon_of_rho(middle, delta) <= epsilon:
            low = middle
        else:
            high = middle
    return low


def _spread(summary: pl.DataFrame) -> float:
    return max(noise_variance(r["distribution"], r["scale"]) for r in summary.iter_rows(named=True) if r["scale"])


def _measure(plan: Callable[[Any, float], Any], loss: Loss, rows: int) -> tuple[Any, pl.DataFrame, float, bool]:
    """Calibrate a plan to a loss: the measurement, OpenDP's summary of it, its global scale, and if converted.

    ρ uses OpenDP's discrete Gaussian (or exponential mechanism) under zCDP; ε alone, its
    discrete Laplace. An ε with δ > 0 takes whichever has less noise: the discrete Laplace
    at ε (δ left unused), or the discrete Gaussian at the largest ρ whose (ε, δ) conversion
    by OpenDP's ``make_zCDP_to_approxDP`` fits, OpenDP's map checking the converted loss.
    """
    if loss.measure == "rho":
        measurement, scale = _fit(lambda s: plan(dp.zero_concentrated_divergence(), s), "rho", float(loss.amount), rows)
        return measurement, dp.summarize_polars_measurement(measurement), scale, False
    epsilon, delta = float(loss.amount), float(loss.delta)
    laplace, scale = _fit(lambda s: plan(dp.max_divergence(), s), "epsilon", epsilon, rows)
    summary = dp.summarize_polars_measurement(laplace)
    if not delta:
        return laplace, summary, scale, False
    rho = _rho_within(epsilon, delta)
    for _ in range(10):  # OpenDP's map may land a rounding error above epsilon: shrink rho a hair
        inner, inner_scale = _fit(lambda s: plan(dp.zero_concentrated_divergence(), s), "rho", rho, rows)
        converted: Any = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(inner), delta)
        spent_epsilon, spent_delta = converted.map(rows)
        if spent_epsilon <= epsilon and spent_delta <= delta:
            inner_summary = dp.summarize_polars_measurement(inner)
            if _spread(inner_summary) < _spread(summary):
                return converted, inner_summary, inner_scale, True
            break
        rho *= 1 - 1e-6
    return laplace, summary, scale, False


def prepare(table: pl.DataFrame, spec: QuerySpec, protocol: Protocol) -> Prepared:
    """Plan a query on the entity table with OpenDP and calibrate its noise, releasing nothing.

    The plan is a Polars query OpenDP makes private (``make_private_lazyframe``) with one
    person as the privacy unit, who moves up to the protocol's ``rows_per_person`` rows;
    its noise is the least that keeps OpenDP's privacy map of the whole measurement
    within the query's cost. Group keys come from the protocol; those the filter rules
    out for everyone are left out of the plan (they are answered as exactly empty).

    Raises:
        InputError: the filter rules out everyone, the cost is too small to answer
            anything, or the plan is one OpenDP cannot make private (the message says why).
    """
    columns = list(spec.by)
    if spec.kind == "overlap":
        columns.append(Column("pattern", "pattern", tuple(membership_patterns(protocol))))
    keys = list(itertools.product(*(column.keys for column in columns)))
    possible = Possible(protocol, spec)
    flags = [bool(possible.patterns) and possible.key(columns, key) for key in keys]
    if not any(flags):
        shown = " ".join(f"--where {condition.text()}" for condition in spec.where) or "the query"
        raise InputError(
            f"{shown} rules out everyone (by the protocol: who reports what, and the bounds), "
            "so there is nothing to release; nothing was spent"
        )
    data = table.lazy()
    names = [column.name for column in columns]
    real = [name for name in names if name in table.columns]
    domain = dp.with_margin(dp.domain_of(data, infer=True), dp.polars.Margin(by=(), max_length=MAX_PEOPLE))
    if real and len(real) == len(names):
        domain = dp.with_margin(domain, dp.polars.Margin(by=real, max_length=MAX_PEOPLE))
    plan = data
    for column in columns:
        if column.type == "binned":
            labels = [str(key) for key in column.keys if key is not None]
            plan = plan.with_columns(_bins_expr(column.attribute, column.bins, labels, column.name))
    for condition in spec.where:
        plan = plan.filter(condition_expr(condition))
    kinds = [column.type for column in columns]
    wanted = [key for key, flag in zip(keys, flags, strict=True) if flag]
    group_keys = _keys(names, kinds, wanted) if names else None

    def grouped(base: pl.LazyFrame, aggregates: list[Any], extra: Sequence[tuple[str, str, Sequence[Any]]] = ()) -> Any:
        by = [*names, *(name for name, _, _ in extra)]
        if not by:
            return base.select(*aggregates), None
        rows = [(*key, *more) for key in wanted for more in itertools.product(*(values for _, _, values in extra))]
        frame = _keys(by, [*kinds, *(kind for _, kind, _ in extra)], rows) if extra else group_keys
        assert frame is not None  # noqa: S101 - grouped, so there are keys
        joined = frame.lazy().join(base.group_by(by).agg(*aggregates), on=by, how="left", nulls_equal=True)
        return joined, frame

    parts_plans: dict[str, tuple[Any, pl.DataFrame | None, tuple[str, ...], Fraction]] = {}
    candidates: list[int] = []
    bins: list[tuple[int, int]] = []
    if spec.kind in ("count", "overlap"):
        query, frame = grouped(plan, [dp.len(signed=True)])
        parts_plans["main"] = (query, frame, tuple(names), Fraction(1))
    else:
        attribute = spec.attribute
        assert attribute is not None and attribute.lower is not None and attribute.upper is not None  # noqa: S101
        recorded = plan.filter(pl.col(attribute.name).is_not_null())
        value = pl.col(attribute.name).cast(pl.Int64)
        bounds = (attribute.lower, attribute.upper)
        if spec.kind == "sum":
            query, frame = grouped(recorded, [value.dp.sum(bounds)])
            parts_plans["main"] = (query, frame, tuple(names), Fraction(1))
        elif spec.kind == "mean":
            rule = OutputRules.of(protocol).suppress_below > 1
            query, frame = grouped(recorded, [value.dp.sum(bounds), dp.len(signed=True)])
            parts_plans["main"] = (query, frame, tuple(names), 1 - (SUPPRESSION_SHARE if rule else Fraction(0)))
            if rule:  # decided on a count of its own: the mean's own count's noise would bias what is shown
                query, frame = grouped(recorded, [dp.len(signed=True)])
                parts_plans["count"] = (query, frame, tuple(names), SUPPRESSION_SHARE)
        else:
            step = max(1, math.ceil((bounds[1] - bounds[0] + 1) / MAX_CANDIDATES))
            candidates = list(range(bounds[0], bounds[1] + 1, step))
            query, frame = grouped(recorded, [value.dp.quantile(spec.q, candidates)])
            parts_plans["main"] = (query, frame, tuple(names), QUANTILE_SHARE)
            width = max(1, math.ceil((bounds[1] - bounds[0] + 1) / HISTOGRAM_BINS))
            edges = list(range(bounds[0], bounds[1] + 1, width))
            bins = [(edge, min(edge + width - 1, bounds[1])) for edge in edges]
            labels = [str(index) for index in range(len(bins))]
            binned = recorded.with_columns(_bins_expr(attribute.name, edges, labels, BIN))
            query, frame = grouped(binned, [dp.len(signed=True)], [(BIN, "bin", labels)])
            rule = OutputRules.of(protocol).suppress_below > 1
            histogram_share = 1 - QUANTILE_SHARE - (SUPPRESSION_SHARE if rule else 0)
            parts_plans["histogram"] = (query, frame, (*names, BIN), histogram_share)
            if rule:
                query, frame = grouped(recorded, [dp.len(signed=True)])
                parts_plans["count"] = (query, frame, tuple(names), SUPPRESSION_SHARE)

    parts: dict[str, Part] = {}
    for name, (query, frame, part_columns, share) in parts_plans.items():

        def make(measure: Any, scale: float, query: Any = query) -> Any:
            return dp.m.make_private_lazyframe(domain, dp.symmetric_distance(), measure, query, global_scale=scale)

        try:
            # The privacy unit (issue 16): calibrate at the rows one person can move, never at one row.
            measurement, summary, scale, approx = _measure(make, _share(spec.cost, share), protocol.rows_per_person)
        except InputError:
            raise
        except Exception as exc:  # OpenDP raises its own error types for plans it cannot make private
            raise InputError(f"OpenDP cannot make this query private: {str(exc).strip()[:300]}") from exc
        parts[name] = Part(measurement, frame, part_columns, summary, scale, approx)
    return Prepared(spec, protocol, data, tuple(columns), keys, flags, parts, candidates, bins)


def cost_for_half_width(table: pl.DataFrame, spec: QuerySpec, protocol: Protocol, target: float) -> QuerySpec:
    """The query at the least cost whose cells' stated half-width is at most ``target`` (a plan; spends nothing).

    Counts, sums and overlaps only: their half-width depends on the noise scale alone.
    A mean's and a quantile's depend on how many people each group has, which a plan
    cannot look at. The cost is rounded up to two significant digits, then checked by
    planning the query at it.

    Raises:
        InputError: a mean or quantile, or a target below 1.
    """
    if spec.kind not in ("count", "sum", "overlap"):
        raise InputError(
            f"--target-half-width works for count, sum and overlap; a {spec.kind}'s interval depends on how many "
            "people each group has, which a plan cannot look at: dry-run it with a cost and read its interval"
        )
    if not 1 <= target <= 1e9:
        raise InputError(f"--target-half-width must be at least 1 (a whole person) and at most 1e9, not {target:g}")
    measure = spec.cost.measure
    reference = prepare(table, spec, protocol)
    distribution, scale = next((r["distribution"], r["scale"]) for r in reference.summary.iter_rows(named=True))
    wanted = scale_for_half_width(distribution, target - (protocol.output_rules.get("round_to_base", 1) // 2))
    if "Gaussian" not in distribution or measure == "rho":
        power = 2 if measure == "rho" else 1
        amount = float(spec.cost.amount) * (scale / wanted) ** power
    else:  # (epsilon, delta): the Gaussian's conversion is not a power law; search the cost
        amount = _search_cost(table, spec, protocol, target)
    for _ in range(20):
        digits = 1 - math.floor(math.log10(amount))
        rounded = math.ceil(amount * 10**digits) / 10**digits
        cost = Loss.from_json({measure: f"{rounded:.{max(digits, 0)}f}", "delta": float(spec.cost.delta)})
        candidate = replace(spec, cost=cost)
        cells = prepare(table, candidate, protocol).preview().cells
        if all(cell.half_width is None or cell.half_width <= target for cell in cells):
            return candidate
        amount = rounded * 1.05
    raise InputError(
        f"could not find a cost that gives ±{target:g}"
    )  # pragma: no cover - the width falls with the cost


def _search_cost(table: pl.DataFrame, spec: QuerySpec, protocol: Protocol, target: float) -> float:
    low, high = 1e-6, 1e3
    for _ in range(40):
        middle = math.sqrt(low * high)
        spec_at = replace(spec, cost=Loss.of(epsilon=f"{middle:.6g}", delta=float(spec.cost.delta)))
        widths = [c.half_width or 0 for c in prepare(table, spec_at, protocol).preview().cells]
        low, high = (low, middle) if max(widths) <= target else (middle, high)
        if high / low < 1.01:
            break
    return high


_T = TypeVar("_T")


def _bounded(work: Callable[[], _T], timeout: float, what: str) -> _T:
    """Run ``work`` in its own thread and give up after ``timeout`` seconds.

    A thread cannot be stopped, but its result is then never used: nothing is released
    or spent. Costs are bounded before planning, so this is a backstop, not the rule.

    Raises:
        ReleaseTimeout: ``work`` did not finish in time.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=f"pprl {what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ReleaseTimeout(
            f"{what} took longer than {timeout:g} s and was stopped; nothing was released or spent. "
            "Ask for fewer groups, or try again when the server is less busy"
        )
    if "error" in outcome:
        raise outcome["error"]
    value: _T = outcome["value"]
    return value


class Spend(Protocol_):
    """How a ledger records a release: check, run the body, record (see ``FileLedger.spend``)."""

    def __call__(self, who: str, query: str, cost: Loss) -> AbstractContextManager[Receipt]:
        """Check ``cost`` fits, run the body (which fills in the receipt), then record the release."""


def _noted(answer: Answer, protocol: Protocol) -> Answer:
    return replace(answer, equivalent_delta=equivalent_delta(protocol))


def answer_query(
    table: pl.DataFrame,
    spec: QuerySpec,
    protocol: Protocol,
    spend: Spend,
    who: str,
    *,
    dry_run: bool = False,
    timeout: float = RELEASE_TIMEOUT,
) -> Answer:
    """Plan, release, record the release, and only then hand the answer out; or, with ``dry_run``, only plan.

    Planning and the release happen outside the ledger (each within ``timeout`` seconds);
    the ledger is held only to check the cost fits and record it. An answer the ledger
    refuses is thrown away unseen, so a refused or failed query spends nothing and
    nothing is handed out that is not recorded.

    Raises:
        BudgetExceeded: the ledger cannot pay for it (nothing is released or recorded).
        InputError: the query cannot be answered (the cost is too small, the filter rules
            out everyone, OpenDP cannot make the plan private).
        ReleaseTimeout: planning or releasing took too long (nothing is recorded).
    """
    prepared = _bounded(lambda: prepare(table, spec, protocol), timeout, "planning the query")
    if dry_run:
        return _noted(prepared.preview(), protocol)
    answer = _bounded(prepared.release, timeout, "the release")
    with spend(who, spec.text(), spec.cost) as receipt:
        receipt.mechanism = prepared.mechanism
    return _noted(answer, protocol)


def answer_queries(
    table: pl.DataFrame,
    specs: Sequence[QuerySpec],
    protocol: Protocol,
    spend: Spend,
    who: str,
    label: str,
    *,
    timeout: float = RELEASE_TIMEOUT,
) -> list[Answer]:
    """Release several queries as one spend (a report): all are paid for and handed out, or none.

    The ledger records one release, ``label`` with every query, at their summed cost.
    Planning and release each have ``timeout`` seconds per query.

    Raises:
        BudgetExceeded: the ledger cannot pay for them all (nothing is released or recorded).
        InputError: no query, or one of them cannot be answered (nothing is recorded).
        ReleaseTimeout: planning or releasing took too long (nothing is recorded).
    """
    if not specs:
        raise InputError("send at least one query")
    total = sum((spec.cost for spec in specs[1:]), specs[0].cost)
    text = f"{label}: " + "; ".join(spec.text() for spec in specs)
    limit = timeout * len(specs)  # each query of the batch has its own time
    prepared = _bounded(lambda: [prepare(table, spec, protocol) for spec in specs], limit, "planning the queries")
    answers = _bounded(lambda: [item.release() for item in prepared], limit, "the release")
    with spend(who, text, total) as receipt:
        receipt.mechanism = "; ".join(dict.fromkeys(item.mechanism for item in prepared))
    return [_noted(answer, protocol) for answer in answers]
