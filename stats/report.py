"""Ministry reports: a spec of sections and budget shares in, one self-contained HTML file out.

A report is built only from differentially private answers, the protocol (which all parties
agreed and may publish) and the budget ledger, so it can be published as it is. Charts are
PNG images embedded in the page; nothing is fetched when it is opened, and it prints well.

The spec (YAML or JSON)::

    title: Clients shared by ...
    period: July to September 2026
    spend: {rho: 0.4}            # the most the report spends; shared out by `share`
    sections:
      - title: How many clients the agencies share
        query: overlap            # the query language of `pprl query`, without a cost
        share: 0.25
        text: optional paragraph shown under the title
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from linkage.errors import BudgetExceeded, InputError
from linkage.protocol import Protocol, equivalent_delta
from stats.answers import Answer, Cell
from stats.budget import Budget, Loss, check_affordable
from stats.query import QuerySpec, parse_query
from stats.render import show_key

__all__ = ["ReportSpec", "Section", "build_report", "read_report_spec", "render_report"]

MANDATES = {"public_service": "public service", "public_safety": "public safety"}


@dataclass(frozen=True)
class Section:
    """One section: a title, an optional paragraph, and the query it shows."""

    title: str
    text: str
    query: QuerySpec


@dataclass(frozen=True)
class ReportSpec:
    """A checked report spec: every query parsed, every cost set from its share."""

    title: str
    period: str
    spend: Loss
    sections: tuple[Section, ...]

    @property
    def cost(self) -> Loss:
        """What the sections spend together (at most ``spend``)."""
        return sum((section.query.cost for section in self.sections), Loss(self.spend.measure, Fraction(0)))


def _share(value: Any, where: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where}: share must be a number above 0 and at most 1")
    share = Fraction(str(value))
    if not 0 < share <= 1:
        raise InputError(f"{where}: share must be above 0 and at most 1, not {value}")
    return share


def parse_report_spec(protocol: Protocol, document: Any, *, shown_as: str = "the report spec") -> ReportSpec:
    """Check a report spec against the protocol.

    Raises:
        InputError: a missing or unknown key, a query that does not parse, a query that
            names its own cost, or shares adding up to more than 1.
    """
    if not isinstance(document, Mapping):
        raise InputError(f"{shown_as}: write a mapping with title, spend and sections (see schemas/examples)")
    unknown = set(document) - {"title", "period", "spend", "sections"}
    missing = {"title", "spend", "sections"} - set(document)
    if unknown or missing:
        problems = [f"unknown key {k!r}" for k in sorted(unknown)] + [f"missing {k!r}" for k in sorted(missing)]
        raise InputError(f"{shown_as}: {'; '.join(problems)}")
    if not isinstance(document["spend"], Mapping):
        raise InputError(f"{shown_as}: spend is a privacy loss such as {{rho: 0.4}}")
    spend = Loss.from_json(document["spend"])
    sections_in = document["sections"]
    if not isinstance(sections_in, list) or not sections_in:
        raise InputError(f"{shown_as}: sections must be a non-empty list")
    sections = []
    shares = Fraction(0)
    for number, item in enumerate(sections_in, start=1):
        where = f"{shown_as}, section {number}"
        if not isinstance(item, Mapping) or set(item) - {"title", "query", "share", "text"}:
            raise InputError(f"{where}: a section has title, query, share and optionally text")
        if not isinstance(item.get("title"), str) or not isinstance(item.get("query"), str):
            raise InputError(f"{where}: title and query must be text")
        share = _share(item.get("share"), where)
        shares += share
        words = item["query"].split()
        if any(word in ("--rho", "--epsilon", "--delta") for word in words):
            raise InputError(f"{where}: leave the cost out of the query; the report sets it from the share")
        cost = Loss(spend.measure, spend.amount * share, spend.delta * share)
        try:
            spec = parse_query(protocol, [*words, f"--{spend.measure}", "1"])
        except InputError as exc:
            raise InputError(f"{where} ({item['query']!r}): {exc.message}") from exc
        sections.append(Section(item["title"], str(item.get("text", "")), replace(spec, cost=cost)))
    if shares > 1:
        raise InputError(f"{shown_as}: the shares add up to {float(shares):g}; they may add up to at most 1")
    return ReportSpec(str(document["title"]), str(document.get("period", "")), spend, tuple(sections))


def read_report_spec(protocol: Protocol, path: Path) -> ReportSpec:
    """Read a report spec file (YAML, or JSON, which is YAML too).

    Raises:
        InputError: the file is missing or malformed; see :func:`parse_report_spec`.
    """
    try:
        document = yaml.safe_load(path.read_text("utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: report spec not found (an example ships in schemas/examples/)") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a YAML report spec ({exc})") from exc
    return parse_report_spec(protocol, document, shown_as=str(path))


def build_report(
    protocol: Protocol,
    spec: ReportSpec,
    *,
    plan: Callable[[QuerySpec], Answer],
    release: Callable[[list[QuerySpec], str], list[Answer]],
    budget: Callable[[], Budget],
    on_progress: Callable[[int, int], None] | None = None,
    now: datetime | None = None,
) -> str:
    """Check the whole report can be paid for, release every section at once, and render the page.

    Args:
        protocol: the project's protocol.
        spec: the checked report spec.
        plan: plans a query where it will run, spending nothing (a dry run).
        release: releases the sections' queries as one spend, all or none
            (:func:`stats.dp.answer_queries`), under a label for the ledger.
        budget: reads the ledger.
        on_progress: called with (steps done, steps): each section planned, then the release.
        now: the time printed on the report (default: now).

    Raises:
        BudgetExceeded: the budget has less left than the report would spend; nothing is spent.
    """
    before = budget()
    steps = len(spec.sections) + 1
    try:
        check_affordable(before, spec.cost)
        for done, section in enumerate(spec.sections, start=1):  # every query is checked where it will run first
            plan(section.query)
            if on_progress:
                on_progress(done, steps)
        # The ledger checks again: another release may have come since the check above.
        answers = release([section.query for section in spec.sections], f"report {spec.title!r}")
    except BudgetExceeded as exc:
        raise BudgetExceeded(f"the report would spend {spec.cost}: {exc.message}") from exc
    if on_progress:
        on_progress(steps, steps)
    return render_report(protocol, spec, answers, before, budget(), now or datetime.now().astimezone())


# -- rendering ----------------------------------------------------------------------------

CSS = """
body { font-family: Georgia, 'Times New Roman', serif; color: #1d1d1d; max-width: 50rem; margin: 2rem auto;
       padding: 0 1rem; line-height: 1.45; }
h1 { font-size: 1.7rem; margin-bottom: 0.2rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem; }
.meta { color: #555; } table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.92rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.7rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } th.num { text-align: right; }
figure { margin: 0.8rem 0; } figure img { max-width: 100%; } figcaption { font-size: 0.85rem; color: #555; }
.note { background: #f4f6f8; border-left: 4px solid #1f5f8b; padding: 0.6rem 1rem; }
.small { font-size: 0.85rem; color: #555; }
@media print { body { margin: 0; max-width: none; } section, figure, table { break-inside: avoid; }
               h2 { break-after: avoid; } }
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _figure_value(cell: Cell, answer: Answer, percent: bool) -> tuple[str, str]:
    """A figure and its 95% interval as the report prints them (a range when not centred on the figure)."""
    if cell.value is None:
        return (cell.note or "not available"), ""
    low, high = cell.lower, cell.upper
    ranged = low is not None and high is not None and abs((cell.value - low) - (high - cell.value)) > 1e-9
    if percent:
        if ranged:
            return f"{cell.value * 100:.1f}%", f"{low * 100:.1f}% to {high * 100:.1f}%"  # type: ignore[operator]
        return f"{cell.value * 100:.1f}%", f"± {(cell.half_width or 0) * 100:.1f} points"
    if answer.kind == "mean":
        if ranged:
            return f"{cell.value:.2f}", f"{low:.2f} to {high:.2f}"
        return f"{cell.value:.2f}", f"± {cell.half_width or 0:.2f}"
    if answer.kind == "quantile" or ranged:  # a small count's, or one shown under a suppression rule
        return f"{int(cell.value):,}", f"{low:,.0f} to {high:,.0f}"
    return f"{int(cell.value):,}", f"± {cell.half_width or 0:,.0f}"


def _heading(protocol: Protocol, column: str) -> str:
    """A column as a reader names it: ``member:police`` is "known to New Zealand Police"."""
    if column.startswith("member:"):
        return f"known to {protocol.party(column.removeprefix('member:')).name}"
    if column == "shared":
        return "known to two or more agencies"
    return column.replace("_", " ")


def _table(answer: Answer, cells: Sequence[Cell], columns: Sequence[str], percent: bool = False) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns) + '<th class="num">value</th><th>95% interval</th>'
    rows = []
    for cell in cells:
        keys = "".join(f"<td>{_e(show_key(k))}</td>" for k in cell.key) if cell.key else "<td>everyone</td>"
        value, interval = _figure_value(cell, answer, percent)
        rows.append(f'<tr>{keys}<td class="num">{_e(value)}</td><td>{_e(interval)}</td></tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _image(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _overlap(protocol: Protocol, answer: Answer) -> str:
    from stats.charts import upset_chart

    parties = [(p.id, p.name) for p in protocol.parties]
    names = dict(parties)
    chart = _image(
        upset_chart(answer.cells, parties),
        "Bar chart of people by the combination of agencies that know them",
        "People known to exactly each combination of agencies (dots below each bar); error bars are 95% intervals.",
    )
    known = {cell.key[-1]: cell for cell in answer.derived}
    header = "".join(f'<th class="num">{_e(names[p])}</th>' for p, _ in parties)
    rows = []
    for row_id, row_name in parties:
        cells = []
        for column_id, _ in parties:
            label = row_id if row_id == column_id else "+".join(sorted((row_id, column_id), key=list(names).index))
            cell = known[label]
            value, interval = _figure_value(cell, answer, False)
            cells.append(f'<td class="num">{_e(value)} <span class="small">{_e(interval)}</span></td>')
        rows.append(f"<tr><th>{_e(row_name)}</th>{''.join(cells)}</tr>")
    pairwise = (
        "<p>Clients each pair of agencies has in common (the diagonal: all clients of that agency).</p>"
        f"<table><thead><tr><th></th>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    everyone = known.get("+".join(names))
    anyone = known.get("any")
    lines = []
    if everyone is not None:
        value, interval = _figure_value(everyone, answer, False)
        lines.append(f"known to all {len(parties)} agencies: <b>{_e(value)}</b> ({_e(interval)})")
    if anyone is not None:
        value, interval = _figure_value(anyone, answer, False)
        lines.append(f"people known to any agency: <b>{_e(value)}</b> ({_e(interval)})")
    return chart + pairwise + "<p>" + "; ".join(lines) + ".</p>"


def _section(protocol: Protocol, section: Section, answer: Answer) -> str:
    from stats.charts import bar_chart

    parts = [f"<section><h2>{_e(section.title)}</h2>"]
    if section.text:
        parts.append(f"<p>{_e(section.text)}</p>")
    if answer.kind == "overlap" and not answer.columns[:-1]:
        parts.append(_overlap(protocol, answer))
    else:
        query = section.query
        percent = query.kind == "mean" and query.attribute is not None and query.attribute.type == "boolean"
        if answer.kind != "quantile" and len(answer.columns) <= 1:
            what = answer.statistic + (" (as a percentage)" if percent else "")
            parts.append(_image(bar_chart(answer, percent=percent), what, f"{what}; error bars are 95% intervals."))
        columns = [_heading(protocol, c) for c in answer.columns] or ["who"]
        parts.append(_table(answer, answer.cells, columns, percent))
    notes = "; ".join(answer.notes)
    parts.append(
        f'<p class="small">Query: <code>{_e(answer.query)}</code>. {_e(answer.mechanism)}; '
        f"privacy loss {_e(answer.cost.shown(equivalent_delta(protocol)))}. {_e(notes)}</p></section>"
    )
    return "".join(parts)


def _protocol_summary(protocol: Protocol) -> str:
    rows = []
    for party in protocol.parties:
        release = protocol.record_level.get(party.id)
        allowed = "yes, for consented clients" if release and release.allowed else "no"
        if release and release.serious_threat:
            allowed += "; serious-threat exception (Privacy Act principle 11(f))"
        rows.append(
            f"<tr><td>{_e(party.name)}</td><td>{_e(MANDATES.get(party.mandate, party.mandate))}</td>"
            f"<td>{_e(allowed)}</td></tr>"
        )
    return (
        f"<section><h2>The information-sharing protocol</h2><p><b>{_e(protocol.name)}</b>: {_e(protocol.purpose)}</p>"
        "<table><thead><tr><th>agency</th><th>mandate</th><th>record-level results</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        "<p>No agency shared names, dates of birth or addresses: each sent keyed encodings that only the "
        "linkage service compared, and the statistics in this report were computed apart from them.</p></section>"
    )


def _budget(protocol: Protocol, spec: ReportSpec, before: Budget, after: Budget) -> str:
    delta = equivalent_delta(protocol)

    def shown(loss: Loss) -> str:
        return loss.shown(delta) if loss.amount else str(loss)

    note = (
        f"<p class='small'>Under zCDP the losses ρ add up; each is also shown as the (ε, δ) it amounts to on its "
        f"own at δ={delta:g} (OpenDP's conversion), for readers who know ε. Those ε do not add up.</p>"
        if spec.spend.measure == "rho"
        else ""
    )
    return (
        "<section><h2>Privacy budget</h2><table><tbody>"
        f"<tr><td>total for the project</td><td>{_e(shown(before.total))}</td></tr>"
        f"<tr><td>spent before this report</td><td>{_e(shown(before.spent))}</td></tr>"
        f"<tr><td>spent by this report</td><td>{_e(shown(spec.cost))}</td></tr>"
        f"<tr><td>left</td><td>{_e(shown(after.remaining))}</td></tr></tbody></table>{note}</section>"
    )


def _dp_note(protocol: Protocol) -> str:
    """The plain-words note on what the noise protects: one person, as the rows they can move."""
    rows = protocol.rows_per_person
    return (
        "<section class='note'><h2>What the ± means, and why the figures are not exact</h2>"
        "<p>Every figure here was computed with <b>differential privacy</b>: a measured amount of random noise was "
        "added to the true figure before it left the statistics service. The noise hides whether any one person "
        "is among the records: all of a person's records (at most one per agency) can change at most "
        f"{rows} rows of the table these figures count, and every figure protects {rows} rows together. Two "
        "limits: this holds where the matching did not put two records of one agency together, and the matching "
        "model, fitted once on the agencies' records, is not itself protected.</p>"
        "<p>Each figure has a <b>95% interval</b> (±): in 19 cases out of 20 the true figure "
        "lies within that distance. Small counts are the least precise relative to their size. Counts of the "
        "overlap were adjusted so that they are whole numbers that add up.</p><p>The protocol fixes a total "
        "<b>privacy budget</b> for the project; each released figure spends part of it, and when it is spent no "
        "more figures can be released. Within those limits, the figures in this report can be published: they "
        "reveal nothing about any one person beyond what the budget allows.</p></section>"
    )


def render_report(
    protocol: Protocol,
    spec: ReportSpec,
    answers: Sequence[Answer],
    before: Budget,
    after: Budget,
    generated_at: datetime,
) -> str:
    """The report as one self-contained HTML page."""
    sections = "".join(_section(protocol, s, a) for s, a in zip(spec.sections, answers, strict=True))
    period = f"{_e(spec.period)} · " if spec.period else ""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(spec.title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{_e(spec.title)}</h1><p class='meta'>{period}produced "
        f"{_e(generated_at.strftime('%d %B %Y, %H:%M %Z'))} by pprl from differentially private answers only</p>"
        "</header>"
        f"{_dp_note(protocol)}{_protocol_summary(protocol)}{_budget(protocol, spec, before, after)}"
        f"{sections}</body></html>"
    )
