"""Encodings uploads: a party sends the encodings.pprl that ``pprl encode`` wrote."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from linkage.service.api.deps import LinkageCaller, Store
from linkage.service.statistics_side import StatisticsSide
from linkage.web import (
    UPLOAD_RESPONSES,
    UploadReceipt,
    authorize,
    binary_body,
    receive_body,
    record,
    require_content_type,
)

router = APIRouter(tags=["uploads"])


@router.put(
    "/projects/{project_id}/encodings",
    name="encodings.upload",
    responses=UPLOAD_RESPONSES,
    openapi_extra=binary_body("application/octet-stream", "The encodings.pprl file `pprl encode` wrote."),
)
async def upload_encodings(
    request: Request,
    response: Response,
    project_id: str,
    caller: LinkageCaller,
    store: Store,
    replace: Annotated[bool, Query(description="Replace different encodings uploaded before.")] = False,
) -> UploadReceipt:
    """Upload your party's encodings (streamed; checked; stored atomically; idempotent)."""
    authorize(caller, project_id, ("party",), "upload encodings")
    require_content_type(request, "application/octet-stream")
    await run_in_threadpool(store.project, project_id)
    assert caller.party is not None  # noqa: S101 - a party credential always names its party
    received = store.incoming_path()
    sha256, _size = await receive_body(request, received)
    outcome = await run_in_threadpool(
        store.accept_encodings, project_id, caller.party, received, sha256, replace=replace
    )
    upload = outcome.upload
    if outcome.status != "unchanged" and upload.tokens_sha256:
        # The statistics side checks this party's attributes against these tokens.
        stats: StatisticsSide = request.app.state.statistics_side
        await run_in_threadpool(
            stats.register_encodings, project_id, caller.party, upload.tokens_sha256, upload.record_count
        )
    if outcome.status == "created":
        response.status_code = status.HTTP_201_CREATED
    await run_in_threadpool(
        record, request, caller, project_id, outcome.status, f"{outcome.upload.record_count} records"
    )
    return UploadReceipt(
        kind="encodings",
        party=caller.party,
        status=outcome.status,
        record_count=outcome.upload.record_count,
        sha256=outcome.upload.body_sha256,
    )
