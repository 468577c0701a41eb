"""Batches on the service: a party adds what changed, and the next run links only that.

A batch (``pprl upload --batch``) is a party's new and corrected records (an encodings file
``pprl encode`` wrote) and the tokens it withdraws (from its key map). :func:`add_batch`
merges it into the party's upload at once (withdrawn and corrected records out, the batch's
records in: the upload stays the party's whole current list, so a full run and an erasure
work as before) and keeps it pending. A correction is a new token plus the old token's
withdrawal (``pprl encode`` draws new tokens), or a record under a token the party holds.

The next run (:func:`link_batches`) adds the pending batches to the project's linkage state
with the local refresh engine (:func:`linkage.matching.refresh.refresh_state`): only the new
and changed records are compared, under the project's frozen model, and entity ids carry
over. The first batch run of a project has no state yet (a full run keeps none): it links
the current lists once with the frozen model (:func:`~linkage.matching.refresh.start_state`)
and carries the entity ids of the previous run over; every later batch run is incremental.
Any erasure drops the state, and the next batch run makes a new one the same way.

A project never linked refuses a batch: its first run fits the model the batches are
linked with, from every party's full list.

:func:`changes_since` tells a party what changed for its own clients since its last
results download: new links, entity ids retired into others, withdrawn records.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from linkage.encodings import read_encodings
from linkage.errors import Conflict, InputError, PprlError
from linkage.file_modes import private_opener, shred_file
from linkage.matching.engine import LinkResult, load_inputs
from linkage.matching.entity_ids import carry_ids
from linkage.matching.frozen import FrozenModel
from linkage.matching.link_state import LinkState, read_state, write_state
from linkage.matching.refresh import refresh_state, start_state
from linkage.matching.stable import StableLinkage, stable_entities
from linkage.service.store import BatchRecord, LinkageStore, check_upload
from linkage.token_files import listed_positions, token_set_sha256

__all__ = [
    "BatchRun",
    "Change",
    "add_batch",
    "carry_run_ids",
    "changes_since",
    "link_batches",
    "next_entity_after",
    "save_state",
    "split_batch_body",
    "stable_rows",
    "state_rows",
]

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class BatchRun:
    """What a run that linked batches made: the new state and its entity rows, and how it went."""

    state: LinkState
    rows: list[tuple[int, str, str]]
    stable: StableLinkage
    stable_rows: list[tuple[int, str, str]]
    batch_ids: tuple[int, ...]
    incremental: bool
    pairs_compared: int
    retired: int


@dataclass(frozen=True)
class Change:
    """A change for one of a party's own tokens since its last download.

    ``kind``: ``linked`` (shared with parties it was not before: ``parties``), ``unlinked``
    (no longer shared with ``parties``), ``withdrawn`` (the record is gone). Entity ids are
    not told: the same id in two parties' results would join their records, which the
    protocol releases to neither.
    """

    token: str
    kind: str
    parties: tuple[str, ...] = ()


def _hex_tokens(records: np.ndarray) -> list[str]:
    raw = np.ascontiguousarray(records["token"]).tobytes().hex()
    return [raw[i : i + 32] for i in range(0, len(raw), 32)]


def add_batch(
    store: LinkageStore,
    project_id: str,
    party: str,
    *,
    received: Path | None,
    body_sha256: str | None,
    withdraw: Sequence[str],
) -> BatchRecord:
    """Merge a party's batch into its upload and keep it pending for the next run.

    Args:
        store: the linkage store.
        project_id: the project.
        party: the caller's party.
        received: the batch's encodings file as received (consumed: moved or shredded), or
            ``None`` for withdrawals only.
        body_sha256: its SHA-256.
        withdraw: tokens of the party's current records to withdraw (32 lowercase hex digits).

    Returns:
        The batch, pending; the upload is the merged list (``BatchRecord.result_sha256``).

    Raises:
        InputError: a malformed batch (not an encodings file, truncated), a malformed
            withdrawn token, one the party does not hold, one both withdrawn and sent, a
            token twice in the batch, or an empty batch; nothing is stored.
        MismatchError: the batch was encoded under another protocol, party or secret.
        Conflict: the project was never linked, the party has no upload, every record
            would go, a run is queued or running, or an erasure is under way.
    """
    try:
        return _add_batch(store, project_id, party, received, body_sha256, withdraw)
    finally:
        if received is not None:
            shred_file(received)


def _add_batch(
    store: LinkageStore,
    project_id: str,
    party: str,
    received: Path | None,
    body_sha256: str | None,
    withdraw: Sequence[str],
) -> BatchRecord:
    protocol = store.protocol(project_id)
    malformed = [i for i, t in enumerate(withdraw, start=1) if len(t) != 32 or t.strip("0123456789abcdef")]
    if malformed:
        raise InputError(
            f"{len(malformed)} of the withdrawn tokens are not record tokens "
            f"(number {listed_positions(malformed)}); write 32 lowercase hex digits from keymap.csv per token; "
            "nothing was stored"
        )
    if received is None and not withdraw:
        raise InputError("the batch is empty: send new or corrected records, withdrawals, or both")
    if store.latest_done_run(project_id) is None:
        raise Conflict(
            f"project {project_id!r} has not been linked yet; a batch adds to a linked project. Upload every party's "
            "full list with `pprl upload` (without --batch) and run `pprl run`; send batches after that"
        )
    uploads = store.uploads(project_id)
    upload = uploads.get(party)
    if upload is None:
        raise Conflict(f"party {party!r} has no encodings in project {project_id!r}; upload its full list first")
    batch = None
    if received is not None:
        shown = "the batch's encodings file"
        check_upload(protocol, party, received, uploads.values(), shown_as=shown)
        batch = np.asarray(read_encodings(received, verify=False, shown_as=shown).records)
        if not len(batch):
            raise InputError(f"{shown} holds no records; send withdrawals alone without a file")
    with store.exclusive():
        base = read_encodings(store.blob_path(upload.body_sha256), shown_as=f"the encodings of {party}")
        held = _hex_tokens(base.records)
        index = {token: i for i, token in enumerate(held)}
        unknown = [i for i, token in enumerate(withdraw, start=1) if token not in index]
        if unknown:
            raise InputError(
                f"{len(unknown)} of the {len(withdraw)} withdrawn tokens are not records of party {party!r}'s "
                f"encodings (number {listed_positions(unknown)}); withdraw tokens from the keymap.csv of encodings you "
                "uploaded; nothing was stored"
            )
        sent = _hex_tokens(batch) if batch is not None else []
        repeated = len(sent) - len(set(sent))
        if repeated:
            raise InputError(f"the batch holds {repeated} token(s) twice; encode each client once; nothing was stored")
        both = sorted(set(sent) & set(withdraw))
        if both:
            raise InputError(
                f"{len(both)} token(s) are both withdrawn and in the batch; a correction under a kept token is not "
                "withdrawn; nothing was stored"
            )
        corrected = [index[token] for token in sent if token in index]
        keep = np.ones(len(held), dtype=bool)
        keep[np.array([index[token] for token in set(withdraw)], dtype=np.int64)] = False
        keep[np.array(corrected, dtype=np.int64)] = False
        parts = [np.asarray(base.records)[keep]] + ([batch] if batch is not None else [])
        merged = np.concatenate(parts) if parts else np.asarray(base.records)[:0]
        if not len(merged):
            raise Conflict(
                f"the batch withdraws all {len(held)} records of party {party!r}; ask the administrator to remove "
                "the party (`pprl project remove-party`)"
            )
        kept_tokens = _hex_tokens(merged)
        if batch is not None:
            others = _other_tokens(store, project_id, party)
            clash = [token for token in sent if token in others]
            if clash:
                # Said the same whoever holds them: the message must not tell a party whose token it hit.
                raise InputError(
                    f"{len(clash)} token(s) of the batch are already in use in this project, and a token names one "
                    "record only; encode the batch again with `pprl encode` (it draws new tokens); nothing was stored"
                )
        del base
        merged_sha, header = store.write_blob(protocol, party, upload.secret_check, merged)
        batch_sha = None
        if received is not None and body_sha256 is not None:
            os.replace(received, store.blob_path(body_sha256))
            batch_sha = body_sha256
        values = {
            "body_sha256": merged_sha,
            "records_sha256": header.records_sha256,
            "secret_check": upload.secret_check,
            "record_count": header.record_count,
            "size_bytes": store.blob_path(merged_sha).stat().st_size,
            "tokens_sha256": token_set_sha256(kept_tokens),
        }
        try:
            return store.record_batch(
                project_id,
                party,
                base_sha256=upload.body_sha256,
                upload=values,
                body_sha256=batch_sha,
                tokens=sorted(set(withdraw)),
                counts=(len(sent) - len(corrected), len(corrected), len(set(withdraw))),
            )
        except BaseException:
            # Refused (a run, an erasure): the new blobs are nobody's.
            for sha in {merged_sha, batch_sha} - {None, upload.body_sha256}:
                assert sha is not None  # noqa: S101 - None was removed above
                store.shred_blob(sha)
            raise


def _other_tokens(store: LinkageStore, project_id: str, party: str) -> set[str]:
    """The tokens of the other parties' current records (tokens are unique within a project)."""
    tokens: set[str] = set()
    for other, upload in store.uploads(project_id).items():
        if other != party:
            tokens.update(_hex_tokens(read_encodings(store.blob_path(upload.body_sha256), verify=False).records))
    return tokens


def carry_run_ids(
    result: LinkResult, previous: Mapping[tuple[str, str], int], next_entity: int
) -> tuple[list[int], int]:
    """Ids for a full run's entities, carried over from the previous run's (by party and token).

    Returns:
        Each of ``result.entities``' id, and the next id never given out.
    """
    sizes = [len(tokens) for tokens in result.tokens]
    before = [np.full(size, -1, dtype=np.int64) for size in sizes]
    for party_index, (party, tokens) in enumerate(zip(result.parties, result.tokens, strict=True)):
        for record, token in enumerate(_token_hex(tokens)):
            before[party_index][record] = previous.get((party, token), -1)
    groups = [list(entity.records) for entity in result.entities]
    ids, following, _ = carry_ids(groups, before, next_entity)
    return [int(ids[entity[0][0]][entity[0][1]]) for entity in groups], following


def _token_hex(tokens: np.ndarray) -> list[str]:
    raw = np.ascontiguousarray(tokens).tobytes().hex()
    return [raw[i : i + 32] for i in range(0, len(raw), 32)]


def next_entity_after(store: LinkageStore, project_id: str, previous: Mapping[tuple[str, str], int]) -> int:
    """The first entity id never given out in the project: past the previous run's, the state's and the store's mark.

    The store's mark (:meth:`LinkageStore.next_entity`) outlives the state and the rows an
    erasure drops, so an id retired earlier is never given out again.
    """
    state = store.link_state(project_id)
    highest = max(previous.values(), default=0) + 1
    return max(highest, state.next_entity if state is not None else 1, store.next_entity(project_id))


def _chained(store: LinkageStore, run_id: int, state_run: int, pending: Sequence[BatchRecord]) -> bool:
    """Whether the pending batches lead from the uploads the state was made of to the run's inputs."""
    at = dict(store.run_input_shas(state_run))
    for batch in pending:
        if at.get(batch.party) != batch.base_sha256:
            return False
        at[batch.party] = batch.result_sha256
    return at == store.run_input_shas(run_id)


def link_batches(
    store: LinkageStore, project_id: str, run_id: int, *, on_progress: ProgressCallback | None = None
) -> BatchRun:
    """Link a run's pending batches: incrementally from the project's state, or from its current lists once.

    The state is used when the pending batches lead from the uploads it was made of to the
    run's inputs; otherwise (no state yet, an erasure dropped it, an upload was replaced),
    or if the state refuses a batch, the run's inputs (the merged uploads) are linked once
    with the frozen model and the previous run's entity ids carried over.

    Raises:
        Conflict: the project has no frozen model (it was never linked).
    """
    protocol = store.protocol(project_id)
    pending = store.batches(project_id, pending=True)
    document = store.frozen_model(project_id)
    if document is None:
        raise Conflict(f"project {project_id!r} has no frozen model; a full run makes it (`pprl run`)")
    model = FrozenModel.from_json(document, protocol, source="the project's model")
    record = store.link_state(project_id)
    batch_ids = tuple(batch.id for batch in pending)
    if record is not None and record.path.exists() and _chained(store, run_id, record.run_id, pending):
        try:
            state = read_state(record.path, protocol)
            compared = retired = 0
            for batches in _rounds(pending):
                files = [
                    read_encodings(store.blob_path(batch.body_sha256), shown_as=f"the batch of {batch.party}")
                    for batch in batches
                    if batch.body_sha256 is not None
                ]
                withdrawn = {batch.party: list(batch.tokens) for batch in batches}
                state, summary = refresh_state(protocol, state, files, withdrawn, on_progress=on_progress)
                compared += summary.pairs_compared
                retired += len(summary.retired)
            return BatchRun(state, state_rows(state), *stable_rows(state), batch_ids, True, compared, retired)
        except PprlError:
            # The uploads hold every batch already: linking them once gives the same entities.
            pass
    state, retired = _rebuild(store, project_id, run_id, model, on_progress)
    return BatchRun(state, state_rows(state), *stable_rows(state), batch_ids, False, 0, retired)


def _rounds(pending: Sequence[BatchRecord]) -> list[list[BatchRecord]]:
    """Pending batches in order, as rounds holding at most one batch per party.

    A round is added to the state in one refresh: the stored index is read, the kept pairs
    gathered and the entities solved once for every party's batch, not once per batch (a
    quarter of three agencies took three refreshes, each as costly as the whole round).
    """
    rounds: list[list[BatchRecord]] = []
    for batch in pending:
        if not rounds or any(other.party == batch.party for other in rounds[-1]):
            rounds.append([])
        rounds[-1].append(batch)
    return rounds


def _rebuild(
    store: LinkageStore, project_id: str, run_id: int, model: FrozenModel, on_progress: ProgressCallback | None
) -> tuple[LinkState, int]:
    """A state of the run's inputs under the frozen model, with the previous run's entity ids carried over."""
    protocol = store.protocol(project_id)
    encodings = load_inputs(protocol, [path for _, path in store.run_inputs(run_id)])
    fresh = start_state(protocol, encodings, model=model, on_progress=on_progress)
    latest = store.latest_done_run(project_id)
    previous = store.entity_ids(latest.id) if latest is not None else {}
    before = [
        np.array([previous.get((party, t), -1) for t in _token_hex(fresh.records[i]["token"])], dtype=np.int64)
        for i, party in enumerate(fresh.parties)
    ]
    ids, following, gone = carry_ids(
        list(fresh.entities().values()), before, next_entity_after(store, project_id, previous)
    )
    return replace(fresh, entity=ids, next_entity=following), len(gone)


def state_rows(state: LinkState) -> list[tuple[int, str, str]]:
    """The ``(entity_id, party, token)`` rows of a state's entities of two or more records (as a run stores)."""
    rows = []
    for entity, members in state.entities().items():
        if len(members) > 1:
            for party, record in members:
                rows.append((entity, state.parties[party], bytes(state.records[party]["token"][record]).hex()))
    return rows


def stable_rows(state: LinkState) -> tuple[StableLinkage, list[tuple[int, str, str]]]:
    """The stable mapping of a state's accepted pairs (what the statistics count), and its rows.

    For two or three parties it equals the state's entities; with more, the state's solver
    may split a cluster the stable mapping keeps whole (:mod:`linkage.matching.stable`). Each
    stable entity takes the smallest state entity id among its records: every state entity
    lies within one stable entity, so no two share an id.
    """
    pairs = state.pairs
    stable = stable_entities(
        pairs.party_a, pairs.party_b, pairs.record_a, pairs.record_b, pairs.weight, [len(ids) for ids in state.entity]
    )
    rows = []
    for entity in stable.entities:
        number = min(int(state.entity[party][record]) for party, record in entity.records)
        for party, record in entity.records:
            rows.append((number, state.parties[party], bytes(state.records[party]["token"][record]).hex()))
    return stable, rows


def save_state(store: LinkageStore, run_id: int, state: LinkState) -> tuple[str, int]:
    """Write a run's state next to the project's others; returns its file name and next entity id."""
    name = f"run-{run_id}-{secrets.token_hex(4)}.state"
    path = store.state_dir / name
    write_state(state, path)
    return name, state.next_entity


def changes_since(
    before: Mapping[str, Sequence[str]],
    now: Mapping[str, Sequence[str]],
    held: Iterable[str],
) -> list[Change]:
    """What changed for a party's tokens between two downloads (its own tokens only).

    Args:
        before: per token released last time, the parties it was shared with.
        now: the same, for what is released now.
        held: the party's current tokens (a token gone from them was withdrawn).

    >>> a, b = "a" * 32, "b" * 32
    >>> [(c.kind, c.parties) for c in changes_since({a: ["police"], b: ["haven"]}, {a: ["police", "haven"]}, [a])]
    [('linked', ('haven',)), ('withdrawn', ())]
    """
    current = set(held)
    changes = []
    for token in sorted(set(before) | set(now)):
        old, new = set(before.get(token, ())), now.get(token)
        if new is not None:
            if gained := sorted(set(new) - old):
                changes.append(Change(token, "linked", tuple(gained)))
            if lost := sorted(old - set(new)):
                changes.append(Change(token, "unlinked", tuple(lost)))
        elif token not in current:
            changes.append(Change(token, "withdrawn"))
        else:
            changes.append(Change(token, "unlinked", tuple(sorted(old))))
    return changes


BATCH_MAGIC = b"PPRLBATCH1\n"
MAX_WITHDRAW_LINE = 1 << 20


def split_batch_body(received: Path, encodings_out: Path) -> tuple[list[str], str | None]:
    """Split a batch request body into its withdrawn tokens and its encodings file.

    The body (``application/vnd.pprl.batch``, what :meth:`ServiceClient.upload_batch`
    sends) is ``PPRLBATCH1``, a newline, one line of JSON ``{"withdraw": [token, ...]}``,
    a newline, then the bytes of the batch's ``encodings.pprl`` (none for withdrawals only).

    Returns:
        The withdrawn tokens and the SHA-256 of the encodings written to ``encodings_out``
        (``None``, and nothing written, when the body holds none).

    Raises:
        InputError: not a batch body, or its withdrawal line is not that JSON.
    """
    fix = "send batches with `pprl upload --batch` (a newer or older client may speak another format)"
    with received.open("rb") as handle:
        if handle.read(len(BATCH_MAGIC)) != BATCH_MAGIC:
            raise InputError(f"the request body is not a pprl batch (it does not start with PPRLBATCH1); {fix}")
        line = handle.readline(MAX_WITHDRAW_LINE)
        try:
            document = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise InputError(f"the batch's withdrawal line is not JSON (or longer than 1 MiB); {fix}") from exc
        if (
            not isinstance(document, dict)
            or set(document) != {"withdraw"}
            or not isinstance(document["withdraw"], list)
            or not all(isinstance(token, str) for token in document["withdraw"])
        ):
            raise InputError(
                f'the batch\'s withdrawal line must be {{"withdraw": [token, ...]}} and nothing else; {fix}'
            )
        digest = hashlib.sha256()
        size = 0
        with open(encodings_out, "wb", opener=private_opener) as out:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    if not size:
        shred_file(encodings_out)
        return list(document["withdraw"]), None
    return list(document["withdraw"]), digest.hexdigest()
