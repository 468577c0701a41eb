"""The linkage routes' dependencies: the linkage store and callers authenticated against it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from linkage.service.store import LinkageStore
from linkage.web import Caller, bearer, identify

__all__ = ["LinkageCaller", "Store", "linkage_caller", "linkage_store"]


def linkage_store(request: Request) -> LinkageStore:
    """The linkage store of the running app."""
    store: LinkageStore = request.app.state.linkage_store
    return store


def linkage_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """Authenticate the caller against the admin secret and the linkage store's credentials.

    Raises:
        Unauthorized: no credential, or one this server does not know.
    """
    return identify(request, credentials, linkage_store(request).authenticate)


LinkageCaller = Annotated[Caller, Depends(linkage_caller)]
Store = Annotated[LinkageStore, Depends(linkage_store)]
