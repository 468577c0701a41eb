"""Answers and budgets as plain-text tables, for the command line.

Pure functions returning text; the CLI prints them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from linkage.free_text import escape_text
from stats.budget import Budget
from stats.dp import Answer, Cell

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
        return f"{value:.3f}"
    if kind == "quantile":
        return f"{value:.1f} ranks"
    return f"{value:,.1f}" if value < 10 else f"{value:,.0f}"


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
    headers = [*key_names, "value", "± 95%", "note"]
    rows = [
        [*(show_key(k) for k in cell.key), _number(cell.value, kind), _width(cell.half_width, kind), cell.note]
        for cell in cells
    ]
    return headers, rows


def format_answer(answer: Answer, remaining: str | None = None) -> str:
    """The answer as a titled table with its intervals, mechanism, cost and notes."""
    status = f"spent {answer.cost}" if answer.released else f"would spend {answer.cost} (dry run: nothing spent)"
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
    lines += ["", f"± is the half-width of a {answer.confidence:.0%} interval: {answer.interval}."]
    lines += [f"- {note}" for note in answer.notes]
    return "\n".join(lines)


def format_budget(budget: Budget) -> str:
    """The budget's total, spent and remaining, then one line per release."""
    lines = [f"budget {budget.total}: spent {budget.spent}, {budget.remaining} left", ""]
    if not budget.entries:
        return "\n".join([*lines, "no releases yet"])
    # Escaped: a ledger written before control characters were refused could forge lines.
    rows = [
        [str(e.number), e.at.strftime("%Y-%m-%d %H:%M:%S"), escape_text(e.who), str(e.loss), escape_text(e.query)]
        for e in budget.entries
    ]
    headers = ["#", "when (UTC)", "who", "cost", "query"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)
