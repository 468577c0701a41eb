"""The append-only audit log: who did what, when, with what outcome (administrator only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from linkage.service.api.deps import LinkageCaller, Store
from linkage.web import ADMIN, authorize, record

router = APIRouter(tags=["audit"])


class AuditLine(BaseModel):
    """One audit line; it never holds a token, secret or record data."""

    id: int
    at: datetime
    actor: str
    action: str
    project_id: str | None
    outcome: str
    detail: str


class AuditLog(BaseModel):
    """Audit lines, oldest first; page on with ``after`` = the last id."""

    entries: list[AuditLine]


@router.get("/audit", name="audit.read")
def read_audit(
    request: Request,
    caller: LinkageCaller,
    store: Store,
    project_id: Annotated[str | None, Query(description="Only this project's lines.")] = None,
    after: Annotated[int, Query(ge=0, le=2**63 - 1, description="Only lines after this id.")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> AuditLog:
    """The audit log (administrator only)."""
    authorize(caller, None, (ADMIN,), "read the audit log")
    entries = store.audit_entries(project_id=project_id, after=after, limit=limit)
    record(request, caller, project_id, "ok", f"{len(entries)} lines")
    return AuditLog(entries=[AuditLine(**entry.__dict__) for entry in entries])
