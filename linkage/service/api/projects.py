"""Projects: created by the administrator from a protocol, with one credential per role.

Besides the project's shared analyst credential (the analyst named ``analyst``), the
administrator may give each analyst a credential of their own (``POST
/projects/{id}/analysts``): releases and the audit log then name that analyst, and an
optional budget of their own caps what they may spend within the project's budget.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from linkage.protocol import parse_protocol
from linkage.service.api.deps import LinkageCaller, Store
from linkage.service.statistics_side import StatisticsSide
from linkage.service.store import TOKEN_PREFIX, hash_token, issue_credentials, new_project_id
from linkage.web import ADMIN, authorize, json_content, record

router = APIRouter(tags=["projects"])


class ProjectCreate(BaseModel):
    """A new project: the protocol document all parties agreed."""

    model_config = ConfigDict(extra="forbid")
    protocol: dict[str, Any] = Field(description="The protocol JSON, as in schemas/protocol.schema.json.")


class ProjectCreated(BaseModel):
    """The new project and its credentials, shown this once and stored only hashed."""

    project_id: str
    name: str
    fingerprint: str
    credentials: dict[str, str] = Field(description="One token per party id, and one under 'analyst'.")


class PartyStatus(BaseModel):
    """Whether a party has uploaded."""

    id: str
    name: str
    encodings_uploaded: bool
    attributes_uploaded: bool
    removed: bool = Field(default=False, description="Removed from the project (`pprl project remove-party`).")


class ProjectInfo(BaseModel):
    """A project and which parties have uploaded."""

    project_id: str
    name: str
    fingerprint: str
    created_at: datetime
    parties: list[PartyStatus]


class ProjectList(BaseModel):
    """Every project on this server."""

    projects: list[ProjectInfo]


class Me(BaseModel):
    """Who a credential belongs to."""

    role: str = Field(description="admin, party or analyst")
    project_id: str | None
    party: str | None
    name: str | None = Field(default=None, description="An analyst's name ('analyst' for the shared credential).")


AnalystName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]


class AnalystCreate(BaseModel):
    """A new analyst of a project, and optionally a budget of their own within the project's."""

    model_config = ConfigDict(extra="forbid")
    name: AnalystName = Field(description="Lowercase letters, digits, _ and -; how the ledger and audit log name them.")
    budget: dict[str, float] | None = Field(
        default=None,
        description='The most this analyst may spend, in the protocol\'s measure: {"rho": 0.3} or '
        '{"epsilon": 1.0}. Default: only the project\'s budget limits them.',
    )


class AnalystCreated(BaseModel):
    """The new analyst's credential, shown this once and stored only hashed."""

    project_id: str
    name: str
    budget: dict[str, float] | None
    credential: str


def _info(store: Store, stats: StatisticsSide, project_id: str) -> ProjectInfo:
    project = store.project(project_id)
    protocol = store.protocol(project_id)
    encodings = store.uploads(project_id)
    attributes = stats.attribute_counts(project_id)
    removed = store.removed_parties(project_id)
    return ProjectInfo(
        project_id=project.id,
        name=project.name,
        fingerprint=project.fingerprint,
        created_at=project.created_at,
        parties=[
            PartyStatus(
                id=party.id,
                name=party.name,
                encodings_uploaded=party.id in encodings,
                attributes_uploaded=party.id in attributes,
                removed=party.id in removed,
            )
            for party in protocol.parties
        ],
    )


@router.post(
    "/projects", name="project.create", status_code=status.HTTP_201_CREATED, dependencies=[Depends(json_content)]
)
def create_project(request: Request, body: ProjectCreate, caller: LinkageCaller, store: Store) -> ProjectCreated:
    """Create a project from a protocol (administrator only); returns every credential once."""
    authorize(caller, None, (ADMIN,), "create projects")
    protocol = parse_protocol(body.protocol)
    project_id = new_project_id()
    tokens = issue_credentials(protocol)
    hashes = {key: hash_token(token) for key, token in tokens.items()}
    stats: StatisticsSide = request.app.state.statistics_side
    # The statistics side first: if the linkage side then fails, the orphan there has no
    # usable credential (nobody ever saw the tokens) and no effect.
    stats.register_project(project_id, protocol, hashes)
    project = store.create_project(project_id, protocol, hashes)
    record(request, caller, project_id, "ok", f"protocol {protocol.name!r}, parties {len(protocol.parties)}")
    return ProjectCreated(project_id=project.id, name=project.name, fingerprint=project.fingerprint, credentials=tokens)


@router.get("/projects", name="project.list")
def list_projects(request: Request, caller: LinkageCaller, store: Store) -> ProjectList:
    """Every project (administrator only)."""
    authorize(caller, None, (ADMIN,), "list projects")
    stats: StatisticsSide = request.app.state.statistics_side
    return ProjectList(projects=[_info(store, stats, project.id) for project in store.projects()])


@router.get("/projects/{project_id}", name="project.read")
def read_project(request: Request, project_id: str, caller: LinkageCaller, store: Store) -> ProjectInfo:
    """A project's protocol fingerprint and which parties have uploaded."""
    authorize(caller, project_id, (ADMIN, "party", "analyst"), "read this project")
    return _info(store, request.app.state.statistics_side, project_id)


@router.get("/me", name="me")
async def me(caller: LinkageCaller) -> Me:
    """Who the credential sent belongs to: role, project, party, and an analyst's name."""
    name = (caller.name or "analyst") if caller.role == "analyst" else None
    return Me(role=caller.role, project_id=caller.project_id, party=caller.party, name=name)


@router.post(
    "/projects/{project_id}/analysts",
    name="analyst.add",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(json_content)],
)
def add_analyst(
    request: Request, project_id: str, body: AnalystCreate, caller: LinkageCaller, store: Store
) -> AnalystCreated:
    """Give an analyst a credential of their own (administrator only); returned this once."""
    authorize(caller, project_id, (ADMIN,), "add analysts")
    store.project(project_id)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    stats: StatisticsSide = request.app.state.statistics_side
    # The statistics side first, as for a new project: if the linkage side then fails, the
    # credential there is unusable, since nobody ever saw the token.
    stats.register_analyst(project_id, body.name, hash_token(token), body.budget)
    store.add_analyst(project_id, body.name, hash_token(token))
    spent = "" if body.budget is None else f", budget {body.budget}"
    record(request, caller, project_id, "ok", f"analyst {body.name}{spent}")
    return AnalystCreated(project_id=project_id, name=body.name, budget=body.budget, credential=token)
