"""The statistics routes' dependencies: the statistics store and callers authenticated against it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from linkage.web import Caller, bearer, identify
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
    return identify(request, credentials, stats_store(request).authenticate)


StatsCaller = Annotated[Caller, Depends(stats_caller)]
StatsStoreDep = Annotated[StatsStore, Depends(stats_store)]
