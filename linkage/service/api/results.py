"""Record-level results: which of the caller's own tokens other parties also know.

Only the caller's own tokens and the ids of the other parties are released, never another
party's token and never a score; only to a party the protocol allows, and only where both
records' consent flags are set. A token is listed only with the parties whose record of
that person consents, so a party that does not consent is revealed neither by a count nor
by a token's presence.

The serious-threat exception releases named tokens regardless of consent, to a party whose
protocol grants it: at most ``releases.safeguards.serious_threat_max_tokens`` tokens per
request, with a written reason of real length, and the SHA-256 of every named token in
the audit log. With ``serious_threat_approval`` the request waits until the administrator
approves it, and the party fetches the release once; every step is audited. Without it, a
party may have at most ``serious_threat_tokens_per_30_days`` tokens released in any 30 days;
a request that would pass that waits for the administrator too, so that the exception
cannot be used five tokens at a time as a bulk download.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from linkage.database import now
from linkage.errors import Conflict, Forbidden, InputError
from linkage.free_text import check_free_text, letter_count, word_count
from linkage.service.api.deps import LinkageCaller, Store
from linkage.service.batches import changes_since
from linkage.service.statistics_side import StatisticsSide
from linkage.service.store import LinkageStore, RunRecord, SharedRecord, ThreatRequest
from linkage.web import ADMIN, Caller, authorize, json_content, record

router = APIRouter(tags=["results"])

Token = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
# A party's serious-threat tokens released without approval are counted over this window,
# and one request at a time is decided against that allowance.
THREAT_WINDOW = timedelta(days=30)
_ALLOWANCE = threading.Lock()


class SharedToken(BaseModel):
    """One of your tokens and the parties that also know that client."""

    token: str
    shared_with: list[str] = Field(description="Ids of the other parties, sorted.")


class ChangeItem(BaseModel):
    """A change for one of your tokens since your last download."""

    token: str
    kind: str = Field(description="linked, unlinked or withdrawn")
    parties: list[str] = Field(default_factory=list, description="linked: the new parties; unlinked: those gone.")


class Results(BaseModel):
    """Your shared clients, from the latest completed run."""

    run_id: int = Field(description="The run's number within its project.")
    party: str
    records: list[SharedToken]
    parties: dict[str, str] = Field(description="Name of each party id that appears in shared_with.")
    changes_since_run: int | None = Field(
        default=None, description="The run of your last download, which the changes are counted from (none: first)."
    )
    changes: list[ChangeItem] = Field(default_factory=list)


MIN_REASON_LETTERS = 20
MIN_REASON_WORDS = 4


def _one_line(field: str) -> AfterValidator:
    def check(text: str) -> str:
        try:
            return check_free_text(text, field)
        except InputError as exc:
            raise ValueError(exc.message) from exc

    return AfterValidator(check)


class SeriousThreatRequest(BaseModel):
    """Named tokens, and why disclosing them prevents a serious threat."""

    model_config = ConfigDict(extra="forbid")
    tokens: list[Token] = Field(
        min_length=1,
        max_length=100,
        description="Your own record tokens; at most the protocol's releases.safeguards.serious_threat_max_tokens.",
    )
    reason: Annotated[str, _one_line("reason")] = Field(
        min_length=20,
        max_length=2000,
        description=f"Written to the audit log: at least {MIN_REASON_LETTERS} letters in {MIN_REASON_WORDS} or more "
        "different words, on one line.",
    )


class ThreatDecision(BaseModel):
    """The administrator's decision on a serious-threat request, with a note for the audit log."""

    model_config = ConfigDict(extra="forbid")
    note: Annotated[str, _one_line("note")] = Field(default="", max_length=500)


class ThreatRequestInfo(BaseModel):
    """A serious-threat request as the administrator and its party see it: never the tokens themselves."""

    request_id: str
    project_id: str
    party: str
    status: str = Field(description="pending, approved, refused or released")
    token_count: int
    token_sha256: list[str] = Field(description="SHA-256 of each named token, as the audit log has them.")
    reason: str
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    note: str


class ThreatRequestList(BaseModel):
    """Serious-threat requests, oldest first."""

    requests: list[ThreatRequestInfo]


def threat_info(request: ThreatRequest) -> ThreatRequestInfo:
    """The API view of a stored serious-threat request."""
    return ThreatRequestInfo(
        request_id=request.id,
        project_id=request.project_id,
        party=request.party,
        status=request.status,
        token_count=len(request.tokens),
        token_sha256=request.token_hashes,
        reason=request.reason,
        created_at=request.created_at,
        decided_at=request.decided_at,
        decided_by=request.decided_by,
        note=request.note,
    )


def check_reason(reason: str) -> str:
    """Refuse a serious-threat reason that is blank, padding or too short to mean anything.

    Letters are counted after spaces and invisible characters (zero-width spaces, joiners)
    are dropped, and the words must differ.

    Raises:
        InputError: naming what is missing.

    >>> check_reason("credible threat to a child, reported by her teacher")
    'credible threat to a child, reported by her teacher'
    >>> check_reason("x" * 20)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    linkage.errors.InputError: reason: 20 letters in 1 different word(s); ...
    """
    letters, words = letter_count(reason), word_count(reason)
    if letters < MIN_REASON_LETTERS or words < MIN_REASON_WORDS:
        raise InputError(
            f"reason: {letters} letters in {words} different word(s); the serious-threat exception needs a written "
            f"reason of at least {MIN_REASON_LETTERS} letters in {MIN_REASON_WORDS} or more different words, saying "
            "what threat the disclosure prevents",
            field="reason",
        )
    return reason.strip()


def release(
    shared: Sequence[SharedRecord], party: str, consent: Mapping[tuple[str, str], bool] | None
) -> list[SharedToken]:
    """What may be released of the shared records: party ids only, filtered by consent.

    Args:
        shared: the party's shared records, as the linkage store found them.
        party: the party asking.
        consent: ``(party, token) -> consent``; a record missing from it has none. ``None``
            releases regardless of consent (the serious-threat exception).

    >>> shared = [SharedRecord("a" * 32, (("haven", "b" * 32), ("police", "c" * 32)))]
    >>> release(shared, "msd", {("msd", "a" * 32): True, ("haven", "b" * 32): True})
    [SharedToken(token='aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', shared_with=['haven'])]
    >>> release(shared, "msd", {("msd", "a" * 32): False, ("haven", "b" * 32): True})
    []
    """
    released = []
    for item in shared:
        if consent is not None and not consent.get((party, item.token), False):
            continue
        parties = sorted(
            {other for other, token in item.others if consent is None or consent.get((other, token), False)}
        )
        if parties:
            released.append(SharedToken(token=item.token, shared_with=parties))
    return released


def _latest(store: LinkageStore, project_id: str) -> RunRecord:
    run = store.latest_done_run(project_id)
    if run is None:
        raise Conflict("no run of this project has completed yet; start one with `pprl run --wait`")
    return run


def _results(store: LinkageStore, project_id: str, run: RunRecord, party: str, records: list[SharedToken]) -> Results:
    protocol = store.protocol(project_id)
    named = {other for item in records for other in item.shared_with}
    return Results(
        run_id=run.number,
        party=party,
        records=records,
        parties={p.id: p.name for p in protocol.parties if p.id in named},
    )


@router.get("/projects/{project_id}/results", name="results.download")
def download_results(request: Request, project_id: str, caller: LinkageCaller, store: Store) -> Results:
    """Your tokens that other parties also know (consented at both ends), with those parties."""
    authorize(caller, project_id, ("party",), "download record-level results")
    assert caller.party is not None  # noqa: S101 - a party credential always names its party
    rule = store.protocol(project_id).record_level[caller.party]
    if not rule.allowed:
        hint = (
            "; for a serious threat, name the tokens and give a reason (`pprl results --serious-threat`)"
            if rule.serious_threat
            else ""
        )
        raise Forbidden(f"the protocol does not allow record-level results for party {caller.party!r}{hint}")
    run = _latest(store, project_id)
    shared = store.shared_records(run.id, caller.party)
    keys = {(caller.party, item.token) for item in shared} | {other for item in shared for other in item.others}
    stats: StatisticsSide = request.app.state.statistics_side
    records = release(shared, caller.party, stats.consent(project_id, keys))
    ids = store.party_entity_ids(run.id, caller.party)
    now_view = {item.token: (ids[item.token], tuple(item.shared_with)) for item in records}
    before = store.last_download(project_id, caller.party)
    changes = (
        changes_since(
            {token: parties for token, (_, parties) in before.tokens.items()},
            {token: parties for token, (_, parties) in now_view.items()},
            store.party_tokens(project_id, caller.party),
        )
        if before is not None
        else []
    )
    store.save_download(project_id, caller.party, run.number, now_view)
    record(
        request,
        caller,
        project_id,
        "ok",
        f"run {run.number}: {len(records)} records released, {len(changes)} changes since the last download",
    )
    released = _results(store, project_id, run, caller.party, records)
    return released.model_copy(
        update={
            "changes_since_run": None if before is None else before.run_number,
            "changes": [
                ChangeItem(token=change.token, kind=change.kind, parties=list(change.parties)) for change in changes
            ],
        }
    )


def _threat_party(store: LinkageStore, project_id: str, caller: Caller) -> str:
    """The calling party, after checking the protocol gives it the serious-threat exception."""
    assert caller.party is not None  # noqa: S101 - a party credential always names its party
    if not store.protocol(project_id).record_level[caller.party].serious_threat:
        raise Forbidden(
            f"the protocol does not give party {caller.party!r} the serious-threat exception; only a party with "
            "a public-safety mandate can be given it"
        )
    return caller.party


def _audit_detail(request: ThreatRequest, what: str) -> str:
    hashes = ", ".join(request.token_hashes)
    named = f"{len(request.tokens)} token(s) named, sha256 {hashes}"
    return f"request {request.id}: {what}; {named}; reason: {request.reason}"


def _release_threat(
    http: Request, store: LinkageStore, caller: Caller, request: ThreatRequest, outcome: str
) -> Results:
    run = _latest(store, request.project_id)
    records = release(store.shared_records(run.id, request.party, request.tokens), request.party, None)
    # Written before anything is released: no audit line, no disclosure.
    detail = _audit_detail(request, f"run {run.number}: {len(records)} shared")
    record(http, caller, request.project_id, outcome, detail)
    return _results(store, request.project_id, run, request.party, records)


@router.post(
    "/projects/{project_id}/results/serious-threat",
    name="results.serious_threat",
    dependencies=[Depends(json_content)],
    response_model=Results,
    responses={
        202: {
            "model": ThreatRequestInfo,
            "description": "The protocol requires the administrator's approval: the request waits (pending).",
        }
    },
)
def serious_threat(
    request: Request, project_id: str, body: SeriousThreatRequest, caller: LinkageCaller, store: Store
) -> Results | JSONResponse:
    """Named tokens' shared parties regardless of consent, under the serious-threat exception (audited).

    At most ``releases.safeguards.serious_threat_max_tokens`` tokens, with a reason of real
    length. When the protocol requires approval, the request is stored pending (202) and
    released only after the administrator approves it.
    """
    authorize(caller, project_id, ("party",), "invoke the serious-threat exception")
    party = _threat_party(store, project_id, caller)
    safeguards = store.protocol(project_id).safeguards
    named = sorted(set(body.tokens))
    if len(named) > safeguards.serious_threat_max_tokens:
        raise InputError(
            f"tokens: {len(named)} named, but the protocol allows at most {safeguards.serious_threat_max_tokens} per "
            "serious-threat request (releases.safeguards.serious_threat_max_tokens); the exception is for the "
            "people the threat concerns, not a bulk download",
            field="tokens",
        )
    reason = check_reason(body.reason)
    # One request at a time decides against the allowance, so that requests sent together
    # cannot all pass it (the service is one process).
    with _ALLOWANCE:
        waits = "waits for the administrator"
        if not safeguards.serious_threat_approval:
            allowance = safeguards.serious_threat_tokens_per_30_days
            recent = _released_without_approval(store, project_id, party)
            if len(recent | set(named)) <= allowance:
                _latest(store, project_id)
                released = store.create_threat_request(project_id, party, named, reason, "released")
                return _release_threat(request, store, caller, released, "ok")
            waits += (
                f": {len(recent)} token(s) released without approval in the last {THREAT_WINDOW.days} days, "
                f"and the protocol allows {allowance} (releases.safeguards.serious_threat_tokens_per_30_days)"
            )
        pending = store.create_threat_request(project_id, party, named, reason, "pending")
    record(request, caller, project_id, "pending", _audit_detail(pending, waits))
    return JSONResponse(threat_info(pending).model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)


def _released_without_approval(store: LinkageStore, project_id: str, party: str) -> set[str]:
    """The tokens released to a party under the exception without approval in the last 30 days."""
    since = now() - THREAT_WINDOW
    return {
        token
        for past in store.threat_requests(project_id, party)
        if past.status == "released" and past.decided_by is None and past.created_at >= since
        for token in past.tokens
    }


@router.get("/projects/{project_id}/serious-threat-requests", name="serious_threat.list")
def list_threat_requests(project_id: str, caller: LinkageCaller, store: Store) -> ThreatRequestList:
    """Serious-threat requests: all of the project's for the administrator, its own for a party."""
    authorize(caller, project_id, (ADMIN, "party"), "list serious-threat requests")
    store.project(project_id)
    requests = store.threat_requests(project_id, None if caller.role == ADMIN else caller.party)
    return ThreatRequestList(requests=[threat_info(item) for item in requests])


@router.post(
    "/projects/{project_id}/serious-threat-requests/{request_id}/approve",
    name="serious_threat.approve",
    dependencies=[Depends(json_content)],
)
def approve_threat_request(
    request: Request, project_id: str, request_id: str, body: ThreatDecision, caller: LinkageCaller, store: Store
) -> ThreatRequestInfo:
    """Approve a pending serious-threat request (administrator only): its party may then fetch it once."""
    return _decide(request, project_id, request_id, body, caller, store, "approved")


@router.post(
    "/projects/{project_id}/serious-threat-requests/{request_id}/refuse",
    name="serious_threat.refuse",
    dependencies=[Depends(json_content)],
)
def refuse_threat_request(
    request: Request, project_id: str, request_id: str, body: ThreatDecision, caller: LinkageCaller, store: Store
) -> ThreatRequestInfo:
    """Refuse a pending serious-threat request (administrator only); nothing is released."""
    return _decide(request, project_id, request_id, body, caller, store, "refused")


@router.get("/projects/{project_id}/serious-threat-requests/{request_id}/results", name="serious_threat.fetch")
def fetch_threat_results(
    request: Request, project_id: str, request_id: str, caller: LinkageCaller, store: Store
) -> Results:
    """Fetch an approved serious-threat request's release, once (the party that made it)."""
    authorize(caller, project_id, ("party",), "fetch a serious-threat release")
    party = _threat_party(store, project_id, caller)
    pending = store.threat_request(project_id, request_id[:16])
    if pending.party != party:
        raise Forbidden(f"serious-threat request {pending.id!r} is another party's; fetch only your own requests")
    if pending.status == "refused":
        raise Forbidden(f"the administrator refused serious-threat request {pending.id!r}: {pending.note or '-'}")
    _latest(store, project_id)
    fetched = store.decide_threat_request(project_id, pending.id, before="approved", after="released", by=caller.actor)
    return _release_threat(request, store, caller, fetched, "released")


def _decide(
    request: Request,
    project_id: str,
    request_id: str,
    body: ThreatDecision,
    caller: LinkageCaller,
    store: Store,
    verdict: Literal["approved", "refused"],
) -> ThreatRequestInfo:
    """Move a pending serious-threat request to ``verdict`` (administrator only) and audit the decision."""
    verb = "approve" if verdict == "approved" else "refuse"
    authorize(caller, project_id, (ADMIN,), f"{verb} serious-threat requests")
    store.project(project_id)
    decided = store.decide_threat_request(
        project_id, request_id[:16], before="pending", after=verdict, by=caller.actor, note=body.note
    )
    record(request, caller, project_id, verdict, _audit_detail(decided, f"{verdict}; note: {body.note}"))
    return threat_info(decided)
