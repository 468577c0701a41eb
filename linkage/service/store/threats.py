"""Serious-threat requests: which of its tokens a party named, why, and the administrator's decision."""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select, update

from linkage.database import now
from linkage.errors import Conflict, NotFound
from linkage.service.store.projects import ProjectStore
from linkage.service.store.records import ThreatRequest, _threat
from linkage.service.store.tables import threat_requests


class ThreatStore(ProjectStore):
    """Serious-threat requests, their decisions and their one release."""

    def create_threat_request(
        self, project_id: str, party: str, tokens: Sequence[str], reason: str, status: str
    ) -> ThreatRequest:
        """Store a serious-threat request (``pending`` until the administrator decides, or ``approved``)."""
        request = ThreatRequest(
            id=secrets.token_hex(8),
            project_id=project_id,
            party=party,
            tokens=tuple(sorted(set(tokens))),
            reason=reason,
            status=status,
            created_at=now(),
            decided_at=None,
            decided_by=None,
            note="",
        )
        with self._write() as conn:
            conn.execute(
                insert(threat_requests).values(
                    id=request.id,
                    project_id=project_id,
                    party=party,
                    tokens=json.dumps(list(request.tokens)),
                    reason=reason,
                    status=status,
                    created_at=request.created_at,
                    note="",
                )
            )
        return request

    def threat_request(self, project_id: str, request_id: str) -> ThreatRequest:
        """A serious-threat request of this project.

        Raises:
            NotFound: no such request in this project.
        """
        with self._read() as conn:
            row = conn.execute(
                select(threat_requests).where(
                    threat_requests.c.id == request_id, threat_requests.c.project_id == project_id
                )
            ).first()
        if row is None:
            raise NotFound(
                f"no serious-threat request {request_id!r} in project {project_id!r}; "
                "`pprl serious-threat list` shows the requests"
            )
        return _threat(row)

    def threat_requests(self, project_id: str, party: str | None = None) -> list[ThreatRequest]:
        """The project's serious-threat requests (of one party), oldest first."""
        query = (
            select(threat_requests)
            .where(threat_requests.c.project_id == project_id)
            .order_by(threat_requests.c.created_at)
        )
        if party is not None:
            query = query.where(threat_requests.c.party == party)
        with self._read() as conn:
            return [_threat(row) for row in conn.execute(query)]

    def decide_threat_request(
        self, project_id: str, request_id: str, *, before: str, after: str, by: str, note: str = ""
    ) -> ThreatRequest:
        """Move a request from status ``before`` to ``after`` (approve, refuse, release), atomically.

        Raises:
            NotFound: no such request.
            Conflict: the request is not in status ``before`` (decided or released already).
        """
        current = self.threat_request(project_id, request_id)
        values: dict[str, Any] = {"status": after}
        if after in ("approved", "refused"):
            values |= {"decided_at": now(), "decided_by": by, "note": note}
        with self._write() as conn:
            changed = conn.execute(
                update(threat_requests)
                .where(
                    threat_requests.c.id == request_id,
                    threat_requests.c.project_id == project_id,
                    threat_requests.c.status == before,
                )
                .values(**values)
            ).rowcount
        if not changed:
            raise Conflict(
                f"serious-threat request {request_id!r} is {current.status}, not {before}; "
                + {
                    "pending": "it waits for the administrator (`pprl serious-threat approve`)",
                    "approved": "the party can fetch it once (`pprl results --request ID`)",
                    "refused": "it was refused; make a new request if the threat persists",
                    "released": "it was fetched already; make a new request to fetch again",
                }[current.status]
            )
        return self.threat_request(project_id, request_id)
