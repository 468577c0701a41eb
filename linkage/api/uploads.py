"""Encodings uploads: a party sends the encodings.pprl that ``pprl encode`` wrote."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from linkage.api.deps import LinkageCaller, Store, authorize, receive_body, record, require_content_type

router = APIRouter(tags=["uploads"])

UPLOAD_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"description": "The same content was already stored (unchanged), or it was replaced."},
    201: {"description": "Stored."},
}


class UploadReceipt(BaseModel):
    """What an upload did."""

    kind: str = Field(description="encodings or attributes")
    party: str
    status: str = Field(description="created, unchanged or replaced")
    record_count: int
    sha256: str = Field(description="SHA-256 of the body as stored")


def binary_body(media_type: str, description: str) -> dict[str, object]:
    """OpenAPI for a raw request body of this media type."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
        }
    }


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
