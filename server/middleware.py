"""What guards the service at the HTTP level: rate limits, security headers, header timeouts.

* :class:`RateLimit`: a token bucket per client address, in this process only (one bucket
  set per ``pprl serve`` process; a proxy in front sees every client as itself unless it
  forwards ``X-Forwarded-For`` and uvicorn trusts it).
* :class:`RefuseNul`: a NUL character in the URL gets a 400 before any route sees it
  (PostgreSQL refuses NUL in text; a path or query parameter holding one was a 500).
* :class:`SecurityHeaders`: ``nosniff``, no framing, no caching, no referrer, a strict
  content security policy, and HSTS when a TLS proxy is declared.
* :class:`GuardedH11Protocol` and :func:`uvicorn_settings`: uvicorn closes idle keep-alive
  connections but waits for a request's headers for ever; this protocol closes a
  connection whose headers do not arrive in time, so slow-header clients cannot hold
  connections open.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["GuardedH11Protocol", "RateLimit", "RefuseNul", "SecurityHeaders", "uvicorn_settings"]

HEADER_TIMEOUT_SECONDS = 10.0
KEEP_ALIVE_SECONDS = 5
MAX_HEADER_BYTES = 16 * 1024
MAX_CONNECTIONS = 512
_DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")


class RateLimit:
    """Refuse clients that send more than ``rate`` requests per second (bursts up to ``burst``) with 429.

    Each client address has a token bucket: it holds at most ``burst`` tokens, gains
    ``rate`` per second, and each request takes one. Buckets live in this process's memory
    (at most ``max_clients`` of them, the least recently seen dropped first).

    Args:
        app: the app to guard.
        rate: requests per second each client may send in the long run.
        burst: how many it may send at once.
        on_refused: called with the client address for each refusal (the audit tally).
        clock: seconds from a monotonic clock (tests pass their own).
        max_clients: buckets kept.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        rate: float,
        burst: int,
        on_refused: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 10_000,
    ) -> None:
        self.app = app
        self.rate = rate
        self.burst = burst
        self.on_refused = on_refused
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """Take a token for ``client``: 0 if it may go on, else the seconds until it may."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            wait = 0.0
            if tokens >= 1:
                tokens -= 1
            else:
                wait = (1 - tokens) / self.rate
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or answer 429 with Retry-After."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = client[0] if client else "unknown"
        wait = self.take(address)
        if not wait:
            await self.app(scope, receive, send)
            return
        if self.on_refused is not None:
            self.on_refused(address)
        retry = max(1, math.ceil(wait))
        body = json.dumps(
            {
                "code": "rate_limited",
                "message": f"too many requests from your address (over {self.rate:g} per second); "
                f"wait {retry} s and try again",
            }
        ).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(retry).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class RefuseNul:
    """Refuse a request whose path or query string holds a NUL character with 400.

    No project id, party, run, request id or token has one, and PostgreSQL refuses NUL in
    text: a parameter holding one reached the database and failed there with a 500, whose
    logged traceback carried the SQL statement.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or answer 400."""
        if scope["type"] != "http" or not _holds_nul(scope):
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {
                "code": "bad_request",
                "message": "the URL holds a NUL character (%00); no project id, name or token has one: remove it",
            }
        ).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _holds_nul(scope: Scope) -> bool:
    query = bytes(scope.get("query_string", b""))
    raw = bytes(scope.get("raw_path") or b"")
    return "\x00" in str(scope.get("path", "")) or b"\x00" in query or b"%00" in query or b"%00" in raw


class SecurityHeaders:
    """Add security headers to every response (the API docs pages get a CSP that lets them load).

    Args:
        app: the app.
        hsts: also send ``Strict-Transport-Security`` (only behind a TLS-terminating proxy).
    """

    def __init__(self, app: ASGIApp, *, hsts: bool = False) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, adding the headers to its response."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = str(scope.get("path", "")).startswith(_DOCS_PATHS)
        extra = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"cache-control", b"no-store"),
            (b"cross-origin-resource-policy", b"same-origin"),
        ]
        if not docs:
            extra.append((b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"))
        if self.hsts:
            extra.append((b"strict-transport-security", b"max-age=31536000"))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in extra if h[0] not in present)]
            await send(message)

        await self.app(scope, receive, with_headers)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request headers do not arrive in time.

    uvicorn times out idle keep-alive connections, but a connection that sends its headers
    one byte at a time is never timed out; enough of them exhaust the server. Here a timer
    starts when a connection opens or a response completes, and closes the connection if
    the next request's headers are not complete by then.
    """

    header_timeout = HEADER_TIMEOUT_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock for the first request's headers."""
        super().connection_made(transport)
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        """Feed the data to h11; stop the clock once a request's headers are complete."""
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_header_deadline()

    def on_response_complete(self) -> None:
        """Start the clock again for the next request on this connection."""
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the clock."""
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def uvicorn_settings(*, header_timeout: float = HEADER_TIMEOUT_SECONDS) -> dict[str, Any]:
    """The uvicorn settings ``pprl serve`` runs with: header and idle timeouts, size and connection limits."""
    protocol = type("GuardedH11", (GuardedH11Protocol,), {"header_timeout": header_timeout})
    return {
        "http": protocol,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "limit_concurrency": MAX_CONNECTIONS,
        "server_header": False,
        "date_header": True,
    }
