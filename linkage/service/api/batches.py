"""Batches: a party adds its new and corrected records and its withdrawals to a linked project."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, status
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from linkage.file_modes import shred_file
from linkage.service.api.deps import LinkageCaller, Store
from linkage.service.batches import add_batch, split_batch_body
from linkage.service.statistics_side import StatisticsSide
from linkage.service.store import BatchRecord
from linkage.web import authorize, binary_body, receive_body, record, require_content_type

router = APIRouter(tags=["batches"])
BATCH_MEDIA_TYPE = "application/vnd.pprl.batch"


class Batch(BaseModel):
    """A batch as stored: pending until the next run links it."""

    batch_id: int
    party: str
    status: str = Field(description="pending (the next run links it) or linked")
    added: int
    corrected: int
    withdrawn: int
    record_count: int = Field(description="Your records after the batch.")
    uploaded_at: datetime


@router.put(
    "/projects/{project_id}/batches",
    name="batches.upload",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=binary_body(
        BATCH_MEDIA_TYPE,
        'PPRLBATCH1, a newline, {"withdraw": [token, ...]} on one line, a newline, then the batch\'s '
        "encodings.pprl (none for withdrawals only).",
    ),
)
async def upload_batch(request: Request, project_id: str, caller: LinkageCaller, store: Store) -> Batch:
    """Add a batch to your records in a linked project: new and corrected records, and withdrawals.

    The batch is merged into your stored encodings at once and linked by the next run,
    which compares only the new and changed records (``docs/refresh.md``).
    """
    authorize(caller, project_id, ("party",), "upload a batch")
    require_content_type(request, BATCH_MEDIA_TYPE)
    await run_in_threadpool(store.project, project_id)
    assert caller.party is not None  # noqa: S101 - a party credential always names its party
    received = store.incoming_path()
    encodings = store.incoming_path()
    try:
        await receive_body(request, received)
        tokens, sha256 = await run_in_threadpool(split_batch_body, received, encodings)
        batch: BatchRecord = await run_in_threadpool(
            lambda: add_batch(
                store,
                project_id,
                caller.party or "",
                received=encodings if sha256 else None,
                body_sha256=sha256,
                withdraw=tokens,
            )
        )
    finally:
        shred_file(received)
        shred_file(encodings)
    upload = (await run_in_threadpool(store.uploads, project_id))[caller.party]
    if upload.tokens_sha256:
        # The statistics side forgets the withdrawn records' attributes and mapping rows, and
        # checks this party's attributes against its current tokens (the batch's attributes
        # follow: `pprl upload --batch` sends them next).
        stats: StatisticsSide = request.app.state.statistics_side
        await run_in_threadpool(
            stats.withdraw_tokens, project_id, caller.party, tokens, upload.tokens_sha256, upload.record_count
        )
    await run_in_threadpool(
        record,
        request,
        caller,
        project_id,
        "pending",
        f"batch {batch.id}: {batch.added} added, {batch.corrected} corrected, {batch.withdrawn} withdrawn; "
        f"{upload.record_count} records",
    )
    return Batch(
        batch_id=batch.id,
        party=batch.party,
        status=batch.status,
        added=batch.added,
        corrected=batch.corrected,
        withdrawn=batch.withdrawn,
        record_count=upload.record_count,
        uploaded_at=batch.uploaded_at,
    )
