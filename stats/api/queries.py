"""Differentially private queries and the budget ledger: the only things an analyst can reach.

An answer is released once, after its cost is recorded in the project's ledger; a query
the budget cannot pay for is refused with what is left, and spends nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from linkage.errors import InputError
from linkage.free_text import check_free_text
from linkage.web import ADMIN, authorize, json_content, record
from stats.answering import QueryService
from stats.api.deps import StatsCaller, StatsStoreDep

router = APIRouter(tags=["statistics"])


def query_service(request: Request) -> QueryService:
    """The running app's query service."""
    service: QueryService = request.app.state.query_service
    return service


Service = Annotated[QueryService, Depends(query_service)]


class QueryRequest(BaseModel):
    """A query in the query language (``query``) or its JSON form (``spec``), not both."""

    model_config = ConfigDict(extra="forbid")
    query: str | None = Field(
        default=None,
        max_length=2000,
        description="e.g. `count --by region --where member:police,msd --rho 0.05` (see `pprl query --help`).",
    )
    spec: dict[str, Any] | None = Field(
        default=None, description='e.g. {"kind": "count", "by": ["region"], "cost": {"rho": 0.05}}.'
    )
    dry_run: bool = Field(default=False, description="Only plan: the stated accuracy and cost, no values, no spending.")
    target_half_width: float | None = Field(
        default=None,
        gt=0,
        le=1e9,
        description="With dry_run: plan the query at the least cost whose cells are stated to within ± this "
        "(count, sum, overlap); the query may then leave its cost out.",
    )


def _one_line_label(text: str) -> str:
    try:
        return check_free_text(text, "label")
    except InputError as exc:
        raise ValueError(exc.message) from exc


class BatchRequest(BaseModel):
    """Several queries in their JSON form, released as one spend (a report): all or none."""

    model_config = ConfigDict(extra="forbid")
    label: Annotated[str, AfterValidator(_one_line_label)] = Field(
        min_length=1, max_length=200, description="What the ledger calls the batch, e.g. its title (one line)."
    )
    specs: list[dict[str, Any]] = Field(
        min_length=1, max_length=50, description="The queries' JSON forms, each with its own cost."
    )


class CellBody(BaseModel):
    """One released number with its group key and its 95% interval (``lower``..``upper``, within ± ``half_width``)."""

    key: list[str | bool | None]
    value: float | None
    half_width: float | None
    lower: float | None = None
    upper: float | None = None
    note: str


class ApproxBody(BaseModel):
    """A ρ (zCDP) loss shown as (ε, δ), by OpenDP's conversion."""

    epsilon: float
    delta: float


class AnswerBody(BaseModel):
    """A differentially private answer (see `stats.answers.Answer`)."""

    query: str
    kind: str
    statistic: str
    columns: list[str]
    cells: list[CellBody]
    derived: list[CellBody]
    mechanism: str
    cost: dict[str, float]
    confidence: float
    interval: str
    notes: list[str]
    released: bool
    approx_dp: ApproxBody | None = None


class BatchBody(BaseModel):
    """The answers of a batch, in the order of its queries."""

    answers: list[AnswerBody]


class BudgetBody(BaseModel):
    """The project's privacy budget: the total, what was spent, what is left, and each release."""

    total: dict[str, float]
    spent: dict[str, float]
    remaining: dict[str, float]
    releases: list[dict[str, Any]]
    equivalent_delta: float | None = None
    total_approx_dp: ApproxBody | None = None
    spent_approx_dp: ApproxBody | None = None
    remaining_approx_dp: ApproxBody | None = None
    own: dict[str, Any] | None = Field(
        default=None, description="For an analyst with a budget of their own: its total, spent and remaining."
    )


@router.post(
    "/projects/{project_id}/queries",
    name="statistics.query",
    dependencies=[Depends(json_content)],
    response_model=AnswerBody,
)
async def ask(
    request: Request, project_id: str, body: QueryRequest, caller: StatsCaller, service: Service
) -> dict[str, Any]:
    """Answer a query with differential privacy, spending its cost from the project's budget.

    With ``dry_run`` nothing is released or spent; with ``target_half_width`` too, the plan
    is made at the least cost that gives that accuracy (the answer's ``cost``).
    """
    authorize(caller, project_id, ("analyst",), "ask statistical queries")
    if (body.query is None) == (body.spec is None):
        raise InputError('send the query as "query" (the query language) or as "spec" (its JSON form), not both')
    if body.target_half_width is not None and not body.dry_run:
        raise InputError('"target_half_width" plans only: send it with "dry_run": true, then ask at the cost it gives')
    query: Any = body.query if body.query is not None else body.spec
    targeted = body.target_half_width is not None
    spec = await run_in_threadpool(service.parse, project_id, query, cost_optional=targeted)
    if body.target_half_width is not None:
        spec = await run_in_threadpool(service.cost_for, project_id, spec, body.target_half_width)
    answer = await run_in_threadpool(service.answer, project_id, spec, caller.actor, dry_run=body.dry_run)
    if answer.released:
        await run_in_threadpool(record, request, caller, project_id, "released", f"{spec.text()} ({spec.cost})")
    return answer.to_json()


@router.post(
    "/projects/{project_id}/query-batches",
    name="statistics.query_batch",
    dependencies=[Depends(json_content)],
    response_model=BatchBody,
)
async def ask_all(
    request: Request, project_id: str, body: BatchRequest, caller: StatsCaller, service: Service
) -> dict[str, Any]:
    """Answer several queries as one spend: the budget pays for them all and they are all released, or none is.

    A report uses this, so that no other release can come between its sections and leave
    it half spent.
    """
    authorize(caller, project_id, ("analyst",), "ask statistical queries")
    specs = [await run_in_threadpool(service.parse, project_id, spec) for spec in body.specs]
    answers = await run_in_threadpool(service.answer_all, project_id, specs, caller.actor, body.label)
    spent = " + ".join(str(spec.cost) for spec in specs)
    summary = f"{body.label}: {len(specs)} queries ({spent})"
    await run_in_threadpool(record, request, caller, project_id, "released", summary)
    return {"answers": [answer.to_json() for answer in answers]}


@router.get("/projects/{project_id}/budget", name="statistics.budget", response_model=BudgetBody)
async def budget(project_id: str, caller: StatsCaller, service: Service, stats: StatsStoreDep) -> dict[str, Any]:
    """The project's privacy budget and its ledger of releases (and the caller's own budget, if any)."""
    authorize(caller, project_id, (ADMIN, "analyst"), "read the privacy budget")
    result = await run_in_threadpool(service.budget, project_id)
    own = await run_in_threadpool(stats.analyst_budget, project_id, caller.actor)
    body = result.to_json()
    if own is not None:
        body["own"] = {key: value for key, value in own.to_json().items() if key != "releases"}
    return body


@router.get("/projects/{project_id}/protocol", name="statistics.protocol")
async def protocol(project_id: str, caller: StatsCaller, service: Service) -> dict[str, Any]:
    """The project's protocol, as all its parties agreed it (for reports; it holds no secret)."""
    authorize(caller, project_id, (ADMIN, "party", "analyst"), "read the protocol")
    document = await run_in_threadpool(service.protocol_document, project_id)
    return dict(document)
