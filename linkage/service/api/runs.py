"""Linkage runs: queued by a party (or the administrator), run by the server's worker."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status
from pydantic import BaseModel, Field

from linkage.service.api.deps import LinkageCaller, Store
from linkage.service.store import RunRecord
from linkage.web import ADMIN, authorize, record

router = APIRouter(tags=["runs"])


class RunInfo(BaseModel):
    """A run's state and counts; never scores."""

    run_id: int
    project_id: str
    status: str = Field(description="queued, running, done or failed")
    progress: float = Field(ge=0, le=1)
    message: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    entity_count: int | None = Field(
        description="Entities of two or more records (when done; never shown to analysts, who get DP answers only)."
    )
    linked_records: int | None = Field(description="Records in those entities (when done; not for analysts).")


def run_info(run: RunRecord) -> RunInfo:
    """The API view of a stored run."""
    return RunInfo(
        run_id=run.id,
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


@router.post(
    "/projects/{project_id}/runs",
    name="run.start",
    status_code=status.HTTP_202_ACCEPTED,
    responses={200: {"description": "A run of this project is already queued or running; this is it."}},
)
def start_run(request: Request, response: Response, project_id: str, caller: LinkageCaller, store: Store) -> RunInfo:
    """Queue a linkage run once every party has uploaded its encodings (at most one at a time)."""
    authorize(caller, project_id, (ADMIN, "party"), "start a run")
    store.project(project_id)
    run, created = store.start_run(project_id)
    if created:
        request.app.state.worker.wake()
    else:
        response.status_code = status.HTTP_200_OK
    record(request, caller, project_id, "queued" if created else "already_active", f"run {run.id}")
    return run_info(run)


@router.get("/projects/{project_id}/runs/{run_id}", name="run.read")
def read_run(
    project_id: str,
    run_id: Annotated[int, Path(ge=1, le=2**63 - 1, description="The run's number.")],
    caller: LinkageCaller,
    store: Store,
) -> RunInfo:
    """A run's status and progress (analysts get no counts: exact counts would bypass the privacy budget)."""
    authorize(caller, project_id, (ADMIN, "party", "analyst"), "read runs")
    store.project(project_id)
    info = run_info(store.run(project_id, run_id))
    if caller.role == "analyst":
        counts_hidden: dict[str, object] = {"entity_count": None, "linked_records": None}
        if info.status == "done":  # the message of a finished run states the counts too
            counts_hidden["message"] = "linked; ask the statistics side for DP counts"
        info = info.model_copy(update=counts_hidden)
    return info
