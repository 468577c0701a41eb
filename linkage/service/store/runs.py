"""Runs, their entities and stable mappings, the linkage state, downloads and the frozen model."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from linkage.database import now
from linkage.errors import Conflict, NotFound
from linkage.file_modes import shred_file
from linkage.matching.engine import LinkResult
from linkage.protocol import Safeguards
from linkage.service.store.records import (
    DownloadRecord,
    LinkStateRecord,
    RunRecord,
    SharedRecord,
    StartedRun,
    _run,
    _utc,
)
from linkage.service.store.tables import (
    _CHUNK,
    ACTIVE_STATUSES,
    batches,
    download_runs,
    downloads,
    entities,
    entity_marks,
    frozen_models,
    link_states,
    projects,
    runs,
    stable_entities,
)
from linkage.service.store.uploads import UploadStore

MAX_RUN_ATTEMPTS = 3


def _entity_rows(
    run_id: int, result: LinkResult, found: Sequence[Any], entity_ids: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    numbers = list(entity_ids) if entity_ids is not None else list(range(1, len(found) + 1))
    return [
        {
            "run_id": run_id,
            "entity_id": number,
            "party": result.parties[party],
            "token": result.tokens[party][record].tobytes().hex(),
        }
        for number, entity in zip(numbers, found, strict=True)
        for party, record in entity.records
    ]


class RunStore(UploadStore):
    """Runs from queued to done, their entities, the linkage state, downloads and the frozen model."""

    def runs_started_by(self, project_id: str, actor: str, *, since: datetime | None = None) -> int:
        """How many runs of the project ``actor`` queued (since a time), not counting failed ones."""
        query = select(func.count()).where(
            runs.c.project_id == project_id, runs.c.started_by == actor, runs.c.status != "failed"
        )
        if since is not None:
            query = query.where(runs.c.created_at >= since)
        with self._read() as conn:
            return int(conn.execute(query).scalar_one())

    def start_run(self, project_id: str, started_by: str = "admin", *, limited: bool = False) -> StartedRun:
        """Queue a run, or return the one already queued or running (never two at once).

        Args:
            project_id: the project.
            started_by: who asks (``party:msd``, ``admin``), as the audit log names them.
            limited: hold the caller to the protocol's ``max_runs_per_party`` (parties are).

        Returns:
            The run, whether it was queued now, and the parties whose encodings differ from
            those of the project's previous run (a replace-then-run, which the audit flags).

        Raises:
            Conflict: a party has not uploaded its encodings yet, or the caller has started
                as many runs as the protocol allows.
        """
        protocol = self.protocol(project_id)
        current = self.uploads(project_id)
        removed = self.removed_parties(project_id)
        missing = [p.id for p in protocol.parties if p.id not in current and p.id not in removed]
        if missing:
            raise Conflict(
                f"waiting for encodings from {', '.join(missing)}; every party of the protocol must upload "
                "(`pprl upload`) before a run can start"
            )
        active = self.active_run(project_id)
        if active is not None:
            return StartedRun(active, False)
        if limited:
            self._check_run_limit(project_id, started_by, protocol.safeguards)
        inputs = {party: upload.body_sha256 for party, upload in sorted(current.items())}
        try:
            with self._write() as conn:
                # The project's row lock orders this against an erasure starting (begin_erasure).
                conn.execute(select(projects.c.id).where(projects.c.id == project_id).with_for_update())
                self._refuse_if_erasing(conn, project_id, "start a run")
                existing = conn.execute(
                    select(runs).where(runs.c.project_id == project_id, runs.c.status.in_(ACTIVE_STATUSES))
                ).first()
                if existing is not None:
                    return StartedRun(_run(existing), False)
                previous = conn.execute(
                    select(runs.c.inputs).where(runs.c.project_id == project_id).order_by(runs.c.id.desc()).limit(1)
                ).scalar()
                number = conn.execute(
                    select(func.coalesce(func.max(runs.c.number), 0)).where(runs.c.project_id == project_id)
                ).scalar_one()
                inserted = conn.execute(
                    insert(runs).values(
                        project_id=project_id,
                        status="queued",
                        progress=0.0,
                        message="",
                        inputs=json.dumps(inputs),
                        attempts=0,
                        created_at=now(),
                        number=int(number) + 1,
                        started_by=started_by,
                    )
                ).inserted_primary_key
        except IntegrityError:
            # Another request queued one between our check and insert; that one stands.
            active = self.active_run(project_id)
            if active is None:
                raise
            return StartedRun(active, False)
        assert inserted is not None  # noqa: S101 - an INSERT always has a primary key
        before = json.loads(previous) if previous else {}
        replaced = tuple(party for party, sha in inputs.items() if party in before and before[party] != sha)
        return StartedRun(self._run_by_id(int(inserted[0])), True, replaced)

    def _check_run_limit(self, project_id: str, started_by: str, safeguards: Safeguards) -> None:
        days = safeguards.run_period_days
        since = now() - timedelta(days=days) if days else None
        started = self.runs_started_by(project_id, started_by, since=since)
        if started >= safeguards.max_runs_per_party:
            period = f"in the last {days} days" if days else "in this project"
            raise Conflict(
                f"{started_by} has started {started} runs {period}, the most the protocol allows "
                f"(releases.safeguards.max_runs_per_party = {safeguards.max_runs_per_party}): repeated runs "
                "would let a party difference what it sees. Use the results of the latest run, or ask the "
                "administrator, who may start a run (`pprl run --project ID --token-file admin.secret`)"
            )

    def _run_by_id(self, run_id: int) -> RunRecord:
        with self._read() as conn:
            return _run(conn.execute(select(runs).where(runs.c.id == run_id)).one())

    def run(self, project_id: str, number: int) -> RunRecord:
        """The run of this project with this number.

        Raises:
            NotFound: no such run in this project.
        """
        with self._read() as conn:
            row = conn.execute(select(runs).where(runs.c.number == number, runs.c.project_id == project_id)).first()
        if row is None:
            raise NotFound(f"no run {number} in project {project_id!r}; `pprl run` prints the id of a new run")
        return _run(row)

    def latest_done_run(self, project_id: str) -> RunRecord | None:
        """The project's most recent completed run, whose entities are the current results."""
        with self._read() as conn:
            row = conn.execute(
                select(runs)
                .where(runs.c.project_id == project_id, runs.c.status == "done")
                .order_by(runs.c.id.desc())
                .limit(1)
            ).first()
        return None if row is None else _run(row)

    def claim_next_run(self) -> RunRecord | None:
        """Mark the oldest queued run running and return it (``None`` if none is queued)."""
        with self._write() as conn:
            row = conn.execute(select(runs).where(runs.c.status == "queued").order_by(runs.c.id).limit(1)).first()
            if row is None:
                return None
            claimed = conn.execute(
                update(runs)
                .where(runs.c.id == row.id, runs.c.status == "queued")
                .values(status="running", started_at=now(), attempts=runs.c.attempts + 1, progress=0.0)
            ).rowcount
            if not claimed:
                return None
            fresh = conn.execute(select(runs).where(runs.c.id == row.id)).one()
        return _run(fresh)

    def run_inputs(self, run_id: int) -> list[tuple[str, Path]]:
        """The ``(party, encodings path)`` a run links, as recorded when it was queued."""
        with self._read() as conn:
            inputs = json.loads(conn.execute(select(runs.c.inputs).where(runs.c.id == run_id)).scalar_one())
        return [(party, self.blob_path(sha)) for party, sha in inputs.items()]

    def set_progress(self, run_id: int, progress: float) -> None:
        """Record how far a running run is (0 to 1)."""
        with self._write() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id, runs.c.status == "running").values(progress=progress))

    def store_entities(
        self, run_id: int, result: LinkResult, entity_ids: Sequence[int] | None = None
    ) -> tuple[int, int]:
        """Store a running run's entities in one transaction, replacing those of an interrupted attempt.

        Its stable mapping too, and, if the project has no frozen model yet, the model the
        run froze. They become results only when :meth:`finish_run` marks the run done.
        ``entity_ids`` gives each of ``result.entities`` its id (carried over from the
        previous run, :func:`linkage.service.batches.carry_run_ids`); ``None`` numbers them 1, 2, ...

        Returns:
            The number of entities and of records in them.
        """
        rows = _entity_rows(run_id, result, result.entities, entity_ids)
        stable = _entity_rows(run_id, result, result.stable.entities) if result.stable is not None else []
        with self._write() as conn:
            conn.execute(delete(entities).where(entities.c.run_id == run_id))
            conn.execute(delete(stable_entities).where(stable_entities.c.run_id == run_id))
            for start in range(0, len(rows), _CHUNK):
                conn.execute(insert(entities), rows[start : start + _CHUNK])
            for start in range(0, len(stable), _CHUNK):
                conn.execute(insert(stable_entities), stable[start : start + _CHUNK])
            if result.model is not None:
                self._freeze_model(conn, run_id, result)
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(progress=0.97, entity_count=len(result.entities), linked_records=len(rows))
            )
        return len(result.entities), len(rows)

    def finish_run(
        self,
        run_id: int,
        *,
        state: tuple[str, int] | None = None,
        batch_ids: Sequence[int] = (),
        next_entity: int | None = None,
    ) -> RunRecord:
        """Mark a run done: its entities become the project's results, in one transaction.

        The entities of the project's earlier runs are dropped in the same transaction, and
        so is the project's linkage state unless the run made a new one (``state``: its
        file name under :attr:`state_dir` and the next entity id); the batches it linked
        (``batch_ids``) are marked linked. The project's next entity id (:meth:`next_entity`)
        is raised past the run's ids, the state's next id and ``next_entity`` (the next id a
        full run did not give out). The files no row names any more are shredded after.
        """
        with self._write() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).one()
            highest = max(
                conn.execute(
                    select(func.coalesce(func.max(table.c.entity_id), 0)).where(table.c.run_id == run_id)
                ).scalar_one()
                for table in (entities, stable_entities)
            )
            candidates = [int(highest) + 1, next_entity or 1, state[1] if state is not None else 1]
            self._raise_next_entity(conn, row.project_id, max(candidates))
            earlier = select(runs.c.id).where(runs.c.project_id == row.project_id, runs.c.id != run_id)
            conn.execute(delete(entities).where(entities.c.run_id.in_(earlier)))
            conn.execute(delete(stable_entities).where(stable_entities.c.run_id.in_(earlier)))
            old_state = conn.execute(
                select(link_states.c.name).where(link_states.c.project_id == row.project_id)
            ).scalar_one_or_none()
            conn.execute(delete(link_states).where(link_states.c.project_id == row.project_id))
            if state is not None:
                conn.execute(
                    insert(link_states).values(
                        project_id=row.project_id, run_id=run_id, name=state[0], next_entity=state[1]
                    )
                )
            blobs = []
            if batch_ids:
                blobs = [
                    sha
                    for sha in conn.execute(
                        select(batches.c.body_sha256).where(batches.c.id.in_(list(batch_ids)))
                    ).scalars()
                    if sha
                ]
                conn.execute(
                    update(batches)
                    .where(batches.c.id.in_(list(batch_ids)))
                    .values(status="linked", tokens=None, run_id=run_id)
                )
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    status="done",
                    progress=1.0,
                    finished_at=now(),
                    message=f"linked {row.linked_records} records into {row.entity_count} entities",
                )
            )
            done = _run(conn.execute(select(runs).where(runs.c.id == run_id)).one())
        if old_state is not None and (state is None or old_state != state[0]):
            shred_file(self.state_dir / old_state)
        for sha in blobs:
            self._drop_blob_if_unused(sha)
        return done

    def fail_run(self, run_id: int, message: str) -> None:
        """Mark a run failed with a message for the parties (no paths, no data); drop its entities."""
        with self._write() as conn:
            conn.execute(delete(entities).where(entities.c.run_id == run_id))
            conn.execute(delete(stable_entities).where(stable_entities.c.run_id == run_id))
            conn.execute(
                update(runs).where(runs.c.id == run_id).values(status="failed", finished_at=now(), message=message)
            )

    def requeue_interrupted(self) -> tuple[list[RunRecord], list[RunRecord]]:
        """After a restart: queue again the runs left running, or fail those interrupted too often.

        Returns:
            The runs re-queued and the runs failed (as they were before).
        """
        with self._write() as conn:
            rows = [_run(row) for row in conn.execute(select(runs).where(runs.c.status == "running"))]
            again = [row.id for row in rows if row.attempts < MAX_RUN_ATTEMPTS]
            failed = [row.id for row in rows if row.attempts >= MAX_RUN_ATTEMPTS]
            if again:
                conn.execute(
                    update(runs).where(runs.c.id.in_(again)).values(status="queued", progress=0.0, started_at=None)
                )
            if failed:
                conn.execute(
                    update(runs)
                    .where(runs.c.id.in_(failed))
                    .values(
                        status="failed",
                        finished_at=now(),
                        message=f"the server stopped during this run {MAX_RUN_ATTEMPTS} times; "
                        "check its memory and logs, then start a new run",
                    )
                )
        return [r for r in rows if r.id in again], [r for r in rows if r.id in failed]

    def entity_rows(self, run_id: int, *, stable: bool = False) -> Iterator[list[tuple[int, str, str]]]:
        """A run's ``(entity_id, party, token)`` rows, in chunks; with ``stable``, its stable mapping's."""
        table = stable_entities if stable else entities
        with self._read() as conn:
            result = conn.execution_options(yield_per=_CHUNK).execute(
                select(table.c.entity_id, table.c.party, table.c.token)
                .where(table.c.run_id == run_id)
                .order_by(table.c.entity_id, table.c.party)
            )
            for chunk in result.partitions():
                yield [(row.entity_id, row.party, row.token) for row in chunk]

    def shared_records(self, run_id: int, party: str, tokens: Iterable[str] | None = None) -> list[SharedRecord]:
        """The party's tokens that share an entity with other parties, and those records.

        Args:
            run_id: a done run.
            party: the party asking.
            tokens: only these of its tokens (``None``: all).
        """
        mine = entities.alias("mine")
        other = entities.alias("other")
        query = (
            select(mine.c.token, other.c.party, other.c.token.label("other_token"))
            .join(other, and_(other.c.run_id == mine.c.run_id, other.c.entity_id == mine.c.entity_id))
            .where(mine.c.run_id == run_id, mine.c.party == party, other.c.party != party)
            .order_by(mine.c.token, other.c.party)
        )
        wanted = None if tokens is None else sorted(set(tokens))
        found: dict[str, list[tuple[str, str]]] = {}
        with self._read() as conn:
            batches = [None] if wanted is None else [wanted[i : i + 500] for i in range(0, len(wanted), 500)]
            for batch in batches:
                statement = query if batch is None else query.where(mine.c.token.in_(batch))
                for row in conn.execute(statement):
                    found.setdefault(row.token, []).append((row.party, row.other_token))
        return [SharedRecord(token, tuple(others)) for token, others in sorted(found.items())]

    def next_entity(self, project_id: str) -> int:
        """The first entity id the project never gave out (1 before its first run); ids only grow."""
        with self._read() as conn:
            mark = conn.execute(
                select(entity_marks.c.next_entity).where(entity_marks.c.project_id == project_id)
            ).scalar_one_or_none()
        return 1 if mark is None else int(mark)

    @staticmethod
    def _raise_next_entity(conn: Connection, project_id: str, next_entity: int) -> None:
        """Raise the project's next entity id to ``next_entity`` (never lower it), in ``conn``'s transaction."""
        current = conn.execute(
            select(entity_marks.c.next_entity).where(entity_marks.c.project_id == project_id).with_for_update()
        ).scalar_one_or_none()
        if current is None:
            conn.execute(insert(entity_marks).values(project_id=project_id, next_entity=next_entity))
        elif int(current) < next_entity:
            conn.execute(
                update(entity_marks).where(entity_marks.c.project_id == project_id).values(next_entity=next_entity)
            )

    def link_state(self, project_id: str) -> LinkStateRecord | None:
        """The project's linkage state, if its latest run made one."""
        with self._read() as conn:
            row = conn.execute(select(link_states).where(link_states.c.project_id == project_id)).first()
        if row is None:
            return None
        return LinkStateRecord(row.project_id, row.run_id, self.state_dir / row.name, int(row.next_entity))

    def run_input_shas(self, run_id: int) -> dict[str, str]:
        """Per party, the SHA-256 of the encodings a run linked (as recorded when it was queued)."""
        with self._read() as conn:
            return dict(json.loads(conn.execute(select(runs.c.inputs).where(runs.c.id == run_id)).scalar_one()))

    def entity_ids(self, run_id: int) -> dict[tuple[str, str], int]:
        """A run's entity id of each ``(party, token)`` it linked."""
        out: dict[tuple[str, str], int] = {}
        for chunk in self.entity_rows(run_id):
            out.update(((party, token), entity) for entity, party, token in chunk)
        return out

    def party_entity_ids(self, run_id: int, party: str) -> dict[str, int]:
        """A run's entity id of each of one party's tokens it linked."""
        with self._read() as conn:
            rows = conn.execute(
                select(entities.c.token, entities.c.entity_id).where(
                    entities.c.run_id == run_id, entities.c.party == party
                )
            ).all()
        return {row.token: int(row.entity_id) for row in rows}

    def store_entity_rows(
        self, run_id: int, rows: Sequence[tuple[int, str, str]], stable_rows: Sequence[tuple[int, str, str]]
    ) -> tuple[int, int]:
        """Store a running run's ``(entity_id, party, token)`` rows: its entities and its stable mapping.

        For a run that linked batches (one transaction, replacing those of an interrupted attempt).

        Returns:
            The number of entities and of records in them.
        """
        count = len({e for e, _, _ in rows})
        with self._write() as conn:
            for table, chosen in ((entities, rows), (stable_entities, stable_rows)):
                values = [{"run_id": run_id, "entity_id": e, "party": p, "token": t} for e, p, t in chosen]
                conn.execute(delete(table).where(table.c.run_id == run_id))
                for start in range(0, len(values), _CHUNK):
                    conn.execute(insert(table), values[start : start + _CHUNK])
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(progress=0.97, entity_count=count, linked_records=len(rows))
            )
        return count, len(rows)

    def last_download(self, project_id: str, party: str) -> DownloadRecord | None:
        """What the party was given at its last results download, or ``None`` before its first."""
        with self._read() as conn:
            mark = conn.execute(
                select(download_runs).where(download_runs.c.project_id == project_id, download_runs.c.party == party)
            ).first()
            if mark is None:
                return None
            rows = conn.execute(
                select(downloads.c.token, downloads.c.entity_id, downloads.c.shared_with).where(
                    downloads.c.project_id == project_id, downloads.c.party == party
                )
            ).all()
        tokens = {row.token: (int(row.entity_id), tuple(filter(None, row.shared_with.split(";")))) for row in rows}
        at = _utc(mark.at)
        assert at is not None  # noqa: S101 - the column is NOT NULL
        return DownloadRecord(int(mark.run_number), at, tokens)

    def save_download(
        self, project_id: str, party: str, run_number: int, tokens: Mapping[str, tuple[int, Sequence[str]]]
    ) -> None:
        """Keep what the party was given now, replacing its previous download's, in one transaction."""
        values = [
            {"project_id": project_id, "party": party, "token": t, "entity_id": e, "shared_with": ";".join(w)}
            for t, (e, w) in sorted(tokens.items())
        ]
        with self._write() as conn:
            where = (downloads.c.project_id == project_id, downloads.c.party == party)
            conn.execute(delete(downloads).where(*where))
            for start in range(0, len(values), _CHUNK):
                conn.execute(insert(downloads), values[start : start + _CHUNK])
            conn.execute(
                delete(download_runs).where(download_runs.c.project_id == project_id, download_runs.c.party == party)
            )
            conn.execute(
                insert(download_runs).values(project_id=project_id, party=party, run_number=run_number, at=now())
            )

    def frozen_model(self, project_id: str) -> dict[str, Any] | None:
        """The project's frozen model document (:meth:`FrozenModel.to_json`), or ``None`` before its first run."""
        with self._read() as conn:
            document = conn.execute(
                select(frozen_models.c.document).where(frozen_models.c.project_id == project_id)
            ).scalar_one_or_none()
        return None if document is None else dict(json.loads(document))

    def _freeze_model(self, conn: Any, run_id: int, result: LinkResult) -> None:
        """Keep the model a run froze as its project's, unless the project has one already."""
        project_id = conn.execute(select(runs.c.project_id).where(runs.c.id == run_id)).scalar_one()
        known = conn.execute(select(frozen_models.c.project_id).where(frozen_models.c.project_id == project_id))
        if known.first() is None and result.model is not None:
            conn.execute(
                insert(frozen_models).values(
                    project_id=project_id,
                    fingerprint=result.model.fingerprint,
                    document=json.dumps(result.model.to_json(), sort_keys=True),
                    fitted_run=run_id,
                    created_at=now(),
                )
            )
