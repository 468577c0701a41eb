"""From OpenDP's noisy rows to the figures of an answer, one function per query kind.

All of it is post-processing of OpenDP's output (and of public facts: the protocol, the
query), so none of it can weaken the privacy guarantee. Cells that the filter rules out
for everyone (:class:`stats.cells.Possible`) were never sent to OpenDP and are stated as
exactly empty. Intervals are 95% intervals (:mod:`stats.accuracy`):

- counts and sums: OpenDP's accuracy of the noise, ``ceil(a) - 1`` (exact for the noise;
  a count's interval also covers the rounding to the protocol's base);
- overlap cells and their sums: read from the cells' own noisy counts, before the
  projection that makes them consistent moved them (:func:`overlap_cell_interval`); a sum's
  from the summed noise, exact up to a scale of 50, the normal approximation above;
- under a suppression rule, a count's and an overlap cell's: the interval that holds given
  that it is shown;
- means: Fieller's confidence set from the released sum and count (exact for the noise, any
  group size), within the attribute's bounds;
- quantiles: a confidence interval for the true quantile read off a noisy histogram of the
  same people (OpenDP, three quarters of the cost), around the exponential mechanism's
  estimate (OpenDP, a quarter).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from stats.accuracy import (
    count_lower,
    half_width,
    mean_interval,
    mean_pivot_widths,
    noise_variance,
    one_sided_width,
    quantile_interval,
    quantile_rank_bound,
    quantile_threshold,
    shown_count_interval,
    sum_half_width,
)
from stats.answers import Answer, Cell
from stats.cells import OutputRules, least_shown, project_to_counts, withheld_sums
from stats.entities import membership_patterns
from stats.prepared import Prepared

__all__ = ["answer", "overlap_cell_interval"]

Rows = dict[tuple[Any, ...], dict[str, Any]]
NOBODY = "no one can be in this group under the filter"


def answer(prepared: Prepared, rows: dict[str, Rows]) -> Answer:
    """The answer to a prepared query from its measurements' rows by key (empty rows: no values)."""
    kind = prepared.spec.kind
    if kind == "count":
        return _counts(prepared, rows["main"])
    if kind == "overlap":
        return _overlap(prepared, rows["main"])
    if kind == "sum":
        return _sums(prepared, rows["main"])
    if kind == "mean":
        return _means(prepared, rows["main"], rows.get("count"))
    return _quantiles(prepared, rows["main"], rows["histogram"], rows.get("count"))


def _statistic(prepared: Prepared) -> str:
    spec = prepared.spec
    if spec.kind == "overlap":
        return "people by the parties that know them"
    if spec.kind == "count":
        return "people"
    assert spec.attribute is not None  # noqa: S101 - checked when the query was parsed
    if spec.kind == "quantile":
        return f"{spec.q:g}-quantile of {spec.attribute.name}"
    return f"{spec.kind} of {spec.attribute.name}"


def _answer(prepared: Prepared, cells: list[Cell], derived: list[Cell], interval: str, notes: list[str]) -> Answer:
    if not all(prepared.possible):
        notes = [*notes, "groups the filter rules out for everyone (by who reports what) are exactly 0, without noise"]
    return Answer(
        query=prepared.spec.text(),
        kind=prepared.spec.kind,
        statistic=_statistic(prepared),
        columns=prepared.group_columns,
        cells=tuple(cells),
        derived=tuple(derived),
        mechanism=prepared.mechanism,
        cost=prepared.spec.cost,
        interval=interval,
        notes=tuple(notes),
    )


def _cell(key: tuple[Any, ...], value: float | None, width: float | None, note: str = "", **bounds: Any) -> Cell:
    return Cell(key, value, width, note, bounds.get("lower"), bounds.get("upper"))


def _ranged(key: tuple[Any, ...], value: int, lower: float, upper: float) -> Cell:
    """A figure whose interval ``lower .. upper`` need not be centred on it (its half-width is the larger side)."""
    return _cell(key, value, max(value - lower, upper - value), lower=lower, upper=upper)


def _unshown(rules: OutputRules, key: tuple[Any, ...], value: int | None, width: float) -> Cell:
    """The cell of a count not shown: not released (``value`` None), or under the protocol's threshold."""
    return _cell(key, None, width, "" if value is None else f"suppressed: below {rules.suppress_below}")


def _count_notes(rules: OutputRules) -> list[str]:
    notes = ["negative noisy counts are shown as 0"]
    if rules.base > 1:
        notes.append(f"counts are rounded to a multiple of {rules.base} (the interval includes the rounding)")
    if rules.suppress_below:
        notes.append(f"counts below {rules.suppress_below} are suppressed (the protocol's output rule)")
    return notes


def _counts(prepared: Prepared, rows: Rows) -> Answer:
    rules = OutputRules.of(prepared.protocol)
    distribution, scale = prepared.parts["main"].noise("Length")
    width = float(half_width(distribution, scale) + rules.base // 2)
    one_sided = float(one_sided_width(distribution, scale) + rules.base // 2)
    cells = []
    for key, possible in zip(prepared.keys, prepared.possible, strict=True):
        if not possible:
            cells.append(_cell(key, 0, 0.0, NOBODY, lower=0.0, upper=0.0))
            continue
        noisy = rows.get(key, {}).get("len")
        value = None if noisy is None else rules.rounded(noisy)
        if value is None or rules.suppressed(value):
            cells.append(_unshown(rules, key, value, width))
        else:
            cells.append(_ranged(key, value, *_count_interval(rules, value, width, one_sided, distribution, scale)))
    notes = _count_notes(rules)
    if rules.suppress_below:
        notes.append("a shown count's interval holds the truth 95% of the time among the counts shown")
    return _answer(prepared, cells, [], "OpenDP accuracy of the count's noise", notes)


def _count_interval(
    rules: OutputRules, value: int, width: float, one_sided: float, distribution: str, scale: float
) -> tuple[float, float]:
    """A shown count's 95% interval.

    Without a suppression rule, ``± width`` with :func:`stats.accuracy.count_lower`'s lower
    end (the shown count is never below 0, so the symmetric interval would hold a small truth
    97.5% of the time). Under a rule, the interval that holds given that it is shown: it is
    shown only when its noise took it to the threshold, so the usual interval would hold a
    small truth far less than 95% of the time among those shown
    (:func:`stats.accuracy.shown_count_interval`).
    """
    if rules.suppress_below:
        return shown_count_interval(value, rules.suppress_below, distribution, scale, rules.rounded, rules.base)
    return count_lower(value, width, one_sided), value + width


def _overlap(prepared: Prepared, rows: Rows) -> Answer:
    rules = OutputRules.of(prepared.protocol)
    distribution, scale = prepared.parts["main"].noise("Length")
    patterns = membership_patterns(prepared.protocol)
    party_sets = [[*p.split("+")] for p in patterns]
    groups: dict[tuple[Any, ...], dict[str, tuple[bool, int | None]]] = {}
    for key, possible in zip(prepared.keys, prepared.possible, strict=True):
        noisy = rows.get(key, {}).get("len") if possible else 0
        groups.setdefault(key[:-1], {})[key[-1]] = (possible, noisy)
    cells: list[Cell] = []
    derived: list[Cell] = []
    single = float(half_width(distribution, scale) + rules.base // 2)
    for outer, by_pattern in groups.items():
        live = [p for p in patterns if by_pattern[p][0]]
        counts: dict[str, int | None] = dict.fromkeys(patterns, 0)
        noisy = [by_pattern[p][1] for p in live]
        known_noisy = [v for v in noisy if v is not None]
        if len(known_noisy) == len(noisy):  # cells rounded before they are added up
            projected = project_to_counts(known_noisy)
            counts |= {p: rules.rounded(c) for p, c in zip(live, projected, strict=True)}
        else:
            counts |= dict.fromkeys(live)
        suppressed = [p in live and rules.suppressed(_or(counts[p], rules.suppress_below)) for p in patterns]
        for pattern, hidden in zip(patterns, suppressed, strict=True):
            if pattern not in live:
                cells.append(_cell((*outer, pattern), 0, 0.0, NOBODY, lower=0.0, upper=0.0))
            elif hidden:
                cells.append(_cell((*outer, pattern), None, single, f"suppressed: below {rules.suppress_below}"))
            elif (shown := counts[pattern]) is None:
                cells.append(_cell((*outer, pattern), None, single))
            else:
                lower, upper = overlap_cell_interval(known_noisy, live.index(pattern), rules, distribution, scale)
                cells.append(_ranged((*outer, pattern), shown, lower, upper))
        sums = [[i for i, p in enumerate(patterns) if parties is None or set(parties) <= set(p.split("+"))]
                for parties in [*party_sets, None]]  # fmt: skip
        values = [_or(counts[p], 0) for p in patterns]
        withheld = withheld_sums(values, suppressed, sums, rules.suppress_below)
        for parties, members, hide in zip([*party_sets, None], sums, withheld, strict=True):
            label = "any" if parties is None else "+".join(parties)
            noisy_members = [i for i in members if patterns[i] in live]
            width = sum_half_width(distribution, scale, len(noisy_members), rules.base)
            known = all(counts[patterns[i]] is not None for i in members)
            total = sum(values[i] for i in members) if known else None
            if hide:
                derived.append(_cell((*outer, label), None, width, "withheld: it would give a suppressed cell away"))
            elif total is not None and not noisy_members:
                derived.append(_cell((*outer, label), 0, 0.0, NOBODY, lower=0.0, upper=0.0))
            elif total is None or rules.suppressed(total):
                derived.append(_unshown(rules, (*outer, label), total, width))
            else:
                # read from the cells' own noisy counts, which the projection moved (see overlap_cell_interval)
                own = sum(_or(by_pattern[patterns[i]][1], 0) for i in noisy_members)
                own_width = sum_half_width(distribution, scale, len(noisy_members))
                lower, upper = _around(total, own - own_width, max(own, 0) + own_width, rules.base)
                derived.append(_ranged((*outer, label), total, lower, upper))
    notes = [
        "cells are made non-negative whole numbers that add up to the noisy total (least squares), over the "
        "patterns the filter leaves possible",
        "'known to all of' a set of parties adds up the cells of every pattern that includes the set; "
        "its interval is exact for the summed noise where the scale allows (up to 50), otherwise the normal "
        "approximation",
        *_count_notes(rules)[1:],
    ]
    if rules.suppress_below:
        notes.append("a figure that adds up cells is withheld when it would give a suppressed cell away")
    return _answer(
        prepared, cells, derived, "OpenDP accuracy per cell; sums of cells from the summed noise's distribution", notes
    )


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def overlap_cell_interval(
    noisy: Sequence[int], index: int, rules: OutputRules, distribution: str, scale: float
) -> tuple[float, float]:
    """The 95% interval of the overlap cell ``index``, read from its own noisy count, not the projected one.

    The projection keeps the cells consistent, but making the negative noisy cells 0 takes
    their deficit off the others: beside empty patterns a large cell is shown several noise
    scales below its noisy count, and an interval around the shown count held the truth 75%
    of the time (three agencies, six empty patterns, discrete Laplace). The cell's own noisy
    count carries exactly OpenDP's noise, so the interval is read from it; under a
    suppression rule, from its distribution given that the cell is shown, which with the
    other cells fixed means given that the noisy count reached :func:`stats.cells.least_shown`
    (:func:`stats.accuracy.shown_count_interval`). Either way it is widened to hold the shown
    count and its ends rounded out to the protocol's base, so it tells no more than a
    published count does.

    Args:
        noisy: the noisy counts of the cells the filter leaves possible, in one group.
        index: the cell's position among them; it must be shown (not suppressed).
        rules: the protocol's output rules.
        distribution: OpenDP's noise distribution.
        scale: its scale.

    >>> rules = OutputRules(0, 1)
    >>> project_to_counts([40, -5, -4, 3, -6, 2, -7])[0]  # the others' noise taken off it
    23
    >>> overlap_cell_interval([40, -5, -4, 3, -6, 2, -7], 0, rules, "Integer Laplace", 4.5)  # 40 +- 13, and 23
    (23.0, 53.0)
    """
    shown = rules.rounded(project_to_counts(noisy)[index])
    value = int(noisy[index])
    if rules.suppress_below:
        truths = shown_count_interval(value, least_shown(noisy, index, rules), distribution, scale, int)
    else:
        width = half_width(distribution, scale)
        truths = (value - width, max(value, 0) + width)
    return _around(shown, *truths, rules.base)


def _around(shown: int, lower: float, upper: float, base: int) -> tuple[float, float]:
    """``lower .. upper`` widened to hold ``shown`` and 0 at the least, its ends rounded out to ``base``."""
    return (
        float(max(0, min(shown, base * math.floor(lower / base)))),
        float(max(shown, base * math.ceil(upper / base))),
    )


def _sums(prepared: Prepared, rows: Rows) -> Answer:
    attribute = prepared.spec.attribute
    assert attribute is not None and attribute.lower is not None  # noqa: S101 - a sum has a bounded attribute
    distribution, scale = prepared.parts["main"].noise("Sum")
    width = float(half_width(distribution, scale))
    floor = 0.0 if attribute.lower >= 0 else -math.inf
    cells = []
    for key, possible in zip(prepared.keys, prepared.possible, strict=True):
        if not possible:
            cells.append(_cell(key, 0, 0.0, NOBODY, lower=0.0, upper=0.0))
            continue
        value = rows.get(key, {}).get(attribute.name)
        bounds = {} if value is None else {"lower": max(floor, value - width), "upper": value + width}
        cells.append(_cell(key, value, width, **bounds))
    notes = [f"people with no {attribute.name} add nothing"]
    return _answer(prepared, cells, [], "OpenDP accuracy of the sum's noise", notes)


def _means(prepared: Prepared, rows: Rows, sizes: Rows | None) -> Answer:
    """Means with Fieller's interval; a suppression rule is decided on the group's own count.

    Deciding it on the noisy count the mean divides by (as before) showed a mean only when
    that count's noise was high, which biased the mean and its interval: under
    ``suppress_below`` 20 at epsilon 2, the intervals shown for a group of 1 to 10 people all at
    the attribute's upper bound held the mean 60-83% of the time. The delta method's interval
    also fell short where the count's noise is large against the group (92.7% for 100
    people at rho 0.05); Fieller's set is exact for the noise whatever the group.
    """
    attribute = prepared.spec.attribute
    assert attribute is not None and attribute.lower is not None and attribute.upper is not None  # noqa: S101
    rules = OutputRules.of(prepared.protocol)
    part = prepared.parts["main"]
    low, high = float(attribute.lower), float(attribute.upper)
    points, widths = mean_pivot_widths(part.noise("Sum"), part.noise("Length"), low, high)
    cells = []
    for key, possible in zip(prepared.keys, prepared.possible, strict=True):
        if not possible:
            cells.append(_cell(key, None, None, NOBODY))
            continue
        noisy_sum, noisy_count = rows.get(key, {}).get(attribute.name), rows.get(key, {}).get("len")
        if noisy_sum is None or noisy_count is None:
            cells.append(_cell(key, None, None))
            continue
        if sizes is not None:
            size = sizes.get(key, {}).get("len")
            if size is None or rules.suppressed(size):
                cells.append(_cell(key, None, None, f"suppressed: fewer than {rules.suppress_below} people"))
                continue
        if noisy_count < 1:  # a mean over no one is not a number
            cells.append(_cell(key, None, None, "too few people for a mean (the noisy count is under 1)"))
            continue
        value = min(max(noisy_sum / noisy_count, low), high)
        found = mean_interval(float(noisy_sum), float(noisy_count), points, widths)
        lower, upper = found if found else (value, value)  # no mean passes: a release in the 5%
        lower, upper = min(lower, value), max(upper, value)
        cells.append(_cell(key, value, max(value - lower, upper - value), lower=lower, upper=upper))
    notes = [
        f"the mean is the noisy sum over the noisy count of people with a recorded {attribute.name}, "
        f"kept within {attribute.lower}..{attribute.upper}; its interval is every mean m for which the noisy "
        "sum minus m times the noisy count is within what the noise gives 95% of the time (Fieller's method)"
    ]
    if sizes is not None:
        rule = rules.suppress_below
        notes.append(f"means over fewer than {rule} people (by a noisy count of their own) are suppressed")
    if attribute.type == "boolean":
        notes.append(f"{attribute.name} counts as 1 when true, so its mean is the share of people for whom it is")
    interval = "Fieller's confidence set from the noisy sum and count, 95% whatever the data"
    return _answer(prepared, cells, [], interval, notes)


def _quantiles(prepared: Prepared, rows: Rows, histogram: Rows, sizes: Rows | None) -> Answer:
    """Quantiles with intervals read off the histogram; a suppression rule is decided on the group's own count.

    Deciding it on the histogram's total (as before) released the interval only when that
    total's noise was high, which biased the noisy ``G`` the interval is read from: under
    ``suppress_below`` 20, a quantile of 1 to 5 people at a discrete Laplace of scale 1 was
    held by 6-34% of the intervals released. Without a rule nothing is withheld, so the 95%
    is over every release (withholding it when the histogram's total was under 1 held the
    quantile of 1 or 2 people 93-94% of the time at :func:`quantile_threshold`'s ``z``).
    """
    spec = prepared.spec
    attribute = spec.attribute
    assert attribute is not None and attribute.lower is not None and attribute.upper is not None  # noqa: S101
    q = spec.q or 0.5
    rules = OutputRules.of(prepared.protocol)
    main, bins = prepared.parts["main"], prepared.parts["histogram"]
    distribution, scale = bins.noise("Length")
    variance = noise_variance(distribution, scale)
    z = quantile_threshold(distribution, scale, q, len(prepared.bins))
    cells = []
    for key, possible in zip(prepared.keys, prepared.possible, strict=True):
        if not possible:
            cells.append(_cell(key, None, None, NOBODY))
            continue
        value = rows.get(key, {}).get(attribute.name)
        noisy = [histogram.get((*key, str(index)), {}).get("len") for index in range(len(prepared.bins))]
        if value is None or None in noisy:
            cells.append(_cell(key, None, None))
            continue
        counts = [float(count or 0) for count in noisy]
        size = None if sizes is None else sizes.get(key, {}).get("len")
        if sizes is not None and (size is None or rules.suppressed(size)):
            cells.append(_cell(key, None, None, f"suppressed: fewer than {rules.suppress_below} people"))
            continue
        found = quantile_interval(counts, q, variance, z)
        lower, upper = (
            (prepared.bins[found[0]][0], prepared.bins[found[1]][1]) if found else (attribute.lower, attribute.upper)
        )
        width = max(value - lower, upper - value, 0)
        cells.append(_cell(key, value, float(width), lower=float(lower), upper=float(upper)))
    g = main.global_scale
    sensitivity = main.summary["scale"][0] / g if g else 1.0
    rank = quantile_rank_bound(float(main.summary["scale"][0]), sensitivity, q, len(prepared.candidates))
    name = attribute.name
    notes = [
        f"the value is OpenDP's exponential-mechanism estimate; the interval, in units of {name}, is a 95% "
        f"confidence interval for the true {q:g}-quantile read off an OpenDP noisy histogram of the same people "
        "(the estimate usually, not always, lies inside it)",
        f"with 95% probability at most {rank:.0f} people (plus any who share the quantile's exact value) lie between "
        "the estimate and the true quantile (the exponential mechanism's bound)",
    ]
    if sizes is not None:
        rule = rules.suppress_below
        notes.append(f"quantiles over fewer than {rule} people (by a noisy count of their own) are suppressed")
    return _answer(prepared, cells, [], "confidence interval from a noisy histogram, 95% for every data set", notes)
