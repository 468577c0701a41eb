"""Answers and budgets as plain-text tables, for the command line.

Pure functions returning text; the CLI prints them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from linkage.free_text import escape_text
from stats.answers import Answer, Cell
from stats.budget import Budget

__all__ = ["format_answer", "format_budget", "show_key"]


def show_key(value: str | bool | None) -> str:
    """A group key as a reader sees it.

    >>> [show_key(v) for v in ("Auckland", True, None)]
    ['Auckland', 'yes', '(not recorded)']
    """
    if value is None:
        return "(not recorded)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


def _number(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "mean":
        return f"{value:.3f}"
    return f"{int(round(value)):,}"


def _width(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "mean":
        return f"± {value:.3f}"
    return f"± {value:,.1f}" if value < 10 else f"± {value:,.0f}"


def interval_text(cell: Cell, kind: str) -> str:
    """A cell's 95% interval as a reader sees it: ``± w``, or ``lo to hi`` when it is not centred on the value.

    >>> interval_text(Cell((), 0.98, 0.05, lower=0.93, upper=1.0), "mean")
    '0.930 to 1.000'
    >>> interval_text(Cell((), 120, 6.0, lower=114.0, upper=126.0), "count")
    '± 6.0'
    """
    if cell.value is None or cell.half_width is None:
        return "-"
    if cell.lower is None or cell.upper is None:
        return _width(cell.half_width, kind)
    centred = abs((cell.value - cell.lower) - (cell.upper - cell.value)) < 1e-9
    if kind in ("count", "sum") or (centred and kind != "quantile"):
        return _width(cell.half_width, kind)
    if kind == "mean":
        return f"{cell.lower:.3f} to {cell.upper:.3f}"
    return f"{cell.lower:,.0f} to {cell.upper:,.0f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = []
    for index, row in enumerate([list(headers), *rows]):
        numeric = (len(headers) - 3, len(headers) - 2)  # value and its interval, right-aligned
        cells = [cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _rows(cells: Sequence[Cell], kind: str, key_names: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    headers = [*key_names, "value", "95% interval", "note"]
    rows = [
        [*(show_key(k) for k in cell.key), _number(cell.value, kind), interval_text(cell, kind), cell.note]
        for cell in cells
    ]
    return headers, rows


def format_answer(answer: Answer, remaining: str | None = None) -> str:
    """The answer as a titled table with its intervals, mechanism, cost (also as (ε, δ) for a ρ) and notes."""
    cost = answer.cost_shown
    status = f"spent {cost}" if answer.released else f"would spend {cost} (dry run: nothing spent)"
    if remaining is not None:
        status += f"; {remaining} left"
    lines = [answer.query, f"{answer.statistic} ({answer.mechanism}); {status}", ""]
    if answer.kind == "overlap":
        outer = list(answer.columns[:-1])
        lines.append("people known to exactly these parties:")
        lines += _table(*_rows(answer.cells, "count", [*outer, "parties"]))
        lines += ["", "people known to at least all of these parties ('any': to any party):"]
        lines += _table(*_rows(answer.derived, "count", [*outer, "parties"]))
    else:
        cells = answer.cells if answer.columns else [replace(c, key=("everyone",)) for c in answer.cells]
        lines += _table(*_rows(cells, answer.kind, list(answer.columns) or ["who"]))
    lines += ["", f"Each figure has a {answer.confidence:.0%} interval: {answer.interval}."]
    lines += [f"- {note}" for note in answer.notes]
    return "\n".join(lines)


def format_budget(budget: Budget) -> str:
    """The budget's total, spent and remaining, then one line per release (a ρ also as (ε, δ))."""
    lines = [f"budget {budget.total}: spent {budget.spent}, {budget.remaining} left"]
    rho = budget.total.measure == "rho"
    if rho:
        total_epsilon, delta = budget.total.approx_dp(budget.equivalent_delta)
        spent = f"ε={budget.spent.approx_dp(delta)[0]:g}" if budget.spent.amount else "nothing"
        lines.append(
            f"as (ε, δ) at δ={delta:g}: the total is ε={total_epsilon:g}, spent so far {spent} "
            "(ρ adds up over releases, ε does not: each release's ε below is for that release alone)"
        )
    lines.append("")
    if not budget.entries:
        return "\n".join([*lines, "no releases yet"])
    # Escaped: a ledger written before control characters were refused could forge lines.
    rows = []
    for e in budget.entries:
        cost = [str(e.loss), f"ε={e.loss.approx_dp(budget.equivalent_delta)[0]:g}"] if rho else [str(e.loss)]
        rows.append(
            [str(e.number), e.at.strftime("%Y-%m-%d %H:%M:%S"), escape_text(e.who), *cost, escape_text(e.query)]
        )
    headers = ["#", "when (UTC)", "who", "cost", *(["≈ ε alone"] if rho else []), "query"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)
