"""The encoder page: a small web app on the agency's own machine, for people who never use a terminal.

``pprl encoder`` serves it on 127.0.0.1 only. The page walks through the same steps as
``pprl encode``: the protocol and the secret, the client file (CSV or spreadsheet), the
columns, the check (:func:`~linkage.agency.check.check_file`), the encoding
(:func:`~linkage.agency.encode.encode_csv`), and what to send to whom.

What keeps it local and private:

* every request needs the launch's random token: once in the URL the browser opens (then a
  cookie, ``HttpOnly`` and ``SameSite=Strict``, and the token leaves the address bar), and
  a request from another site (no cookie, another ``Origin``, a rebound ``Host``) is refused;
* every asset is served from here; the Content-Security-Policy forbids every other origin;
* the secret file's content stays in this process: no response, log line or URL carries
  it (the page only learns that a secret is loaded);
* uploaded client files go to a private folder the command removes when it stops.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import json
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from linkage.agency.check import check_file
from linkage.agency.columns import propose_columns
from linkage.agency.encode import encode_csv
from linkage.agency.secret import parse_secret
from linkage.agency.sources import SPREADSHEET_SUFFIXES, list_sheets, open_client_file
from linkage.errors import InputError, PprlError, ProtocolError
from linkage.protocol import Protocol, parse_protocol

__all__ = ["COOKIE", "EncoderSettings", "create_encoder_app"]

COOKIE = "pprl_encoder"
MAX_UPLOAD_BYTES = 1 << 30
MAX_SMALL_FILE_BYTES = 1 << 20  # a protocol or a secret file
CLIENT_SUFFIXES = frozenset({".csv", ".txt"}) | SPREADSHEET_SUFFIXES
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
STATIC = {
    "encoder.js": "text/javascript; charset=utf-8",
    "encoder.css": "text/css; charset=utf-8",
}
_SAFE_NAME = re.compile(r"[^\w .()-]+", re.UNICODE)


@dataclass(frozen=True)
class EncoderSettings:
    """How one launch of the page runs.

    Attributes:
        token: the launch's random token (in the URL the browser opens, then a cookie).
        hosts: the ``Host`` values the page answers to (``127.0.0.1:PORT``, ``localhost:PORT``).
        out_root: the folder in which each encoding gets a new folder.
        work_dir: a private folder for uploaded client files.
        workers: processes for checking and encoding (``None``: every core).
        protocol: a protocol loaded at launch, with its file name.
        party: a party chosen at launch.
        secret: a secret loaded at launch, with its file name (never shown).
    """

    token: str
    hosts: tuple[str, ...]
    out_root: Path
    work_dir: Path
    workers: int | None = None
    protocol: tuple[Protocol, str] | None = None
    party: str | None = None
    secret: tuple[bytes, str] | None = field(default=None, repr=False)


@dataclass
class _Job:
    kind: str
    state: str = "running"
    done: int = 0
    total: int = 0
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class _Session:
    """What the person has chosen so far (one person, one launch)."""

    def __init__(self, settings: EncoderSettings) -> None:
        self.lock = threading.Lock()
        self.protocol: Protocol | None = settings.protocol[0] if settings.protocol else None
        self.protocol_file: str | None = settings.protocol[1] if settings.protocol else None
        self.party = settings.party
        self.secret: bytes | None = settings.secret[0] if settings.secret else None
        self.secret_file: str | None = settings.secret[1] if settings.secret else None
        self.client_path: Path | None = None
        self.client_name: str | None = None
        self.job: _Job | None = None

    def state(self, settings: EncoderSettings) -> dict[str, Any]:
        protocol = None
        if self.protocol is not None:
            protocol = {
                "file": self.protocol_file,
                "name": self.protocol.name,
                "fingerprint": self.protocol.fingerprint,
                "parties": [{"id": p.id, "name": p.name} for p in self.protocol.parties],
            }
        return {
            "protocol": protocol,
            "party": self.party,
            # Only that a secret is loaded, and from which file: never the secret.
            "secret": {"file": self.secret_file} if self.secret is not None else None,
            "client_file": self.client_name,
            "out_root": str(settings.out_root),
        }


def _jsonable(value: Any) -> Any:
    """A result dataclass as JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def _error(exc: PprlError) -> JSONResponse:
    return JSONResponse({"error": exc.message, "problems": list(exc.problems)}, status_code=exc.http_status)


def _safe_name(name: str) -> str:
    r"""A client file's name, reduced to a plain file name in the private folder.

    >>> _safe_name("../../etc/clients 2026.xlsx"), _safe_name("a/b\\c:d.csv")
    ('clients 2026.xlsx', 'c_d.csv')
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _SAFE_NAME.sub("_", base).strip(" .")
    return cleaned or "clients.csv"


def _new_folder(root: Path, party: str) -> Path:
    """A new output folder under ``root``: ``<party>-<date>-<time>``."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = root / f"{party}-{stamp}"
    number = 2
    while folder.exists():
        folder = root / f"{party}-{stamp}-{number}"
        number += 1
    return folder


def _static(name: str) -> bytes:
    return resources.files("linkage.agency.page").joinpath("static", name).read_bytes()


def create_encoder_app(settings: EncoderSettings) -> FastAPI:
    """The encoder page's app (serve it on 127.0.0.1 only; ``pprl encoder`` does)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    session = _Session(settings)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await _guarded(request, call_next)
        for name, value in SECURITY_HEADERS.items():
            response.headers[name] = value
        return response

    async def _guarded(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.headers.get("host", "") not in settings.hosts:
            return Response("wrong host", status_code=400, media_type="text/plain")
        origin = request.headers.get("origin")
        if origin is not None and origin not in {f"http://{host}" for host in settings.hosts}:
            return Response("requests from other sites are refused", status_code=403, media_type="text/plain")
        given = request.query_params.get("token")
        if request.url.path == "/" and given is not None:
            if not hmac.compare_digest(given.encode(), settings.token.encode()):
                return Response(_LINK_HELP, status_code=403, media_type="text/plain")
            # Into a cookie, and out of the address bar (and so out of the browser's history).
            redirect = RedirectResponse("/", status_code=303)
            redirect.set_cookie(COOKIE, settings.token, httponly=True, samesite="strict", path="/")
            return redirect
        cookie = request.cookies.get(COOKIE, "")
        if not hmac.compare_digest(cookie.encode(), settings.token.encode()):
            return Response(_LINK_HELP, status_code=403, media_type="text/plain")
        if request.method != "GET" and request.headers.get("x-pprl-encoder") != "1":
            return Response("missing the page's request header", status_code=403, media_type="text/plain")
        return await call_next(request)

    @app.exception_handler(PprlError)
    async def pprl_error(_request: Request, exc: PprlError) -> JSONResponse:
        return _error(exc)

    @app.get("/")
    def index() -> Response:
        return Response(_static("index.html"), media_type="text/html; charset=utf-8")

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(_static(name), media_type=STATIC[name])

    @app.get("/api/state")
    def state() -> dict[str, Any]:
        with session.lock:
            return session.state(settings)

    @app.put("/api/protocol")
    async def put_protocol(request: Request, name: str = "protocol.json") -> dict[str, Any]:
        body = await _small_body(request, "protocol")
        try:
            document = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProtocolError(
                f"{_safe_name(name)}: not a protocol file (JSON); choose the protocol you were sent"
            ) from exc
        protocol = parse_protocol(document)
        with session.lock:
            session.protocol, session.protocol_file = protocol, _safe_name(name)
            if session.party not in {p.id for p in protocol.parties}:
                session.party = protocol.parties[0].id if len(protocol.parties) == 1 else None
            return session.state(settings)

    @app.put("/api/party")
    def put_party(choice: dict[str, str]) -> dict[str, Any]:
        with session.lock:
            if session.protocol is None:
                raise InputError("choose the protocol file first")
            session.party = session.protocol.party(choice.get("party", "")).id
            return session.state(settings)

    @app.put("/api/secret")
    async def put_secret(request: Request, name: str = "secret.key") -> dict[str, Any]:
        body = await _small_body(request, "secret")
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            text = ""
        secret = parse_secret(text, _safe_name(name))
        with session.lock:
            session.secret, session.secret_file = secret, _safe_name(name)
            return session.state(settings)

    @app.put("/api/client-file")
    async def put_client_file(request: Request, name: str) -> dict[str, Any]:
        safe = _safe_name(name)
        if Path(safe).suffix.lower() not in CLIENT_SUFFIXES:
            raise InputError(f"{safe}: choose a CSV or a spreadsheet (.xlsx, .ods)")
        target = settings.work_dir / safe
        size = 0
        with target.open("wb") as handle:
            async for part in request.stream():
                size += len(part)
                if size > MAX_UPLOAD_BYTES:
                    handle.close()
                    target.unlink()
                    raise InputError(f"{safe}: larger than {MAX_UPLOAD_BYTES >> 20} MB; split the list")
                handle.write(part)
        with session.lock:
            if session.client_path is not None and session.client_path != target:
                session.client_path.unlink(missing_ok=True)
            session.client_path, session.client_name = target, safe
        return _columns(None)

    @app.post("/api/columns")
    def post_columns(choice: dict[str, Any]) -> dict[str, Any]:
        return _columns(choice.get("sheet") or None)

    def _columns(sheet: str | None) -> dict[str, Any]:
        protocol, party, path, name = _ready(need_secret=False)
        sheets = list_sheets(path)
        with open_client_file(path, sheet=sheet, name=name) as source:
            proposal = propose_columns(source.header, protocol.columns_for(party))
            return {
                "file": name,
                "sheets": list(sheets),
                "sheet": source.sheet,
                "header": [h for h in source.header if h.strip()],
                "columns": list(protocol.columns_for(party)),
                "proposal": _jsonable(proposal),
            }

    def _ready(*, need_secret: bool) -> tuple[Protocol, str, Path, str]:
        with session.lock:
            if session.protocol is None or session.party is None:
                raise InputError("choose the protocol file and your agency first")
            if need_secret and session.secret is None:
                raise InputError("choose the secret file first")
            if session.client_path is None or session.client_name is None:
                raise InputError("choose your client list first")
            return session.protocol, session.party, session.client_path, session.client_name

    def _start(kind: str, run: Callable[[Callable[[int, int], None]], dict[str, Any]]) -> dict[str, Any]:
        job = _Job(kind)
        with session.lock:
            if session.job is not None and session.job.state == "running":
                raise InputError("wait until the running step has finished")
            session.job = job

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        def work() -> None:
            try:
                job.result = run(progress)
                job.state = "done"
            except PprlError as exc:
                job.error = {"error": exc.message, "problems": list(exc.problems)}
                job.state = "failed"
            except Exception as exc:  # shown on the page, whatever it is
                # Only the class: a message could quote a value from the client file.
                job.error = {"error": f"unexpected error ({exc.__class__.__name__}); please report it", "problems": []}
                job.state = "failed"

        threading.Thread(target=work, name=f"pprl-encoder-{kind}", daemon=True).start()
        return {"kind": kind, "state": job.state}

    @app.post("/api/check", status_code=202)
    def post_check(choice: dict[str, Any]) -> dict[str, Any]:
        protocol, party, path, name = _ready(need_secret=False)
        columns, sheet = _choice(choice)

        def run(on_progress: Callable[[int, int], None]) -> dict[str, Any]:
            summary = check_file(
                protocol,
                party,
                path,
                sheet=sheet,
                columns=columns,
                input_name=name,
                workers=settings.workers,
                on_progress=on_progress,
            )
            return {"summary": _jsonable(summary)}

        return _start("check", run)

    @app.post("/api/encode", status_code=202)
    def post_encode(choice: dict[str, Any]) -> dict[str, Any]:
        protocol, party, path, name = _ready(need_secret=True)
        columns, sheet = _choice(choice)
        on_error = "skip" if choice.get("on_error") == "skip" else "fail"
        with session.lock:
            secret = session.secret
        assert secret is not None  # noqa: S101 - _ready checked it
        out = _new_folder(settings.out_root, party)

        def run(on_progress: Callable[[int, int], None]) -> dict[str, Any]:
            summary = encode_csv(
                protocol,
                party,
                secret,
                path,
                out,
                sheet=sheet,
                columns=columns,
                input_name=name,
                on_error=on_error,
                workers=settings.workers,
                on_progress=on_progress,
            )
            return {
                "folder": str(out),
                "files": [f.name for f in summary.files],
                "records": summary.records,
                "rejected": summary.rejected,
                "fingerprint": summary.fingerprint,
                "warnings": list(summary.warnings),
                "seconds": summary.seconds,
            }

        return _start("encode", run)

    @app.get("/api/job")
    def get_job() -> dict[str, Any]:
        job = session.job
        if job is None:
            return {"kind": None, "state": "idle"}
        return _jsonable(job)  # type: ignore[no-any-return]

    return app


_LINK_HELP = (
    "This page only opens from the link `pprl encoder` printed when it started "
    "(or in the browser window it opened). Start it again for a new link."
)


async def _small_body(request: Request, what: str) -> bytes:
    body = b""
    async for part in request.stream():
        body += part
        if len(body) > MAX_SMALL_FILE_BYTES:
            raise InputError(f"that is not a {what} file: it is larger than {MAX_SMALL_FILE_BYTES >> 20} MB")
    return body


def _choice(choice: dict[str, Any]) -> tuple[dict[str, str], str | None]:
    """The columns and sheet the person confirmed."""
    columns = choice.get("columns") or {}
    if not isinstance(columns, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in columns.items()):
        raise InputError("columns must map the protocol's columns to your file's column names")
    sheet = choice.get("sheet")
    return {k: v for k, v in columns.items() if v}, sheet if isinstance(sheet, str) and sheet else None
