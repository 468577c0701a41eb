"""Linkage runs: queued by a party (or the administrator), run by the server's worker.

Only the administrator sees a run's counts (entities, records linked). A party must not
learn exact counts that depend on other parties' data: with them, removing one client and
running again would tell whether another party knows that client, whatever its consent.
So parties and analysts see a run's status and progress only, and a party may start only
as many runs as the protocol's ``releases.safeguards`` allow; every run after a party
replaced its encodings is flagged in the audit log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status
from pydantic import BaseModel, Field

from linkage.service.api.deps import LinkageCaller, Store
from linkage.service.store import RunRecord
from linkage.web import ADMIN, Caller, authorize, record

router = APIRouter(tags=["runs"])

DONE_FOR_OTHERS = "linked; parties fetch their results with `pprl results`, analysts ask for DP counts"


class RunInfo(BaseModel):
    """A run's state and, for the administrator only, its counts; never scores."""

    run_id: int = Field(description="The run's number within its project (1, 2, ...).")
    project_id: str
    status: str = Field(description="queued, running, done or failed")
    progress: float = Field(ge=0, le=1)
    message: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    entity_count: int | None = Field(
        description="Entities of two or more records (when done; for the administrator only: exact counts of "
        "other parties' data are never shown to parties or analysts)."
    )
    linked_records: int | None = Field(description="Records in those entities (when done; administrator only).")


def run_info(run: RunRecord, caller: Caller) -> RunInfo:
    """The API view of a stored run, as this caller may see it."""
    info = RunInfo(
        run_id=run.number,
        project_id=run.project_id,
        status=run.status,
        progress=run.progress,
        message=run.message,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        entity_count=run.entity_count,
        linked_records=run.linked_records,
    )
    if caller.role == ADMIN:
        return info
    hidden: dict[str, object] = {"entity_count": None, "linked_records": None}
    if run.status == "done":  # the message of a finished run states the counts
        hidden["message"] = DONE_FOR_OTHERS
    return info.model_copy(update=hidden)


@router.post(
    "/projects/{project_id}/runs",
    name="run.start",
    status_code=status.HTTP_202_ACCEPTED,
    responses={200: {"description": "A run of this project is already queued or running; this is it."}},
)
def start_run(request: Request, response: Response, project_id: str, caller: LinkageCaller, store: Store) -> RunInfo:
    """Queue a linkage run once every party has uploaded its encodings (at most one at a time).

    A party may start at most ``releases.safeguards.max_runs_per_party`` runs (409 beyond);
    the administrator may always start one.
    """
    authorize(caller, project_id, (ADMIN, "party"), "start a run")
    store.project(project_id)
    started = store.start_run(project_id, caller.actor, limited=caller.role == "party")
    run = started.run
    if started.created:
        request.app.state.worker.wake()
    else:
        response.status_code = status.HTTP_200_OK
    outcome, detail = ("queued" if started.created else "already_active"), f"run {run.number}"
    if started.replaced:
        # A run on replaced encodings is how a party would difference what it sees: flag it.
        outcome = "queued_after_replace"
        detail += f"; encodings replaced since the previous run by {', '.join(started.replaced)}"
    record(request, caller, project_id, outcome, detail)
    return run_info(run, caller)


@router.get("/projects/{project_id}/runs/{run_id}", name="run.read")
def read_run(
    project_id: str,
    run_id: Annotated[int, Path(ge=1, le=2**31 - 1, description="The run's number within its project.")],
    caller: LinkageCaller,
    store: Store,
) -> RunInfo:
    """A run's status and progress (its counts for the administrator only)."""
    authorize(caller, project_id, (ADMIN, "party", "analyst"), "read runs")
    store.project(project_id)
    return run_info(store.run(project_id, run_id), caller)
