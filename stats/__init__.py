"""pprl's statistics side: entity table, differentially private queries, budget ledger, reports.

It sees outcome attributes keyed by token and the entity mapping, never encodings: it
imports nothing of :mod:`linkage.agency`, :mod:`linkage.matching` or :mod:`linkage.service`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from linkage._lazy import lazy_exports

if TYPE_CHECKING:
    from stats.answering import QueryService
    from stats.answers import Answer
    from stats.budget import Budget, FileLedger, Loss
    from stats.dp import answer_query, prepare
    from stats.entities import entity_table, read_entity_table
    from stats.query import QuerySpec, parse_query
    from stats.report import build_report, render_report
    from stats.store import StatsStore

__all__ = [
    "Answer",
    "Budget",
    "FileLedger",
    "Loss",
    "QueryService",
    "QuerySpec",
    "StatsStore",
    "answer_query",
    "build_report",
    "entity_table",
    "parse_query",
    "prepare",
    "read_entity_table",
    "render_report",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Answer": "stats.answers",
        "Budget": "stats.budget",
        "FileLedger": "stats.budget",
        "Loss": "stats.budget",
        "QueryService": "stats.answering",
        "QuerySpec": "stats.query",
        "StatsStore": "stats.store",
        "answer_query": "stats.dp",
        "build_report": "stats.report",
        "entity_table": "stats.entities",
        "parse_query": "stats.query",
        "prepare": "stats.dp",
        "read_entity_table": "stats.entities",
        "render_report": "stats.report",
    },
)
