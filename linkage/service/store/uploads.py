"""Encodings uploads and batches: the blob folder and the rows that name its files."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, insert, select, update

from linkage.database import now
from linkage.encodings import EncodingsHeader, EncodingsWriter, check_compatible, read_encodings, read_header
from linkage.errors import Conflict, InputError
from linkage.file_modes import shred_file
from linkage.protocol import Protocol
from linkage.service.store.records import BatchRecord, UploadOutcome, UploadRecord, _batch, _upload
from linkage.service.store.tables import batches, link_states, uploads
from linkage.service.store.threats import ThreatStore
from linkage.token_files import file_sha256, token_set_sha256


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


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class UploadStore(ThreatStore):
    """Each party's current encodings upload, its batches, and the blob folder they name."""

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

    def _drop_blob_if_unused(self, body_sha256: str) -> None:
        with self._read() as conn:
            used = conn.execute(select(func.count()).where(uploads.c.body_sha256 == body_sha256)).scalar_one()
            used += conn.execute(
                select(func.count()).where(batches.c.body_sha256 == body_sha256, batches.c.status == "pending")
            ).scalar_one()
        if not used:
            shred_file(self.blob_path(body_sha256))

    def _shred_unused(self, files: Sequence[Path]) -> None:
        for path in files:
            if path.parent == self.blob_dir:
                self._drop_blob_if_unused(path.name)
            else:
                shred_file(path)

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

    def party_tokens(self, project_id: str, party: str) -> set[str]:
        """The tokens of the party's current encodings (none without an upload)."""
        upload = self.uploads(project_id).get(party)
        if upload is None:
            return set()
        raw = np.ascontiguousarray(read_encodings(self.blob_path(upload.body_sha256), verify=False).records["token"])
        text = raw.tobytes().hex()
        return {text[i : i + 32] for i in range(0, len(text), 32)}
