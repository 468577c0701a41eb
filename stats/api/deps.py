"""The statistics side's caller: authenticated against the statistics store's own credentials."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from linkage.api.deps import ADMIN, Caller, bearer, check_admin
from linkage.errors import Unauthorized
from stats.store import StatsStore

__all__ = ["StatsCaller", "StatsStoreDep", "stats_caller", "stats_store"]


def stats_store(request: Request) -> StatsStore:
    """The statistics store of the running app."""
    store: StatsStore = request.app.state.stats_store
    return store


def stats_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """Authenticate the caller against the admin secret and the statistics store's credentials.

    Raises:
        Unauthorized: no credential, or one this server does not know.
    """
    if credentials is None:
        raise Unauthorized(
            "no credential: send `Authorization: Bearer <token>` with the token `pprl project create` printed "
            "(the CLI reads it from --token-file or $PPRL_TOKEN)"
        )
    if check_admin(request, credentials.credentials):
        caller = Caller(ADMIN, None, None)
    else:
        found = stats_store(request).authenticate(credentials.credentials)
        if found is None:
            raise Unauthorized(
                "this credential is not valid on this server; check --token-file points at the token printed "
                "by `pprl project create` for this server"
            )
        caller = Caller(found.role, found.project_id, found.party)
    request.state.caller = caller
    return caller


StatsCaller = Annotated[Caller, Depends(stats_caller)]
StatsStoreDep = Annotated[StatsStore, Depends(stats_store)]
