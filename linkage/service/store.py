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

All SQL of the linkage side lives in this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from linkage.chain import GENESIS, ChainCheck, ChainHead, ChainRow, chain_digest, verify_chain
from linkage.database import ANALYST, Database, hash_token, now, open_engine, project_tables
from linkage.encodings import EncodingsHeader, EncodingsWriter, check_compatible, read_encodings, read_header
from linkage.errors import Conflict, InputError, NotFound, ProtocolError
from linkage.file_modes import private_dir, shred_file
from linkage.matching.engine import LinkResult
from linkage.protocol import Protocol, Safeguards, parse_protocol
from linkage.token_files import file_sha256, token_set_sha256

__all__ = [
    "ACTIVE_STATUSES",
    "ANALYST",
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
    "check_upload",
    "encodings_tokens_sha256",
    "hash_token",
    "issue_credentials",
    "new_project_id",
    "open_engine",
]

log = logging.getLogger("pprl.service")

RESERVED_ROLES = frozenset({ANALYST, "admin"})
ACTIVE_STATUSES = ("queued", "running")
MAX_RUN_ATTEMPTS = 3
TOKEN_PREFIX = "pprl_"  # noqa: S105 - a visible prefix for credentials, not a secret
_CHUNK = 5000
_metadata = MetaData()

projects, credentials = project_tables(_metadata)
uploads = Table(
    "uploads",
    _metadata,
    Column("project_id", String(32), ForeignKey("projects.id"), primary_key=True),
    Column("party", String(32), primary_key=True),
    Column("body_sha256", String(64), nullable=False),
    Column("records_sha256", String(64), nullable=False),
    Column("secret_check", String(128), nullable=False),
    Column("record_count", BigInteger, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("uploaded_at", DateTime(timezone=True), nullable=False),
    # SHA-256 of the upload's set of tokens (token_set_sha256): the statistics side checks
    # attributes against it. Filled in at start-up for uploads stored before it existed.
    Column("tokens_sha256", String(64)),
)
runs = Table(
    "runs",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", String(32), ForeignKey("projects.id"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("progress", Float, nullable=False, default=0.0),
    Column("message", Text, nullable=False, default=""),
    Column("inputs", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("entity_count", Integer),
    Column("linked_records", Integer),
    # The run's number within its project (1, 2, ...): what parties see as its id.
    Column("number", Integer),
    # Who queued it (``party:msd``, ``admin``): parties may start only so many.
    Column("started_by", String(80)),
)
# At most one queued or running run per project, enforced by the database itself.
Index(
    "runs_one_active_per_project",
    runs.c.project_id,
    unique=True,
    sqlite_where=runs.c.status.in_(ACTIVE_STATUSES),
    postgresql_where=runs.c.status.in_(ACTIVE_STATUSES),
)
Index("runs_number_per_project", runs.c.project_id, runs.c.number, unique=True)
entities = Table(
    "entities",
    _metadata,
    Column("run_id", Integer, ForeignKey("runs.id"), primary_key=True),
    Column("party", String(32), primary_key=True),
    Column("token", String(32), primary_key=True),
    Column("entity_id", Integer, nullable=False),
)
Index("entities_by_entity", entities.c.run_id, entities.c.entity_id)
# The frozen model of a project (:mod:`linkage.matching.frozen`), as its JSON document; and
# each run's stable mapping, which the statistics side receives instead of the entities.
frozen_models = Table(
    "frozen_models",
    _metadata,
    Column("project_id", String(32), ForeignKey("projects.id"), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("document", Text, nullable=False),
    Column("fitted_run", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
stable_entities = Table(
    "stable_entities",
    _metadata,
    Column("run_id", Integer, ForeignKey("runs.id"), primary_key=True),
    Column("party", String(32), primary_key=True),
    Column("token", String(32), primary_key=True),
    Column("entity_id", Integer, nullable=False),
)
audit = Table(
    "audit",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(80), nullable=False),
    Column("action", String(64), nullable=False),
    Column("project_id", String(32)),
    Column("outcome", String(64), nullable=False),
    Column("detail", Text, nullable=False, default=""),
    # The hash chain (linkage.chain): the previous line's hash and this line's own.
    Column("prev_sha256", String(64)),
    Column("sha256", String(64)),
    # AUTOINCREMENT: SQLite never hands out the id of a deleted last line again.
    sqlite_autoincrement=True,
)
chain_heads = Table(
    "chain_heads",
    _metadata,
    Column("name", String(32), primary_key=True),
    Column("last_key", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("rows", BigInteger, nullable=False),
)
threat_requests = Table(
    "threat_requests",
    _metadata,
    Column("id", String(16), primary_key=True),
    Column("project_id", String(32), ForeignKey("projects.id"), nullable=False),
    Column("party", String(32), nullable=False),
    Column("tokens", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("decided_at", DateTime(timezone=True)),
    Column("decided_by", String(80)),
    Column("note", Text, nullable=False, default=""),
)
# The erasure journal: a withdrawal, a party's removal or a project's deletion is written
# here (pending) before anything is erased, carried out in idempotent steps, and marked
# done with its audit line in one transaction; a start-up finishes what a crash left
# pending (linkage.service.erasure). No foreign key: the line outlives its project.
erasures = Table(
    "erasures",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", String(32), nullable=False),
    Column("party", String(32)),
    # withdraw, party (one party's data), expire (one party's data; it may upload again)
    # or project (all of it).
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("requested_by", String(80), nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("done_at", DateTime(timezone=True)),
    # JSON: the SHA-256 names of the blobs to shred.
    Column("blobs", Text, nullable=False),
    # JSON: the tokens to withdraw, only while pending (emptied when done).
    Column("tokens", Text),
    # JSON: for a withdrawal, the party's upload after it (the new blob's name and counts),
    # and the SHA-256 of each withdrawn token (kept: what was withdrawn, without the tokens).
    Column("plan", Text),
    # What was erased, in counts (and a withdrawal's token-set digest): the audit line's detail.
    Column("summary", Text, nullable=False),
    sqlite_autoincrement=True,
)
# A party's batch (``pprl upload --batch``): its new and corrected records and its withdrawals,
# merged into its upload at once (the upload stays the party's whole current list) and kept
# pending until a run links it incrementally (linkage.service.batches).
batches = Table(
    "batches",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", String(32), ForeignKey("projects.id"), nullable=False),
    Column("party", String(32), nullable=False),
    # pending (not linked yet) or linked.
    Column("status", String(16), nullable=False),
    # The batch's records as an encodings blob (None: withdrawals only); shredded once linked.
    Column("body_sha256", String(64)),
    # The party's upload before and after the batch: a run links batches incrementally only
    # when they chain from the upload its link state was made from to the current one.
    Column("base_sha256", String(64), nullable=False),
    Column("result_sha256", String(64), nullable=False),
    Column("added", Integer, nullable=False),
    Column("corrected", Integer, nullable=False),
    Column("withdrawn", Integer, nullable=False),
    # JSON: the withdrawn tokens, only while pending.
    Column("tokens", Text),
    Column("uploaded_at", DateTime(timezone=True), nullable=False),
    Column("run_id", Integer),
    sqlite_autoincrement=True,
)
# The project's linkage state (linkage.matching.link_state) after its latest batch run: a
# file under DATA_DIR/states, as sensitive as the encodings; dropped by any erasure.
link_states = Table(
    "link_states",
    _metadata,
    Column("project_id", String(32), ForeignKey("projects.id"), primary_key=True),
    Column("run_id", Integer, nullable=False),
    Column("name", String(80), nullable=False),
    Column("next_entity", BigInteger, nullable=False),
)
# What each party was given at its last results download: per released token, its entity id
# and the parties it was shared with; the next download lists what changed since.
downloads = Table(
    "downloads",
    _metadata,
    Column("project_id", String(32), ForeignKey("projects.id"), primary_key=True),
    Column("party", String(32), primary_key=True),
    Column("token", String(32), primary_key=True),
    Column("entity_id", Integer, nullable=False),
    Column("shared_with", Text, nullable=False),
)
download_runs = Table(
    "download_runs",
    _metadata,
    Column("project_id", String(32), ForeignKey("projects.id"), primary_key=True),
    Column("party", String(32), primary_key=True),
    Column("run_number", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)
AUDIT_CHAIN = "audit"
MAX_DETAIL_CHARS = 2000
_FIELD_LIMITS = {"actor": 80, "action": 64, "outcome": 64}


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def new_project_id() -> str:
    """A fresh random project id (16 hex digits)."""
    return secrets.token_hex(8)


def issue_credentials(protocol: Protocol) -> dict[str, str]:
    """One fresh 256-bit token per party and one for analysts, keyed by party id or ``analyst``.

    Raises:
        ProtocolError: a party id is a reserved role name.
    """
    clashes = sorted(RESERVED_ROLES & {p.id for p in protocol.parties})
    if clashes:
        raise ProtocolError(f"party id {clashes[0]!r} is reserved for a role; rename that party in the protocol")
    return {key: TOKEN_PREFIX + secrets.token_urlsafe(32) for key in (*(p.id for p in protocol.parties), ANALYST)}


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
    the party's upload after a withdrawal; ``summary`` what was erased, in counts.
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


def check_upload(
    protocol: Protocol,
    party: str,
    path: Path,
    stored: Iterable[UploadRecord] = (),
    *,
    shown_as: str = "the upload",
) -> EncodingsHeader:
    """Check an uploaded encodings file belongs to this project and party, matches the others' secret, is whole.

    Args:
        protocol: the project's protocol.
        party: the uploading party.
        path: the received file.
        stored: the other parties' current uploads (their secret checks must match).
        shown_as: how to name the file in messages (never the server's path).

    Returns:
        The file's header.

    Raises:
        InputError: not an encodings file, truncated, corrupted or empty, or a record token
            in it twice (a run would fail on it, for every party).
        MismatchError: another protocol, party, layout or secret (every problem listed).
    """
    header = read_header(path, shown_as=shown_as)
    others = {upload.party: upload.secret_check for upload in stored if upload.party != party}
    check_compatible(protocol, [(shown_as, header)], uploader=party, stored=others)
    tokens = np.ascontiguousarray(read_encodings(path, verify=True, shown_as=shown_as).records["token"])
    repeated = len(tokens) - len(np.unique(tokens, axis=0))
    if repeated:
        raise InputError(
            f"{shown_as} holds {repeated} record token(s) more than once; `pprl encode` gives every record a token "
            "of its own: upload the encodings.pprl it wrote, unchanged"
        )
    return header


def encodings_tokens_sha256(path: Path) -> str:
    """The :func:`~linkage.token_files.token_set_sha256` of an encodings file's tokens."""
    tokens = np.ascontiguousarray(read_encodings(path, verify=False).records["token"])
    text = tokens.tobytes().hex()
    width = 2 * tokens.shape[1] if tokens.ndim == 2 else 32
    return token_set_sha256(text[i : i + width] for i in range(0, len(text), width))


class LinkageStore(Database):
    """The linkage side's database and blob folder.

    Args:
        data_dir: the service's data folder; blobs go in ``data_dir/blobs``.
        url: a database URL; ``None`` means ``sqlite:///data_dir/linkage.db``.
        schema: the PostgreSQL schema (ignored for SQLite).
    """

    def __init__(self, data_dir: Path, url: str | None = None, *, schema: str | None = "pprl_linkage") -> None:
        self.data_dir = private_dir(Path(data_dir))
        self.blob_dir = private_dir(self.data_dir / "blobs")
        self.state_dir = private_dir(self.data_dir / "states")
        super().__init__(url or f"sqlite:///{self.data_dir / 'linkage.db'}", schema, _metadata)
        self._protocols: dict[str, Protocol] = {}
        # Uploads move files and rows together; one at a time keeps the pair consistent.
        self._upload_lock = threading.Lock()
        self._upgrade()

    def _upgrade(self) -> None:
        """Bring rows an older pprl stored up to date: run numbers, and the audit log's hash chain."""
        with self._write() as conn:
            # An older store numbered runs across projects; its ids stay their numbers.
            conn.execute(update(runs).where(runs.c.number.is_(None)).values(number=runs.c.id))
            unchained = conn.execute(select(func.count()).where(audit.c.sha256.is_not(None))).scalar_one() == 0
            if self._head(conn, AUDIT_CHAIN) is None and unchained:
                # A new store, or one an older pprl wrote: start the chain. A missing head with
                # hashed lines is tampering, which verify_audit reports; it is never re-sealed.
                self._seal_audit(conn)

    # -- projects and credentials -------------------------------------------------------

    def create_project(
        self, project_id: str, protocol: Protocol, credential_hashes: Mapping[str, str]
    ) -> ProjectRecord:
        """Store a project and its credentials (hashed) in one transaction.

        Args:
            project_id: from :func:`new_project_id`.
            protocol: the validated protocol.
            credential_hashes: ``{party id or "analyst": hash_token(token)}``.
        """
        with self._write() as conn:
            created = self._insert_project(conn, project_id, protocol, credential_hashes)
        return ProjectRecord(project_id, protocol.name, protocol.fingerprint, protocol.document, created)

    def authenticate(self, token: str) -> Credential | None:
        """The credential a token stands for, or ``None``; compared in constant time."""
        row = self._credential(token)
        if row is None:
            return None
        return Credential(role=row.role, project_id=row.project_id, party=row.party, name=row.name)

    def add_analyst(self, project_id: str, name: str, credential_hash: str) -> None:
        """Store an analyst's own credential (hashed); the statistics side keeps its budget.

        Raises:
            Conflict: the project has an analyst of this name already.
        """
        with self._write() as conn:
            taken = conn.execute(
                select(credentials.c.name).where(
                    credentials.c.project_id == project_id, credentials.c.role == ANALYST, credentials.c.name == name
                )
            ).first()
            if taken is not None or name == ANALYST:
                raise Conflict(f"project {project_id!r} has an analyst named {name!r} already; choose another name")
            self._insert_credential(conn, project_id, ANALYST, name, credential_hash)

    def project(self, project_id: str) -> ProjectRecord:
        """The project with this id.

        Raises:
            NotFound: no such project.
        """
        with self._read() as conn:
            row = conn.execute(select(projects).where(projects.c.id == project_id)).first()
        if row is None:
            deleted = [e for e in self.erasures(project_id) if e.kind == "project"]
            if deleted:
                raise NotFound(
                    f"project {project_id!r} was deleted by {deleted[-1].requested_by} on "
                    f"{deleted[-1].requested_at:%Y-%m-%d}; its ledger and the audit log are kept"
                )
            raise NotFound(f"no project {project_id!r}; `pprl project create` prints the id of a new project")
        return _project(row)

    def projects(self) -> list[ProjectRecord]:
        """Every project, oldest first."""
        with self._read() as conn:
            return [_project(row) for row in conn.execute(select(projects).order_by(projects.c.created_at))]

    def protocol(self, project_id: str) -> Protocol:
        """The project's protocol, parsed once and cached."""
        if project_id not in self._protocols:
            self._protocols[project_id] = parse_protocol(dict(self.project(project_id).document))
        return self._protocols[project_id]

    # -- uploads ------------------------------------------------------------------------

    def uploads(self, project_id: str) -> dict[str, UploadRecord]:
        """The current encodings upload of each party that has uploaded."""
        with self._read() as conn:
            rows = conn.execute(select(uploads).where(uploads.c.project_id == project_id)).all()
        return {row.party: _upload(row) for row in rows}

    def incoming_path(self) -> Path:
        """A fresh temporary path in the blob folder for a body being received."""
        return self.blob_dir / f".incoming-{secrets.token_hex(8)}"

    def blob_path(self, body_sha256: str) -> Path:
        """Where the encodings with this SHA-256 are kept."""
        return self.blob_dir / body_sha256

    def write_blob(
        self, protocol: Protocol, party: str, secret_check: str, records: np.ndarray
    ) -> tuple[str, EncodingsHeader]:
        """Write records as an encodings file into the blob folder, named by its SHA-256.

        Written to a temporary name and renamed, so a stop leaves no half-written blob.

        Returns:
            The file's SHA-256 and its header.
        """
        incoming = self.incoming_path()
        try:
            writer = EncodingsWriter(incoming, protocol=protocol, party=party, secret_check=secret_check)
            try:
                writer.write(np.ascontiguousarray(records))
            except BaseException:
                writer.abort()
                raise
            header = writer.close()
            body_sha256 = file_sha256(incoming)
            os.replace(incoming, self.blob_path(body_sha256))
        finally:
            shred_file(incoming)
        return body_sha256, header

    def accept_encodings(
        self, project_id: str, party: str, received: Path, body_sha256: str, *, replace: bool
    ) -> UploadOutcome:
        """Check a received encodings file and make it the party's upload, atomically.

        The file is checked, fsync'd and renamed to its SHA-256; the database row is
        committed after. The same content again changes nothing; different content is
        refused unless ``replace``. ``received`` is always consumed (moved or deleted).

        Raises:
            InputError, MismatchError: see :func:`check_upload`.
            Conflict: different content without ``replace``, or a run is queued or running.
        """
        shown_as = "the uploaded encodings file"
        try:
            protocol = self.protocol(project_id)
            previous = self.uploads(project_id).get(party)
            if previous is not None and previous.body_sha256 == body_sha256:
                return UploadOutcome("unchanged", previous)
            # The slow part (reading the whole file) runs outside the lock: parties upload at once.
            header = check_upload(protocol, party, received, self.uploads(project_id).values(), shown_as=shown_as)
            tokens_sha256 = encodings_tokens_sha256(received)
            _fsync_file(received)
            with self._upload_lock:
                current = self.uploads(project_id)
                previous = current.get(party)
                if previous is not None and previous.body_sha256 == body_sha256:
                    return UploadOutcome("unchanged", previous)
                check_compatible(
                    protocol,
                    [(shown_as, header)],
                    stored={u.party: u.secret_check for u in current.values() if u.party != party},
                )
                if previous is not None and not replace:
                    raise Conflict(
                        f"party {party!r} already uploaded different encodings ({previous.record_count} records, "
                        f"sha256 {previous.body_sha256[:12]}...); pass --replace (?replace=true) to replace them",
                    )
                self._refuse_if_running(project_id, "replace encodings")
                with self._read() as conn:
                    self._refuse_if_erasing(conn, project_id, "upload encodings")
                final = self.blob_path(body_sha256)
                os.replace(received, final)
                _fsync_dir(self.blob_dir)
                record = UploadRecord(
                    project_id=project_id,
                    party=party,
                    body_sha256=body_sha256,
                    records_sha256=header.records_sha256,
                    secret_check=header.secret_check,
                    record_count=header.record_count,
                    size_bytes=final.stat().st_size,
                    uploaded_at=now(),
                    tokens_sha256=tokens_sha256,
                )
                values = {k: v for k, v in record.__dict__.items() if k not in ("project_id", "party")}
                with self._write() as conn:
                    if previous is None:
                        conn.execute(insert(uploads).values(project_id=project_id, party=party, **values))
                    else:
                        conn.execute(
                            update(uploads)
                            .where(uploads.c.project_id == project_id, uploads.c.party == party)
                            .values(**values)
                        )
                if previous is not None:
                    self._drop_blob_if_unused(previous.body_sha256)
                return UploadOutcome("created" if previous is None else "replaced", record)
        finally:
            shred_file(received)

    def _refuse_if_running(self, project_id: str, what: str) -> None:
        active = self.active_run(project_id)
        if active is not None:
            raise Conflict(
                f"run {active.id} of this project is {active.status}; wait until it is done to {what} "
                f"(`pprl status {active.id}`)"
            )

    def _drop_blob_if_unused(self, body_sha256: str) -> None:
        with self._read() as conn:
            used = conn.execute(select(func.count()).where(uploads.c.body_sha256 == body_sha256)).scalar_one()
            used += conn.execute(
                select(func.count()).where(batches.c.body_sha256 == body_sha256, batches.c.status == "pending")
            ).scalar_one()
        if not used:
            shred_file(self.blob_path(body_sha256))

    def clean_blobs(self) -> int:
        """Shred half-received bodies and blobs no upload refers to; returns how many went.

        The blobs kept are made 0600 (an older pprl left them readable by others).
        """
        with self._read() as conn:
            kept = set(conn.execute(select(uploads.c.body_sha256)).scalars())
        # A pending withdrawal's new blob is referenced by its journal line until it is done.
        kept |= {str(e.plan["upload"]["body_sha256"]) for e in self.pending_erasures() if e.plan}
        with self._read() as conn:
            # A pending batch's records wait for the run that links them.
            kept |= set(conn.execute(select(batches.c.body_sha256).where(batches.c.status == "pending")).scalars())
            states = set(conn.execute(select(link_states.c.name)).scalars())
        removed = 0
        for path in self.blob_dir.iterdir():
            if path.name not in kept:
                shred_file(path)
                removed += 1
            else:
                path.chmod(0o600)
        for path in self.state_dir.iterdir():
            if path.name not in states:
                shred_file(path)
                removed += 1
        return removed

    def fill_tokens_sha256(self) -> list[UploadRecord]:
        """Compute the token digest of uploads an older pprl stored without one; returns those uploads."""
        with self._read() as conn:
            rows = conn.execute(select(uploads).where(uploads.c.tokens_sha256.is_(None))).all()
        filled = []
        for row in rows:
            blob = self.blob_path(row.body_sha256)
            if not blob.exists():
                continue
            digest = encodings_tokens_sha256(blob)
            with self._write() as conn:
                conn.execute(
                    update(uploads)
                    .where(uploads.c.project_id == row.project_id, uploads.c.party == row.party)
                    .values(tokens_sha256=digest)
                )
            filled.append(_upload(row, tokens_sha256=digest))
        return filled

    # -- runs ---------------------------------------------------------------------------

    def runs_started_by(self, project_id: str, actor: str, *, since: datetime | None = None) -> int:
        """How many runs of the project ``actor`` queued (since a time), not counting failed ones."""
        query = select(func.count()).where(
            runs.c.project_id == project_id, runs.c.started_by == actor, runs.c.status != "failed"
        )
        if since is not None:
            query = query.where(runs.c.created_at >= since)
        with self._read() as conn:
            return int(conn.execute(query).scalar_one())

    def start_run(self, project_id: str, started_by: str = "admin", *, limited: bool = False) -> StartedRun:
        """Queue a run, or return the one already queued or running (never two at once).

        Args:
            project_id: the project.
            started_by: who asks (``party:msd``, ``admin``), as the audit log names them.
            limited: hold the caller to the protocol's ``max_runs_per_party`` (parties are).

        Returns:
            The run, whether it was queued now, and the parties whose encodings differ from
            those of the project's previous run (a replace-then-run, which the audit flags).

        Raises:
            Conflict: a party has not uploaded its encodings yet, or the caller has started
                as many runs as the protocol allows.
        """
        protocol = self.protocol(project_id)
        current = self.uploads(project_id)
        removed = self.removed_parties(project_id)
        missing = [p.id for p in protocol.parties if p.id not in current and p.id not in removed]
        if missing:
            raise Conflict(
                f"waiting for encodings from {', '.join(missing)}; every party of the protocol must upload "
                "(`pprl upload`) before a run can start"
            )
        active = self.active_run(project_id)
        if active is not None:
            return StartedRun(active, False)
        if limited:
            self._check_run_limit(project_id, started_by, protocol.safeguards)
        inputs = {party: upload.body_sha256 for party, upload in sorted(current.items())}
        try:
            with self._write() as conn:
                # The project's row lock orders this against an erasure starting (begin_erasure).
                conn.execute(select(projects.c.id).where(projects.c.id == project_id).with_for_update())
                self._refuse_if_erasing(conn, project_id, "start a run")
                existing = conn.execute(
                    select(runs).where(runs.c.project_id == project_id, runs.c.status.in_(ACTIVE_STATUSES))
                ).first()
                if existing is not None:
                    return StartedRun(_run(existing), False)
                previous = conn.execute(
                    select(runs.c.inputs).where(runs.c.project_id == project_id).order_by(runs.c.id.desc()).limit(1)
                ).scalar()
                number = conn.execute(
                    select(func.coalesce(func.max(runs.c.number), 0)).where(runs.c.project_id == project_id)
                ).scalar_one()
                inserted = conn.execute(
                    insert(runs).values(
                        project_id=project_id,
                        status="queued",
                        progress=0.0,
                        message="",
                        inputs=json.dumps(inputs),
                        attempts=0,
                        created_at=now(),
                        number=int(number) + 1,
                        started_by=started_by,
                    )
                ).inserted_primary_key
        except IntegrityError:
            # Another request queued one between our check and insert; that one stands.
            active = self.active_run(project_id)
            if active is None:
                raise
            return StartedRun(active, False)
        assert inserted is not None  # noqa: S101 - an INSERT always has a primary key
        before = json.loads(previous) if previous else {}
        replaced = tuple(party for party, sha in inputs.items() if party in before and before[party] != sha)
        return StartedRun(self._run_by_id(int(inserted[0])), True, replaced)

    def _check_run_limit(self, project_id: str, started_by: str, safeguards: Safeguards) -> None:
        days = safeguards.run_period_days
        since = now() - timedelta(days=days) if days else None
        started = self.runs_started_by(project_id, started_by, since=since)
        if started >= safeguards.max_runs_per_party:
            period = f"in the last {days} days" if days else "in this project"
            raise Conflict(
                f"{started_by} has started {started} runs {period}, the most the protocol allows "
                f"(releases.safeguards.max_runs_per_party = {safeguards.max_runs_per_party}): repeated runs "
                "would let a party difference what it sees. Use the results of the latest run, or ask the "
                "administrator, who may start a run (`pprl run --project ID --token-file admin.secret`)"
            )

    def _run_by_id(self, run_id: int) -> RunRecord:
        with self._read() as conn:
            return _run(conn.execute(select(runs).where(runs.c.id == run_id)).one())

    def run(self, project_id: str, number: int) -> RunRecord:
        """The run of this project with this number.

        Raises:
            NotFound: no such run in this project.
        """
        with self._read() as conn:
            row = conn.execute(select(runs).where(runs.c.number == number, runs.c.project_id == project_id)).first()
        if row is None:
            raise NotFound(f"no run {number} in project {project_id!r}; `pprl run` prints the id of a new run")
        return _run(row)

    def active_run(self, project_id: str) -> RunRecord | None:
        """The project's queued or running run, if any."""
        with self._read() as conn:
            row = conn.execute(
                select(runs).where(runs.c.project_id == project_id, runs.c.status.in_(ACTIVE_STATUSES))
            ).first()
        return None if row is None else _run(row)

    def latest_done_run(self, project_id: str) -> RunRecord | None:
        """The project's most recent completed run, whose entities are the current results."""
        with self._read() as conn:
            row = conn.execute(
                select(runs)
                .where(runs.c.project_id == project_id, runs.c.status == "done")
                .order_by(runs.c.id.desc())
                .limit(1)
            ).first()
        return None if row is None else _run(row)

    def claim_next_run(self) -> RunRecord | None:
        """Mark the oldest queued run running and return it (``None`` if none is queued)."""
        with self._write() as conn:
            row = conn.execute(select(runs).where(runs.c.status == "queued").order_by(runs.c.id).limit(1)).first()
            if row is None:
                return None
            claimed = conn.execute(
                update(runs)
                .where(runs.c.id == row.id, runs.c.status == "queued")
                .values(status="running", started_at=now(), attempts=runs.c.attempts + 1, progress=0.0)
            ).rowcount
            if not claimed:
                return None
            fresh = conn.execute(select(runs).where(runs.c.id == row.id)).one()
        return _run(fresh)

    def run_inputs(self, run_id: int) -> list[tuple[str, Path]]:
        """The ``(party, encodings path)`` a run links, as recorded when it was queued."""
        with self._read() as conn:
            inputs = json.loads(conn.execute(select(runs.c.inputs).where(runs.c.id == run_id)).scalar_one())
        return [(party, self.blob_path(sha)) for party, sha in inputs.items()]

    def set_progress(self, run_id: int, progress: float) -> None:
        """Record how far a running run is (0 to 1)."""
        with self._write() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id, runs.c.status == "running").values(progress=progress))

    def store_entities(
        self, run_id: int, result: LinkResult, entity_ids: Sequence[int] | None = None
    ) -> tuple[int, int]:
        """Store a running run's entities in one transaction, replacing those of an interrupted attempt.

        Its stable mapping too, and, if the project has no frozen model yet, the model the
        run froze. They become results only when :meth:`finish_run` marks the run done.
        ``entity_ids`` gives each of ``result.entities`` its id (carried over from the
        previous run, :func:`linkage.service.batches.carry_run_ids`); ``None`` numbers them 1, 2, ...

        Returns:
            The number of entities and of records in them.
        """
        rows = _entity_rows(run_id, result, result.entities, entity_ids)
        stable = _entity_rows(run_id, result, result.stable.entities) if result.stable is not None else []
        with self._write() as conn:
            conn.execute(delete(entities).where(entities.c.run_id == run_id))
            conn.execute(delete(stable_entities).where(stable_entities.c.run_id == run_id))
            for start in range(0, len(rows), _CHUNK):
                conn.execute(insert(entities), rows[start : start + _CHUNK])
            for start in range(0, len(stable), _CHUNK):
                conn.execute(insert(stable_entities), stable[start : start + _CHUNK])
            if result.model is not None:
                self._freeze_model(conn, run_id, result)
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(progress=0.97, entity_count=len(result.entities), linked_records=len(rows))
            )
        return len(result.entities), len(rows)

    def finish_run(
        self, run_id: int, *, state: tuple[str, int] | None = None, batch_ids: Sequence[int] = ()
    ) -> RunRecord:
        """Mark a run done: its entities become the project's results, in one transaction.

        The entities of the project's earlier runs are dropped in the same transaction, and
        so is the project's linkage state unless the run made a new one (``state``: its
        file name under :attr:`state_dir` and the next entity id); the batches it linked
        (``batch_ids``) are marked linked. The files no row names any more are shredded after.
        """
        with self._write() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).one()
            earlier = select(runs.c.id).where(runs.c.project_id == row.project_id, runs.c.id != run_id)
            conn.execute(delete(entities).where(entities.c.run_id.in_(earlier)))
            conn.execute(delete(stable_entities).where(stable_entities.c.run_id.in_(earlier)))
            old_state = conn.execute(
                select(link_states.c.name).where(link_states.c.project_id == row.project_id)
            ).scalar_one_or_none()
            conn.execute(delete(link_states).where(link_states.c.project_id == row.project_id))
            if state is not None:
                conn.execute(
                    insert(link_states).values(
                        project_id=row.project_id, run_id=run_id, name=state[0], next_entity=state[1]
                    )
                )
            blobs = []
            if batch_ids:
                blobs = [
                    sha
                    for sha in conn.execute(
                        select(batches.c.body_sha256).where(batches.c.id.in_(list(batch_ids)))
                    ).scalars()
                    if sha
                ]
                conn.execute(
                    update(batches)
                    .where(batches.c.id.in_(list(batch_ids)))
                    .values(status="linked", tokens=None, run_id=run_id)
                )
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    status="done",
                    progress=1.0,
                    finished_at=now(),
                    message=f"linked {row.linked_records} records into {row.entity_count} entities",
                )
            )
            done = _run(conn.execute(select(runs).where(runs.c.id == run_id)).one())
        if old_state is not None and (state is None or old_state != state[0]):
            shred_file(self.state_dir / old_state)
        for sha in blobs:
            self._drop_blob_if_unused(sha)
        return done

    def fail_run(self, run_id: int, message: str) -> None:
        """Mark a run failed with a message for the parties (no paths, no data); drop its entities."""
        with self._write() as conn:
            conn.execute(delete(entities).where(entities.c.run_id == run_id))
            conn.execute(delete(stable_entities).where(stable_entities.c.run_id == run_id))
            conn.execute(
                update(runs).where(runs.c.id == run_id).values(status="failed", finished_at=now(), message=message)
            )

    def requeue_interrupted(self) -> tuple[list[RunRecord], list[RunRecord]]:
        """After a restart: queue again the runs left running, or fail those interrupted too often.

        Returns:
            The runs re-queued and the runs failed (as they were before).
        """
        with self._write() as conn:
            rows = [_run(row) for row in conn.execute(select(runs).where(runs.c.status == "running"))]
            again = [row.id for row in rows if row.attempts < MAX_RUN_ATTEMPTS]
            failed = [row.id for row in rows if row.attempts >= MAX_RUN_ATTEMPTS]
            if again:
                conn.execute(
                    update(runs).where(runs.c.id.in_(again)).values(status="queued", progress=0.0, started_at=None)
                )
            if failed:
                conn.execute(
                    update(runs)
                    .where(runs.c.id.in_(failed))
                    .values(
                        status="failed",
                        finished_at=now(),
                        message=f"the server stopped during this run {MAX_RUN_ATTEMPTS} times; "
                        "check its memory and logs, then start a new run",
                    )
                )
        return [r for r in rows if r.id in again], [r for r in rows if r.id in failed]

    # -- entities -----------------------------------------------------------------------

    def entity_rows(self, run_id: int, *, stable: bool = False) -> Iterator[list[tuple[int, str, str]]]:
        """A run's ``(entity_id, party, token)`` rows, in chunks; with ``stable``, its stable mapping's."""
        table = stable_entities if stable else entities
        with self._read() as conn:
            result = conn.execution_options(yield_per=_CHUNK).execute(
                select(table.c.entity_id, table.c.party, table.c.token)
                .where(table.c.run_id == run_id)
                .order_by(table.c.entity_id, table.c.party)
            )
            for chunk in result.partitions():
                yield [(row.entity_id, row.party, row.token) for row in chunk]

    def shared_records(self, run_id: int, party: str, tokens: Iterable[str] | None = None) -> list[SharedRecord]:
        """The party's tokens that share an entity with other parties, and those records.

        Args:
            run_id: a done run.
            party: the party asking.
            tokens: only these of its tokens (``None``: all).
        """
        mine = entities.alias("mine")
        other = entities.alias("other")
        query = (
            select(mine.c.token, other.c.party, other.c.token.label("other_token"))
            .join(other, and_(other.c.run_id == mine.c.run_id, other.c.entity_id == mine.c.entity_id))
            .where(mine.c.run_id == run_id, mine.c.party == party, other.c.party != party)
            .order_by(mine.c.token, other.c.party)
        )
        wanted = None if tokens is None else sorted(set(tokens))
        found: dict[str, list[tuple[str, str]]] = {}
        with self._read() as conn:
            batches = [None] if wanted is None else [wanted[i : i + 500] for i in range(0, len(wanted), 500)]
            for batch in batches:
                statement = query if batch is None else query.where(mine.c.token.in_(batch))
                for row in conn.execute(statement):
                    found.setdefault(row.token, []).append((row.party, row.other_token))
        return [SharedRecord(token, tuple(others)) for token, others in sorted(found.items())]

    # -- serious-threat requests --------------------------------------------------------

    def create_threat_request(
        self, project_id: str, party: str, tokens: Sequence[str], reason: str, status: str
    ) -> ThreatRequest:
        """Store a serious-threat request (``pending`` until the administrator decides, or ``approved``)."""
        request = ThreatRequest(
            id=secrets.token_hex(8),
            project_id=project_id,
            party=party,
            tokens=tuple(sorted(set(tokens))),
            reason=reason,
            status=status,
            created_at=now(),
            decided_at=None,
            decided_by=None,
            note="",
        )
        with self._write() as conn:
            conn.execute(
                insert(threat_requests).values(
                    id=request.id,
                    project_id=project_id,
                    party=party,
                    tokens=json.dumps(list(request.tokens)),
                    reason=reason,
                    status=status,
                    created_at=request.created_at,
                    note="",
                )
            )
        return request

    def threat_request(self, project_id: str, request_id: str) -> ThreatRequest:
        """A serious-threat request of this project.

        Raises:
            NotFound: no such request in this project.
        """
        with self._read() as conn:
            row = conn.execute(
                select(threat_requests).where(
                    threat_requests.c.id == request_id, threat_requests.c.project_id == project_id
                )
            ).first()
        if row is None:
            raise NotFound(
                f"no serious-threat request {request_id!r} in project {project_id!r}; "
                "`pprl serious-threat list` shows the requests"
            )
        return _threat(row)

    def threat_requests(self, project_id: str, party: str | None = None) -> list[ThreatRequest]:
        """The project's serious-threat requests (of one party), oldest first."""
        query = (
            select(threat_requests)
            .where(threat_requests.c.project_id == project_id)
            .order_by(threat_requests.c.created_at)
        )
        if party is not None:
            query = query.where(threat_requests.c.party == party)
        with self._read() as conn:
            return [_threat(row) for row in conn.execute(query)]

    def decide_threat_request(
        self, project_id: str, request_id: str, *, before: str, after: str, by: str, note: str = ""
    ) -> ThreatRequest:
        """Move a request from status ``before`` to ``after`` (approve, refuse, release), atomically.

        Raises:
            NotFound: no such request.
            Conflict: the request is not in status ``before`` (decided or released already).
        """
        current = self.threat_request(project_id, request_id)
        values: dict[str, Any] = {"status": after}
        if after in ("approved", "refused"):
            values |= {"decided_at": now(), "decided_by": by, "note": note}
        with self._write() as conn:
            changed = conn.execute(
                update(threat_requests)
                .where(
                    threat_requests.c.id == request_id,
                    threat_requests.c.project_id == project_id,
                    threat_requests.c.status == before,
                )
                .values(**values)
            ).rowcount
        if not changed:
            raise Conflict(
                f"serious-threat request {request_id!r} is {current.status}, not {before}; "
                + {
                    "pending": "it waits for the administrator (`pprl serious-threat approve`)",
                    "approved": "the party can fetch it once (`pprl results --request ID`)",
                    "refused": "it was refused; make a new request if the threat persists",
                    "released": "it was fetched already; make a new request to fetch again",
                }[current.status]
            )
        return self.threat_request(project_id, request_id)

    # -- batches and the linkage state ------------------------------------------------------

    def record_batch(
        self,
        project_id: str,
        party: str,
        *,
        base_sha256: str,
        upload: Mapping[str, Any],
        body_sha256: str | None,
        tokens: Sequence[str],
        counts: tuple[int, int, int],
    ) -> BatchRecord:
        """Make a batch's merged encodings the party's upload and keep the batch pending, in one transaction.

        Args:
            project_id: the project.
            party: the party.
            base_sha256: the party's upload the batch was merged into (it must still be current).
            upload: the new upload's columns (body_sha256, records_sha256, secret_check,
                record_count, size_bytes, tokens_sha256).
            body_sha256: the blob of the batch's own records (``None``: withdrawals only).
            tokens: the withdrawn tokens.
            counts: records added, corrected, withdrawn.

        Raises:
            Conflict: the project was never linked, a run is queued or running, an erasure
                is under way, or the upload changed meanwhile.
        """
        with self._write() as conn:
            self._lock_idle_project(conn, project_id, "add the batch", "; nothing was stored")
            self._refuse_if_erasing(conn, project_id, "add a batch")
            current = conn.execute(
                select(uploads.c.body_sha256).where(uploads.c.project_id == project_id, uploads.c.party == party)
            ).scalar_one_or_none()
            if current != base_sha256:
                raise Conflict(f"party {party!r}'s encodings changed while the batch was merged; send the batch again")
            conn.execute(
                update(uploads)
                .where(uploads.c.project_id == project_id, uploads.c.party == party)
                .values(**dict(upload), uploaded_at=now())
            )
            inserted = conn.execute(
                insert(batches).values(
                    project_id=project_id,
                    party=party,
                    status="pending",
                    body_sha256=body_sha256,
                    base_sha256=base_sha256,
                    result_sha256=upload["body_sha256"],
                    added=counts[0],
                    corrected=counts[1],
                    withdrawn=counts[2],
                    tokens=json.dumps(sorted(tokens)) if tokens else None,
                    uploaded_at=now(),
                )
            ).inserted_primary_key
            assert inserted is not None  # noqa: S101 - an INSERT always has a primary key
            row = conn.execute(select(batches).where(batches.c.id == int(inserted[0]))).one()
        self._drop_blob_if_unused(base_sha256)
        return _batch(row)

    def batches(self, project_id: str, *, pending: bool = False) -> list[BatchRecord]:
        """The project's batches (only the pending ones), oldest first."""
        query = select(batches).where(batches.c.project_id == project_id).order_by(batches.c.id)
        if pending:
            query = query.where(batches.c.status == "pending")
        with self._read() as conn:
            return [_batch(row) for row in conn.execute(query)]

    def link_state(self, project_id: str) -> LinkStateRecord | None:
        """The project's linkage state, if its latest run made one."""
        with self._read() as conn:
            row = conn.execute(select(link_states).where(link_states.c.project_id == project_id)).first()
        if row is None:
            return None
        return LinkStateRecord(row.project_id, row.run_id, self.state_dir / row.name, int(row.next_entity))

    def run_input_shas(self, run_id: int) -> dict[str, str]:
        """Per party, the SHA-256 of the encodings a run linked (as recorded when it was queued)."""
        with self._read() as conn:
            return dict(json.loads(conn.execute(select(runs.c.inputs).where(runs.c.id == run_id)).scalar_one()))

    def entity_ids(self, run_id: int) -> dict[tuple[str, str], int]:
        """A run's entity id of each ``(party, token)`` it linked."""
        out: dict[tuple[str, str], int] = {}
        for chunk in self.entity_rows(run_id):
            out.update(((party, token), entity) for entity, party, token in chunk)
        return out

    def party_entity_ids(self, run_id: int, party: str) -> dict[str, int]:
        """A run's entity id of each of one party's tokens it linked."""
        with self._read() as conn:
            rows = conn.execute(
                select(entities.c.token, entities.c.entity_id).where(
                    entities.c.run_id == run_id, entities.c.party == party
                )
            ).all()
        return {row.token: int(row.entity_id) for row in rows}

    def party_tokens(self, project_id: str, party: str) -> set[str]:
        """The tokens of the party's current encodings (none without an upload)."""
        upload = self.uploads(project_id).get(party)
        if upload is None:
            return set()
        raw = np.ascontiguousarray(read_encodings(self.blob_path(upload.body_sha256), verify=False).records["token"])
        text = raw.tobytes().hex()
        return {text[i : i + 32] for i in range(0, len(text), 32)}

    def store_entity_rows(
        self, run_id: int, rows: Sequence[tuple[int, str, str]], stable_rows: Sequence[tuple[int, str, str]]
    ) -> tuple[int, int]:
        """Store a running run's ``(entity_id, party, token)`` rows: its entities and its stable mapping.

        For a run that linked batches (one transaction, replacing those of an interrupted attempt).

        Returns:
            The number of entities and of records in them.
        """
        count = len({e for e, _, _ in rows})
        with self._write() as conn:
            for table, chosen in ((entities, rows), (stable_entities, stable_rows)):
                values = [{"run_id": run_id, "entity_id": e, "party": p, "token": t} for e, p, t in chosen]
                conn.execute(delete(table).where(table.c.run_id == run_id))
                for start in range(0, len(values), _CHUNK):
                    conn.execute(insert(table), values[start : start + _CHUNK])
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(progress=0.97, entity_count=count, linked_records=len(rows))
            )
        return count, len(rows)

    def last_download(self, project_id: str, party: str) -> DownloadRecord | None:
        """What the party was given at its last results download, or ``None`` before its first."""
        with self._read() as conn:
            mark = conn.execute(
                select(download_runs).where(download_runs.c.project_id == project_id, download_runs.c.party == party)
            ).first()
            if mark is None:
                return None
            rows = conn.execute(
                select(downloads.c.token, downloads.c.entity_id, downloads.c.shared_with).where(
                    downloads.c.project_id == project_id, downloads.c.party == party
                )
            ).all()
        tokens = {row.token: (int(row.entity_id), tuple(filter(None, row.shared_with.split(";")))) for row in rows}
        at = _utc(mark.at)
        assert at is not None  # noqa: S101 - the column is NOT NULL
        return DownloadRecord(int(mark.run_number), at, tokens)

    def save_download(
        self, project_id: str, party: str, run_number: int, tokens: Mapping[str, tuple[int, Sequence[str]]]
    ) -> None:
        """Keep what the party was given now, replacing its previous download's, in one transaction."""
        values = [
            {"project_id": project_id, "party": party, "token": t, "entity_id": e, "shared_with": ";".join(w)}
            for t, (e, w) in sorted(tokens.items())
        ]
        with self._write() as conn:
            where = (downloads.c.project_id == project_id, downloads.c.party == party)
            conn.execute(delete(downloads).where(*where))
            for start in range(0, len(values), _CHUNK):
                conn.execute(insert(downloads), values[start : start + _CHUNK])
            conn.execute(
                delete(download_runs).where(download_runs.c.project_id == project_id, download_runs.c.party == party)
            )
            conn.execute(
                insert(download_runs).values(project_id=project_id, party=party, run_number=run_number, at=now())
            )

    def _forget_batches(
        self, conn: Connection, project_id: str, party: str | None, tokens: Sequence[str] | None = None
    ) -> list[Path]:
        """For an erasure: drop the project's linkage state and pending batches, and the party's download rows.

        With ``party`` and no ``tokens`` the party's batch history goes too; with ``tokens``
        only those tokens leave its download rows; without ``party`` all of the project's
        rows go. Returns the files to shred once the transaction is committed.
        """
        files = [
            self.state_dir / name
            for name in conn.execute(select(link_states.c.name).where(link_states.c.project_id == project_id)).scalars()
        ]
        conn.execute(delete(link_states).where(link_states.c.project_id == project_id))
        doomed = batches.c.status == "pending"
        if party is not None and tokens is None:
            doomed = doomed | (batches.c.party == party)
        if party is None:
            doomed = batches.c.project_id == project_id
        where = and_(batches.c.project_id == project_id, doomed)
        files += [
            self.blob_path(sha) for sha in conn.execute(select(batches.c.body_sha256).where(where)).scalars() if sha
        ]
        conn.execute(delete(batches).where(where))
        scope = [downloads.c.project_id == project_id]
        marks = [download_runs.c.project_id == project_id]
        if party is not None:
            scope.append(downloads.c.party == party)
            marks.append(download_runs.c.party == party)
        if tokens is None:
            conn.execute(delete(downloads).where(*scope))
            conn.execute(delete(download_runs).where(*marks))
        else:
            ordered = sorted(tokens)
            for start in range(0, len(ordered), 500):
                conn.execute(delete(downloads).where(*scope, downloads.c.token.in_(ordered[start : start + 500])))
        return files

    def _shred_unused(self, files: Sequence[Path]) -> None:
        for path in files:
            if path.parent == self.blob_dir:
                self._drop_blob_if_unused(path.name)
            else:
                shred_file(path)

    # -- the frozen model -----------------------------------------------------------------

    def frozen_model(self, project_id: str) -> dict[str, Any] | None:
        """The project's frozen model document (:meth:`FrozenModel.to_json`), or ``None`` before its first run."""
        with self._read() as conn:
            document = conn.execute(
                select(frozen_models.c.document).where(frozen_models.c.project_id == project_id)
            ).scalar_one_or_none()
        return None if document is None else dict(json.loads(document))

    def _freeze_model(self, conn: Any, run_id: int, result: LinkResult) -> None:
        """Keep the model a run froze as its project's, unless the project has one already."""
        project_id = conn.execute(select(runs.c.project_id).where(runs.c.id == run_id)).scalar_one()
        known = conn.execute(select(frozen_models.c.project_id).where(frozen_models.c.project_id == project_id))
        if known.first() is None and result.model is not None:
            conn.execute(
                insert(frozen_models).values(
                    project_id=project_id,
                    fingerprint=result.model.fingerprint,
                    document=json.dumps(result.model.to_json(), sort_keys=True),
                    fitted_run=run_id,
                    created_at=now(),
                )
            )

    # -- erasure ------------------------------------------------------------------------

    def exclusive(self) -> threading.Lock:
        """The lock uploads and erasures hold while they change a party's blob and its row."""
        return self._upload_lock

    def erasures(self, project_id: str | None = None, *, pending: bool = False) -> list[ErasureRecord]:
        """The erasure journal's lines (of one project; only the pending ones), oldest first."""
        query = select(erasures).order_by(erasures.c.id)
        if project_id is not None:
            query = query.where(erasures.c.project_id == project_id)
        if pending:
            query = query.where(erasures.c.status == "pending")
        with self._read() as conn:
            return [_erasure(row) for row in conn.execute(query)]

    def pending_erasures(self, project_id: str | None = None) -> list[ErasureRecord]:
        """Erasures begun and not yet done (a crash left them so; a start-up finishes them)."""
        return self.erasures(project_id, pending=True)

    def removed_parties(self, project_id: str) -> set[str]:
        """The parties removed from the project (or being removed)."""
        return {e.party for e in self.erasures(project_id) if e.kind == "party" and e.party is not None}

    @staticmethod
    def _lock_idle_project(conn: Connection, project_id: str, what: str, after: str = "") -> None:
        """Lock the project's row (which orders this against a run being queued); refuse while a run is active."""
        conn.execute(select(projects.c.id).where(projects.c.id == project_id).with_for_update())
        active = conn.execute(
            select(runs.c.number, runs.c.status).where(
                runs.c.project_id == project_id, runs.c.status.in_(ACTIVE_STATUSES)
            )
        ).first()
        if active is not None:
            raise Conflict(
                f"run {active.number} of this project is {active.status}; {what} when it is done "
                f"(`pprl status {active.number}`){after}"
            )

    def _refuse_if_erasing(self, conn: Connection, project_id: str, what: str) -> None:
        pending = conn.execute(
            select(erasures.c.kind).where(erasures.c.project_id == project_id, erasures.c.status == "pending")
        ).first()
        if pending is not None:
            raise Conflict(
                f"an erasure ({pending.kind}) of this project is under way; {what} when it is done "
                "(a restart of the server finishes an erasure a stop interrupted)"
            )

    def begin_erasure(
        self,
        project_id: str,
        kind: str,
        requested_by: str,
        *,
        party: str | None = None,
        blobs: Sequence[str] = (),
        tokens: Sequence[str] = (),
        plan: Mapping[str, Any] | None = None,
        summary: str,
    ) -> ErasureRecord:
        """Write an erasure's journal line (pending) and its audit line, before anything is erased.

        Raises:
            Conflict: a run of the project is queued or running, or another erasure is under way.
        """
        with self._write() as conn:
            self._lock_idle_project(conn, project_id, "erase")
            self._refuse_if_erasing(conn, project_id, "erase again")
            inserted = conn.execute(
                insert(erasures).values(
                    project_id=project_id,
                    party=party,
                    kind=kind,
                    status="pending",
                    requested_by=requested_by,
                    requested_at=now(),
                    blobs=json.dumps(list(blobs)),
                    tokens=json.dumps(list(tokens)) if tokens else None,
                    plan=None if plan is None else json.dumps(dict(plan), sort_keys=True),
                    summary=summary,
                )
            ).inserted_primary_key
            assert inserted is not None  # noqa: S101 - an INSERT always has a primary key
            self._append_audit(conn, requested_by, f"erasure.{kind}", project_id, "started", summary)
            row = conn.execute(select(erasures).where(erasures.c.id == int(inserted[0]))).one()
        return _erasure(row)

    def apply_withdrawal(self, erasure: ErasureRecord) -> None:
        """Point the party's upload at its blob without the withdrawn records; drop their result rows.

        Idempotent: the upload is changed only while it still names the old blob. The
        withdrawn tokens leave the entities and stable mappings of the project's runs and
        the party's serious-threat requests.
        """
        project_id, party, tokens = erasure.project_id, erasure.party, set(erasure.tokens)
        with self._write() as conn:
            forgotten = self._forget_batches(conn, project_id, party, sorted(tokens))
            conn.execute(
                update(uploads)
                .where(
                    uploads.c.project_id == project_id,
                    uploads.c.party == party,
                    uploads.c.body_sha256 == erasure.blobs[0],
                )
                .values(**erasure.plan["upload"])
            )
            project_runs = select(runs.c.id).where(runs.c.project_id == project_id)
            ordered = sorted(tokens)
            for start in range(0, len(ordered), 500):
                batch = ordered[start : start + 500]
                for table in (entities, stable_entities):
                    conn.execute(
                        delete(table).where(
                            table.c.run_id.in_(project_runs), table.c.party == party, table.c.token.in_(batch)
                        )
                    )
            requests = conn.execute(
                select(threat_requests.c.id, threat_requests.c.tokens).where(
                    threat_requests.c.project_id == project_id, threat_requests.c.party == party
                )
            ).all()
            for request in requests:
                named = json.loads(request.tokens)
                kept = [token for token in named if token not in tokens]
                if len(kept) != len(named):
                    conn.execute(
                        update(threat_requests)
                        .where(threat_requests.c.id == request.id)
                        .values(tokens=json.dumps(kept))
                    )
        self._shred_unused(forgotten)

    def erase_party_rows(self, project_id: str, party: str, *, keep_credential: bool = False) -> None:
        """Delete one party's rows of a project: upload, result rows, requests, credential (idempotent).

        With ``keep_credential`` (an expired upload) the party may upload again.

        The project's frozen model loses the oversized blocks of the party's pairs (block
        keys come from its records); its weights, fitted on all parties together, stay.
        """
        with self._write() as conn:
            forgotten = self._forget_batches(conn, project_id, party)
            project_runs = select(runs.c.id).where(runs.c.project_id == project_id)
            for table in (entities, stable_entities):
                conn.execute(delete(table).where(table.c.run_id.in_(project_runs), table.c.party == party))
            conn.execute(
                delete(threat_requests).where(
                    threat_requests.c.project_id == project_id, threat_requests.c.party == party
                )
            )
            conn.execute(delete(uploads).where(uploads.c.project_id == project_id, uploads.c.party == party))
            if not keep_credential:
                conn.execute(
                    delete(credentials).where(
                        credentials.c.project_id == project_id,
                        credentials.c.role == "party",
                        credentials.c.party == party,
                    )
                )
            document = conn.execute(
                select(frozen_models.c.document).where(frozen_models.c.project_id == project_id)
            ).scalar_one_or_none()
            if document is not None:
                model = json.loads(document)
                oversized = {
                    pair: keys for pair, keys in model.get("oversized", {}).items() if party not in pair.split("+")
                }
                if oversized != model.get("oversized", {}):
                    model["oversized"] = oversized
                    conn.execute(
                        update(frozen_models)
                        .where(frozen_models.c.project_id == project_id)
                        .values(document=json.dumps(model, sort_keys=True))
                    )
        self._shred_unused(forgotten)

    def erase_project_rows(self, project_id: str) -> None:
        """Delete every row of a project but its audit lines and erasure journal (idempotent)."""
        with self._write() as conn:
            forgotten = self._forget_batches(conn, project_id, None)
            project_runs = select(runs.c.id).where(runs.c.project_id == project_id)
            for table in (entities, stable_entities):
                conn.execute(delete(table).where(table.c.run_id.in_(project_runs)))
            for table in (runs, frozen_models, threat_requests, uploads, credentials):
                conn.execute(delete(table).where(table.c.project_id == project_id))
            conn.execute(delete(projects).where(projects.c.id == project_id))
        self._protocols.pop(project_id, None)
        self._shred_unused(forgotten)

    def shred_blob(self, body_sha256: str) -> bool:
        """Overwrite and remove a blob no upload refers to any more; returns whether it was shredded.

        A blob another project's upload still refers to (the same file uploaded to two
        projects) is that project's data and is kept.
        """
        with self._read() as conn:
            used = conn.execute(select(func.count()).where(uploads.c.body_sha256 == body_sha256)).scalar_one()
        if used:
            return False
        shredded = shred_file(self.blob_path(body_sha256))
        _fsync_dir(self.blob_dir)
        return shredded

    def finish_erasure(self, erasure: ErasureRecord, summary: str) -> None:
        """Mark an erasure done, forget a withdrawal's tokens, and audit it, in one transaction."""
        with self._write() as conn:
            changed = conn.execute(
                update(erasures)
                .where(erasures.c.id == erasure.id, erasures.c.status == "pending")
                .values(status="done", done_at=now(), tokens=None, summary=summary)
            ).rowcount
            if changed:
                hashes = erasure.plan.get("token_sha256s")
                detail = summary + (f"; each token's sha256: {','.join(hashes)}" if hashes else "")
                self._append_audit(
                    conn, erasure.requested_by, f"erasure.{erasure.kind}", erasure.project_id, "done", detail
                )

    # -- audit --------------------------------------------------------------------------

    def append_audit(self, actor: str, action: str, project_id: str | None, outcome: str, detail: str = "") -> None:
        """Append a line to the audit log's hash chain. Never pass a secret, token or record data.

        Values are cut to their columns' widths and the detail to 2,000 characters, so that
        no caller can grow the log by more than a bounded amount per line.
        """
        with self._write() as conn:
            self._append_audit(conn, actor, action, project_id, outcome, detail)

    def _append_audit(
        self, conn: Connection, actor: str, action: str, project_id: str | None, outcome: str, detail: str
    ) -> None:
        """Append an audit line within ``conn``'s transaction (see :meth:`append_audit`)."""
        values = {"actor": actor, "action": action, "outcome": outcome}
        values = {key: text[: _FIELD_LIMITS[key]] for key, text in values.items()}
        if len(detail) > MAX_DETAIL_CHARS:
            detail = detail[: MAX_DETAIL_CHARS - 20] + f"... ({len(detail)} characters)"
        head = self._lock_head(conn, AUDIT_CHAIN)
        at = now()
        row = {**values, "at": at, "project_id": (project_id or None) and project_id[:32], "detail": detail}
        inserted = conn.execute(insert(audit).values(**row, prev_sha256=head.digest, sha256="")).inserted_primary_key
        assert inserted is not None  # noqa: S101 - an INSERT always has a primary key
        line_id = int(inserted[0])
        digest = chain_digest(head.digest, _audit_values(line_id, at, row))
        conn.execute(update(audit).where(audit.c.id == line_id).values(sha256=digest))
        self._move_head(conn, AUDIT_CHAIN, ChainHead(line_id, digest, head.rows + 1))

    def audit_entries(self, *, project_id: str | None = None, after: int = 0, limit: int = 1000) -> list[AuditEntry]:
        """Audit lines after the id ``after``, oldest first, optionally for one project."""
        query = select(audit).where(audit.c.id > after).order_by(audit.c.id).limit(limit)
        if project_id is not None:
            query = query.where(audit.c.project_id == project_id)
        with self._read() as conn:
            return [_record(AuditEntry, row) for row in conn.execute(query)]

    def verify_audit(self) -> ChainCheck:
        """Check the audit log's hash chain: every line unedited, none deleted, inserted or reordered."""
        with self._read() as conn:
            head = self._head(conn, AUDIT_CHAIN)
            rows = conn.execution_options(yield_per=_CHUNK).execute(select(audit).order_by(audit.c.id))
            try:
                chain = (
                    ChainRow(row.id, row.prev_sha256, row.sha256, _audit_values(row.id, row.at, row._mapping))
                    for row in rows
                )
                return verify_chain("the audit log", chain, head)
            finally:
                rows.close()

    def _seal_audit(self, conn: Connection) -> None:
        """Start the chain: hash the lines an older pprl wrote without one (all of them, or none exist)."""
        previous, count, last = GENESIS, 0, 0
        for row in conn.execute(select(audit).order_by(audit.c.id)).all():
            digest = chain_digest(previous, _audit_values(row.id, row.at, row._mapping))
            conn.execute(update(audit).where(audit.c.id == row.id).values(prev_sha256=previous, sha256=digest))
            previous, count, last = digest, count + 1, row.id
        conn.execute(insert(chain_heads).values(name=AUDIT_CHAIN, last_key=last, sha256=previous, rows=count))

    @staticmethod
    def _head(conn: Connection, name: str) -> ChainHead | None:
        row = conn.execute(select(chain_heads).where(chain_heads.c.name == name)).first()
        return None if row is None else ChainHead(int(row.last_key), row.sha256, int(row.rows))

    def _lock_head(self, conn: Connection, name: str) -> ChainHead:
        """The chain's head, locked until the transaction ends (appends to one chain queue)."""
        row = conn.execute(select(chain_heads).where(chain_heads.c.name == name).with_for_update()).first()
        if row is None:
            return ChainHead(0, GENESIS, 0)
        return ChainHead(int(row.last_key), row.sha256, int(row.rows))

    @staticmethod
    def _move_head(conn: Connection, name: str, head: ChainHead) -> None:
        moved = conn.execute(
            update(chain_heads)
            .where(chain_heads.c.name == name)
            .values(last_key=head.key, sha256=head.digest, rows=head.rows)
        ).rowcount
        if not moved:
            conn.execute(insert(chain_heads).values(name=name, last_key=head.key, sha256=head.digest, rows=head.rows))


def _audit_values(line_id: int, at: datetime, row: Any) -> list[object]:
    """What an audit line's hash covers, in a fixed order (times as UTC ISO with microseconds)."""
    stamp = _utc(at)
    assert stamp is not None  # noqa: S101 - the column is NOT NULL
    return [
        line_id,
        stamp.astimezone(UTC).isoformat(timespec="microseconds"),
        row["actor"],
        row["action"],
        row["project_id"],
        row["outcome"],
        row["detail"],
    ]


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


def _entity_rows(
    run_id: int, result: LinkResult, found: Sequence[Any], entity_ids: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    numbers = list(entity_ids) if entity_ids is not None else list(range(1, len(found) + 1))
    return [
        {
            "run_id": run_id,
            "entity_id": number,
            "party": result.parties[party],
            "token": result.tokens[party][record].tobytes().hex(),
        }
        for number, entity in zip(numbers, found, strict=True)
        for party, record in entity.records
    ]


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


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
