"""Withdrawal and erasure: a party withdraws its records; the administrator removes a party or deletes a project.

Each answers only when the erasure is done (:mod:`linkage.service.erasure`); a server
stopped half way finishes it at its next start. The ledger of releases and the audit log
are kept, and the audit log says what was erased, by whom and when.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from linkage.service.api.deps import LinkageCaller, Store
from linkage.service.erasure import delete_project, expire_uploads, remove_party, withdraw_records
from linkage.service.statistics_side import StatisticsSide
from linkage.service.store import ErasureRecord
from linkage.web import ADMIN, authorize, json_content

router = APIRouter(tags=["erasure"])

Token = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
# One request stays well under the service's JSON body limit (1 MiB by default);
# the client sends longer lists in several withdrawals.
MAX_TOKENS_PER_WITHDRAWAL = 20_000


class Withdrawal(BaseModel):
    """Records a party withdraws, by token."""

    model_config = ConfigDict(extra="forbid")
    tokens: list[Token] = Field(
        min_length=1,
        max_length=MAX_TOKENS_PER_WITHDRAWAL,
        description="Your own record tokens (from keymap.csv), 32 lowercase hex digits each.",
    )


class Erasure(BaseModel):
    """An erasure as journalled: what was erased (in counts), by whom, when."""

    erasure_id: int
    project_id: str
    party: str | None
    kind: str = Field(description="withdraw, party, expire or project")
    status: str = Field(description="done (a pending one is finished at the server's next start)")
    requested_by: str
    requested_at: datetime
    done_at: datetime | None
    summary: str = Field(description="What was erased, in counts; a withdrawal's tokens by SHA-256 only.")


class Expired(BaseModel):
    """The uploads that expired (none when every upload is fresh)."""

    erasures: list[Erasure]


def _erasure(erasure: ErasureRecord) -> Erasure:
    return Erasure(
        erasure_id=erasure.id,
        project_id=erasure.project_id,
        party=erasure.party,
        kind=erasure.kind,
        status=erasure.status,
        requested_by=erasure.requested_by,
        requested_at=erasure.requested_at,
        done_at=erasure.done_at,
        summary=erasure.summary,
    )


def _stats(request: Request) -> StatisticsSide:
    stats: StatisticsSide = request.app.state.statistics_side
    return stats


@router.post("/projects/{project_id}/withdrawals", name="records.withdraw", dependencies=[Depends(json_content)])
def withdraw(request: Request, project_id: str, body: Withdrawal, caller: LinkageCaller, store: Store) -> Erasure:
    """Withdraw your own records: gone from your stored encodings, the results, attributes and statistics."""
    authorize(caller, project_id, ("party",), "withdraw records")
    assert caller.party is not None  # noqa: S101 - a party credential always names its party
    erasure = withdraw_records(store, _stats(request), project_id, caller.party, body.tokens, actor=caller.actor)
    return _erasure(erasure)


@router.delete("/projects/{project_id}/parties/{party}", name="party.remove")
def remove(request: Request, project_id: str, party: str, caller: LinkageCaller, store: Store) -> Erasure:
    """Erase one party's encodings, attributes, result and mapping rows and credential (administrator only)."""
    authorize(caller, project_id, (ADMIN,), "remove a party")
    return _erasure(remove_party(store, _stats(request), project_id, party, actor=caller.actor))


@router.delete("/projects/{project_id}", name="project.delete")
def delete(request: Request, project_id: str, caller: LinkageCaller, store: Store) -> Erasure:
    """Erase a whole project; its ledger and the audit log are kept (administrator only)."""
    authorize(caller, project_id, (ADMIN,), "delete a project")
    return _erasure(delete_project(store, _stats(request), project_id, actor=caller.actor))


@router.post("/projects/{project_id}/expire", name="project.expire")
def expire(request: Request, project_id: str, caller: LinkageCaller, store: Store) -> Expired:
    """Erase the uploads older than the protocol's upload_retention_days (administrator only)."""
    authorize(caller, project_id, (ADMIN,), "expire uploads")
    erasures = expire_uploads(store, _stats(request), project_id, actor=caller.actor)
    return Expired(erasures=[_erasure(erasure) for erasure in erasures])
