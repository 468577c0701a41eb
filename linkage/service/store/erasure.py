"""Erasure: the journal's writes and the rows a withdrawal, a removal or a deletion erases."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from linkage.database import now
from linkage.file_modes import shred_file
from linkage.service.store.records import ErasureRecord, _erasure
from linkage.service.store.runs import RunStore
from linkage.service.store.tables import (
    batches,
    credentials,
    download_runs,
    downloads,
    entities,
    entity_marks,
    erasures,
    frozen_models,
    link_states,
    projects,
    runs,
    stable_entities,
    threat_requests,
    uploads,
)
from linkage.service.store.uploads import _fsync_dir


class ErasureStore(RunStore):
    """The erasure journal, and the rows and files a withdrawal, a removal or a deletion erases."""

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
            for table in (runs, frozen_models, threat_requests, uploads, credentials, entity_marks):
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
        """Mark an erasure done, forget a withdrawal's tokens, and audit it, in one transaction.

        Its compaction is then owed (:meth:`compactions_owed`): the deleted rows' bytes, and
        the journal line's own tokens, are gone from the files only once both databases are
        rewritten.
        """
        with self._write() as conn:
            changed = conn.execute(
                update(erasures)
                .where(erasures.c.id == erasure.id, erasures.c.status == "pending")
                .values(status="done", done_at=now(), tokens=None, summary=summary, compaction="pending")
            ).rowcount
            if changed:
                hashes = erasure.plan.get("token_sha256s")
                detail = summary + (f"; each token's sha256: {','.join(hashes)}" if hashes else "")
                self._append_audit(
                    conn, erasure.requested_by, f"erasure.{erasure.kind}", erasure.project_id, "done", detail
                )

    def compactions_owed(self) -> list[int]:
        """The ids of the erasures done whose deleted rows may still leave bytes in a database file."""
        with self._read() as conn:
            return list(
                conn.execute(
                    select(erasures.c.id).where(erasures.c.compaction == "pending").order_by(erasures.c.id)
                ).scalars()
            )

    def mark_compacted(self, erasure_ids: Sequence[int]) -> None:
        """Record that both databases were rewritten after these erasures were done."""
        if erasure_ids:
            with self._write() as conn:
                conn.execute(
                    update(erasures)
                    .where(erasures.c.id.in_(list(erasure_ids)), erasures.c.compaction == "pending")
                    .values(compaction="done")
                )
