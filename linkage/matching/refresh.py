"""Every quarter, not once: add a batch to a linkage without linking everything again.

The first link (:func:`start_state`) decides every pair with a frozen model
(:mod:`linkage.matching.frozen`) and keeps a :class:`~linkage.matching.link_state.LinkState`.
A frozen model decides each pair from its two records alone, and the solver's decisions
decompose over the connected components of the accepted pairs, so a batch
(:func:`refresh_state`) only needs to:

1. apply it: a record whose token the state holds is a correction (its old version goes),
   a new token is an addition, a withdrawn token goes;
2. block and compare the new and changed records against every record held (blocking
   against the stored index), keeping the accepted pairs of the records that did not
   change as they were;
3. solve again only the components that hold a changed record or lost one, as the stable
   mapping does (:mod:`linkage.matching.stable`: a component with at most one record per
   party is one entity, an ambiguous one is solved by the greedy solver within it);
4. carry the entity ids over (:func:`linkage.matching.entity_ids.carry_ids`).

The accepted pairs are then exactly those a link from scratch of the same final lists with
the same model would accept, and so are the entities (tests check both). The model is not
re-fitted unless asked (:func:`refit_state`: a link from scratch of the final lists under a
newly fitted model, with the entity ids carried over all the same).

Entity ids: an entity keeps its id while it keeps its records; when entities merge, the
merged entity keeps the oldest (smallest) id among them; when one splits, the part holding
most of its records keeps the id (ties: the part with the first record), the other parts
get new ids. Every id that goes is listed with the id its records went to (``None`` when
they were all withdrawn). Ids are never reused.
"""

from __future__ import annotations

import itertools
import secrets
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from linkage.encodings import Encodings, EncodingsWriter, check_compatible, read_encodings
from linkage.errors import InputError, MismatchError
from linkage.file_modes import private_dir
from linkage.matching.anonlink_bridge import clk_dataset, clk_dice_pairs
from linkage.matching.block import BlockIndex, candidate_pairs, sorted_unique, split_codes
from linkage.matching.compare import PartyFeatures, compare_and_measure, comparisons_for, features_for
from linkage.matching.dedupe import merge_duplicates, within_oversized, within_pairs
from linkage.matching.engine import check_inputs, freeze_model, score_candidates
from linkage.matching.entity_ids import carry_ids
from linkage.matching.frozen import FrozenModel
from linkage.matching.link_state import AcceptedPairs, LinkState, token_keys
from linkage.matching.passes import weigh_pairs
from linkage.matching.stable import stable_entities
from linkage.protocol import Protocol

if TYPE_CHECKING:
    from bitarray import bitarray

__all__ = ["BatchSummary", "carry_ids", "refit_state", "refresh_state", "start_state"]

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class BatchSummary:
    """What adding a batch did (counts only: no scores).

    Attributes:
        added: per party, new records.
        corrected: per party, records replaced under their token.
        withdrawn: per party, records removed.
        pairs_compared: candidate pairs compared (every one involves a new or changed record).
        pairs_accepted: accepted pairs after the batch, in all.
        components_solved: connected components solved again.
        records_solved: records in them.
        retired: entity ids that went, each with the id its records went to (``None``: all withdrawn).
        seconds: wall-clock time.
    """

    added: Mapping[str, int]
    corrected: Mapping[str, int]
    withdrawn: Mapping[str, int]
    pairs_compared: int
    pairs_accepted: int
    components_solved: int
    records_solved: int
    retired: Mapping[int, int | None] = field(default_factory=dict)
    seconds: float = 0.0


def _protocol_order(protocol: Protocol, parties: Sequence[str]) -> list[str]:
    position = {party.id: index for index, party in enumerate(protocol.parties)}
    return sorted(parties, key=lambda party: position[party])


def start_state(
    protocol: Protocol,
    encodings: Sequence[Encodings],
    *,
    model: FrozenModel | None = None,
    threshold: float | None = None,
    workers: int = 1,
    dask: str | None = None,
    on_progress: ProgressCallback | None = None,
    dedupe: bool = False,
) -> LinkState:
    """Link the parties' full lists with a frozen model and keep the state for later batches.

    Args:
        protocol: the protocol.
        encodings: one loaded encodings file per party.
        model: the frozen model to decide every pair with; ``None`` fits one on these
            records and freezes it (as ``pprl link --save-model``).
        threshold: a match probability to accept pairs at instead of the model's (or the
            protocol's, or ``auto``'s); it is frozen into the state's model.
        workers: processes for blocking and comparing.
        dask: a Dask scheduler to compare on instead.
        on_progress: called with (tasks done, tasks).
        dedupe: also compare each party's records with its own, so that a party's
            duplicates of one person join one entity (:mod:`linkage.matching.dedupe`).

    Returns:
        The state: every record with an entity id (numbered from 1), the accepted pairs,
        the model.
    """
    check_inputs(protocol, encodings)
    order = _protocol_order(protocol, [item.header.party for item in encodings])
    encodings = sorted(encodings, key=lambda item: order.index(item.header.party))
    scored = score_candidates(
        protocol, encodings, workers=workers, dask=dask, on_progress=on_progress, model=model, freeze=model is None
    )
    chosen = threshold if threshold is not None else (model.threshold if model is not None else protocol.threshold)
    if chosen is None:
        chosen = scored.threshold()
    frozen = replace(
        model if model is not None else freeze_model(protocol, encodings, scored, chosen), threshold=chosen
    )
    accepted = scored.probability >= chosen
    records, ranks = [], []
    for item in encodings:
        keys = token_keys(item.records)
        by_token = np.argsort(keys, kind="stable")
        records.append(np.asarray(item.records)[by_token])
        rank = np.empty(len(by_token), dtype=np.int64)
        rank[by_token] = np.arange(len(by_token))
        ranks.append(rank)
    party_a, party_b = scored.party_a[accepted], scored.party_b[accepted]
    record_a = np.zeros(int(accepted.sum()), dtype=np.int64)
    record_b = np.zeros_like(record_a)
    for party, rank in enumerate(ranks):
        on_a, on_b = party_a == party, party_b == party
        record_a[on_a] = rank[scored.record_a[accepted][on_a]]
        record_b[on_b] = rank[scored.record_b[accepted][on_b]]
    pairs = AcceptedPairs.concatenate([AcceptedPairs(party_a, party_b, record_a, record_b, scored.weight[accepted])])
    within: dict[str, tuple[np.ndarray, ...]] = {}
    if dedupe:
        within = {party: within_oversized(_keys(records[i]), protocol.max_block_pairs) for i, party in enumerate(order)}
        every = [np.arange(len(item), dtype=np.int64) for item in records]
        duplicates, _, fitted = _within(protocol, frozen, order, records, every, within, fit=model is None)
        frozen = replace(frozen, priors={**frozen.priors, **fitted})
        pairs = AcceptedPairs.concatenate([pairs, duplicates])
    empty = tuple(np.full(len(item), -1, dtype=np.int64) for item in records)
    solved = _solve(pairs, [len(item) for item in records], None, dedupe=dedupe)
    entity, next_entity, _ = carry_ids(solved, empty, 1)
    return LinkState(
        fingerprint=protocol.fingerprint,
        secret_check=encodings[0].header.secret_check,
        model=frozen,
        parties=tuple(order),
        records=tuple(records),
        entity=entity,
        pairs=pairs,
        next_entity=next_entity,
        dedupe=dedupe,
        within_oversized=within,
    )


def _keys(records: np.ndarray) -> np.ndarray:
    return np.asarray(records["block"]).reshape(len(records), -1)


def _within(
    protocol: Protocol,
    model: FrozenModel,
    parties: Sequence[str],
    records: Sequence[np.ndarray],
    changed: Sequence[np.ndarray],
    oversized: Mapping[str, tuple[np.ndarray, ...]],
    *,
    fit: bool = False,
) -> tuple[AcceptedPairs, int, dict[tuple[str, str], float]]:
    """Accepted pairs within each party that hold a changed record, how many pairs were compared, the priors.

    With ``fit`` (every record changed: a first link fitting its model), each party's
    prior within itself is fitted on its candidates (:func:`~linkage.matching.dedupe.within_prior`)
    and returned, as ``(party, party)``, to be frozen into the model; otherwise the model's
    are used (the overall prior for a party it holds none of).
    """
    comparisons = comparisons_for(protocol)
    features = features_for(comparisons, protocol.comparison_groups)
    # A pair within a party needs the protocol's dedupe_threshold if it is higher: fixed, so
    # a pair is still decided by its two records alone.
    model = replace(model, threshold=max(model.threshold, protocol.dedupe_threshold or 0.0))
    parts, compared, priors = [], 0, {}
    for index, party in enumerate(parties):
        if not len(changed[index]):
            continue
        keys = _keys(records[index])
        scoring = (
            PartyFeatures.from_records(records[index], comparisons),
            comparisons,
            features,
            model,
            None if fit else model.prior_of(party, party),
        )
        pairs, count, prior = within_pairs(index, keys, _sorted_index(keys), changed[index], oversized[party], scoring)
        if fit and prior is not None:
            priors[(party, party)] = prior
        parts.append(pairs)
        compared += count
    return (AcceptedPairs.concatenate(parts) if parts else AcceptedPairs.empty()), compared, priors


def _solve(
    pairs: AcceptedPairs, sizes: Sequence[int], touched: np.ndarray | None, *, dedupe: bool = False
) -> list[list[tuple[int, int]]]:
    """The entities of the components holding a touched record (every record if ``touched`` is ``None``).

    Entities as lists of ``(party, record)``, sorted, singletons included. ``touched`` is a
    boolean per record over all parties, in party order. With ``dedupe``, each party's
    duplicate group is solved as one record and its entity then holds all of the group.
    """
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    first = offsets[pairs.party_a.astype(np.int64)] + pairs.record_a
    second = offsets[pairs.party_b.astype(np.int64)] + pairs.record_b
    total = int(offsets[-1])
    labels = _labels(first, second, total)
    if touched is None:
        chosen_nodes = np.ones(total, dtype=bool)
    else:
        hit = np.zeros(total, dtype=bool)
        hit[np.unique(labels[touched])] = True
        chosen_nodes = hit[labels]
    group = np.arange(total)
    if dedupe:
        pairs, group = merge_duplicates(pairs, offsets, _labels)
    keep = chosen_nodes[offsets[pairs.party_a.astype(np.int64)] + pairs.record_a] if len(pairs) else np.zeros(0, bool)
    chosen = pairs.take(keep)
    stable = stable_entities(
        chosen.party_a, chosen.party_b, chosen.record_a, chosen.record_b, chosen.weight, list(sizes), audit=False
    )
    party_of = np.searchsorted(offsets, np.arange(total), side="right") - 1
    members: dict[int, list[int]] = {}
    if dedupe:
        for node in np.flatnonzero(chosen_nodes & (group != np.arange(total))).tolist():
            members.setdefault(int(group[node]), []).append(node)
    groups: list[list[tuple[int, int]]] = []
    grouped = np.zeros(total, dtype=bool)
    for entity in stable.entities:
        nodes = [int(offsets[p]) + r for p, r in entity.records]
        nodes += [node for head in nodes for node in members.get(head, [])]
        grouped[nodes] = True
        groups.append(sorted((int(party_of[node]), node - int(offsets[party_of[node]])) for node in nodes))
    alone: dict[int, list[int]] = {}
    for node in np.flatnonzero(chosen_nodes & ~grouped).tolist():
        alone.setdefault(int(group[node]), []).append(node)
    for nodes in alone.values():
        groups.append(sorted((int(party_of[node]), node - int(offsets[party_of[node]])) for node in nodes))
    return groups


def _labels(first: np.ndarray, second: np.ndarray, count: int) -> np.ndarray:
    """The smallest node of each node's connected component (nodes ``0..count-1``).

    >>> _labels(np.array([0, 3]), np.array([1, 4]), 5).tolist()
    [0, 0, 2, 3, 3]
    """
    labels = np.arange(count)
    if not len(first):
        return labels
    while True:
        low = np.minimum(labels[first], labels[second])
        moved = labels.copy()
        np.minimum.at(moved, first, low)
        np.minimum.at(moved, second, low)
        moved = moved[moved]
        if np.array_equal(moved, labels):
            return labels
        labels = moved


@dataclass(frozen=True)
class _Applied:
    """A batch applied to one party's records."""

    records: np.ndarray
    previous: np.ndarray  # old entity id per record; -1 for additions
    changed: np.ndarray  # indices of added and corrected records
    old_to_new: np.ndarray  # per old record, its new index; -1 if it went
    dropped_ids: np.ndarray  # entity ids of withdrawn records (not of corrected ones)
    counts: tuple[int, int, int]  # added, corrected, withdrawn


def _apply(
    party: str, old: np.ndarray, old_ids: np.ndarray, batch: np.ndarray | None, withdrawn: np.ndarray
) -> _Applied:
    """Apply one party's batch and withdrawals to its records (sorted by token), keeping them sorted.

    The held records are sorted already: the batch's are sorted and merged in by binary
    search, never by sorting every record again.
    """
    old_keys = token_keys(old)
    batch = np.asarray(batch) if batch is not None else np.zeros(0, dtype=old.dtype)
    batch = batch[np.argsort(token_keys(batch), kind="stable")]
    batch_keys = token_keys(batch)
    if len(batch_keys) > 1 and np.any(batch_keys[1:] == batch_keys[:-1]):
        raise InputError(f"party {party!r}: the batch holds a token twice; encode each client once")
    gone = _find(old_keys, withdrawn)
    if np.any(gone < 0):
        raise InputError(
            f"party {party!r}: {int((gone < 0).sum())} withdrawn tokens are not in the linkage state (the first: "
            f"{_hex(withdrawn[gone < 0][0])}); withdraw only tokens linked before, from the "
            "key map of an earlier `pprl encode`"
        )
    both = _find(np.sort(withdrawn), batch_keys) >= 0
    if both.any():
        raise InputError(
            f"party {party!r}: {int(both.sum())} tokens are both withdrawn and in the batch; a correction keeps its "
            "token and is not withdrawn"
        )
    replaced = _find(old_keys, batch_keys)
    corrected = replaced >= 0
    keep = np.ones(len(old), dtype=bool)
    keep[gone] = False
    keep[replaced[corrected]] = False
    kept = np.flatnonzero(keep)
    # Merge: a kept record moves up by the batch records sorted before it, and the reverse.
    kept_position = np.arange(len(kept)) + np.searchsorted(batch_keys, old_keys[kept])
    batch_position = np.arange(len(batch)) + np.searchsorted(old_keys[kept], batch_keys)
    records = np.empty(len(kept) + len(batch), dtype=old.dtype)
    records[kept_position] = old[kept]
    records[batch_position] = batch
    old_to_new = np.full(len(old), -1, dtype=np.int64)
    old_to_new[kept] = kept_position
    previous = np.full(len(records), -1, dtype=np.int64)
    previous[kept_position] = old_ids[kept]
    # A corrected record was in its entity before: it may carry that entity's id on.
    previous[batch_position[corrected]] = old_ids[replaced[corrected]]
    return _Applied(
        records=records,
        previous=previous,
        changed=batch_position,
        old_to_new=old_to_new,
        dropped_ids=old_ids[gone],
        counts=(int((~corrected).sum()), int(corrected.sum()), len(gone)),
    )


def _find(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Each key's index in ``sorted_keys``, or -1 where it is not there.

    >>> _find(np.array([b"a", b"c"], dtype="S1"), np.array([b"c", b"b"], dtype="S1")).tolist()
    [1, -1]
    """
    where = np.searchsorted(sorted_keys, keys)
    inside = where < len(sorted_keys)
    found = np.zeros(len(keys), dtype=bool)
    found[inside] = sorted_keys[where[inside]] == keys[inside]
    return np.where(found, where, -1)


def refit_state(
    protocol: Protocol,
    state: LinkState,
    batch: Sequence[Encodings],
    withdrawn: Mapping[str, Sequence[str]] | None = None,
    *,
    work_dir: Path,
    workers: int = 1,
    dask: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> tuple[LinkState, BatchSummary]:
    """Add a batch and fit the model again: a link from scratch of the final lists, entity ids carried over.

    For when the protocol asks for a new model (the population drifted): every pair is
    compared and decided again under a model fitted on the final lists, and frozen into
    the new state. Entity ids carry over as in :func:`refresh_state`, over every entity.

    Args:
        protocol: the protocol the state was made under.
        state: the state after the previous batch.
        batch: as in :func:`refresh_state`.
        withdrawn: as in :func:`refresh_state`.
        work_dir: a private folder for the final lists' encodings files while they are
            linked (a temporary folder inside it is removed afterwards).
        workers: processes for blocking and comparing.
        dask: a Dask scheduler to compare on instead.
        on_progress: called with (tasks done, tasks).
    """
    started = time.perf_counter()
    parties, applied = _apply_batch(protocol, state, batch, withdrawn or {})
    folder = private_dir(work_dir / f".pprl-refit-{secrets.token_hex(4)}")
    try:
        files = []
        for party, item in zip(parties, applied, strict=True):
            if len(item.records):
                path = folder / f"{party}.pprl"
                with EncodingsWriter(path, protocol=protocol, party=party, secret_check=state.secret_check) as writer:
                    writer.write(np.ascontiguousarray(item.records))
                files.append(read_encodings(path))
        fresh = start_state(protocol, files, workers=workers, dask=dask, on_progress=on_progress, dedupe=state.dedupe)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    previous = [applied[parties.index(party)].previous for party in fresh.parties]
    groups = list(fresh.entities().values())
    entity, next_entity, retired = carry_ids(groups, previous, state.next_entity)
    retired = _retired(retired, entity, applied)
    new_state = replace(fresh, entity=entity, next_entity=next_entity, batches=state.batches + 1)
    summary = BatchSummary(
        added={party: item.counts[0] for party, item in zip(parties, applied, strict=True)},
        corrected={party: item.counts[1] for party, item in zip(parties, applied, strict=True)},
        withdrawn={party: item.counts[2] for party, item in zip(parties, applied, strict=True)},
        pairs_compared=0,
        pairs_accepted=len(fresh.pairs),
        components_solved=sum(1 for group in groups if len(group) > 1),
        records_solved=sum(len(group) for group in groups),
        retired=retired,
        seconds=time.perf_counter() - started,
    )
    return new_state, summary


def _retired(
    retired: dict[int, int | None], entity: Sequence[np.ndarray], applied: Sequence[_Applied]
) -> dict[int, int | None]:
    """The ids that went: those :func:`carry_ids` retired, and those whose records were all withdrawn."""
    alive = set(np.unique(np.concatenate(entity)).tolist()) if len(entity) else set()
    for item in applied:
        for old in np.unique(item.dropped_ids).tolist():
            if old not in alive:
                retired.setdefault(int(old), None)
    return {old: new for old, new in sorted(retired.items()) if old not in alive}


def _apply_batch(
    protocol: Protocol, state: LinkState, batch: Sequence[Encodings], withdrawn: Mapping[str, Sequence[str]]
) -> tuple[list[str], list[_Applied]]:
    """Check a batch and apply it to every party's records: the parties (protocol order) and each one's result."""
    _check_batch(protocol, state, batch)
    known = {party.id for party in protocol.parties}
    for party in withdrawn:
        if party not in known:
            raise InputError(f"--withdraw names party {party!r}, which is not in protocol {protocol.name!r}")
    by_party = {item.header.party: np.asarray(item.records) for item in batch}
    parties = _protocol_order(protocol, list(dict.fromkeys([*state.parties, *by_party])))
    for party in withdrawn:
        if party not in parties:
            raise InputError(f"--withdraw names party {party!r}, which has no records in the linkage state")
    applied: list[_Applied] = []
    old_index = {party: index for index, party in enumerate(state.parties)}
    for party in parties:
        if party in old_index:
            old, old_ids = state.records[old_index[party]], state.entity[old_index[party]]
        else:
            old = np.zeros(0, dtype=by_party[party].dtype)
            old_ids = np.zeros(0, dtype=np.int64)
        tokens = _token_array(party, withdrawn.get(party, ()))
        applied.append(_apply(party, old, old_ids, by_party.get(party), tokens))
    _check_unique_tokens(parties, applied)
    return parties, applied


def _hex(token: np.bytes_) -> str:
    """A token (``S16``, whose trailing zero bytes numpy drops) as its 32 hex digits."""
    return bytes(token).ljust(16, b"\0").hex()


def _check_batch(protocol: Protocol, state: LinkState, batch: Sequence[Encodings]) -> None:
    if not batch:
        return
    check_compatible(protocol, [(str(item.path), item.header) for item in batch])
    differing = [str(item.path) for item in batch if item.header.secret_check != state.secret_check]
    if differing:
        raise MismatchError(
            f"{differing[0]} was encoded with a different shared secret than the records in the linkage state; "
            "encode the batch with the project's secret (or, if the secret changed, every party encodes its full "
            "list again and you link from scratch with --state-out)"
        )


def refresh_state(
    protocol: Protocol,
    state: LinkState,
    batch: Sequence[Encodings],
    withdrawn: Mapping[str, Sequence[str]] | None = None,
    *,
    on_progress: ProgressCallback | None = None,
) -> tuple[LinkState, BatchSummary]:
    """Add a batch to a linkage state: the new state and what changed.

    Args:
        protocol: the protocol the state was made under.
        state: the state after the previous batch (:func:`start_state` or this function).
        batch: per party at most one encodings file of new and corrected records (a
            record whose token the state holds replaces it).
        withdrawn: per party id, tokens (32 hex digits each) to remove.
        on_progress: called with (pairs of parties done, pairs of parties).

    Raises:
        InputError: a withdrawn token not in the state, a token withdrawn and sent again,
            a party not in the protocol, a token of another party.
        MismatchError: a batch encoded under another protocol or secret.
    """
    started = time.perf_counter()
    parties, applied = _apply_batch(protocol, state, batch, withdrawn or {})
    kept = _kept_pairs(state, parties, applied)
    new_pairs, compared = _compare_changed(protocol, state.model, parties, applied, on_progress)
    pairs = AcceptedPairs.concatenate([kept, new_pairs])
    within = dict(state.within_oversized)
    if state.dedupe:
        for index, party in enumerate(parties):
            if party not in within:
                within[party] = within_oversized(_keys(applied[index].records), protocol.max_block_pairs)
        records = [item.records for item in applied]
        duplicates, count, _ = _within(protocol, state.model, parties, records, [a.changed for a in applied], within)
        pairs = AcceptedPairs.concatenate([pairs, duplicates])
        compared += count
    sizes = [len(item.records) for item in applied]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    touched = np.zeros(int(offsets[-1]), dtype=bool)
    for index, item in enumerate(applied):
        touched[offsets[index] + item.changed] = True
    touched |= _lost_neighbours(state, parties, applied, offsets)
    groups = _solve(pairs, sizes, touched, dedupe=state.dedupe)
    previous = [item.previous for item in applied]
    entity, next_entity, retired = carry_ids(groups, previous, state.next_entity)
    retired = _retired(retired, entity, applied)
    new_state = LinkState(
        fingerprint=state.fingerprint,
        secret_check=state.secret_check,
        model=state.model,
        parties=tuple(parties),
        records=tuple(item.records for item in applied),
        entity=entity,
        pairs=pairs,
        next_entity=next_entity,
        batches=state.batches + 1,
        dedupe=state.dedupe,
        within_oversized=within,
    )
    summary = BatchSummary(
        added={party: item.counts[0] for party, item in zip(parties, applied, strict=True)},
        corrected={party: item.counts[1] for party, item in zip(parties, applied, strict=True)},
        withdrawn={party: item.counts[2] for party, item in zip(parties, applied, strict=True)},
        pairs_compared=compared,
        pairs_accepted=len(pairs),
        components_solved=len({min(group) for group in groups if len(group) > 1}),
        records_solved=sum(len(group) for group in groups),
        retired=dict(sorted(retired.items())),
        seconds=time.perf_counter() - started,
    )
    return new_state, summary


def _token_array(party: str, tokens: Sequence[str]) -> np.ndarray:
    raw = []
    for token in tokens:
        try:
            value = bytes.fromhex(token)
        except ValueError:
            value = b""
        if len(value) != 16:
            raise InputError(f"party {party!r}: {token[:40]!r} is not a record token (32 hex digits)")
        raw.append(value)
    # Sorted and each once (a token listed twice is withdrawn once).
    return np.unique(np.array(raw, dtype="S16")) if raw else np.zeros(0, dtype="S16")


def _check_unique_tokens(parties: Sequence[str], applied: Sequence[_Applied]) -> None:
    keys = np.concatenate([token_keys(item.records) for item in applied])
    distinct, counts = np.unique(keys, return_counts=True)
    if (counts > 1).any():
        raise InputError(
            f"{int((counts > 1).sum())} tokens appear under two parties ({', '.join(parties)}); a file was passed as "
            "another party's. Pass each party's own batch"
        )
    del distinct


def _kept_pairs(state: LinkState, parties: Sequence[str], applied: Sequence[_Applied]) -> AcceptedPairs:
    """The state's accepted pairs whose two records did not change, in the new indices."""
    if not len(state.pairs):
        return AcceptedPairs.empty()
    new_party = np.array([parties.index(party) for party in state.parties], dtype=np.int8)
    mapping = [applied[parties.index(party)].old_to_new for party in state.parties]
    pairs = state.pairs
    record_a = np.empty(len(pairs), dtype=np.int64)
    record_b = np.empty(len(pairs), dtype=np.int64)
    for old, column in enumerate(mapping):
        on_a, on_b = pairs.party_a == old, pairs.party_b == old
        record_a[on_a] = column[pairs.record_a[on_a]]
        record_b[on_b] = column[pairs.record_b[on_b]]
    keep = (record_a >= 0) & (record_b >= 0)
    return AcceptedPairs(
        new_party[pairs.party_a[keep]],
        new_party[pairs.party_b[keep]],
        record_a[keep],
        record_b[keep],
        pairs.weight[keep],
    )


def _lost_neighbours(
    state: LinkState, parties: Sequence[str], applied: Sequence[_Applied], offsets: np.ndarray
) -> np.ndarray:
    """Per new record, whether it had an accepted pair with a record that went (its component may split)."""
    out = np.zeros(int(offsets[-1]), dtype=bool)
    if not len(state.pairs):
        return out
    mapping = [applied[parties.index(party)].old_to_new for party in state.parties]
    new_party = np.array([parties.index(party) for party in state.parties], dtype=np.int64)
    pairs = state.pairs
    ends = []
    for column_party, column_record in ((pairs.party_a, pairs.record_a), (pairs.party_b, pairs.record_b)):
        new = np.empty(len(pairs), dtype=np.int64)
        for old, column in enumerate(mapping):
            on = column_party == old
            new[on] = column[column_record[on]]
        ends.append((new_party[column_party], new))
    (party_a, new_a), (party_b, new_b) = ends
    lost = (new_a < 0) | (new_b < 0)
    for party, new in ((party_a, new_a), (party_b, new_b)):
        hit = lost & (new >= 0)
        out[offsets[party[hit]] + new[hit]] = True
    return out


def _compare_changed(
    protocol: Protocol,
    model: FrozenModel,
    parties: Sequence[str],
    applied: Sequence[_Applied],
    on_progress: ProgressCallback | None,
) -> tuple[AcceptedPairs, int]:
    """Block and compare every new or changed record against every record of the other parties.

    Returns the accepted pairs (new indices) and how many candidates were compared.
    """
    comparisons = comparisons_for(protocol)
    features = features_for(comparisons, protocol.comparison_groups)
    oversized = model.oversized_for(parties, len(protocol.block_limits))
    priors = model.priors_for(parties)
    combos = list(itertools.combinations(range(len(parties)), 2))
    keys = [np.asarray(item.records["block"]).reshape(len(item.records), -1) for item in applied]
    party_features: dict[int, PartyFeatures] = {}
    built: dict[int, BlockIndex] = {}

    def indexes(party: int) -> BlockIndex:
        if party not in built:
            built[party] = _sorted_index(keys[party])
        return built[party]

    clks: dict[int, list[bitarray]] = {}
    parts: list[AcceptedPairs] = []
    compared = 0
    if on_progress:
        on_progress(0, len(combos))
    for done, (a, b) in enumerate(combos, start=1):
        changed_a, changed_b = applied[a].changed, applied[b].changed
        if len(changed_a) or len(changed_b):
            codes = _candidates(keys, indexes, (a, b), (changed_a, changed_b), oversized[(a, b)])
            if protocol.clk_prefilter is not None:
                codes = sorted_unique(
                    np.concatenate([codes, _clk_candidates(applied, clks, (a, b), protocol.clk_prefilter)])
                )
            index_a, index_b = split_codes(codes, max(len(applied[b].records), 1))
            compared += len(index_a)
            for party in (a, b):
                if party not in party_features:
                    party_features[party] = PartyFeatures.from_records(applied[party].records, comparisons)
            levels, similarity = compare_and_measure(
                party_features[a], party_features[b], index_a, index_b, comparisons
            )
            keep, weights, _ = weigh_pairs(
                levels, comparisons, features, (model.model, priors, model.threshold), (a, b), ([], []), similarity
            )
            parts.append(
                AcceptedPairs(
                    np.full(int(keep.sum()), a, dtype=np.int8),
                    np.full(int(keep.sum()), b, dtype=np.int8),
                    index_a[keep],
                    index_b[keep],
                    weights[keep],
                )
            )
        if on_progress:
            on_progress(done, len(combos))
    return (AcceptedPairs.concatenate(parts) if parts else AcceptedPairs.empty()), compared


def _sorted_index(keys: np.ndarray) -> BlockIndex:
    """A party's block keys sorted per rule, to look other records' keys up in (no block skipped yet)."""
    sorted_keys, order = [], []
    for rule in range(keys.shape[1]):
        column = keys[:, rule]
        present = np.flatnonzero(column)
        rule_order = present[np.argsort(column[present], kind="stable")]
        sorted_keys.append(column[rule_order])
        order.append(rule_order.astype(np.int64))
    none = tuple(np.zeros(0, dtype=np.uint64) for _ in range(keys.shape[1]))
    return BlockIndex(tuple(sorted_keys), tuple(order), none, len(keys))


def _candidates(
    keys: Sequence[np.ndarray],
    indexes: Callable[[int], BlockIndex],
    parties: tuple[int, int],
    changed: tuple[np.ndarray, np.ndarray],
    oversized: tuple[np.ndarray, ...],
) -> np.ndarray:
    """Pair codes ``a * len(b) + b`` of every candidate with a changed record on either side.

    The changed records of each side are looked up in the other side's whole index (a
    block is symmetric: skipping an oversized key on the side looked up skips the block).
    """
    a, b = parties
    width = max(len(keys[b]), 1)
    codes = []
    if len(changed[0]) and len(keys[b]):
        index = replace(indexes(b), oversized=oversized)
        local_a, index_b = candidate_pairs(keys[a][changed[0]], 0, index)
        codes.append(changed[0][local_a] * width + index_b)
    if len(changed[1]) and len(keys[a]):
        index = replace(indexes(a), oversized=oversized)
        local_b, index_a = candidate_pairs(keys[b][changed[1]], 0, index)
        codes.append(index_a * width + changed[1][local_b])
    if not codes:
        return np.zeros(0, dtype=np.int64)
    return sorted_unique(np.concatenate(codes))


def _clk_candidates(
    applied: Sequence[_Applied], clks: dict[int, list[bitarray]], parties: tuple[int, int], threshold: float
) -> np.ndarray:
    """Pair codes of the all-pairs CLK prefilter's pairs with a changed record on either side."""
    a, b = parties
    for party in parties:
        if party not in clks:
            clks[party] = clk_dataset(np.ascontiguousarray(applied[party].records["clk"]))
    width = max(len(applied[b].records), 1)
    codes = []
    changed_a, changed_b = applied[a].changed, applied[b].changed
    if len(changed_a):
        local_a, index_b = clk_dice_pairs([clks[a][i] for i in changed_a.tolist()], clks[b], threshold)
        codes.append(changed_a[local_a] * width + index_b)
    if len(changed_b):
        index_a, local_b = clk_dice_pairs(clks[a], [clks[b][i] for i in changed_b.tolist()], threshold)
        codes.append(index_a * width + changed_b[local_b])
    return np.concatenate(codes) if codes else np.zeros(0, dtype=np.int64)
