"""The append-only audit log: who did what, when, with what outcome (administrator only).

The log and every project's privacy ledger are hash chains (:mod:`linkage.chain`);
``GET /audit/verify`` checks them all and reports the head of each, to be recorded
elsewhere as an anchor.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from linkage.chain import ChainCheck
from linkage.service.api.deps import LinkageCaller, Store
from linkage.service.statistics_side import StatisticsSide
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
    sha256: str | None = Field(default=None, description="The line's hash in the chain.")


class ChainStatus(BaseModel):
    """One hash chain checked: the audit log, or a project's ledger."""

    name: str
    ok: bool
    rows: int
    head: str = Field(description="Hash of the last row: record it elsewhere to anchor the chain.")
    problem: str = Field(description="What is wrong (empty when the chain holds).")
    first_bad: int | None


class Verification(BaseModel):
    """Every chain of the server checked."""

    ok: bool
    chains: list[ChainStatus]


def chain_status(check: ChainCheck) -> ChainStatus:
    """The API view of a chain check."""
    return ChainStatus(
        name=check.name, ok=check.ok, rows=check.rows, head=check.head, problem=check.problem, first_bad=check.first_bad
    )


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


@router.get("/audit/verify", name="audit.verify")
def verify_audit(request: Request, caller: LinkageCaller, store: Store) -> Verification:
    """Check the audit log's and every ledger's hash chain (administrator only)."""
    authorize(caller, None, (ADMIN,), "verify the audit log")
    stats: StatisticsSide = request.app.state.statistics_side
    checks = [store.verify_audit(), *stats.verify_ledgers()]
    broken = [check for check in checks if not check.ok]
    record(request, caller, None, "ok" if not broken else "broken", "; ".join(c.problem for c in broken)[:1000])
    return Verification(ok=not broken, chains=[chain_status(check) for check in checks])
