"""How `pprl encode` shows what it read: the column choice, the check summary, what to send."""

from __future__ import annotations

from typing import TYPE_CHECKING

from linkage.agency.columns import GIVEN, SAME_NAME, ColumnChoice

if TYPE_CHECKING:  # the check (numpy, the normaliser) is imported when a command runs it
    from linkage.agency.check import CheckSummary

SHARING_NOTE = (
    "Send encodings.pprl to the linkage service and attributes.csv to the statistics side. "
    "Never send keymap.csv, the secret or your client file: they stay in your agency."
)


def render_choice(choice: ColumnChoice) -> list[str]:
    """A line naming the columns found by a usual name (none when every column has the protocol's name)."""
    found = [f"{match.header!r} as {match.column}" for match in choice.matches if match.how not in (SAME_NAME, GIVEN)]
    if not found:
        return []
    return [f"columns read by their usual names: {', '.join(found)} (if one is wrong, name it with --columns)"]


def _share(count: int, rows: int) -> str:
    return f"{100 * count / rows:.1f}%" if rows else "-"


def render_check(summary: CheckSummary) -> str:
    """The check summary as a table and lists, for a terminal."""
    lines = [
        f"checked {summary.source}: {summary.rows:,} rows; {summary.encodable:,} can be encoded, "
        f"{summary.rejected:,} would be rejected. Nothing was written.",
        *render_choice(summary.columns),
        "",
    ]
    width = max(len(q.column) for q in summary.quality)
    header_width = min(max(len(q.header) for q in summary.quality), 28)
    lines.append(f"{'column':<{width}}  {'your column':<{header_width}}  {'missing':>7}  {'refused':>7}  suspicious")
    for quality in summary.quality:
        suspicious = ", ".join(f"{label} x{count}" for label, count in quality.suspicious)
        lines.append(
            f"{quality.column:<{width}}  {quality.header[:header_width]:<{header_width}}  "
            f"{_share(quality.missing, summary.rows):>7}  {quality.unparsed:>7}  {suspicious}".rstrip()
        )
    reasons = [(q.column, reason, n) for q in summary.quality for reason, n in q.reasons]
    if reasons or summary.row_problems:
        lines += ["", "refused, by reason:"]
        lines += [f"  {column}: {reason} ({n})" for column, reason, n in reasons]
        lines += [f"  whole row: {reason} ({n})" for reason, n in summary.row_problems]
    if summary.duplicate_ids:
        lines += [
            "",
            f"client ids on more than one row: {summary.duplicate_ids:,} (on {summary.duplicate_rows:,} rows; "
            "encoding rejects every copy, since which one is right cannot be known)",
        ]
    if summary.problems:
        more = summary.problem_count - len(summary.problems)
        lines += [
            "",
            f"problems ({summary.problem_count:,}" + (f", the first {len(summary.problems)}):" if more else "):"),
        ]
        lines += [f"  {problem}" for problem in summary.problems]
    lines += [f"Warning: {warning}" for warning in summary.warnings]
    lines.append(f"checked in {summary.seconds:.1f} s")
    return "\n".join(lines)
