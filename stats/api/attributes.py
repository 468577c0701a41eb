"""Attribute uploads: a party sends the attributes.csv that ``pprl encode`` wrote, to the statistics side."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from linkage.errors import InputError
from linkage.web import (
    UPLOAD_RESPONSES,
    UploadReceipt,
    authorize,
    binary_body,
    receive_body,
    record,
    require_content_type,
)
from stats.api.deps import StatsCaller, StatsStoreDep

router = APIRouter(tags=["uploads"])


@router.put(
    "/projects/{project_id}/attributes",
    name="attributes.upload",
    responses=UPLOAD_RESPONSES,
    openapi_extra=binary_body("text/csv", "The attributes.csv file `pprl encode` wrote (token, consent, attributes)."),
)
async def upload_attributes(
    request: Request,
    response: Response,
    project_id: str,
    caller: StatsCaller,
    stats: StatsStoreDep,
    replace: Annotated[bool, Query(description="Replace different attributes uploaded before.")] = False,
    batch: Annotated[
        bool,
        Query(description="A batch's attributes.csv, added to yours after the batch reached the linkage side."),
    ] = False,
) -> UploadReceipt:
    """Upload your party's outcome attributes and consent flags (checked; stored in one transaction)."""
    authorize(caller, project_id, ("party",), "upload attributes")
    require_content_type(request, "text/csv")
    await run_in_threadpool(stats.protocol, project_id)
    assert caller.party is not None  # noqa: S101 - a party credential always names its party
    received = stats.incoming_path()
    sha256, _size = await receive_body(request, received)
    if batch and replace:
        raise InputError("pass one of replace (a whole list) and batch (added to the list), not both")
    if batch:
        outcome = await run_in_threadpool(stats.merge_attributes, project_id, caller.party, received, sha256)
    else:
        outcome = await run_in_threadpool(
            stats.accept_attributes, project_id, caller.party, received, sha256, replace=replace
        )
    if outcome.status == "created":
        response.status_code = status.HTTP_201_CREATED
    await run_in_threadpool(record, request, caller, project_id, outcome.status, f"{outcome.record_count} records")
    return UploadReceipt(
        kind="attributes",
        party=caller.party,
        status=outcome.status,
        record_count=outcome.record_count,
        sha256=outcome.body_sha256,
    )
