"""The statistics side's answers for the service: entity tables from the store, budget from its ledger.

The linkage side never calls this; it only hands the statistics store the entity mapping
of each finished run. Entity tables are built once per version of their inputs (the
mapping's run and each party's attributes upload) and kept in memory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import polars as pl

from linkage.errors import Conflict, InputError
from linkage.protocol import Protocol, equivalent_delta
from stats.answers import Answer
from stats.budget import Budget, Loss
from stats.dp import Spend, answer_queries, answer_query, cost_for_half_width
from stats.entities import entity_table
from stats.query import QuerySpec, parse_query, parse_query_json, split_query
from stats.store import StatsStore

__all__ = ["QueryService"]


def _uploaded(version: tuple[Any, ...]) -> set[str]:
    """The parties whose attributes a data version includes (see ``StatsStore.data_version``)."""
    return {party for party, _ in version[1:]}


class QueryService:
    """Answer analysts' queries on the statistics store.

    Args:
        store: the statistics store.
    """

    def __init__(self, store: StatsStore) -> None:
        self._store = store
        self._tables: dict[str, tuple[tuple[Any, ...], pl.DataFrame]] = {}
        self._lock = threading.Lock()

    def _table(self, project_id: str) -> tuple[tuple[Any, ...], pl.DataFrame]:
        """The project's data version and entity table, rebuilt when the mapping or any attributes change.

        Raises:
            Conflict: no linkage run has finished, or a linked party sent no attributes.
        """
        version = self._store.data_version(project_id)
        with self._lock:
            cached = self._tables.get(project_id)
            if cached is not None and cached[0] == version:
                return cached
        if version[0] is None:
            raise Conflict(
                "no linkage run has finished for this project yet, so there is no one to count; "
                "start one with `pprl run` once every party has uploaded"
            )
        protocol = self._store.protocol(project_id)
        attributes = {party: self._store.attribute_values(project_id, party) for party in _uploaded(version)}
        try:
            table = entity_table(protocol, self._store.mapping(project_id), attributes)
        except InputError as exc:
            raise Conflict(exc.message) from exc
        with self._lock:
            self._tables[project_id] = (version, table)
        return version, table

    def parse(
        self, project_id: str, query: str | list[str] | dict[str, Any], *, cost_optional: bool = False
    ) -> QuerySpec:
        """Check a query given in the query language (text or words) or in its JSON form.

        A query never names a file here: the service opens nothing a caller names. With
        ``cost_optional``, a query without a cost gets a placeholder one (for
        :meth:`cost_for`, which sets the real one).

        Raises:
            InputError: the query is malformed or does not fit the protocol.
        """
        protocol = self._store.protocol(project_id)
        default = Loss.of(**{next(iter(protocol.budget)): 1}) if cost_optional else None
        if isinstance(query, dict):
            return parse_query_json(protocol, query, default_cost=default)
        words = split_query(query) if isinstance(query, str) else query
        return parse_query(protocol, words, files=False, default_cost=default)

    def cost_for(self, project_id: str, spec: QuerySpec, half_width: float) -> QuerySpec:
        """The query at the least cost whose cells' stated half-width is at most ``half_width`` (spends nothing).

        Raises:
            InputError: a mean or quantile (their width depends on the data), or a bad target.
            Conflict: no entity table yet.
        """
        protocol = self._store.protocol(project_id)
        _, table = self._table(project_id)
        return cost_for_half_width(table, spec, protocol, half_width)

    def answer(self, project_id: str, spec: QuerySpec, who: str, *, dry_run: bool = False) -> Answer:
        """Release (or with ``dry_run`` only plan) a query, spending from the project's ledger.

        Raises:
            BudgetExceeded: not enough budget left; nothing is spent.
            Conflict: no entity table yet.
        """
        protocol, table, spend, noted = self._study(project_id)
        return noted(answer_query(table, spec, protocol, spend, who, dry_run=dry_run))

    def answer_all(self, project_id: str, specs: list[QuerySpec], who: str, label: str) -> list[Answer]:
        """Release several queries as one spend (:func:`stats.dp.answer_queries`): all or none.

        Raises:
            BudgetExceeded: not enough budget left for them all; nothing is spent.
            Conflict: no entity table yet.
        """
        protocol, table, spend, noted = self._study(project_id)
        return [noted(answer) for answer in answer_queries(table, specs, protocol, spend, who, label)]

    def _study(self, project_id: str) -> tuple[Protocol, pl.DataFrame, Spend, Callable[[Answer], Answer]]:
        """The protocol, the entity table, the project's ledger, and what to note on every answer."""
        protocol = self._store.protocol(project_id)
        version, table = self._table(project_id)
        removed = self._store.removed_parties(project_id)
        missing = sorted({p.id for p in protocol.parties} - _uploaded(version) - set(removed))
        gone = [f"{party} was removed from the project on {at:%Y-%m-%d}" for party, at in sorted(removed.items())]

        def spend(who: str, query: str, cost: Any) -> Any:
            return self._store.spend(project_id, who, query, cost)

        def noted(answer: Answer) -> Answer:
            notes = [f"{line}: its clients are not counted" for line in gone]
            if missing:
                notes.append(f"no attributes from {', '.join(missing)} yet: people known only to them are not counted")
            return replace(answer, notes=(*answer.notes, *notes)) if notes else answer

        return protocol, table, spend, noted

    def protocol_document(self, project_id: str) -> Mapping[str, Any]:
        """The project's protocol document."""
        return self._store.protocol(project_id).document

    def budget(self, project_id: str) -> Budget:
        """The project's budget and ledger, showing ρ spends as (ε, δ) at the protocol's δ too."""
        delta = equivalent_delta(self._store.protocol(project_id))
        return replace(self._store.budget(project_id), equivalent_delta=delta)
