"""The linkage state: what ``pprl link --state-out`` keeps so that the next batch is linked without starting over.

A state holds, for one project:

* the frozen model (:mod:`linkage.matching.frozen`) that decided every pair;
* each party's records as they were linked (token, CLK, field encodings, block keys),
  sorted by token, with the entity id of each;
* the accepted pairs, with their match weights (the solver's order);
* the next entity id to give out, and how many batches were added.

It is linkage-side data, as sensitive as the encodings themselves, and it holds match
weights, which never leave the linkage side: keep it where the encodings are kept, never
send it to a party. A record's index in the state is its rank by token within its party,
so the same records always get the same indices, whatever order they arrived in (the
solver breaks ties by index: an incremental link and a link from scratch of the same
records then solve alike).

The file (``pprl-link-state``, version 1) is a NumPy ``.npz`` archive read without
pickle: one JSON header (format, version, protocol fingerprint, secret check, parties,
record layout, the frozen model, counters) and the arrays; the archive's CRC-32 of each
member finds a damaged or truncated file (a SHA-256 on top cost a fifth of a batch's time).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from linkage.encodings import record_layout
from linkage.errors import InputError, MismatchError
from linkage.file_modes import private_opener
from linkage.matching.frozen import FrozenModel
from linkage.protocol import Protocol

__all__ = ["FORMAT", "AcceptedPairs", "LinkState", "read_state", "token_keys", "write_state"]

FORMAT = "pprl-link-state"
VERSION = 1
_HEADER_KEYS = frozenset(
    {"format", "version", "fingerprint", "secret_check", "parties", "layout", "model", "next_entity", "batches"}
    | {"records", "dedupe"}
)
_PAIR_FIELDS = (("party_a", np.int8), ("party_b", np.int8), ("record_a", np.int32), ("record_b", np.int32))


def token_keys(records: np.ndarray) -> np.ndarray:
    """Each record's token as one sortable 16-byte value (``S16``).

    >>> records = np.zeros(2, dtype=[("token", "u1", (16,))])
    >>> records["token"][0, 0] = 1
    >>> token_keys(records).argsort().tolist()
    [1, 0]
    """
    return np.ascontiguousarray(records["token"]).view("S16").reshape(len(records))


@dataclass(frozen=True)
class AcceptedPairs:
    """Accepted pairs, by party index and record index in the state.

    ``party_a < party_b``, or equal for a pair within a party (with ``dedupe``,
    ``record_a < record_b`` then).

    ``weight`` is each pair's match weight under the frozen model: linkage side only.
    """

    party_a: np.ndarray
    party_b: np.ndarray
    record_a: np.ndarray
    record_b: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.weight)

    def take(self, rows: np.ndarray) -> AcceptedPairs:
        """The pairs at ``rows`` (an index or a boolean mask)."""
        return AcceptedPairs(
            party_a=self.party_a[rows],
            party_b=self.party_b[rows],
            record_a=self.record_a[rows],
            record_b=self.record_b[rows],
            weight=self.weight[rows],
        )

    @classmethod
    def concatenate(cls, parts: list[AcceptedPairs]) -> AcceptedPairs:
        """All pairs of the parts, in canonical order (party a, party b, record a, record b)."""
        columns = [np.concatenate([getattr(p, name) for p in parts]).astype(kind) for name, kind in _PAIR_FIELDS]
        weight = np.concatenate([p.weight for p in parts]).astype(np.float64)
        order = np.lexsort((columns[3], columns[2], columns[1], columns[0]))
        party_a, party_b, record_a, record_b = (column[order] for column in columns)
        return cls(party_a=party_a, party_b=party_b, record_a=record_a, record_b=record_b, weight=weight[order])

    @classmethod
    def empty(cls) -> AcceptedPairs:
        """No pairs."""
        party_a, party_b, record_a, record_b = (np.zeros(0, dtype=kind) for _, kind in _PAIR_FIELDS)
        return cls(party_a=party_a, party_b=party_b, record_a=record_a, record_b=record_b, weight=np.zeros(0))


@dataclass(frozen=True)
class LinkState:
    """A project's linkage after its latest batch (see the module's description).

    Attributes:
        fingerprint: the protocol fingerprint every record was encoded under.
        secret_check: the secret check value of every record's encodings file.
        model: the frozen model; its threshold decides every pair.
        parties: the parties with records, in protocol order.
        records: per party, its records (the encodings' layout), sorted by token.
        entity: per party, each record's entity id (every record has one; a record
            linked to no other is an entity of its own).
        pairs: the accepted pairs.
        next_entity: the entity id the next new entity gets (ids are never reused).
        batches: how many batches were added since the first link.
        dedupe: pairs within a party are compared too, and an entity may hold a party's
            duplicate records (link-and-dedupe, :mod:`linkage.matching.dedupe`).
        within_oversized: with ``dedupe``, per party, per block key column, the block keys
            skipped within that party (frozen when the party's first records came).
    """

    fingerprint: str
    secret_check: str
    model: FrozenModel
    parties: tuple[str, ...]
    records: tuple[np.ndarray, ...]
    entity: tuple[np.ndarray, ...]
    pairs: AcceptedPairs
    next_entity: int
    batches: int = 0
    dedupe: bool = False
    within_oversized: Mapping[str, tuple[np.ndarray, ...]] = field(default_factory=dict)

    def tokens(self, party: int) -> np.ndarray:
        """The party's tokens as sortable 16-byte values, ascending."""
        return token_keys(self.records[party])

    def entities(self) -> dict[int, list[tuple[int, int]]]:
        """Every entity's records, ``(party index, record index)``, by entity id (ascending)."""
        party = np.concatenate([np.full(len(ids), p, dtype=np.int64) for p, ids in enumerate(self.entity)])
        record = np.concatenate([np.arange(len(ids), dtype=np.int64) for ids in self.entity])
        ids = np.concatenate(self.entity) if self.entity else np.zeros(0, dtype=np.int64)
        order = np.lexsort((record, party, ids))
        out: dict[int, list[tuple[int, int]]] = {}
        for entity, p, r in zip(ids[order].tolist(), party[order].tolist(), record[order].tolist(), strict=True):
            out.setdefault(entity, []).append((p, r))
        return out


def _arrays(state: LinkState) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for index, (records, ids) in enumerate(zip(state.records, state.entity, strict=True)):
        out[f"records_{index}"] = np.ascontiguousarray(records)
        out[f"entity_{index}"] = np.ascontiguousarray(ids, dtype=np.int64)
    for name, kind in _PAIR_FIELDS:
        out[f"pair_{name}"] = np.ascontiguousarray(getattr(state.pairs, name), dtype=kind)
    out["pair_weight"] = np.ascontiguousarray(state.pairs.weight, dtype=np.float64)
    for party, rules in state.within_oversized.items():
        for rule, keys in enumerate(rules):
            out[f"within_{state.parties.index(party)}_{rule}"] = np.ascontiguousarray(keys, dtype=np.uint64)
    return out


def write_state(state: LinkState, path: Path) -> None:
    """Write the state to ``path`` (0600), through a temporary file renamed into place."""
    arrays = _arrays(state)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "fingerprint": state.fingerprint,
        "secret_check": state.secret_check,
        "parties": list(state.parties),
        "layout": [list(item) for item in _layout_of(state)],
        "model": state.model.to_json(),
        "next_entity": state.next_entity,
        "batches": state.batches,
        "dedupe": state.dedupe,
        "records": [len(records) for records in state.records],
    }
    encoded = np.frombuffer(json.dumps(header, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb", opener=private_opener) as handle:
        # One mapping of names to arrays (numpy's stub types the keywords as allow_pickle's).
        savez: Any = np.savez
        savez(handle, header=encoded, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _layout_of(state: LinkState) -> tuple[tuple[str, str, int], ...]:
    dtype = state.records[0].dtype if state.records else np.dtype([])
    layout = []
    for name in dtype.names or ():
        base, shape = dtype[name].base, dtype[name].shape
        layout.append((name, base.str.lstrip("|"), int(shape[0]) if shape else 1))
    return tuple(layout)


def read_state(path: Path, protocol: Protocol) -> LinkState:
    """Read a state written by :func:`write_state`, checked against the protocol and its own checksum.

    Raises:
        InputError: no such file, not a state file, truncated or damaged, another version.
        MismatchError: written under another protocol (fingerprint) or record layout.
    """
    again = f"restore {path} from a backup, or link from scratch with `pprl link ... --state-out {path}`"
    try:
        handle = path.open("rb")
    except FileNotFoundError as exc:
        raise InputError(
            f"{path}: no such state file; the first link writes it with --state-out", path=str(path)
        ) from exc
    # The file is opened here, not by np.load: np.load leaves it open when the archive is damaged.
    with handle:
        try:
            archive = np.load(handle, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError(
                f"{path} is not a pprl linkage state, or it is truncated; {again}", path=str(path)
            ) from exc
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise InputError(f"{path} is not a pprl linkage state; {again}", path=str(path))
        with archive:
            try:
                header = json.loads(bytes(archive["header"]).decode("utf-8"))
                arrays = {name: archive[name] for name in archive.files if name != "header"}
            except (KeyError, OSError, ValueError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
                raise InputError(
                    f"{path} is truncated or damaged ({exc.__class__.__name__}); {again}", path=str(path)
                ) from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise InputError(f"{path} is not a pprl linkage state; {again}", path=str(path))
    if set(header) != _HEADER_KEYS or header["version"] != VERSION:
        raise InputError(
            f"{path}: a linkage state of version {header.get('version')!r} or with other keys (this pprl reads "
            f"version {VERSION}); {again}",
            path=str(path),
        )
    if header["fingerprint"] != protocol.fingerprint:
        raise MismatchError(
            f"{path} was linked under protocol fingerprint {str(header['fingerprint'])[:12]}..., but the protocol "
            f"given has {protocol.fingerprint[:12]}...; pass the protocol the state was made with, or link every "
            f"party's full list from scratch with `pprl link ... --state-out {path}`"
        )
    layout = record_layout(protocol)
    if [list(item) for item in layout] != header["layout"]:
        raise MismatchError(f"{path} holds records of another layout than this protocol's; {again}")
    try:
        parties = tuple(str(party) for party in header["parties"])
        records = tuple(arrays[f"records_{index}"] for index in range(len(parties)))
        entity = tuple(arrays[f"entity_{index}"] for index in range(len(parties)))
        party_a, party_b, record_a, record_b = (arrays[f"pair_{name}"] for name, _ in _PAIR_FIELDS)
        pairs = AcceptedPairs(
            party_a=party_a, party_b=party_b, record_a=record_a, record_b=record_b, weight=arrays["pair_weight"]
        )
        model = FrozenModel.from_json(header["model"], protocol, source=f"the model in {path}")
        within = {
            party: tuple(arrays[f"within_{index}_{column}"] for column in range(len(protocol.block_limits)))
            for index, party in enumerate(parties)
            if f"within_{index}_0" in arrays
        }
    except KeyError as exc:
        raise InputError(f"{path} lacks the array {exc}; {again}", path=str(path)) from exc
    problems = _inconsistencies(header["records"], records, entity, pairs)
    if problems:
        raise InputError(f"{path} does not hold together ({'; '.join(problems)}); {again}", path=str(path))
    return LinkState(
        fingerprint=str(header["fingerprint"]),
        secret_check=str(header["secret_check"]),
        model=model,
        parties=parties,
        records=records,
        entity=entity,
        pairs=pairs,
        next_entity=int(header["next_entity"]),
        batches=int(header["batches"]),
        dedupe=bool(header["dedupe"]),
        within_oversized=within,
    )


def _inconsistencies(
    counts: object, records: tuple[np.ndarray, ...], entity: tuple[np.ndarray, ...], pairs: AcceptedPairs
) -> list[str]:
    """What does not fit together in a state's arrays (a file written by hand or by another program)."""
    sizes = [len(item) for item in records]
    problems = []
    if counts != sizes or [len(ids) for ids in entity] != sizes:
        problems.append("record counts differ between the header, the records and the entity ids")
    lengths = {len(pairs.party_a), len(pairs.party_b), len(pairs.record_a), len(pairs.record_b), len(pairs.weight)}
    if len(lengths) > 1:
        problems.append("the pair arrays differ in length")
    elif len(pairs):
        parties = np.concatenate([pairs.party_a, pairs.party_b]).astype(np.int64)
        indices = np.concatenate([pairs.record_a, pairs.record_b]).astype(np.int64)
        if parties.min() < 0 or parties.max() >= len(sizes):
            problems.append("a pair names a party the state does not hold")
        elif np.any((indices < 0) | (indices >= np.asarray(sizes, dtype=np.int64)[parties])):
            problems.append("a pair names a record the state does not hold")
    return problems
