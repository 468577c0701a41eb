"""The HTTP client of the linkage service, for the agency's and the administrator's machines.

Pure library: it takes the server URL, a credential and paths, and returns frozen
dataclasses; it never prints and never reads the environment. Every HTTP error becomes the
:class:`~linkage.errors.PprlError` subclass of its status, with the server's message.
:func:`write_shared` maps released tokens back to local client ids, on the agency's
machine, with the key map that never leaves it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from linkage.encodings import ENCODINGS_FILE
from linkage.errors import (
    BudgetExceeded,
    Conflict,
    Forbidden,
    InputError,
    MismatchError,
    NotFound,
    OutputExistsError,
    PayloadTooLarge,
    PprlError,
    ProtocolError,
    ServiceError,
    TamperedError,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
)
from linkage.file_modes import PRIVATE_FILE, private_opener
from linkage.token_files import read_keymap

__all__ = [
    "ATTRIBUTES_FILE",
    "AuditLine",
    "BatchReceipt",
    "ChainStatus",
    "Change",
    "ErasureSummary",
    "Identity",
    "NewAnalyst",
    "NewProject",
    "PendingRequest",
    "Results",
    "RunStatus",
    "ServiceClient",
    "SharedSummary",
    "SharedToken",
    "UploadReceipt",
    "credential_files",
    "make_http",
    "upload_files",
    "read_tokens_file",
    "read_withdrawal_tokens",
    "write_changes",
    "write_credentials",
    "write_shared",
]

ATTRIBUTES_FILE = "attributes.csv"
MAX_WITHDRAWAL_TOKENS = 20_000
CHUNK_BYTES = 1 << 20
BATCH_MAGIC = b"PPRLBATCH1\n"  # linkage.service.batches.BATCH_MAGIC: the client never imports the service
BATCH_MEDIA_TYPE = "application/vnd.pprl.batch"
_TOKEN = re.compile(r"^[0-9a-f]{32}$")
_ROLE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
ProgressCallback = Callable[[int, int], None]
_BY_STATUS: dict[int, type[PprlError]] = {
    400: InputError,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: InputError,
    429: TooManyRequests,
}
_BY_CODE: dict[str, type[PprlError]] = {
    "budget_exceeded": BudgetExceeded,
    "mismatch": MismatchError,
    "invalid_protocol": ProtocolError,
    "tampered": TamperedError,
}


@dataclass(frozen=True)
class Identity:
    """Who a credential belongs to (an analyst's name too)."""

    role: str
    project_id: str | None
    party: str | None
    name: str | None = None


@dataclass(frozen=True)
class NewProject:
    """A created project and its credentials (shown once)."""

    project_id: str
    name: str
    fingerprint: str
    credentials: Mapping[str, str]


@dataclass(frozen=True)
class NewAnalyst:
    """An analyst's own credential (shown once) and budget."""

    project_id: str
    name: str
    budget: Mapping[str, float] | None
    credential: str


@dataclass(frozen=True)
class PendingRequest:
    """A serious-threat request as stored: never its tokens, only their SHA-256."""

    request_id: str
    project_id: str
    party: str
    status: str
    token_count: int
    token_sha256: tuple[str, ...]
    reason: str
    created_at: str
    decided_at: str | None
    decided_by: str | None
    note: str


@dataclass(frozen=True)
class ChainStatus:
    """One hash chain as the server checked it (the audit log, a project's ledger)."""

    name: str
    ok: bool
    rows: int
    head: str
    problem: str
    first_bad: int | None


@dataclass(frozen=True)
class UploadReceipt:
    """What an upload did: status ``created``, ``unchanged`` or ``replaced``."""

    kind: str
    party: str
    status: str
    record_count: int
    sha256: str


@dataclass(frozen=True)
class RunStatus:
    """A run's state; ``created`` says whether starting it queued a new one."""

    run_id: int
    project_id: str
    status: str
    progress: float
    message: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    entity_count: int | None
    linked_records: int | None
    created: bool = False

    @property
    def finished(self) -> bool:
        """Done or failed."""
        return self.status in ("done", "failed")


@dataclass(frozen=True)
class SharedToken:
    """One of the caller's tokens and the parties that also know that client."""

    token: str
    shared_with: tuple[str, ...]


@dataclass(frozen=True)
class Change:
    """A change for one of the caller's tokens since its last download (see the results route)."""

    token: str
    kind: str
    parties: tuple[str, ...] = ()


@dataclass(frozen=True)
class Results:
    """Record-level results for the calling party; ``changes`` since its last download (run ``changes_since_run``)."""

    run_id: int
    party: str
    records: tuple[SharedToken, ...]
    parties: Mapping[str, str]
    changes_since_run: int | None = None
    changes: tuple[Change, ...] = ()


@dataclass(frozen=True)
class BatchReceipt:
    """A batch as the service stored it (pending until the next run)."""

    batch_id: int
    party: str
    status: str
    added: int
    corrected: int
    withdrawn: int
    record_count: int


@dataclass(frozen=True)
class AuditLine:
    """One audit log line."""

    id: int
    at: str
    actor: str
    action: str
    project_id: str | None
    outcome: str
    detail: str
    sha256: str | None = None


@dataclass(frozen=True)
class ErasureSummary:
    """A withdrawal, a party's removal or a project's deletion, as the service journalled it."""

    erasure_id: int
    project_id: str
    party: str | None
    kind: str
    status: str
    requested_by: str
    requested_at: str
    done_at: str | None
    summary: str


@dataclass(frozen=True)
class SharedSummary:
    """What :func:`write_shared` wrote."""

    path: Path
    clients: int
    unknown_tokens: int


def make_http(server: str) -> httpx.Client:
    """The HTTP client for a server URL (tests replace this to talk to an app in-process)."""
    return httpx.Client(base_url=server, timeout=httpx.Timeout(60.0, read=600.0))


def _error(server: str, response: httpx.Response) -> PprlError:
    code, message, problems = "http_error", response.text[:300], []
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "message" in body:
        code = str(body.get("code", code))
        message = str(body["message"])
        problems = [str(p) for p in body.get("problems", [])]
    kind = _BY_CODE.get(code) or _BY_STATUS.get(response.status_code, ServiceError)
    error = kind(f"{server} answered {response.status_code} ({code}): {message}", problems=problems)
    error.code = code
    return error


def _streamed(
    path: Path | None, *, head: bytes = b"", on_progress: ProgressCallback | None = None
) -> tuple[int, Iterator[bytes]]:
    """A request body of ``head`` then a file's bytes, streamed, and its length; progress in bytes sent.

    Raises:
        InputError: the file cannot be read.
    """
    try:
        total = len(head) + (path.stat().st_size if path is not None else 0)
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror}); pass the folder `pprl encode` wrote") from exc

    def chunks() -> Iterator[bytes]:
        sent = len(head)
        if head:
            yield head
        if path is not None:
            with path.open("rb") as handle:
                while chunk := handle.read(CHUNK_BYTES):
                    sent += len(chunk)
                    yield chunk
                    if on_progress:
                        on_progress(sent, total)

    return total, chunks()


class ServiceClient:
    """Talks to one linkage service with one credential.

    Args:
        server: the service URL, e.g. ``http://127.0.0.1:8000``.
        token: a project credential or the admin secret (sent as a bearer token only).
        http: an HTTP client to use (default: :func:`make_http`).
    """

    def __init__(self, server: str, token: str, *, http: httpx.Client | None = None) -> None:
        self.server = server.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._http = http or make_http(self.server)
        self._identity: Identity | None = None

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {**self._headers, **kwargs.pop("headers", {})}
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except (httpx.WriteError, httpx.RemoteProtocolError) as exc:
            raise ServiceError(
                f"the connection to {self.server} broke while sending ({exc.__class__.__name__}); the server may "
                "have refused the body as too large (`pprl serve --max-upload-mb`) or stopped; try again"
            ) from exc
        except httpx.HTTPError as exc:
            raise ServiceError(
                f"cannot reach {self.server} ({exc.__class__.__name__}); check --server and that `pprl serve` "
                "runs there"
            ) from exc
        if response.status_code >= 400:
            raise _error(self.server, response)
        try:
            return response.json(), response.status_code
        except ValueError as exc:
            raise ServiceError(f"{self.server} answered something that is not JSON; is it a pprl service?") from exc

    def identity(self) -> Identity:
        """Who this credential belongs to (asked once)."""
        if self._identity is None:
            body, _ = self._request("GET", "/me")
            self._identity = Identity(body["role"], body["project_id"], body["party"], body.get("name"))
        return self._identity

    def _project(self, project_id: str | None = None) -> str:
        if project_id is not None:
            return project_id
        identity = self.identity()
        if identity.project_id is None:
            raise Forbidden(
                "this command needs a project credential (--token-file), or with the admin secret the project's id "
                "(--project)"
            )
        return identity.project_id

    def create_project(self, protocol_document: Mapping[str, Any]) -> NewProject:
        """Create a project (admin secret needed); its credentials are returned this once."""
        body, _ = self._request("POST", "/projects", json={"protocol": protocol_document})
        return NewProject(body["project_id"], body["name"], body["fingerprint"], dict(body["credentials"]))

    def upload_file(
        self,
        kind: str,
        path: Path,
        *,
        replace: bool = False,
        batch: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> UploadReceipt:
        """Stream one file: ``kind`` is ``encodings`` or ``attributes`` (``batch``: a batch's attributes).

        Raises:
            InputError: the file cannot be read.
        """
        media_type = {"encodings": "application/octet-stream", "attributes": "text/csv"}[kind]
        total, chunks = _streamed(path, on_progress=on_progress)
        body, _ = self._request(
            "PUT",
            f"/projects/{self._project()}/{kind}",
            params={"replace": "true"} if replace else {"batch": "true"} if batch else None,
            content=chunks,
            headers={"Content-Type": media_type, "Content-Length": str(total)},
        )
        return UploadReceipt(body["kind"], body["party"], body["status"], body["record_count"], body["sha256"])

    def upload(
        self,
        out_dir: Path,
        *,
        replace: bool = False,
        on_progress: Callable[[str], ProgressCallback | None] | None = None,
    ) -> list[UploadReceipt]:
        """Send ``encodings.pprl`` to the linkage side, then ``attributes.csv`` to the statistics side.

        Args:
            out_dir: the folder ``pprl encode`` wrote.
            replace: replace different content uploaded before.
            on_progress: given a file name, returns the progress callback for it.

        Raises:
            InputError: a file is missing.
        """
        return [
            self.upload_file(kind, path, replace=replace, on_progress=on_progress(path.name) if on_progress else None)
            for kind, path in upload_files(out_dir)
        ]

    def upload_batch(
        self,
        encodings: Path | None,
        withdraw: Sequence[str] = (),
        *,
        on_progress: ProgressCallback | None = None,
    ) -> BatchReceipt:
        """Send a batch to a linked project: an ``encodings.pprl`` of new and corrected records, withdrawals, or both.

        Raises:
            InputError: nothing to send, or the file cannot be read.
        """
        if encodings is None and not withdraw:
            raise InputError("the batch is empty: pass the batch's encodings, tokens to withdraw, or both")
        if len(withdraw) > MAX_WITHDRAWAL_TOKENS:
            raise InputError(
                f"{len(withdraw)} tokens to withdraw, more than the {MAX_WITHDRAWAL_TOKENS} one batch takes; "
                "send the rest in another batch"
            )
        head = BATCH_MAGIC + json.dumps({"withdraw": list(withdraw)}).encode("ascii") + b"\n"
        total, chunks = _streamed(encodings, head=head, on_progress=on_progress)
        body, _ = self._request(
            "PUT",
            f"/projects/{self._project()}/batches",
            content=chunks,
            headers={"Content-Type": BATCH_MEDIA_TYPE, "Content-Length": str(total)},
        )
        return BatchReceipt(
            body["batch_id"],
            body["party"],
            body["status"],
            body["added"],
            body["corrected"],
            body["withdrawn"],
            body["record_count"],
        )

    def upload_batch_folder(
        self,
        out_dir: Path,
        withdraw: Sequence[str] = (),
        *,
        on_progress: Callable[[str], ProgressCallback | None] | None = None,
    ) -> tuple[BatchReceipt, UploadReceipt | None]:
        """Send a batch from the folder ``pprl encode`` wrote: its encodings and withdrawals, then its attributes.

        The attributes go second: the statistics side adds them only once the batch has
        reached the linkage side (the merged tokens must be those of the party's encodings).
        A folder without ``encodings.pprl`` sends withdrawals only.
        """
        encodings, attributes = out_dir / ENCODINGS_FILE, out_dir / ATTRIBUTES_FILE
        added = self.upload_batch(
            encodings if encodings.is_file() else None,
            withdraw,
            on_progress=on_progress(ENCODINGS_FILE) if on_progress else None,
        )
        merged = None
        if attributes.is_file():
            merged = self.upload_file(
                "attributes",
                attributes,
                batch=True,
                on_progress=on_progress(ATTRIBUTES_FILE) if on_progress else None,
            )
        return added, merged

    def start_run(self, project_id: str | None = None) -> RunStatus:
        """Queue a linkage run (or get the one already queued or running); ``project_id`` for the admin secret."""
        body, status = self._request("POST", f"/projects/{self._project(project_id)}/runs")
        return _run(body, created=status == 202)

    def run_status(self, run_id: int, project_id: str | None = None) -> RunStatus:
        """A run's status and progress."""
        body, _ = self._request("GET", f"/projects/{self._project(project_id)}/runs/{run_id}")
        return _run(body)

    def wait_for_run(
        self,
        run_id: int,
        *,
        poll_seconds: float = 1.0,
        on_progress: ProgressCallback | None = None,
        project_id: str | None = None,
    ) -> RunStatus:
        """Poll a run until it is done or failed; progress is reported in thousandths."""
        while True:
            run = self.run_status(run_id, project_id)
            if on_progress:
                on_progress(round(run.progress * 1000), 1000)
            if run.finished:
                return run
            time.sleep(poll_seconds)

    def results(self) -> Results:
        """The caller's shared tokens from the latest completed run (as the protocol and consent allow)."""
        body, _ = self._request("GET", f"/projects/{self._project()}/results")
        return _results(body)

    def serious_threat(self, tokens: Sequence[str], reason: str) -> Results | PendingRequest:
        """Named tokens' shared parties under the serious-threat exception; the reason is audited.

        Returns:
            The release, or the pending request when the protocol wants the administrator's approval.
        """
        body, status = self._request(
            "POST",
            f"/projects/{self._project()}/results/serious-threat",
            json={"tokens": list(tokens), "reason": reason},
        )
        return _pending(body) if status == 202 else _results(body)

    def threat_requests(self, project_id: str | None = None) -> list[PendingRequest]:
        """Serious-threat requests: the project's (admin secret, ``project_id``) or the party's own."""
        body, _ = self._request("GET", f"/projects/{self._project(project_id)}/serious-threat-requests")
        return [_pending(item) for item in body["requests"]]

    def decide_threat_request(self, project_id: str, request_id: str, decision: str, note: str) -> PendingRequest:
        """Approve or refuse a pending serious-threat request (admin secret); ``decision`` is approve or refuse."""
        path = f"/projects/{project_id}/serious-threat-requests/{request_id}/{decision}"
        body, _ = self._request("POST", path, json={"note": note})
        return _pending(body)

    def fetch_threat_results(self, request_id: str) -> Results:
        """An approved serious-threat request's release (once)."""
        body, _ = self._request("GET", f"/projects/{self._project()}/serious-threat-requests/{request_id}/results")
        return _results(body)

    def add_analyst(self, project_id: str, name: str, budget: Mapping[str, float] | None) -> NewAnalyst:
        """Give an analyst a credential of their own, with an optional budget (admin secret)."""
        body, _ = self._request("POST", f"/projects/{project_id}/analysts", json={"name": name, "budget": budget})
        return NewAnalyst(body["project_id"], body["name"], body["budget"], body["credential"])

    def withdraw(self, tokens: Sequence[str]) -> ErasureSummary:
        """Withdraw the caller's records by token (a party's credential); done when it returns."""
        body, _ = self._request("POST", f"/projects/{self._project()}/withdrawals", json={"tokens": list(tokens)})
        return ErasureSummary(**body)

    def remove_party(self, project_id: str, party: str) -> ErasureSummary:
        """Erase one party's data from a project (admin secret)."""
        body, _ = self._request("DELETE", f"/projects/{project_id}/parties/{party}")
        return ErasureSummary(**body)

    def delete_project(self, project_id: str) -> ErasureSummary:
        """Erase a whole project, keeping its ledger and the audit log (admin secret)."""
        body, _ = self._request("DELETE", f"/projects/{project_id}")
        return ErasureSummary(**body)

    def expire(self, project_id: str) -> list[ErasureSummary]:
        """Erase the uploads older than the protocol's retention (admin secret); those erasures."""
        body, _ = self._request("POST", f"/projects/{project_id}/expire")
        return [ErasureSummary(**item) for item in body["erasures"]]

    def verify_audit(self) -> list[ChainStatus]:
        """Check the audit log's and every ledger's hash chain (admin secret)."""
        body, _ = self._request("GET", "/audit/verify")
        return [ChainStatus(**chain) for chain in body["chains"]]

    def query(
        self, query: str | Mapping[str, Any], *, dry_run: bool = False, target_half_width: float | None = None
    ) -> dict[str, Any]:
        """A differentially private answer (analyst credential), as the JSON of ``stats.answers.Answer``.

        Args:
            query: the query language as one string, or the query's JSON form.
            dry_run: only plan it: stated accuracy and cost, no values, nothing spent.
            target_half_width: with ``dry_run``, plan it at the least cost that gives ± this.
        """
        payload: dict[str, Any] = {"query": query} if isinstance(query, str) else {"spec": dict(query)}
        payload["dry_run"] = dry_run
        if target_half_width is not None:
            payload["target_half_width"] = target_half_width
        body, _ = self._request("POST", f"/projects/{self._project()}/queries", json=payload)
        return dict(body)

    def query_batch(self, label: str, specs: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Several answers released as one spend (analyst credential): all of them, or none.

        Args:
            label: what the ledger calls the batch (a report's title).
            specs: the queries' JSON forms, each with its cost.
        """
        payload = {"label": label, "specs": [dict(spec) for spec in specs]}
        body, _ = self._request("POST", f"/projects/{self._project()}/query-batches", json=payload)
        return [dict(answer) for answer in body["answers"]]

    def protocol_document(self) -> dict[str, Any]:
        """The project's protocol document, as the server holds it."""
        body, _ = self._request("GET", f"/projects/{self._project()}/protocol")
        return dict(body)

    def budget(self) -> dict[str, Any]:
        """The project's privacy budget and ledger, as the JSON of ``stats.budget.Budget``."""
        body, _ = self._request("GET", f"/projects/{self._project()}/budget")
        return dict(body)

    def audit(self, *, project_id: str | None = None, page: int = 1000) -> list[AuditLine]:
        """The whole audit log (admin secret needed), oldest first."""
        lines: list[AuditLine] = []
        while True:
            params: dict[str, Any] = {"after": lines[-1].id if lines else 0, "limit": page}
            if project_id:
                params["project_id"] = project_id
            body, _ = self._request("GET", "/audit", params=params)
            batch = [AuditLine(**entry) for entry in body["entries"]]
            lines.extend(batch)
            if len(batch) < page:
                return lines


def upload_files(out_dir: Path) -> list[tuple[str, Path]]:
    """The files ``pprl upload`` sends from a folder ``pprl encode`` wrote: ``(kind, path)``.

    Raises:
        InputError: one is missing.
    """
    files = [("encodings", out_dir / ENCODINGS_FILE), ("attributes", out_dir / ATTRIBUTES_FILE)]
    missing = [str(path) for _, path in files if not path.is_file()]
    if missing:
        raise InputError(
            f"{out_dir}: missing {', '.join(missing)}; pass the folder `pprl encode` wrote (keymap.csv stays local)",
            path=str(out_dir),
        )
    return files


def _run(body: Mapping[str, Any], *, created: bool = False) -> RunStatus:
    return RunStatus(
        run_id=body["run_id"],
        project_id=body["project_id"],
        status=body["status"],
        progress=body["progress"],
        message=body["message"],
        created_at=body["created_at"],
        started_at=body["started_at"],
        finished_at=body["finished_at"],
        entity_count=body["entity_count"],
        linked_records=body["linked_records"],
        created=created,
    )


def _pending(body: Mapping[str, Any]) -> PendingRequest:
    return PendingRequest(
        request_id=body["request_id"],
        project_id=body["project_id"],
        party=body["party"],
        status=body["status"],
        token_count=body["token_count"],
        token_sha256=tuple(body["token_sha256"]),
        reason=body["reason"],
        created_at=body["created_at"],
        decided_at=body["decided_at"],
        decided_by=body["decided_by"],
        note=body["note"],
    )


def _results(body: Mapping[str, Any]) -> Results:
    return Results(
        run_id=body["run_id"],
        party=body["party"],
        records=tuple(SharedToken(r["token"], tuple(r["shared_with"])) for r in body["records"]),
        parties=dict(body["parties"]),
        changes_since_run=body.get("changes_since_run"),
        changes=tuple(Change(c["token"], c["kind"], tuple(c["parties"])) for c in body.get("changes", [])),
    )


def read_tokens_file(path: Path) -> list[str]:
    """Record tokens, one per line (blank lines and ``#`` comments ignored).

    Raises:
        InputError: unreadable, empty, or a line that is not a token.
    """
    try:
        lines = path.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the tokens file ({exc.__class__.__name__})", path=str(path)) from exc
    tokens, problems = [], []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if not _TOKEN.match(text.lower()):
            problems.append(f"line {number}: not a record token (32 hex digits from keymap.csv)")
        tokens.append(text.lower())
    if problems:
        raise InputError(f"{path}: {len(problems)} line(s) are not tokens", path=str(path), problems=problems[:50])
    if not tokens:
        raise InputError(f"{path}: no tokens; write one token from keymap.csv per line", path=str(path))
    return tokens


def read_withdrawal_tokens(path: Path) -> list[str]:
    """The tokens of records to withdraw: one per line, or rows of ``keymap.csv`` (its header kept).

    A file whose first line is a CSV header starting with ``token`` (``keymap.csv``,
    ``attributes.csv``) gives the first column of each row: an agency may copy the key map's
    rows of the clients who leave. Nothing else of a row is read or sent. Values that are
    not tokens are never repeated in messages (they may be client ids).

    Raises:
        InputError: unreadable, empty, a line that is not a token (every such line is
            listed), or more tokens than one withdrawal takes.
    """
    try:
        lines = path.read_text("utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"{path}: cannot read the tokens file ({exc.__class__.__name__}); pass a UTF-8 text file with one token "
            "from keymap.csv per line",
            path=str(path),
        ) from exc
    first = next((line.strip().lower() for line in lines if line.strip()), "")
    csv_rows = first.split(",")[0].strip() == "token"
    tokens, problems, header_seen = [], [], False
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if csv_rows and not header_seen:
            header_seen = True
            continue
        cell = next(csv.reader([text]))[0].strip().lower() if csv_rows else text.lower()
        if not _TOKEN.match(cell):
            problems.append(
                f"line {number}: not a record token (32 hex digits)"
                + ("" if csv_rows or "," not in text else "; a CSV row needs a header line starting with token")
            )
            continue
        tokens.append(cell)
    if problems:
        raise InputError(
            f"{path}: {len(problems)} line(s) are not tokens; write one token from keymap.csv per line, or copy the "
            "rows of keymap.csv below its header token,client_id. Nothing was withdrawn",
            path=str(path),
            problems=problems[:50],
        )
    if not tokens:
        raise InputError(
            f"{path}: no tokens; write one token from keymap.csv per line (the records to withdraw)", path=str(path)
        )
    if len(tokens) > MAX_WITHDRAWAL_TOKENS:
        raise InputError(
            f"{path}: {len(tokens)} tokens, more than the {MAX_WITHDRAWAL_TOKENS} one withdrawal takes; split the file "
            f"into files of at most {MAX_WITHDRAWAL_TOKENS} lines and withdraw each",
            path=str(path),
        )
    return tokens


def write_shared(results: Results, keymap_path: Path | Sequence[Path], out_path: Path) -> SharedSummary:
    """Write ``client_id,shared_with`` for the released tokens, via the local key map.

    ``shared_with`` lists the other parties' ids separated by ``;``. Written to a
    temporary file and renamed.

    Raises:
        InputError: the key map cannot be read.
    """
    keymap = _read_keymaps([keymap_path] if isinstance(keymap_path, Path) else keymap_path)
    rows = [(keymap[item.token], ";".join(item.shared_with)) for item in results.records if item.token in keymap]
    unknown = sum(1 for item in results.records if item.token not in keymap)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8", opener=private_opener) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["client_id", "shared_with"])
        writer.writerows(sorted(rows))
    tmp.replace(out_path)
    return SharedSummary(out_path, len(rows), unknown)


def write_changes(results: Results, keymap_paths: Sequence[Path], out_path: Path) -> int:
    """Write ``client_id,change,parties`` for the changes since the last download.

    The key maps of every ``pprl encode`` whose tokens may appear (the first list's and each
    batch's) are read together; a token in none of them is written as ``token:HEX``.
    Written to a temporary file (0600) and renamed. Returns the number of rows.

    Raises:
        InputError: a key map cannot be read.
    """
    keymap = _read_keymaps(keymap_paths)
    rows = [
        (
            keymap.get(change.token, f"token:{change.token}"),
            change.kind,
            ";".join(change.parties),
        )
        for change in results.changes
    ]
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8", opener=private_opener) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["client_id", "change", "parties"])
        writer.writerows(sorted(rows))
    tmp.replace(out_path)
    return len(rows)


def _read_keymaps(paths: Sequence[Path]) -> dict[str, str]:
    keymap: dict[str, str] = {}
    for path in paths:
        try:
            keymap.update(read_keymap(path))
        except OSError as exc:
            raise InputError(
                f"{path}: cannot read the key map ({exc.__class__.__name__}); pass the keymap.csv files "
                "`pprl encode` wrote for the encodings you uploaded",
                path=str(path),
            ) from exc
    return keymap


def credential_files(out_dir: Path, roles: Sequence[str]) -> dict[str, Path]:
    """The token file of each role in ``out_dir``; check this before creating a project.

    Raises:
        ServiceError: a role is not a plain name (a party id or ``analyst``), so it cannot
            name a file in ``out_dir``.
        OutputExistsError: a token file exists already; tokens are never overwritten.
    """
    unsafe = [role for role in roles if not _ROLE.match(role)]
    if unsafe:
        raise ServiceError(
            f"refusing to write a token file for {unsafe[0][:40]!r}: a credential's name must be a party id or an "
            "analyst's name (lowercase letters, digits, _ and -); nothing was written"
        )
    paths = {role: out_dir / f"{role}.token" for role in roles}
    clashes = [str(path) for path in paths.values() if path.exists()]
    if clashes:
        raise OutputExistsError(
            f"{', '.join(clashes)} already exist(s); token files are never overwritten. Choose another --out-dir",
            path=clashes[0],
        )
    return paths


def write_credentials(credentials: Mapping[str, str], out_dir: Path, expected: Collection[str]) -> list[Path]:
    """Write one token file per role (``<role>.token``, mode 0600) into a folder (made 0700 if new).

    Args:
        credentials: role -> token, as the server returned them.
        out_dir: the folder.
        expected: the roles the protocol has (its party ids and ``analyst``): the server
            names the files, so anything else is refused before a file is written.

    Raises:
        ServiceError: the server returned a credential for a role the protocol does not have.
        OutputExistsError: a token file exists already; tokens are never overwritten.
    """
    unexpected = sorted(set(credentials) - set(expected))
    if unexpected:
        raise ServiceError(
            f"the server returned a credential for {unexpected[0][:40]!r}, which is not a party of the protocol "
            "nor the analysts; nothing was written. Check --server points at a pprl service you trust"
        )
    paths = credential_files(out_dir, list(credentials))
    if not out_dir.exists():
        out_dir.mkdir(parents=True, mode=0o700)
        out_dir.chmod(0o700)
    for role, token in credentials.items():
        descriptor = os.open(paths[role], os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        os.fchmod(descriptor, PRIVATE_FILE)
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(token + "\n")
    return list(paths.values())
