"""Record-level results: which of the caller's own tokens other parties also know.

Only the caller's own tokens and the ids of the other parties are released, never another
party's token and never a score; only to a party the protocol allows, and only where both
records' consent flags are set. The serious-threat exception releases named tokens
regardless of consent, to a party whose protocol grants it, with a reason in the audit log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from linkage.errors import Conflict, Forbidden
from linkage.service.api.deps import LinkageCaller, Store
from linkage.service.statistics_side import StatisticsSide
from linkage.service.store import LinkageStore, RunRecord, SharedRecord
from linkage.web import authorize, json_content, record

router = APIRouter(tags=["results"])

Token = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]


class SharedToken(BaseModel):
    """One of your tokens and the parties that also know that client."""

    token: str
    shared_with: list[str] = Field(description="Ids of the other parties, sorted.")


class Results(BaseModel):
    """Your shared clients, from the latest completed run."""

    run_id: int
    party: str
    records: list[SharedToken]
    parties: dict[str, str] = Field(description="Name of each party id that appears in shared_with.")


class SeriousThreatRequest(BaseModel):
    """Named tokens, and why disclosing them prevents a serious threat."""

    model_config = ConfigDict(extra="forbid")
    tokens: list[Token] = Field(min_length=1, max_length=10_000, description="Your own record tokens.")
    reason: str = Field(min_length=20, max_length=2000, description="Written to the audit log.")


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
        run_id=run.id,
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
    record(request, caller, project_id, "ok", f"run {run.id}: {len(records)} records released")
    return _results(store, project_id, run, caller.party, records)


@router.post(
    "/projects/{project_id}/results/serious-threat",
    name="results.serious_threat",
    dependencies=[Depends(json_content)],
)
def serious_threat(
    request: Request, project_id: str, body: SeriousThreatRequest, caller: LinkageCaller, store: Store
) -> Results:
    """Named tokens' shared parties regardless of consent, under the serious-threat exception (audited)."""
    authorize(caller, project_id, ("party",), "invoke the serious-threat exception")
    assert caller.party is not None  # noqa: S101 - a party credential always names its party
    if not store.protocol(project_id).record_level[caller.party].serious_threat:
        raise Forbidden(
            f"the protocol does not give party {caller.party!r} the serious-threat exception; only a party with "
            "a public-safety mandate can be given it"
        )
    run = _latest(store, project_id)
    records = release(store.shared_records(run.id, caller.party, body.tokens), caller.party, None)
    # Written before anything is released: no audit line, no disclosure.
    record(
        request,
        caller,
        project_id,
        "ok",
        f"run {run.id}: {len(set(body.tokens))} tokens named, {len(records)} shared; reason: {body.reason.strip()}",
    )
    return _results(store, project_id, run, caller.party, records)
