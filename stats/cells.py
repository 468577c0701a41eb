"""Which cells of an answer can hold anyone, and which figures the protocol's output rules let out.

Both are decided from public facts only (the protocol and the query), never from the data:

- **Structural zeros.** A filter can rule a cell out whatever the data: under
  ``--where member:haven`` nobody is in a pattern without haven; only msd reports
  ``weeks_supported``, so people msd does not know have none; ``--where region=Otago``
  leaves no one in Auckland. Such cells get no noise at all (they are exactly 0), and the
  noise and the overlap's least-squares projection work on the cells that can hold people,
  so no noise is spent on, nor mass pushed off onto, cells that are certainly empty.
- **Output rules.** Counts are rounded to the protocol's base and those below its
  threshold suppressed; a figure derived from cells (people known to all of a set of
  parties) is withheld when, with the cells shown, it would give a suppressed cell away or
  pin down fewer people than the threshold (complementary suppression).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from linkage.protocol import Protocol
from stats.query import Column, Condition, QuerySpec

__all__ = ["OutputRules", "Possible", "least_shown", "project_to_counts", "withheld_sums"]


@dataclass(frozen=True)
class OutputRules:
    """The protocol's ``output_rules``: round counts to ``base``, suppress those below ``suppress_below``."""

    suppress_below: int
    base: int

    @classmethod
    def of(cls, protocol: Protocol) -> OutputRules:
        """The rules of a protocol (no suppression and no rounding by default)."""
        rules = protocol.output_rules
        return cls(int(rules.get("suppress_below", 0)), max(1, int(rules.get("round_to_base", 1))))

    def rounded(self, value: int) -> int:
        """A noisy count as published: at least 0, rounded to the base.

        >>> OutputRules(0, 5).rounded(-3), OutputRules(0, 5).rounded(12)
        (0, 10)
        """
        return int(self.base * round(max(0, value) / self.base))

    def suppressed(self, value: float) -> bool:
        """Whether a published count (or a group's noisy size) falls under the threshold."""
        return value < self.suppress_below


class Possible:
    """Which patterns of membership and which group keys a query's filter leaves possible.

    Args:
        protocol: the project's protocol (who reports which attribute, the bounds).
        spec: the query.
    """

    def __init__(self, protocol: Protocol, spec: QuerySpec) -> None:
        self._order = [party.id for party in protocol.parties]
        self._reporters = {
            attribute.name: frozenset(p.id for p in protocol.parties if attribute.name in p.attributes)
            for attribute in protocol.attributes
        }
        self._allowed: dict[str, set[str | bool | int] | tuple[int, int]] = {}
        for condition in spec.where:
            self._narrow(condition)
        needs = {c.column.name for c in spec.where if not _membership(c.column)}
        if spec.attribute is not None:
            needs.add(spec.attribute.name)  # sums, means and quantiles are over people with a value
        patterns = [
            frozenset(combo)
            for size in range(1, len(self._order) + 1)
            for combo in itertools.combinations(self._order, size)
        ]
        self.patterns = [
            pattern
            for pattern in patterns
            if all(self._member_ok(condition, pattern) for condition in spec.where)
            and all(pattern & self._reporters.get(name, frozenset()) for name in needs)
            and all(self._nonempty(name) for name in needs)
        ]

    def label(self, pattern: frozenset[str]) -> str:
        """A pattern as the ``pattern`` column writes it (``msd+haven``)."""
        return "+".join(party for party in self._order if party in pattern)

    def _narrow(self, condition: Condition) -> None:
        column = condition.column
        if _membership(column):
            return
        if condition.op == "in":
            values = set(condition.values)
            previous = self._allowed.get(column.name)
            self._allowed[column.name] = values & previous if isinstance(previous, set) else values
            return
        assert column.lower is not None and column.upper is not None  # noqa: S101 - >= and <= are on integers
        previous_range = self._allowed.get(column.name)
        low, high = previous_range if isinstance(previous_range, tuple) else (column.lower, column.upper)
        bound = int(condition.values[0])
        self._allowed[column.name] = (max(low, bound), high) if condition.op == ">=" else (low, min(high, bound))

    def _nonempty(self, name: str) -> bool:
        allowed = self._allowed.get(name)
        if isinstance(allowed, tuple):
            return allowed[0] <= allowed[1]
        return allowed is None or bool(allowed)

    def _member_ok(self, condition: Condition, pattern: frozenset[str]) -> bool:
        column = condition.column
        if column.name == "shared":
            return (len(pattern) > 1) in condition.values
        if column.name.startswith("member:"):
            return (column.name.removeprefix("member:") in pattern) in condition.values
        return True

    def _value_ok(self, column: Column, value: str | bool | None, pattern: frozenset[str]) -> bool:
        if column.name == "pattern":
            return value == self.label(pattern)
        if column.name == "shared":
            return value == (len(pattern) > 1)
        if column.name.startswith("member:"):
            return value == (column.name.removeprefix("member:") in pattern)
        allowed = self._allowed.get(column.attribute)
        if value is None:  # "not recorded" is ruled out by any condition on the attribute
            return allowed is None
        if not pattern & self._reporters.get(column.attribute, frozenset()):
            return False
        if allowed is None:
            return True
        if column.type == "binned":
            first, last = column.bin_ranges()[list(column.keys).index(value)]
            low, high = allowed if isinstance(allowed, tuple) else (first, last)
            return max(first, low) <= min(last, high)
        return value in allowed if isinstance(allowed, set) else True

    def key(self, columns: Sequence[Column], key: Sequence[str | bool | None]) -> bool:
        """Whether anyone can have this group key (``columns`` as in the answer, ``pattern`` included)."""
        return any(
            all(self._value_ok(column, value, pattern) for column, value in zip(columns, key, strict=True))
            for pattern in self.patterns
        )


def _membership(column: Column) -> bool:
    return column.name == "shared" or column.name.startswith("member:")


def withheld_sums(
    values: Sequence[int], suppressed: Sequence[bool], sums: Sequence[Sequence[int]], threshold: int
) -> list[bool]:
    """Which sums of cells to withhold so that no suppressed count can be worked out (complementary suppression).

    ``values`` are the cells' published counts (the suppressed ones as they were before
    suppression), ``sums`` the indices of the cells each derived figure adds up. Sums are
    taken in order; one is shown only if, with the cells and the sums shown so far, every
    group of suppressed cells whose total could be worked out (its indicator in the span of
    what is shown) holds at least ``threshold`` people. So a sum holding a single suppressed
    cell is withheld, and so is one that gives away the total of a few small cells.

    >>> withheld_sums([50, 4, 30], [False, True, False], [[0, 1], [0, 2], [0, 1, 2]], 10)
    [True, False, True]
    >>> withheld_sums([50, 6, 7], [False, True, True], [[0, 1, 2], [0]], 10)
    [False, False]
    """
    hidden = [i for i, flag in enumerate(suppressed) if flag]
    if not hidden:
        return [False] * len(sums)
    groups = [
        (np.array([1.0 if i in group else 0.0 for i in hidden]), sum(values[i] for i in group))
        for size in range(1, len(hidden) + 1)
        for group in itertools.combinations(hidden, size)
    ]
    shown: list[np.ndarray] = []
    withheld = []
    for members in sums:
        vector = np.array([1.0 if i in members else 0.0 for i in hidden])
        if not vector.any():
            withheld.append(False)  # only published cells: it tells nothing new
            continue
        trial = np.array([*shown, vector])
        rank = np.linalg.matrix_rank(trial)
        if any(
            total < threshold and np.linalg.matrix_rank(np.vstack([trial, indicator])) == rank
            for indicator, total in groups
        ):
            withheld.append(True)
            continue
        shown.append(vector)
        withheld.append(False)
    return withheld


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


def least_shown(noisy: Sequence[int], index: int, rules: OutputRules) -> int:
    """The least noisy count of cell ``index`` (the others as they are) whose projected count is shown.

    A cell's projected count never falls as its own noisy count rises, so the overlap shows
    the cell exactly when its noisy count reaches this level: given the other cells, the
    rule selects on that one noisy count, as it does on a plain count
    (:func:`stats.accuracy.shown_count_interval`). The cell must be shown at ``noisy``.

    >>> least_shown([30, 0, -6], 0, OutputRules(20, 1))  # making the -6 a 0 takes 6 off the 30
    26
    >>> least_shown([30, 0, 6], 0, OutputRules(20, 1))
    20
    """

    def shown(level: int) -> bool:
        values = [*noisy[:index], level, *noisy[index + 1 :]]
        return not rules.suppressed(rules.rounded(project_to_counts(values)[index]))

    below, level = rules.suppress_below - rules.base - 1, int(noisy[index])  # shown(below) is False
    while level - below > 1:
        middle = (below + level) // 2
        below, level = (below, middle) if shown(middle) else (middle, level)
    return level
