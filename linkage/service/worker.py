"""The service's run worker: one background thread that runs queued linkage runs in turn.

Runs live in the linkage store, not in memory: a run is queued by a row, claimed by
marking it running, and finished in three steps: its entities are stored (one
transaction), its stable mapping copied to the statistics store (one transaction), and
only then is it marked done. After a crash, :func:`recover` queues the runs left running
again, so a run is never lost and, with at most one active run per project, never duplicated.

A project's first run fits the linkage model and freezes it; every later run decides each
pair with that frozen model, so that whether two records match never depends on who else
was linked. The parties' record-level results are the greedy solver's entities; the
statistics side receives the stable mapping (:mod:`linkage.matching.stable`), which for
two or three parties is the same entities, and in which one person's records can move at
most (number of parties)² rows of the statistics table.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from linkage.database import loggable_traceback
from linkage.errors import PprlError
from linkage.file_modes import shred_file
from linkage.matching.engine import LinkResult, link, load_inputs
from linkage.matching.frozen import FrozenModel
from linkage.matching.stable import StableLinkage
from linkage.service.batches import carry_run_ids, link_batches, next_entity_after, save_state
from linkage.service.erasure import resume_erasures
from linkage.service.statistics_side import StatisticsSide
from linkage.service.store import LinkageStore, RunRecord

__all__ = ["RunWorker", "recover", "sync_encodings", "sync_mappings"]

log = logging.getLogger("pprl.service")
AuditFunction = Callable[[str, str, str | None, str, str], None]
SERVICE_ACTOR = "service"


def sync_mappings(store: LinkageStore, stats: StatisticsSide) -> list[str]:
    """Copy each project's latest done stable mapping to the statistics store where it lags.

    Returns:
        The ids of the projects whose mapping was copied.
    """
    copied = []
    for project in store.projects():
        latest = store.latest_done_run(project.id)
        if latest is not None and stats.mapping_run(project.id) != latest.id:
            stats.replace_mapping(project.id, latest.id, store.entity_rows(latest.id, stable=True))
            copied.append(project.id)
    return copied


def sync_encodings(store: LinkageStore, stats: StatisticsSide) -> int:
    """Tell the statistics side each party's current encodings (token digest) where it lags.

    An upload is registered on the statistics side right after it is stored; a crash in
    between, or uploads an older pprl stored, are caught up here.

    Returns:
        How many uploads were registered.
    """
    store.fill_tokens_sha256()
    registered = 0
    for project in store.projects():
        known = stats.encodings_tokens(project.id)
        for party, upload in store.uploads(project.id).items():
            if upload.tokens_sha256 and known.get(party) != upload.tokens_sha256:
                stats.register_encodings(project.id, party, upload.tokens_sha256, upload.record_count)
                registered += 1
    return registered


def recover(store: LinkageStore, stats: StatisticsSide, audit: AuditFunction) -> None:
    """Bring both stores to a consistent state after a start or a crash.

    Finishes the erasures a crash left pending (first: until then, their blobs may look
    unreferenced), shreds half-received bodies and unreferenced blobs, queues again the
    runs a stopped server left running (or fails those interrupted too often), and copies
    lagging token digests and entity mappings to the statistics side.
    """
    for erasure in resume_erasures(store, stats):
        log.info(
            "finished erasure %d (%s) of project %s, which a stop interrupted",
            erasure.id,
            erasure.kind,
            erasure.project_id,
        )
    removed = store.clean_blobs() + stats.clean_incoming()
    if removed:
        log.info("removed %d half-received or unreferenced upload file(s)", removed)
    again, failed = store.requeue_interrupted()
    for run in again:
        log.info("run %d of project %s was interrupted by a stop; queued again", run.number, run.project_id)
    for run in failed:
        audit(SERVICE_ACTOR, "run.failed", run.project_id, "failed", f"run {run.number} interrupted too often")
    sync_encodings(store, stats)
    sync_mappings(store, stats)


class RunWorker:
    """Runs queued runs one at a time on a background thread.

    Args:
        store: the linkage store.
        stats: the statistics store, which receives each done run's entity mapping.
        audit: appends to the audit log.
        workers: processes for the linkage engine.
        dask: a Dask scheduler to run the engine's comparisons on instead of a local pool.
        poll_seconds: how often to look for queued runs when not woken.
    """

    def __init__(
        self,
        store: LinkageStore,
        stats: StatisticsSide,
        audit: AuditFunction,
        *,
        workers: int = 1,
        dask: str | None = None,
        poll_seconds: float = 2.0,
    ) -> None:
        self._store = store
        self._stats = stats
        self._audit = audit
        self._workers = workers
        self._dask = dask
        self._poll = poll_seconds
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the background thread."""
        if self._thread is None:
            self._stopping.clear()
            # A daemon thread: a stop in the middle of a run leaves it running in the store,
            # and the next start queues it again.
            self._thread = threading.Thread(target=self._loop, name="pprl-run-worker", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Look for queued runs now."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the thread to stop after the current run and wait up to ``timeout`` seconds."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_pending(self) -> int:
        """Run queued runs in this thread until none is left; returns how many ran."""
        count = 0
        while not self._stopping.is_set():
            run = self._store.claim_next_run()
            if run is None:
                break
            self.execute(run)
            count += 1
        return count

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.run_pending()
            except Exception as exc:
                # The store may be briefly unreachable (a database restart); try again later.
                log.error("the run worker failed to claim or finish a run; retrying\n%s", loggable_traceback(exc))
            self._wake.wait(self._poll)
            self._wake.clear()

    def execute(self, run: RunRecord) -> None:
        """Link a claimed run's inputs and store the outcome (done or failed).

        The entities and the stable mapping (and, on a project's first run, the frozen
        model) are stored on the linkage side (one transaction), the stable mapping is
        copied to the statistics side (one transaction), and only then is the run marked
        done, so that ``done`` means both sides hold its results. A crash before that runs
        it again (with the model it froze, if it got that far: the same entities).
        """
        store = self._store
        inputs = store.run_inputs(run.id)
        last = [-1.0]

        def on_progress(done: int, total: int) -> None:
            # The last few percent are for storing the entities.
            fraction = round(0.95 * done / max(total, 1), 2)
            if fraction > last[0]:
                last[0] = fraction
                store.set_progress(run.id, fraction)

        try:
            if store.batches(run.project_id, pending=True):
                self._execute_batches(run, on_progress)
                return
            protocol = store.protocol(run.project_id)
            encodings = load_inputs(protocol, [path for _, path in inputs])
            frozen = store.frozen_model(run.project_id)
            model = None if frozen is None else FrozenModel.from_json(frozen, protocol, source="the project's model")
            result = link(
                protocol,
                encodings,
                workers=self._workers,
                dask=self._dask,
                on_progress=on_progress,
                model=model,
                freeze=model is None,
            )
            del encodings
            latest = store.latest_done_run(run.project_id)
            previous = store.entity_ids(latest.id) if latest is not None else {}
            ids, following = carry_run_ids(result, previous, next_entity_after(store, run.project_id, previous))
            store.store_entities(run.id, result, ids)
            self._stats.replace_mapping(run.project_id, run.id, store.entity_rows(run.id, stable=True))
            done = store.finish_run(run.id, next_entity=following)
        except PprlError as exc:
            message = str(exc)
            for party, path in inputs:
                message = message.replace(str(path), f"the encodings of {party}")
            store.fail_run(run.id, message)
            self._audit(SERVICE_ACTOR, "run.failed", run.project_id, "failed", f"run {run.number}: {exc.code}")
            return
        except Exception as exc:
            log.error("run %d of project %s failed\n%s", run.number, run.project_id, loggable_traceback(exc))
            store.fail_run(run.id, f"internal error ({exc.__class__.__name__}); the server log has the details")
            self._audit(SERVICE_ACTOR, "run.failed", run.project_id, "failed", f"run {run.number}: internal error")
            return
        self._audit(
            SERVICE_ACTOR,
            "run.done",
            run.project_id,
            "ok",
            f"run {run.number}: {done.entity_count} entities, {done.linked_records} records linked; "
            + _stable_note(result),
        )

    def _execute_batches(self, run: RunRecord, on_progress: Callable[[int, int], None]) -> None:
        """Link a run's pending batches (:func:`~linkage.service.batches.link_batches`) and store the outcome.

        The new linkage state is written to its own file before the run is marked done; the
        run's done mark names it, so a crash before leaves the previous state in force.
        """
        store = self._store
        outcome = link_batches(store, run.project_id, run.id, on_progress=on_progress)
        name, next_entity = save_state(store, run.id, outcome.state)
        try:
            store.store_entity_rows(run.id, outcome.rows, outcome.stable_rows)
            self._stats.replace_mapping(run.project_id, run.id, store.entity_rows(run.id, stable=True))
            done = store.finish_run(run.id, state=(name, next_entity), batch_ids=outcome.batch_ids)
        except BaseException:
            shred_file(store.state_dir / name)
            raise
        how = (
            f"incrementally, {outcome.pairs_compared} pairs compared"
            if outcome.incremental
            else "from the current lists with the frozen model (no usable linkage state yet)"
        )
        self._audit(
            SERVICE_ACTOR,
            "run.done",
            run.project_id,
            "ok",
            f"run {run.number}: {len(outcome.batch_ids)} batch(es) linked {how}; {done.entity_count} entities, "
            f"{done.linked_records} records linked; {outcome.retired} entity ids retired; "
            + _ambiguity_note(len(outcome.stable.entities), outcome.state.model.threshold, outcome.stable),
        )


def _stable_note(result: LinkResult) -> str:
    """What the audit log says of a run's stable mapping and frozen model (counts only)."""
    stable, model = result.stable, result.model
    if stable is None or model is None:
        return "no stable mapping"
    return _ambiguity_note(len(stable.entities), model.threshold, stable)


def _ambiguity_note(entity_count: int, threshold: float, stable: StableLinkage) -> str:
    return (
        f"stable mapping of {entity_count} entities by a model frozen at threshold {threshold:.3f}; "
        f"{stable.ambiguous_records} records in {stable.ambiguous_clusters} clusters holding two records of one "
        f"party; one deletion moves at most {stable.worst_deletion} rows here"
    )
