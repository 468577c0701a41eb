"""What the linkage side asks of the statistics side, and nothing more.

The two sides keep separate stores (the separation principle); the linkage side never
imports the statistics side's code. Where they must meet (a new project is registered on
both; a finished run's entity mapping is handed over; consent flags, which arrive with
the attributes, decide record-level releases; a party's encodings tell which tokens its
attributes may carry; an analyst's own credential carries a budget; an erasure reaches both
sides), the linkage side calls this interface,
and the app that serves both (:mod:`server.app`) passes the statistics store, which
implements it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from typing import Protocol as Interface

from linkage.chain import ChainCheck
from linkage.protocol import Protocol

__all__ = ["StatisticsSide"]


class StatisticsSide(Interface):
    """The statistics store's methods the linkage side calls."""

    def register_project(self, project_id: str, protocol: Protocol, credential_hashes: Mapping[str, str]) -> None:
        """Store a new project and its credential hashes on the statistics side."""

    def register_encodings(self, project_id: str, party: str, tokens_sha256: str, record_count: int) -> None:
        """Record a party's current encodings by the digest of their tokens; its attributes must match it."""

    def encodings_tokens(self, project_id: str) -> dict[str, str]:
        """Per party, the token digest of the encodings the statistics side knows of."""
        ...

    def register_analyst(
        self, project_id: str, name: str, credential_hash: str, budget: Mapping[str, Any] | None
    ) -> None:
        """Store an analyst's own credential (hashed) and optional budget within the project's.

        Raises:
            InputError: the budget is not a privacy loss in the protocol's measure, or exceeds the project's.
            Conflict: the name is taken.
        """

    def attribute_counts(self, project_id: str) -> dict[str, int]:
        """Per party, how many attribute rows it has uploaded."""
        ...

    def consent(self, project_id: str, records: Iterable[tuple[str, str]]) -> dict[tuple[str, str], bool]:
        """The consent flag of each ``(party, token)``, where its party uploaded one."""
        ...

    def mapping_run(self, project_id: str) -> int | None:
        """The run whose entity mapping the statistics side holds."""
        ...

    def replace_mapping(self, project_id: str, run_id: int, chunks: Iterable[list[tuple[int, str, str]]]) -> int:
        """Make a done run's ``(entity_id, party, token)`` rows the project's mapping; returns the row count."""
        ...

    def verify_ledgers(self) -> list[ChainCheck]:
        """Check every project's ledger hash chain."""
        ...

    def withdraw_tokens(
        self, project_id: str, party: str, tokens: Iterable[str], tokens_sha256: str, record_count: int
    ) -> None:
        """Forget withdrawn records' attributes and mapping rows; register the party's encodings after (idempotent)."""

    def erase_party(self, project_id: str, party: str, *, removed: bool = True) -> None:
        """Erase one party's attributes, mapping rows, encodings digest, and if ``removed`` its credential."""

    def erase_project(self, project_id: str) -> None:
        """Erase a project's data and credentials, keeping its ledger (idempotent)."""

    def compact(self) -> bool:
        """Rewrite the database so that deleted rows leave no bytes behind, where the backend allows."""
        ...

    def clean_incoming(self) -> int:
        """Remove half-received uploads; returns how many went."""
        ...
