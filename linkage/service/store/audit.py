"""The linkage side's audit log: append-only, in a hash chain (:mod:`linkage.chain`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from linkage.chain import GENESIS, ChainCheck, ChainHead, ChainRow, chain_digest, verify_chain
from linkage.database import Database, now
from linkage.service.store.records import AuditEntry, _record, _utc
from linkage.service.store.tables import _CHUNK, audit, chain_heads

AUDIT_CHAIN = "audit"
MAX_DETAIL_CHARS = 2000
_FIELD_LIMITS = {"actor": 80, "action": 64, "outcome": 64}


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


class AuditLog(Database):
    """The audit log's lines and the head of their hash chain."""

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
