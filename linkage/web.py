"""What the HTTP routes of both sides share: callers, access checks, the audit log, bodies.

Every endpoint needs a credential: the server's admin secret, or a token scoped to one
project and one role (a party, or the analysts). A route authenticates with its side's
caller dependency (built on :func:`identify`), then states who may call it with
:func:`authorize`. The linkage side's routes live in :mod:`linkage.service.api`, the
statistics side's in :mod:`stats.api`; the app that serves both is :mod:`server.app`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from linkage.errors import Forbidden, Unauthorized, UnsupportedMediaType
from linkage.file_modes import private_opener

__all__ = [
    "ADMIN",
    "UPLOAD_RESPONSES",
    "Caller",
    "Credential",
    "RefusalTally",
    "UploadReceipt",
    "authorize",
    "bearer",
    "binary_body",
    "check_admin",
    "identify",
    "json_content",
    "receive_body",
    "record",
    "require_content_type",
]

ADMIN = "admin"
ROLE_WORDS = {ADMIN: "the administrator", "party": "a party", "analyst": "an analyst"}
# What new_project_id makes: anything else in a URL is not a project and never goes to the log as one.
PROJECT_ID = re.compile(r"^[0-9a-f]{16}$")


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="credential",
    description="A project credential printed by `pprl project create`, or the server's admin secret.",
)


@dataclass(frozen=True)
class Caller:
    """Who is calling: ``admin`` (no project), or a ``party`` or ``analyst`` of one project.

    ``name`` is an analyst's name: ``None`` for the project's shared analyst credential,
    which acts as the analyst named ``analyst`` (and is called just ``analyst``, as before
    analysts had names).
    """

    role: str
    project_id: str | None
    party: str | None
    name: str | None = None

    @property
    def actor(self) -> str:
        """How the audit log and the ledger name the caller (never a token): ``party:msd``, ``analyst:ana``."""
        if self.role == "party":
            return f"party:{self.party}"
        if self.role == "analyst" and self.name:
            return f"analyst:{self.name}"
        return self.role


def check_admin(request: Request, token: str) -> bool:
    """Whether the token is the server's admin secret (constant-time, on hashes)."""
    expected: str | None = request.app.state.config.admin_secret_sha256
    if not expected:
        return False
    return hmac.compare_digest(hashlib.sha256(token.encode("utf-8")).hexdigest(), expected)


class Credential(Protocol):
    """What a side's store knows of a project credential: its role, project and party."""

    @property
    def role(self) -> str: ...  # noqa: D102 - the attribute documents itself

    @property
    def project_id(self) -> str: ...  # noqa: D102

    @property
    def party(self) -> str | None: ...  # noqa: D102

    @property
    def name(self) -> str | None: ...  # noqa: D102


def identify(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None,
    authenticate: Callable[[str], Credential | None],
) -> Caller:
    """The caller behind a bearer token: the admin secret, or a credential of one side's store.

    Each side authenticates against its own store (``authenticate``), so neither needs the
    other's credentials. The caller is kept on the request for the audit log.

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
        found = authenticate(credentials.credentials)
        if found is None:
            raise Unauthorized(
                "this credential is not valid on this server; check --token-file points at the token printed "
                "by `pprl project create` for this server"
            )
        caller = Caller(found.role, found.project_id, found.party, found.name)
    request.state.caller = caller
    return caller


def authorize(caller: Caller, project_id: str | None, roles: Collection[str], what: str) -> None:
    """Refuse a caller whose role or project does not allow this action.

    Args:
        caller: the authenticated caller.
        project_id: the project the request is about (``None``: server-wide).
        roles: the roles allowed (``admin``, ``party``, ``analyst``).
        what: the action, for the message (``upload encodings``).

    Raises:
        Forbidden: wrong role, or a credential of another project.
    """
    if caller.role not in roles:
        allowed = " or ".join(ROLE_WORDS[role] for role in roles)
        raise Forbidden(f"only {allowed} may {what}; your credential is for {ROLE_WORDS[caller.role]}")
    if caller.role != ADMIN and project_id is not None and caller.project_id != project_id:
        raise Forbidden(
            f"your credential is for another project, not {project_id!r}; use this project's token file to {what}"
        )


def record(request: Request, caller: Caller | None, project_id: str | None, outcome: str, detail: str = "") -> None:
    """Append the current route's action to the audit log (the route's name is the action).

    A line carries the caller's own project; a project id from the URL that is not the
    caller's is named in the detail, and one that is not a project id at all is never
    written. Unauthenticated requests are not written one by one: they are counted in
    the app's :class:`RefusalTally` and written as one line per kind and minute.
    """
    route = request.scope.get("route")
    action = getattr(route, "name", None) or "unmatched"
    audit: Callable[..., None] = request.app.state.audit
    if caller is None:
        tally: RefusalTally = request.app.state.refusals
        tally.note(action, outcome, request.client.host if request.client else "unknown")
        tally.flush(audit)
        return
    asked = project_id if project_id is not None and PROJECT_ID.match(project_id) else None
    if project_id is not None and asked is None:
        detail = f"asked about something that is not a project id ({len(project_id)} characters); {detail}"
    elif caller.project_id is not None and asked is not None and asked != caller.project_id:
        detail = f"asked about project {asked}; {detail}"
    audit(caller.actor, action, caller.project_id or asked, outcome, detail)


class RefusalTally:
    """Refusals of unauthenticated (or rate-limited) requests, counted in memory, written in bulk.

    Anyone can send requests without a credential; writing each refusal as an audit line
    would let them grow the log at will. Instead each kind (action, outcome) is counted,
    with the distinct client addresses (up to 1,000), and written as one line when a
    window of ``window_seconds`` has passed, or when the server stops.

    Args:
        window_seconds: how long refusals are counted before they are written.
        clock: seconds from a monotonic clock (tests pass their own).
    """

    MAX_ADDRESSES = 1000

    def __init__(self, window_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._counts: dict[tuple[str, str], int] = {}
        self._addresses: dict[tuple[str, str], set[str]] = {}

    def note(self, action: str, outcome: str, address: str) -> None:
        """Count one refusal."""
        key = (action[:64], outcome[:64])
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            seen = self._addresses.setdefault(key, set())
            if len(seen) < self.MAX_ADDRESSES:
                seen.add(address[:64])

    def flush(self, audit: Callable[..., None], *, force: bool = False) -> int:
        """Write one audit line per kind counted, if the window has passed (or ``force``); returns the lines."""
        with self._lock:
            if not self._counts or not (force or self._clock() - self._started >= self._window):
                return 0
            seconds = self._clock() - self._started
            counts, addresses = self._counts, self._addresses
            self._counts, self._addresses, self._started = {}, {}, self._clock()
        for (action, outcome), count in sorted(counts.items()):
            seen = len(addresses[(action, outcome)])
            many = "+" if seen >= self.MAX_ADDRESSES else ""
            audit(
                "anonymous",
                action,
                None,
                outcome,
                f"{count} unauthenticated request(s) refused, from {seen}{many} address(es), in {seconds:.0f} s",
            )
        return len(counts)


def require_content_type(request: Request, *allowed: str) -> None:
    """Refuse a body whose Content-Type is not one of ``allowed``.

    Raises:
        UnsupportedMediaType: naming the type expected.
    """
    given = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if given not in allowed:
        raise UnsupportedMediaType(
            f"this endpoint takes Content-Type {' or '.join(allowed)}, not {given or '(none)'}; "
            "send the body with that content type"
        )


def json_content(request: Request) -> None:
    """A route dependency: the body must be JSON (checked before the body is validated)."""
    require_content_type(request, "application/json")


async def receive_body(request: Request, path: Path) -> tuple[str, int]:
    """Stream the request body to ``path``, returning its SHA-256 and size.

    The body-size limit is enforced by the app's middleware while streaming. On any
    failure (client gone, body too large) the partial file is removed.
    """
    digest = hashlib.sha256()
    size = 0
    handle = await run_in_threadpool(open, path, "wb", opener=private_opener)
    try:
        async for chunk in request.stream():
            if chunk:
                digest.update(chunk)
                size += len(chunk)
                await run_in_threadpool(handle.write, chunk)
        await run_in_threadpool(handle.close)
    except BaseException:
        handle.close()
        path.unlink(missing_ok=True)
        raise
    return digest.hexdigest(), size


UPLOAD_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"description": "The same content was already stored (unchanged), or it was replaced."},
    201: {"description": "Stored."},
}


class UploadReceipt(BaseModel):
    """What an upload did."""

    kind: str = Field(description="encodings or attributes")
    party: str
    status: str = Field(description="created, unchanged or replaced")
    record_count: int
    sha256: str = Field(description="SHA-256 of the body as stored")


def binary_body(media_type: str, description: str) -> dict[str, object]:
    """OpenAPI for a raw request body of this media type."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
        }
    }
