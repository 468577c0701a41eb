"""Withdrawal and erasure: a party withdraws records, a party's data is erased, a project is deleted.

Each is journalled before anything is erased (:meth:`LinkageStore.begin_erasure`, with an
audit line), then carried out in steps that can each be repeated, and marked done with
its audit line in one transaction:

1. the linkage side's rows (one transaction): a withdrawal points the party's upload at a
   blob rewritten without the withdrawn records and drops their result rows; a removal or
   deletion deletes the rows;
2. the statistics side's rows (one transaction): attributes, mapping rows, digests;
3. the blobs no upload refers to any more are overwritten with zeros and removed;
4. the journal line is marked done (its withdrawn tokens forgotten), and a compaction owed;
5. both databases are rewritten (:meth:`Database.compact`: SQLite's ``VACUUM`` and a
   checkpoint, PostgreSQL's ``VACUUM FULL``), so that the deleted rows leave no bytes in
   free pages, dead tuples or the write-ahead log, and the compaction is marked done.

A crash (even ``kill -9``) before the journal line is committed leaves nothing erased; after
it, the next start (:func:`resume_erasures`, from :func:`linkage.service.worker.recover`)
carries the erasure to its end, the compaction included (the next erasure compacts too).
The ledger of releases and the audit log are never erased: they hold no personal data, and
they record what was released, when, and what was erased.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import numpy as np

from linkage.database import now
from linkage.encodings import read_encodings
from linkage.errors import Conflict, InputError, NotFound
from linkage.service.statistics_side import StatisticsSide
from linkage.service.store import ErasureRecord, LinkageStore
from linkage.token_files import listed_positions, token_set_sha256

__all__ = [
    "STEPS",
    "compact_erased",
    "delete_project",
    "expire_uploads",
    "remove_party",
    "resume_erasures",
    "token_sha256",
    "withdraw_records",
]

ProgressCallback = Callable[[int, int], None]
# on_progress(done, STEPS): 0 before the journal line, 1 journalled, 2 linkage rows, 3
# statistics rows, 4 blobs shredded, 5 done (a compaction owed), 6 compacted.
STEPS = 6


def token_sha256(token: str) -> str:
    """The SHA-256 of a token, as the audit log and the journal name withdrawn records.

    >>> token_sha256("0" * 32)[:12]
    '84e0c0eafaa9'
    """
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _step(on_progress: ProgressCallback | None, done: int) -> None:
    if on_progress is not None:
        on_progress(done, STEPS)


def withdraw_records(
    store: LinkageStore,
    stats: StatisticsSide,
    project_id: str,
    party: str,
    tokens: Sequence[str],
    *,
    actor: str,
    on_progress: ProgressCallback | None = None,
) -> ErasureRecord:
    """Withdraw a party's records by token: from its stored encodings, results, attributes and mapping.

    The party's blob is rewritten without the records (a new file, fsync'd and renamed,
    before the journal line), the old blob shredded; the next run links only the records
    left. The journal and the audit log keep the count and each token's SHA-256.

    Args:
        store: the linkage store.
        stats: the statistics side.
        project_id: the project.
        party: the withdrawing party (the caller's own).
        tokens: the records' tokens (32 lowercase hex digits each; repeats count once).
        actor: who asks, as the audit log names them.
        on_progress: called with ``(step, STEPS)`` as each step is done.

    Returns:
        The erasure's journal line, done.

    Raises:
        InputError: no tokens, a malformed one, or tokens that are not records of the party's
            current encodings (their positions are listed); nothing is withdrawn.
        Conflict: no encodings to withdraw from, every record named, a run queued or
            running, or another erasure under way.
    """
    wanted = sorted(set(tokens))
    malformed = [i for i, token in enumerate(tokens, start=1) if len(token) != 32 or token.strip("0123456789abcdef")]
    if not wanted or malformed:
        raise InputError(
            "no tokens to withdraw"
            if not wanted
            else f"{len(malformed)} of the tokens sent are not record tokens (number {listed_positions(malformed)})",
            problems=["write one token (32 lowercase hex digits, from keymap.csv) per line; nothing was withdrawn"],
        )
    protocol = store.protocol(project_id)
    if party in store.removed_parties(project_id):
        raise Conflict(f"party {party!r} was removed from project {project_id!r}; it has no records to withdraw")
    _step(on_progress, 0)
    with store.exclusive():
        upload = store.uploads(project_id).get(party)
        if upload is None:
            raise Conflict(f"party {party!r} has not uploaded encodings to project {project_id!r}; nothing to withdraw")
        encodings = read_encodings(store.blob_path(upload.body_sha256), shown_as=f"the encodings of {party}")
        held = np.ascontiguousarray(encodings.records["token"]).tobytes().hex()
        present = [held[i : i + 32] for i in range(0, len(held), 32)]
        index = set(present)
        unknown = [i for i, token in enumerate(tokens, start=1) if token not in index]
        if unknown:
            raise InputError(
                f"{len(unknown)} of the {len(tokens)} tokens sent are not records of the encodings party {party!r} "
                f"uploaded last (number {listed_positions(unknown)} of those sent); nothing was withdrawn",
                problems=[
                    "pass tokens from the keymap.csv written with the encodings you uploaded last "
                    "(a token of an earlier encode, another project or another party is not yours to withdraw)"
                ],
            )
        withdrawn = set(wanted)
        keep = np.array([token not in withdrawn for token in present], dtype=bool)
        if not keep.any():
            raise Conflict(
                f"these are all {len(present)} records of party {party!r}; a party cannot withdraw every record. "
                "Ask the administrator to remove the party (`pprl project remove-party`), or upload new encodings"
            )
        kept_records = encodings.records[keep]
        del encodings
        body_sha256, header = store.write_blob(protocol, party, upload.secret_check, kept_records)
        kept = [token for token, stays in zip(present, keep.tolist(), strict=True) if stays]
        plan = {
            "upload": {
                "body_sha256": body_sha256,
                "records_sha256": header.records_sha256,
                "record_count": header.record_count,
                "size_bytes": store.blob_path(body_sha256).stat().st_size,
                "tokens_sha256": token_set_sha256(kept),
            },
            "token_sha256s": [token_sha256(token) for token in wanted],
        }
        summary = (
            f"withdrew {len(wanted)} record(s) of party {party}, {header.record_count} left; the withdrawn tokens' "
            f"set sha256 {token_set_sha256(wanted)}"
        )
        try:
            erasure = store.begin_erasure(
                project_id,
                "withdraw",
                actor,
                party=party,
                blobs=[upload.body_sha256],
                tokens=wanted,
                plan=plan,
                summary=summary,
            )
        except BaseException:
            store.shred_blob(body_sha256)  # refused (a run, another erasure): the new blob is nobody's
            raise
    _step(on_progress, 1)
    return _complete(store, stats, erasure, on_progress)


def remove_party(
    store: LinkageStore,
    stats: StatisticsSide,
    project_id: str,
    party: str,
    *,
    actor: str,
    on_progress: ProgressCallback | None = None,
) -> ErasureRecord:
    """Erase one party's data from a project: encodings, attributes, result and mapping rows, credential.

    The party stays in the protocol (what was agreed) but runs no longer wait for it;
    its credential stops working on both sides.

    Raises:
        NotFound: no such project, or no such party in its protocol.
        Conflict: removed already, a run queued or running, or another erasure under way.
    """
    protocol = store.protocol(project_id)
    ids = [p.id for p in protocol.parties]
    if party not in ids:
        raise NotFound(f"project {project_id!r} has no party {party!r}; its parties are {', '.join(ids)}")
    if party in store.removed_parties(project_id):
        raise Conflict(f"party {party!r} was removed from project {project_id!r} already; `pprl audit` shows when")
    _step(on_progress, 0)
    with store.exclusive():
        upload = store.uploads(project_id).get(party)
        records = 0 if upload is None else upload.record_count
        attributes = stats.attribute_counts(project_id).get(party, 0)
        erasure = store.begin_erasure(
            project_id,
            "party",
            actor,
            party=party,
            blobs=[] if upload is None else [upload.body_sha256],
            summary=f"removed party {party}: {records} encodings record(s), {attributes} attribute row(s), its "
            "result and mapping rows, serious-threat requests and credentials; the ledger and the audit log are kept",
        )
    _step(on_progress, 1)
    return _complete(store, stats, erasure, on_progress)


def delete_project(
    store: LinkageStore,
    stats: StatisticsSide,
    project_id: str,
    *,
    actor: str,
    on_progress: ProgressCallback | None = None,
) -> ErasureRecord:
    """Erase a whole project: every party's encodings and attributes, every run, every credential.

    Its ledger of releases, its protocol on the statistics side (which the ledger is
    checked against) and the audit log are kept.

    Raises:
        NotFound: no such project (or deleted already).
        Conflict: a run queued or running, or another erasure under way.
    """
    store.project(project_id)
    _step(on_progress, 0)
    with store.exclusive():
        uploads = store.uploads(project_id)
        attributes = stats.attribute_counts(project_id)
        erasure = store.begin_erasure(
            project_id,
            "project",
            actor,
            blobs=[upload.body_sha256 for upload in uploads.values()],
            summary=f"deleted the project: encodings of {len(uploads)} party(ies) "
            f"({sum(u.record_count for u in uploads.values())} records), {sum(attributes.values())} attribute "
            "row(s), every run and its results, every credential; the ledger and the audit log are kept",
        )
    _step(on_progress, 1)
    return _complete(store, stats, erasure, on_progress)


def expire_uploads(
    store: LinkageStore,
    stats: StatisticsSide,
    project_id: str,
    *,
    actor: str,
    at: datetime | None = None,
) -> list[ErasureRecord]:
    """Erase every upload the protocol's ``upload_retention_days`` has run out for, as of ``at`` (now).

    A party whose encodings were last uploaded (``pprl upload``, a replace) longer ago
    loses its encodings, attributes and result and mapping rows as in :func:`remove_party`,
    but keeps its credential: it may upload again, and runs wait for it until it does.

    Returns:
        The erasures done, one per expired upload (none when every upload is fresh).

    Raises:
        NotFound: no such project.
        Conflict: the protocol declares no retention, a run is queued or running, or another
            erasure is under way.
    """
    days = store.protocol(project_id).safeguards.upload_retention_days
    if days is None:
        raise Conflict(
            f"the protocol of project {project_id!r} declares no releases.safeguards.upload_retention_days, so no "
            "upload expires; remove a party's data with `pprl project remove-party`, or agree a retention period "
            "in a new protocol"
        )
    cutoff = (at or now()) - timedelta(days=days)
    done = []
    for party, upload in sorted(store.uploads(project_id).items()):
        if upload.uploaded_at >= cutoff:
            continue
        with store.exclusive():
            current = store.uploads(project_id).get(party)
            if current is None or current.uploaded_at >= cutoff:
                continue  # replaced meanwhile
            attributes = stats.attribute_counts(project_id).get(party, 0)
            erasure = store.begin_erasure(
                project_id,
                "expire",
                actor,
                party=party,
                blobs=[current.body_sha256],
                summary=f"expired the upload of party {party} of {current.uploaded_at:%Y-%m-%d}, older than the "
                f"protocol's {days} days: {current.record_count} encodings record(s), {attributes} attribute "
                "row(s), its result and mapping rows; it may upload again",
            )
        done.append(_complete(store, stats, erasure, None))
    return done


def resume_erasures(store: LinkageStore, stats: StatisticsSide) -> list[ErasureRecord]:
    """Carry every erasure a crash left pending to its end, and any compaction owed; returns them, done."""
    done = [_complete(store, stats, erasure, None) for erasure in store.pending_erasures()]
    compact_erased(store, stats)
    return done


def compact_erased(store: LinkageStore, stats: StatisticsSide) -> bool:
    """Rewrite both databases if an erasure done is owed a compaction; whether none is owed now.

    Both are rewritten whole (one compaction serves every erasure owed one); the erasures
    are marked compacted only when both were complete. An incomplete compaction (a reader
    held SQLite's write-ahead log, a PostgreSQL table stayed locked) gets an audit line and
    is tried again at the next erasure or start.
    """
    owed = store.compactions_owed()
    if not owed:
        return True
    complete = store.compact() & stats.compact()  # both, whatever the first says
    if complete:
        store.mark_compacted(owed)
    else:
        store.append_audit(
            "service",
            "erasure.compaction",
            None,
            "incomplete",
            f"the databases could not be rewritten whole after {len(owed)} erasure(s) (a reader held a table or "
            "SQLite's write-ahead log); the next erasure or start of the server tries again",
        )
    return complete


def _complete(
    store: LinkageStore, stats: StatisticsSide, erasure: ErasureRecord, on_progress: ProgressCallback | None
) -> ErasureRecord:
    """The steps after the journal line; each may have been done before a crash, and is repeated."""
    project_id, party = erasure.project_id, erasure.party
    if erasure.kind == "withdraw":
        assert party is not None  # noqa: S101 - a withdrawal names its party
        store.apply_withdrawal(erasure)
        _step(on_progress, 2)
        upload = erasure.plan["upload"]
        stats.withdraw_tokens(
            project_id, party, erasure.tokens, str(upload["tokens_sha256"]), int(upload["record_count"])
        )
    elif erasure.kind in ("party", "expire"):
        assert party is not None  # noqa: S101 - a removal or an expiry names its party
        removed = erasure.kind == "party"
        store.erase_party_rows(project_id, party, keep_credential=not removed)
        _step(on_progress, 2)
        stats.erase_party(project_id, party, removed=removed)
    else:
        store.erase_project_rows(project_id)
        _step(on_progress, 2)
        stats.erase_project(project_id)
    _step(on_progress, 3)
    for blob in erasure.blobs:
        store.shred_blob(blob)
    _step(on_progress, 4)
    store.finish_erasure(erasure, erasure.summary)
    _step(on_progress, 5)
    compact_erased(store, stats)
    _step(on_progress, 6)
    return next(e for e in store.erasures(project_id) if e.id == erasure.id)
