"""The linkage store: projects, credentials, encodings uploads, runs, entities and the audit log.

Each project also keeps the linkage model its first run fitted and froze, which every later
run reuses, and each run its stable mapping next to its entities: the mapping the
statistics side counts people in (:mod:`linkage.matching.stable`).

SQLAlchemy Core on SQLite (``DATA_DIR/linkage.db``, the embedded default) or PostgreSQL
(schema ``pprl_linkage``), one code path for both. Encodings bodies are files under
``DATA_DIR/blobs/<sha256>``: written to a temporary file, fsync'd and renamed, and only then
recorded in the database, so a crash leaves at most an unreferenced file, which the next
start removes. Nothing here ever holds a raw identifier, a local client id, an outcome
attribute or a similarity score; credentials are stored as SHA-256 hashes only.

All SQL of the linkage side lives in this package, one module per concern, each adding its
methods to the one :class:`LinkageStore` (in the order they build on each other):
:mod:`~.tables` (the schema), :mod:`~.records` (the dataclasses handed out),
:mod:`~.audit` (the audit log's hash chain), :mod:`~.projects` (projects, credentials, and
whether a run or an erasure is under way), :mod:`~.threats` (serious-threat requests),
:mod:`~.uploads` (encodings uploads, batches and the blob folder), :mod:`~.runs` (runs,
entities, the linkage state, downloads, the frozen model) and :mod:`~.erasure` (the erasure
journal and the rows an erasure deletes).
"""

from __future__ import annotations

from linkage.database import ANALYST, hash_token, open_engine
from linkage.service.store.erasure import ErasureStore
from linkage.service.store.projects import TOKEN_PREFIX, issue_credentials, new_project_id
from linkage.service.store.records import (
    AuditEntry,
    BatchRecord,
    Credential,
    DownloadRecord,
    ErasureRecord,
    LinkStateRecord,
    ProjectRecord,
    RunRecord,
    SharedRecord,
    StartedRun,
    ThreatRequest,
    UploadOutcome,
    UploadRecord,
)
from linkage.service.store.runs import MAX_RUN_ATTEMPTS
from linkage.service.store.tables import ACTIVE_STATUSES, audit, uploads
from linkage.service.store.uploads import check_upload, encodings_tokens_sha256

__all__ = [
    "ACTIVE_STATUSES",
    "ANALYST",
    "MAX_RUN_ATTEMPTS",
    "TOKEN_PREFIX",
    "AuditEntry",
    "BatchRecord",
    "Credential",
    "DownloadRecord",
    "ErasureRecord",
    "LinkStateRecord",
    "LinkageStore",
    "ProjectRecord",
    "RunRecord",
    "SharedRecord",
    "StartedRun",
    "ThreatRequest",
    "UploadOutcome",
    "UploadRecord",
    "audit",
    "check_upload",
    "encodings_tokens_sha256",
    "hash_token",
    "issue_credentials",
    "new_project_id",
    "open_engine",
    "uploads",
]


class LinkageStore(ErasureStore):
    """The linkage side's database and blob folder.

    Args:
        data_dir: the service's data folder; blobs go in ``data_dir/blobs``.
        url: a database URL; ``None`` means ``sqlite:///data_dir/linkage.db``.
        schema: the PostgreSQL schema (ignored for SQLite).
    """
