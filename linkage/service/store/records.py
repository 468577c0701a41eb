"""What the linkage store hands out: frozen dataclasses made from its rows."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Credential:
    """Who a token belongs to: a role (``party`` or ``analyst``) in one project, and an analyst's name."""

    role: str
    project_id: str
    party: str | None
    name: str | None = None


@dataclass(frozen=True)
class ProjectRecord:
    """A project as stored."""

    id: str
    name: str
    fingerprint: str
    document: Mapping[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class UploadRecord:
    """A party's current encodings upload."""

    project_id: str
    party: str
    body_sha256: str
    records_sha256: str
    secret_check: str
    record_count: int
    size_bytes: int
    uploaded_at: datetime
    tokens_sha256: str | None = None


@dataclass(frozen=True)
class UploadOutcome:
    """What an upload did: ``created``, ``unchanged`` or ``replaced``."""

    status: str
    upload: UploadRecord


@dataclass(frozen=True)
class RunRecord:
    """A linkage run: its state and counts (never scores).

    ``id`` is the store's own key; ``number`` counts the project's runs (1, 2, ...) and is
    what the API calls the run's id.
    """

    id: int
    project_id: str
    status: str
    progress: float
    message: str
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    entity_count: int | None
    linked_records: int | None
    number: int
    started_by: str | None


@dataclass(frozen=True)
class SharedRecord:
    """One of a party's tokens that shares an entity with other parties' records.

    ``others`` holds ``(party, token)`` of the other records; it stays on the service side,
    which releases only the party names, and only as the protocol and consent allow.
    """

    token: str
    others: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class StartedRun:
    """What asking for a run did: the run, whether it was queued now, and whose encodings changed since the last."""

    run: RunRecord
    created: bool
    replaced: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuditEntry:
    """One line of the append-only audit log, with its link in the hash chain."""

    id: int
    at: datetime
    actor: str
    action: str
    project_id: str | None
    outcome: str
    detail: str
    sha256: str | None = None


@dataclass(frozen=True)
class ErasureRecord:
    """A line of the erasure journal: what is (or was) erased, by whom, and whether it is done.

    ``tokens`` holds a pending withdrawal's tokens and is empty once it is done; ``plan``
    the party's upload after a withdrawal; ``summary`` what was erased, in counts;
    ``compaction`` whether the databases were rewritten since it was done (``pending``,
    ``done``; ``None`` for an older pprl's erasure).
    """

    id: int
    project_id: str
    party: str | None
    kind: str
    status: str
    requested_by: str
    requested_at: datetime
    done_at: datetime | None
    blobs: tuple[str, ...]
    tokens: tuple[str, ...]
    plan: Mapping[str, Any]
    summary: str
    compaction: str | None = None


@dataclass(frozen=True)
class ThreatRequest:
    """A serious-threat request: which of its tokens a party named, why, and what became of it.

    ``status`` is ``pending`` (waiting for the administrator), ``approved``, ``refused`` or
    ``released`` (fetched once).
    """

    id: str
    project_id: str
    party: str
    tokens: tuple[str, ...]
    reason: str
    status: str
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    note: str

    @property
    def token_hashes(self) -> list[str]:
        """SHA-256 of each named token: what the audit log and the administrator see instead of tokens."""
        return [hashlib.sha256(token.encode("ascii")).hexdigest() for token in self.tokens]


@dataclass(frozen=True)
class BatchRecord:
    """A party's batch: counts, the upload before and after it, and whether a run linked it.

    ``tokens`` holds a pending batch's withdrawn tokens (empty once linked).
    """

    id: int
    project_id: str
    party: str
    status: str
    body_sha256: str | None
    base_sha256: str
    result_sha256: str
    added: int
    corrected: int
    withdrawn: int
    tokens: tuple[str, ...]
    uploaded_at: datetime
    run_id: int | None


@dataclass(frozen=True)
class LinkStateRecord:
    """Where the project's linkage state is kept and which run it reflects."""

    project_id: str
    run_id: int
    path: Path
    next_entity: int


@dataclass(frozen=True)
class DownloadRecord:
    """What a party was given at its last results download: per token, entity id and shared-with parties."""

    run_number: int
    at: datetime
    tokens: Mapping[str, tuple[int, tuple[str, ...]]]


def _record(kind: Any, row: Any, **overrides: Any) -> Any:
    """A dataclass of ``kind`` from a row with the same column names (SQLite datetimes made UTC)."""
    values = {field.name: row._mapping.get(field.name) for field in fields(kind)}
    values.update(overrides)
    return kind(**{k: _utc(v) if isinstance(v, datetime) else v for k, v in values.items()})


def _project(row: Any) -> ProjectRecord:
    project: ProjectRecord = _record(ProjectRecord, row, document=json.loads(row.protocol))
    return project


def _upload(row: Any, **overrides: Any) -> UploadRecord:
    upload: UploadRecord = _record(UploadRecord, row, **overrides)
    return upload


def _run(row: Any) -> RunRecord:
    run: RunRecord = _record(RunRecord, row)
    return run


def _erasure(row: Any) -> ErasureRecord:
    record: ErasureRecord = _record(
        ErasureRecord,
        row,
        blobs=tuple(json.loads(row.blobs)),
        tokens=tuple(json.loads(row.tokens)) if row.tokens else (),
        plan=json.loads(row.plan) if row.plan else {},
    )
    return record


def _batch(row: Any) -> BatchRecord:
    batch: BatchRecord = _record(BatchRecord, row, tokens=tuple(json.loads(row.tokens)) if row.tokens else ())
    return batch


def _threat(row: Any) -> ThreatRequest:
    request: ThreatRequest = _record(ThreatRequest, row, tokens=tuple(json.loads(row.tokens)))
    return request
