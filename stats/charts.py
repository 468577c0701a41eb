"""Charts of differentially private answers, as PNG bytes (matplotlib, no display needed).

Every bar carries its 95% interval as an error bar; suppressed cells are drawn as an
empty slot with a note, never as zero.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display, and safe in a server thread

# Imported after choosing the backend (isort keeps them below it).
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from stats.answers import Answer, Cell
from stats.render import show_key

__all__ = ["bar_chart", "upset_chart"]

BLUE = "#1f5f8b"
GREY = "#8a8a8a"


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def bar_chart(answer: Answer, *, percent: bool = False) -> bytes:
    """Horizontal bars, one per cell, with 95% error bars (``percent`` shows shares as %)."""
    cells = list(answer.cells)
    labels = [", ".join(show_key(k) for k in cell.key) or "everyone" for cell in cells]
    scale = 100.0 if percent else 1.0
    values = [(cell.value or 0) * scale for cell in cells]
    spans = _spans(cells, scale)
    below = [max(0.0, v - low) for v, (low, _) in zip(values, spans, strict=True)]
    above = [max(0.0, high - v) for v, (_, high) in zip(values, spans, strict=True)]
    figure, axes = plt.subplots(figsize=(7.5, 0.42 * len(cells) + 1.1))
    positions = range(len(cells))[::-1]
    axes.barh(list(positions), values, xerr=[below, above], color=BLUE, ecolor="#222222", capsize=3, height=0.6)
    for position, cell in zip(positions, cells, strict=True):
        if cell.value is None:
            axes.text(0, position, "  " + (cell.note or "not available"), va="center", fontsize=8, color=GREY)
    axes.set_yticks(list(positions), labels)
    unit = "% (95% interval)" if percent else f"{answer.statistic} (95% interval)"
    axes.set_xlabel(unit)
    axes.set_xlim(left=0)
    axes.spines[["top", "right"]].set_visible(False)
    return _png(figure)


def _spans(cells: Sequence[Cell], scale: float) -> list[tuple[float, float]]:
    """Each cell's 95% interval (``lower``..``upper``, or ± its half-width), times ``scale``; none when withheld."""
    spans = []
    for cell in cells:
        value = (cell.value or 0) * scale
        if cell.value is None:
            spans.append((value, value))
        elif cell.lower is not None and cell.upper is not None:
            spans.append((cell.lower * scale, cell.upper * scale))
        else:
            width = (cell.half_width or 0) * scale
            spans.append((value - width, value + width))
    return spans


def upset_chart(cells: Sequence[Cell], parties: Sequence[tuple[str, str]]) -> bytes:
    """An UpSet-style chart: a bar per membership pattern above a matrix of which parties it joins.

    Args:
        cells: the overlap cells, keyed by pattern (``msd+police``), without grouping.
        parties: ``(id, display name)`` in protocol order.
    """
    ordered = sorted(cells, key=lambda cell: -(cell.value or 0))
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(7.5, 4.6), gridspec_kw={"height_ratios": [3, 1.3], "hspace": 0.05}, sharex=True
    )
    x = list(range(len(ordered)))
    values = [cell.value or 0 for cell in ordered]
    errors = [cell.half_width or 0 if cell.value is not None else 0 for cell in ordered]
    top.bar(x, values, yerr=errors, color=BLUE, ecolor="#222222", capsize=3, width=0.6)
    for position, cell in zip(x, ordered, strict=True):
        shown = "suppressed" if cell.value is None else f"{cell.value:,}"
        top.text(position, (cell.value or 0) + (cell.half_width or 0), shown, ha="center", va="bottom", fontsize=8)
    top.set_ylabel("people (95% interval)")
    top.spines[["top", "right"]].set_visible(False)
    ids = [party_id for party_id, _ in parties]
    for row, party_id in enumerate(ids):
        for column, cell in enumerate(ordered):
            member = party_id in str(cell.key[-1]).split("+")
            bottom.scatter(column, row, s=60, color="#222222" if member else "#dddddd", zorder=3)
        bottom.axhline(row, color="#f2f2f2", zorder=1)
    for column, cell in enumerate(ordered):
        rows = [row for row, party_id in enumerate(ids) if party_id in str(cell.key[-1]).split("+")]
        if len(rows) > 1:
            bottom.plot([column, column], [min(rows), max(rows)], color="#222222", linewidth=2, zorder=2)
    bottom.set_yticks(range(len(ids)), [name for _, name in parties])
    bottom.set_ylim(len(ids) - 0.5, -0.5)
    bottom.set_xticks([])
    bottom.spines[["top", "right", "bottom"]].set_visible(False)
    return _png(figure)
