"""Projects and credentials, and what a project is doing (a run active, an erasure under way)."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from linkage.database import ANALYST
from linkage.errors import Conflict, NotFound, ProtocolError
from linkage.file_modes import private_dir
from linkage.protocol import Protocol, parse_protocol
from linkage.service.store.audit import AUDIT_CHAIN, AuditLog
from linkage.service.store.records import Credential, ErasureRecord, ProjectRecord, RunRecord, _erasure, _project, _run
from linkage.service.store.tables import ACTIVE_STATUSES, _metadata, audit, credentials, erasures, projects, runs

RESERVED_ROLES = frozenset({ANALYST, "admin"})
TOKEN_PREFIX = "pprl_"  # noqa: S105 - a visible prefix for credentials, not a secret


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


class ProjectStore(AuditLog):
    """Projects and credentials; the data folder; the checks a change makes first (a run active, an erasure under way).

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

    def active_run(self, project_id: str) -> RunRecord | None:
        """The project's queued or running run, if any."""
        with self._read() as conn:
            row = conn.execute(
                select(runs).where(runs.c.project_id == project_id, runs.c.status.in_(ACTIVE_STATUSES))
            ).first()
        return None if row is None else _run(row)

    def _refuse_if_running(self, project_id: str, what: str) -> None:
        active = self.active_run(project_id)
        if active is not None:
            raise Conflict(
                f"run {active.id} of this project is {active.status}; wait until it is done to {what} "
                f"(`pprl status {active.id}`)"
            )

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
