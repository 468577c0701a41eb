"""The app `pprl serve` runs: the linkage side and the statistics side in one process.

One process serves both sides (the embedded default) but keeps them apart: the linkage
routes use the linkage store only, the statistics routes (``stats.api``) the statistics
store only; the linkage side reaches the statistics store only through
:class:`~linkage.service.statistics_side.StatisticsSide`. Errors are JSON
``{"code": ..., "message": ...}`` with the status of the
:class:`~linkage.errors.PprlError` subclass raised; every error, a 500 too, is audited
(unauthenticated ones in bulk, see :class:`~linkage.web.RefusalTally`).

Around the routes: a per-client rate limit, body-size limits, a 400 for a NUL in the URL and security headers
(:mod:`server.middleware`). The API description (``/docs``, ``/openapi.json``) is served
only when asked for (``ServiceConfig.api_docs``); ``/health`` answers without a credential.
At start-up the audit log's and every ledger's hash chain are checked; a broken chain is
logged and audited, and a project whose ledger is broken releases nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from linkage.database import loggable_traceback
from linkage.errors import Forbidden, PayloadTooLarge, PprlError, SecretError, Unauthorized
from linkage.file_modes import private_dir
from linkage.service.api import audit, batches, erasure, projects, results, runs, uploads
from linkage.service.store import LinkageStore
from linkage.service.worker import RunWorker, recover
from linkage.web import RefusalTally, record
from server.middleware import RateLimit, RefuseNul, SecurityHeaders
from stats.answering import QueryService
from stats.api import attributes, queries
from stats.store import StatsStore

__all__ = ["ErrorBody", "ServiceConfig", "create_app", "hash_admin_secret"]

log = logging.getLogger("pprl.service")
MIN_ADMIN_SECRET_CHARS = 32
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


class ErrorBody(BaseModel):
    """Every error: a stable machine-readable code and a message saying what to do."""

    code: str = Field(description="e.g. unauthorized, forbidden, mismatch, conflict, invalid_input, too_large")
    message: str
    problems: list[str] = Field(default_factory=list, description="Every problem found, when there are several.")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "The input is invalid (a protocol, an encodings or attributes file).",
        401: "No credential, or one this server does not know.",
        403: "The credential is not allowed this, or is for another project.",
        404: "No such project or run.",
        409: "Conflicts with what is stored, or inputs that do not belong together.",
        413: "The body is too large.",
        415: "The body has the wrong content type.",
        422: "The request is malformed (JSON, parameters).",
        429: "Too many requests from this address; wait as Retry-After says.",
    }.items()
}


def hash_admin_secret(text: str, source: str) -> str:
    """Check an admin secret and return its SHA-256, the only form the server keeps.

    Args:
        text: the secret as read from its file or variable.
        source: where it came from, for messages (never the secret).

    Raises:
        SecretError: shorter than 32 characters.

    >>> len(hash_admin_secret("a" * 64, "test"))
    64
    """
    secret = text.strip()
    if len(secret) < MIN_ADMIN_SECRET_CHARS:
        raise SecretError(
            f"{source}: the admin secret has {len(secret)} characters, fewer than {MIN_ADMIN_SECRET_CHARS}; "
            "make one with `pprl keygen --out admin.secret --purpose admin`"
        )
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ServiceConfig:
    """How to run the service.

    Attributes:
        data_dir: the data folder: SQLite files, encodings blobs.
        database_url: ``postgresql+psycopg://...`` for both stores (schemas ``linkage_schema``
            and ``stats_schema``); ``None`` for SQLite files in ``data_dir``.
        stats_database_url: a separate database for the statistics store (default:
            ``database_url``).
        admin_secret_sha256: SHA-256 of the admin secret (:func:`hash_admin_secret`);
            ``None`` disables the admin endpoints.
        workers: processes the linkage engine uses for a run.
        dask: a Dask scheduler address the engine runs on instead (a run's encodings are
            scattered to its workers; they need no access to ``data_dir``).
        max_upload_bytes: the largest upload body accepted.
        max_json_bytes: the largest JSON body accepted.
        run_worker: start the background run worker (tests may run queued runs by hand).
        linkage_schema: PostgreSQL schema of the linkage store.
        stats_schema: PostgreSQL schema of the statistics store.
        api_docs: serve the API description (``/docs``, ``/openapi.json``); off by default,
            since it maps the attack surface for anyone who can reach the port.
        behind_tls_proxy: a TLS-terminating proxy is in front (adds HSTS).
        rate_limit: requests per second each client address may send in the long run
            (``None``: no limit); bursts of ``rate_burst``. Kept in this process's memory.
        rate_burst: requests a client may send at once.
        audit_window_seconds: how long unauthenticated refusals are counted before one
            audit line per kind is written.
    """

    data_dir: Path
    database_url: str | None = None
    stats_database_url: str | None = None
    admin_secret_sha256: str | None = None
    workers: int = 1
    dask: str | None = None
    max_upload_bytes: int = 4 << 30
    max_json_bytes: int = 1 << 20
    run_worker: bool = True
    linkage_schema: str = "pprl_linkage"
    stats_schema: str = "pprl_stats"
    api_docs: bool = False
    behind_tls_proxy: bool = False
    rate_limit: float | None = 50.0
    rate_burst: int = 200
    audit_window_seconds: float = 60.0


def _error_body(code: str, message: str, problems: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if problems:
        body["problems"] = list(problems)
    return body


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class BodyLimit:
    """Refuse request bodies over a limit with 413: uploads (PUT) get one, JSON bodies another.

    A declared Content-Length over the limit is refused before reading. JSON bodies are
    read whole here (they are small), so a chunked one over the limit is refused too; an
    upload is counted while the route streams it, and the route stops at the limit.
    """

    def __init__(self, app: ASGIApp, *, upload_bytes: int, json_bytes: int) -> None:
        self.app = app
        self.upload_bytes = upload_bytes
        self.json_bytes = json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["method"] == "PUT"
        limit = self.upload_bytes if upload else self.json_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_json(send, 413, _error_body("too_large", _too_large(int(declared), limit, upload)))
            return
        if upload:
            await self.app(scope, self._counting(receive, limit), send)
            return
        body, messages, over = b"", [], False
        while True:
            message = await receive()
            if message["type"] != "http.request":
                messages.append(message)
                break
            body += message.get("body", b"")
            if len(body) > limit:
                over = True
                break
            if not message.get("more_body", False):
                break
        if over:
            await _send_json(send, 413, _error_body("too_large", _too_large(len(body), limit, upload)))
            return
        messages.insert(0, {"type": "http.request", "body": body, "more_body": False})

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    @staticmethod
    def _counting(receive: Receive, limit: int) -> Receive:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(_too_large(seen, limit, True))
            return message

        return counted


def _too_large(size: int, limit: int, upload: bool) -> str:
    hint = "ask the operator to raise `pprl serve --max-upload-mb`" if upload else "send a smaller request"
    return f"the request body has {size} bytes or more, over this server's limit of {limit} bytes; {hint}"


def _audit_error(request: Request, code: str, message: str) -> None:
    caller = getattr(request.state, "caller", None)
    path_params = request.scope.get("path_params", {})
    try:
        record(request, caller, path_params.get("project_id"), code, message[:300])
    except Exception as exc:
        log.error("could not write the audit log\n%s", loggable_traceback(exc))


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PprlError)
    async def pprl_error(request: Request, exc: PprlError) -> JSONResponse:
        # Refusals of uploads, runs and results belong in the audit log; failed reads too.
        await run_in_threadpool(_audit_error, request, exc.code, exc.message)
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
        status = exc.http_status if 400 <= exc.http_status < 600 else 400
        if isinstance(exc, Forbidden | Unauthorized):
            log.info("refused %s %s: %s", request.method, request.url.path[:200], exc.code)
        return JSONResponse(_error_body(exc.code, exc.message, exc.problems), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ()))
            problems.append(f"{where}: {error.get('msg', 'invalid')}")
        message = "the request is malformed: " + "; ".join(problems[:5])
        await run_in_threadpool(_audit_error, request, "invalid_request", message)
        return JSONResponse(_error_body("invalid_request", message, problems), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(
            _error_body(code, str(exc.detail)), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s\n%s", request.method, request.url.path[:200], loggable_traceback(exc))
        await run_in_threadpool(_audit_error, request, "internal_error", exc.__class__.__name__)
        return JSONResponse(
            _error_body("internal_error", "internal error; the server log has the details"), status_code=500
        )


def _version() -> str:
    try:
        return version("pprl")
    except PackageNotFoundError:
        return "0"


class Health(BaseModel):
    """The service answers."""

    status: str = "ok"


def _check_chains(store: LinkageStore, stats: StatsStore) -> None:
    """Check every hash chain at start-up; log and audit what is broken (releases from it stop)."""
    for check in [store.verify_audit(), *stats.verify_ledgers()]:
        if not check.ok:
            log.error("tamper evidence: %s; restore it from a backup (`pprl audit --verify`)", check.problem)
            store.append_audit("service", "chain.verify", None, "broken", check.problem[:1000])


async def _flush_refusals(tally: RefusalTally, audit_line: Any, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        await run_in_threadpool(tally.flush, audit_line)


def create_app(config: ServiceConfig) -> FastAPI:
    """Build the service app on the stores in ``config``.

    The stores are opened (and their tables created) now; starting the app (its
    lifespan) recovers from any crash, checks the hash chains and starts the run worker.

    Raises:
        InputError: the database URL is unsupported or the database unreachable.
    """
    private_dir(config.data_dir)
    store = LinkageStore(config.data_dir, config.database_url, schema=config.linkage_schema)
    stats = StatsStore(config.data_dir, config.stats_database_url or config.database_url, schema=config.stats_schema)
    worker = RunWorker(store, stats, store.append_audit, workers=config.workers, dask=config.dask)
    refusals = RefusalTally(config.audit_window_seconds)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(recover, store, stats, store.append_audit)
        await run_in_threadpool(_check_chains, store, stats)
        if config.run_worker:
            worker.start()
        flusher = asyncio.create_task(_flush_refusals(refusals, store.append_audit, config.audit_window_seconds))
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await run_in_threadpool(refusals.flush, store.append_audit, force=True)
            await run_in_threadpool(worker.stop)
            store.close()
            stats.close()

    docs = config.api_docs
    app = FastAPI(
        title="pprl linkage service",
        version=_version(),
        description=(
            "Privacy-preserving record linkage between agencies: projects with scoped credentials, "
            "encodings and attribute uploads, linkage runs, consent-limited record-level results and "
            "an audit log. Similarity scores and other parties' tokens are never released."
        ),
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    app.state.config = config
    app.state.linkage_store = store
    app.state.stats_store = stats
    app.state.statistics_side = stats
    app.state.query_service = QueryService(stats)
    app.state.worker = worker
    app.state.audit = store.append_audit
    app.state.refusals = refusals
    app.add_middleware(BodyLimit, upload_bytes=config.max_upload_bytes, json_bytes=config.max_json_bytes)
    app.add_middleware(RefuseNul)
    if config.rate_limit:
        app.add_middleware(
            RateLimit,
            rate=config.rate_limit,
            burst=config.rate_burst,
            on_refused=lambda address: refusals.note("rate_limit", "rate_limited", address),
        )
    app.add_middleware(SecurityHeaders, hsts=config.behind_tls_proxy)
    _add_error_handlers(app)

    @app.get("/health", name="health", tags=["health"])
    async def health() -> Health:
        """Whether the service answers (no credential needed; says nothing else)."""
        return Health()

    for router in (
        projects.router,
        uploads.router,
        batches.router,
        attributes.router,
        runs.router,
        results.router,
        audit.router,
        erasure.router,
        queries.router,
    ):
        app.include_router(router)
    return app
