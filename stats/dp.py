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
from dataclasses import replace
from fractions import Fraction
from typing import Any, TypeVar
from typing import Protocol as Protocol_

import opendp.prelude as dp
import polars as pl

from linkage.errors import InputError, PprlError
from linkage.protocol import Protocol, equivalent_delta
from stats import figures
from stats.accuracy import CONFIDENCE, noise_variance, scale_for_half_width
from stats.answers import Answer
from stats.budget import Loss, Receipt, budget_of, check_measure, epsilon_of_rho
from stats.cells import OutputRules, Possible
from stats.entities import membership_patterns
from stats.prepared import Part, Prepared
from stats.query import Column, Condition, QuerySpec

__all__ = [
    "CONFIDENCE",
    "RELEASE_TIMEOUT",
    "ReleaseTimeout",
    "Spend",
    "answer_queries",
    "answer_query",
    "condition_expr",
    "cost_for_half_width",
    "prepare",
    "preview",
    "release",
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


def release(prepared: Prepared) -> Answer:
    """Run each of the query's OpenDP measurements once and post-process the output."""
    return figures.answer(prepared, {name: part.rows(prepared.data) for name, part in prepared.parts.items()})


def preview(prepared: Prepared) -> Answer:
    """The answer's shape and stated accuracy, with no values: spends nothing."""
    return replace(figures.answer(prepared, {name: {} for name in prepared.parts}), released=False)


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
        cells = preview(prepare(table, candidate, protocol)).cells
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
        widths = [c.half_width or 0 for c in preview(prepare(table, spec_at, protocol)).cells]
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
    check_measure(budget_of(protocol), spec.cost)  # a dry run refuses what the release would
    prepared = _bounded(lambda: prepare(table, spec, protocol), timeout, "planning the query")
    if dry_run:
        return _noted(preview(prepared), protocol)
    answer = _bounded(lambda: release(prepared), timeout, "the release")
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
    check_measure(budget_of(protocol), total)
    text = f"{label}: " + "; ".join(spec.text() for spec in specs)
    limit = timeout * len(specs)  # each query of the batch has its own time
    prepared = _bounded(lambda: [prepare(table, spec, protocol) for spec in specs], limit, "planning the queries")
    answers = _bounded(lambda: [release(item) for item in prepared], limit, "the release")
    with spend(who, text, total) as receipt:
        receipt.mechanism = "; ".join(dict.fromkeys(item.mechanism for item in prepared))
    return [_noted(answer, protocol) for answer in answers]
