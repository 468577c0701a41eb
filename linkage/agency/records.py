"""Turn normalised client rows into encodings (pure, no I/O).

:func:`~linkage.agency.prepare.prepare_rows` (re-exported here) checks and normalises raw
rows of one party; :class:`RecordEncoder` turns normalised identifiers into the records of
an encodings file. Both work on whole chunks so that the work can be spread over a process
pool.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence

import numpy as np

from linkage.agency.hashing import (
    FilterHardening,
    Keys,
    apply_hardening,
    filter_hardening,
    keyed_hash32,
    keyed_hash64,
    salted_positions,
    token_positions,
    tokenize,
)
from linkage.agency.normalise import soundex
from linkage.agency.prepare import PreparedRows, RowProblem, Value, prepare_rows
from linkage.agency.similarity import SimilarityEncoder, token_hash
from linkage.encodings import PLACEHOLDER_DAY, copy_column, record_layout
from linkage.matching.block import mix_keys
from linkage.protocol import STRING_KINDS, BlockingRule, FieldSpec, Protocol

__all__ = ["PreparedRows", "RecordEncoder", "RowProblem", "prepare_rows", "salts_for"]

# Per field: names, dates and places repeat and stay cached (a day of birth among some
# 25,000); a limit keeps memory flat whatever the file size.
_CACHE_LIMIT = 40_000


def _transform(value: Value, transform: str | None) -> str | None:
    """The text a blocking rule part keys on (``None``: the record gets no key for it).

    >>> _transform(dt.date(1980, 7, 3), "month_day"), _transform("smith", "soundex")
    ('3-7', 's530')
    """
    if value is None:
        return None
    if isinstance(value, dt.date):
        if transform == "year":
            return str(value.year)
        if transform == "month_day":
            # Sorted, so that a swapped day and month still share the block.
            low, high = sorted((value.day, value.month))
            return f"{low}-{high}"
        return value.isoformat()
    if transform == "soundex":
        return soundex(value) or None
    if transform == "initial":
        return value[0]
    if transform == "first3":
        return value[:3]
    return value


def salts_for(protocol: Protocol, rows: Sequence[Sequence[Value]], salt_index: int = 0) -> list[str]:
    """Each row's value of one of the protocol's salts ("" when unsalted or the salt field is missing).

    >>> from linkage.protocol import Hardening, load_protocol, with_hardening
    >>> protocol = load_protocol("schemas/examples/social_services.json")
    >>> salted = with_hardening(protocol, Hardening(salt=("date_of_birth", "year")))
    >>> salts_for(salted, [(None, None, dt.date(1984, 3, 7), None, None, None, None)])
    ['1984']
    """
    salts = protocol.hardening.salts
    if salt_index >= len(salts):
        return [""] * len(rows)
    field, transform = salts[salt_index]
    index = [spec.name for spec in protocol.fields].index(field)
    return [_transform(row[index], transform) or "" for row in rows]


class _TokenTable:
    """Bit positions of every token of one field seen so far, one row per token id.

    Every token sets a fixed number of bits, so positions sit in a 2-D array and a whole
    chunk's bits are gathered with one numpy index instead of per-token Python work.
    Positions are in the filters as built, before hardening. Unsalted tokens take
    clkhash's BLAKE2 positions; for salted ones the table keeps a keyed 64-bit value per
    token, which :func:`~linkage.agency.hashing.salted_positions` mixes with the salt's.
    """

    def __init__(
        self,
        clk_key: bytes,
        clk_bits_per_token: int,
        clk_bits: int,
        own: tuple[bytes, int, int] | None,
        similarity_key: bytes | None = None,
    ):
        self.ids: dict[str, int] = {}
        self.clk_key, self.clk_k, self.clk_bits = clk_key, clk_bits_per_token, clk_bits
        self.own = own
        self.clk = np.zeros((1024, clk_bits_per_token), dtype=np.uint16)
        self.own_positions = np.zeros((1024, own[1] if own else 0), dtype=np.uint16)
        self.clk_values = np.zeros(1024, dtype=np.uint64)
        self.own_values = np.zeros(1024, dtype=np.uint64)
        # For similarity rules: each token's keyed hash, of the token as normalised (unsalted).
        self.similarity_key = similarity_key
        self.token_hashes = np.zeros(1024 if similarity_key else 0, dtype=np.uint64)

    def id_of(self, token: str) -> int:
        token_id = self.ids.get(token)
        if token_id is not None:
            return token_id
        token_id = len(self.ids)
        if token_id == len(self.clk):
            self.clk = np.concatenate([self.clk, np.zeros_like(self.clk)])
            self.own_positions = np.concatenate([self.own_positions, np.zeros_like(self.own_positions)])
            self.clk_values = np.concatenate([self.clk_values, np.zeros_like(self.clk_values)])
            self.own_values = np.concatenate([self.own_values, np.zeros_like(self.own_values)])
            self.token_hashes = np.concatenate([self.token_hashes, np.zeros_like(self.token_hashes)])
        self.clk[token_id] = token_positions(token, self.clk_key, self.clk_k, self.clk_bits)
        self.clk_values[token_id] = keyed_hash64(self.clk_key, f"salted token|{token}")
        if self.own:
            key, bits_per_token, num_bits = self.own
            self.own_positions[token_id] = token_positions(token, key, bits_per_token, num_bits)
            self.own_values[token_id] = keyed_hash64(key, f"salted token|{token}")
        if self.similarity_key is not None:
            self.token_hashes[token_id] = token_hash(token, self.similarity_key)
        self.ids[token] = token_id
        return token_id


class _ValueTable:
    """Everything one field's values encode to, one row per value seen, in flat arrays.

    Per value: its token ids (into the field's :class:`_TokenTable`), its keyed hashes
    (a date's day, month and year; a category's), its block key parts, and its signature
    under each similarity rule that reads the field. A chunk's records then gather these
    by value id in numpy, instead of per-record Python work.
    """

    def __init__(self, hash_shape: tuple[int, ...], transforms: int, signature_widths: list[int]) -> None:
        self.hash_shape, self.transforms, self.signature_widths = hash_shape, transforms, signature_widths
        self.clear()

    def clear(self) -> None:
        """Forget every value (keeps memory flat)."""
        self.ids: dict[Value, int] = {}
        self.offsets = np.zeros(1, dtype=np.int64)  # value i's tokens: token_ids[offsets[i] : offsets[i + 1]]
        self.token_ids = np.zeros(0, dtype=np.int64)
        self.hashes = np.zeros((0, *self.hash_shape), dtype=np.uint32)
        self.parts = np.zeros((0, self.transforms), dtype=np.uint64)
        self.signatures = [np.zeros((0, width), dtype=np.uint32) for width in self.signature_widths]

    def add(
        self,
        token_ids: np.ndarray,
        lengths: np.ndarray,
        hashes: np.ndarray,
        parts: np.ndarray,
        signatures: list[np.ndarray],
    ) -> None:
        """Append new values' entries, in the order their ids were given.

        Args:
            token_ids: the values' token ids, one value after another.
            lengths: how many tokens each value has.
            hashes: the values' keyed hashes.
            parts: the values' block key parts.
            signatures: per similarity rule that reads the field, the values' signatures.
        """
        self.offsets = np.concatenate([self.offsets, self.offsets[-1] + np.cumsum(lengths)])
        self.token_ids = np.concatenate([self.token_ids, token_ids])
        self.hashes = np.concatenate([self.hashes, hashes])
        self.parts = np.concatenate([self.parts, parts])
        self.signatures = [np.concatenate([old, new]) for old, new in zip(self.signatures, signatures, strict=True)]

    def tokens_of(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The token ids of the values ``codes``, one after another, and the position in ``codes`` of each."""
        starts = self.offsets[codes]
        lengths = self.offsets[codes + 1] - starts
        owners = np.repeat(np.arange(len(codes)), lengths)
        # Within each value's run of tokens: its start in token_ids, plus the place in the run.
        run_starts = np.cumsum(lengths) - lengths
        index = np.arange(int(lengths.sum())) - run_starts[owners] + starts[owners]
        return self.token_ids[index], owners


def _set_bits(bits: np.ndarray, rows: np.ndarray, positions: np.ndarray) -> None:
    """Set ``bits[rows[i], positions[i, j]]`` for every i and j (through the flat index: one scatter)."""
    flat = rows[:, None] * bits.shape[1] + positions
    bits.reshape(-1)[flat.reshape(-1)] = True


class RecordEncoder:
    """Encodes normalised identifiers into encodings records, with caches for speed.

    Names, dates and places repeat across a client list, so each field keeps, per value
    seen, its token ids, hashes, block key parts and similarity signatures
    (:class:`_ValueTable`, emptied past a limit), and per token its bit positions
    (:class:`_TokenTable`).
    """

    def __init__(self, protocol: Protocol, keys: Keys) -> None:
        self.protocol = protocol
        self.keys = keys
        self._lock = threading.Lock()
        self.dtype = np.dtype([(n, k, (c,)) if c > 1 else (n, k) for n, k, c in record_layout(protocol)])
        # A field whose values rarely repeat (addresses) stops being cached: the look-ups
        # and the churn would cost more than they save.
        self._cached = [True] * len(protocol.fields)
        self._lookups = [0] * len(protocol.fields)
        self._misses = [0] * len(protocol.fields)
        hardening = protocol.hardening
        position = {spec.name: i for i, spec in enumerate(protocol.fields)}
        self._clk_plan = filter_hardening(keys.hardening, hardening, protocol.clk_bits, "clk")
        # Swapped names share the first one's key and hardening, so that the service can
        # compare one record's given name with the other's surname.
        own_key = [
            position[protocol.swapped_names[0]] if spec.name in protocol.swapped_names else i
            for i, spec in enumerate(protocol.fields)
        ]
        self._own_plans = [
            filter_hardening(keys.hardening, hardening, spec.num_bits, f"field/{protocol.fields[own_key[i]].name}")
            if spec.kind in STRING_KINDS and spec.num_bits
            else None
            for i, spec in enumerate(protocol.fields)
        ]
        # The salt field's own tokens are not salted; every other field's are.
        salt_field = position[hardening.salt[0]] if hardening.salt else -1
        self._salt_clk = [hardening.salts_target("clk") and i != salt_field for i in range(len(protocol.fields))]
        self._salt_own = [
            hardening.salts_target("fields") and i != salt_field and plan is not None
            for i, plan in enumerate(self._own_plans)
        ]
        self._similarity = SimilarityEncoder(protocol, keys.block)
        self._salt_count = len(hardening.salts)
        self._salt_values: list[dict[Value, int]] = [{} for _ in hardening.salts]
        self._tables = [
            _TokenTable(
                keys.clk[i],
                spec.clk_bits_per_token,
                self._clk_plan.build_bits,
                (keys.field[own_key[i]], spec.bits_per_token, plan.build_bits)  # type: ignore[arg-type]
                if plan is not None
                else None,
                similarity_key=keys.block if i in self._similarity.readers else None,
            )
            for i, (spec, plan) in enumerate(zip(protocol.fields, self._own_plans, strict=True))
        ]
        # The transforms each field's value goes through for blocking, e.g. surname -> soundex.
        self._transforms: list[list[str | None]] = [[] for _ in protocol.fields]
        exact = [rule for rule in protocol.blocking if isinstance(rule, BlockingRule)]
        for rule in exact:
            for name, transform in rule.parts:
                if transform not in self._transforms[position[name]]:
                    self._transforms[position[name]].append(transform)
        self._rules = [
            (
                np.uint64(keyed_hash64(keys.block, f"rule|{rule.name}")),
                [(position[name], self._transforms[position[name]].index(t)) for name, t in rule.parts],
            )
            for rule in exact
        ]
        self._values = [
            _ValueTable((3,) if spec.kind == "date" else (), len(self._transforms[i]), self._similarity.widths(i))
            for i, spec in enumerate(protocol.fields)
        ]
        # Each rule's first block key column: a similarity rule takes one per band.
        self._columns = np.cumsum([0, *(rule.columns for rule in protocol.blocking)]).tolist()

    def _value_codes(self, index: int, spec: FieldSpec, column: Sequence[Value]) -> np.ndarray:
        """Each record's value id in the field's :class:`_ValueTable` (-1: missing), adding new values."""
        values = self._values[index]
        if not self._cached[index] or len(values.ids) >= _CACHE_LIMIT:
            values.clear()
        ids = values.ids
        new: list[Value] = []
        codes: list[int] = []
        for value in column:
            if value is None:
                codes.append(-1)
                continue
            code = ids.get(value)
            if code is None:
                code = ids[value] = len(ids)
                new.append(value)
            codes.append(code)
        if new:
            self._add_values(index, spec, new)
        # A field whose values rarely repeat (addresses) stops being kept across chunks.
        self._lookups[index] += len(column) - codes.count(-1)
        self._misses[index] += len(new)
        if self._cached[index] and self._lookups[index] >= _CACHE_LIMIT:
            self._cached[index] = self._misses[index] < 0.8 * self._lookups[index]
        return np.asarray(codes, dtype=np.int64)

    def _add_values(self, index: int, spec: FieldSpec, new: list[Value]) -> None:
        """Token ids, hashes (dates and categories), block key parts and signatures of new values."""
        table = self._tables[index]
        texts = [value.strftime("%Y%m%d") if isinstance(value, dt.date) else value for value in new]
        token_lists = [tokenize(text, spec, self.protocol.ngram) for text in texts if isinstance(text, str)]
        tokens = [token for value_tokens in token_lists for token in value_tokens]
        for token in set(tokens).difference(table.ids):
            table.id_of(token)
        token_ids = np.fromiter(map(table.ids.__getitem__, tokens), dtype=np.int64, count=len(tokens))
        lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
        values = self._values[index]
        hashes = np.zeros((len(new), *values.hash_shape), dtype=np.uint32)
        if spec.kind == "date":
            # A day and month that stand for "unknown" are sent as such: the service
            # compares such a date by its year only.
            hashes[:] = [
                (PLACEHOLDER_DAY, PLACEHOLDER_DAY, keyed_hash32(self.keys.year, str(value.year)))
                if spec.on_placeholder_day(value)
                else (
                    keyed_hash32(self.keys.day_month, str(value.day)),
                    keyed_hash32(self.keys.day_month, str(value.month)),
                    keyed_hash32(self.keys.year, str(value.year)),
                )
                for value in new
                if isinstance(value, dt.date)
            ]
        elif spec.kind == "category":
            hashes[:] = [keyed_hash32(self.keys.field[index], text) for text in texts if isinstance(text, str)]
        parts = np.zeros((len(new), values.transforms), dtype=np.uint64)
        for column, transform in enumerate(self._transforms[index]):
            parts[:, column] = [
                0
                if (part := _transform(value, transform)) is None
                else keyed_hash64(self.keys.block, f"{spec.name}:{transform}|{part}")
                for value in new
            ]
        signatures: list[np.ndarray] = []
        if values.signature_widths:
            owners = np.repeat(np.arange(len(new)), lengths)
            signatures = self._similarity.value_signatures(index, table.token_hashes[token_ids], owners, len(new))
        values.add(token_ids, lengths, hashes, parts, signatures)

    def _salt_columns(self, rows: Sequence[Sequence[Value]]) -> np.ndarray:
        """Per row and salt, the keyed 64-bit value of the row's salt (shape (rows, salts)).

        A row without the salt field gets the value of "no salt": its salted filters are
        never compared (it shares no salt), and they stay salted rather than plain. Each
        salt's value is kept per value of the salt field (a day of birth among some 25,000).
        """
        out = np.zeros((len(rows), self._salt_count), dtype=np.uint64)
        names = [spec.name for spec in self.protocol.fields]
        for salt_index, (field_name, transform) in enumerate(self.protocol.hardening.salts):
            index = names.index(field_name)
            column = [row[index] for row in rows]
            known = self._salt_values[salt_index]
            if len(known) >= _CACHE_LIMIT:
                known.clear()
            for value in set(column).difference(known):
                salt = _transform(value, transform) or ""
                known[value] = keyed_hash64(self.keys.hardening, f"salt|{transform}|{salt}")
            out[:, salt_index] = np.fromiter(map(known.__getitem__, column), dtype=np.uint64, count=len(rows))
        return out

    def encode(self, rows: Sequence[Sequence[Value]]) -> np.ndarray:
        """Encode normalised rows; the ``token`` column is left zero for the caller.

        One call at a time: a Dask worker's threads share an encoder, whose value and
        token tables give out ids that must match the rows appended to them.

        Args:
            rows: one tuple of normalised values per record, in protocol field order.

        Returns:
            A structured array of the encodings file's record layout.
        """
        with self._lock:
            return self._encode(rows)

    def _encode(self, rows: Sequence[Sequence[Value]]) -> np.ndarray:
        count = len(rows)
        out = np.zeros(count, dtype=self.dtype)
        clk = np.zeros((count, self._clk_plan.build_bits), dtype=bool)
        parts: list[np.ndarray] = []
        signatures: dict[int, tuple[np.ndarray, list[np.ndarray]]] = {}
        salts = self._salt_columns(rows) if self._salt_count else np.zeros((count, 0), dtype=np.uint64)
        for index, spec in enumerate(self.protocol.fields):
            codes = self._value_codes(index, spec, [row[index] for row in rows])
            values = self._values[index]
            table = self._tables[index]
            holders = np.flatnonzero(codes >= 0)
            held = codes[holders]
            hashes = np.zeros((count, *values.hash_shape), dtype=np.uint32)
            hashes[holders] = values.hashes[held]
            field_parts = np.zeros((count, values.transforms), dtype=np.uint64)
            field_parts[holders] = values.parts[held]
            parts.append(field_parts)
            if values.signature_widths:
                signatures[index] = (holders, [signature[held] for signature in values.signatures])
            ids_array, owners = values.tokens_of(held)
            rows_array = holders[owners]
            if self._salt_clk[index]:
                positions = salted_positions(
                    table.clk_values[ids_array], salts[rows_array, 0], table.clk_k, table.clk_bits
                )
            else:
                positions = table.clk[ids_array]
            _set_bits(clk, rows_array, positions)
            plan = self._own_plans[index]
            if plan is None:
                out[spec.name] = hashes
                continue
            for salt_index in range(self._salt_count if self._salt_own[index] else 1):
                own = np.zeros((count, plan.build_bits), dtype=bool)
                if self._salt_own[index]:
                    _, bits_per_token, num_bits = table.own  # type: ignore[misc]
                    positions = salted_positions(
                        table.own_values[ids_array], salts[rows_array, salt_index], bits_per_token, num_bits
                    )
                else:
                    positions = table.own_positions[ids_array]
                _set_bits(own, rows_array, positions)
                out[copy_column(spec.name, salt_index)] = np.packbits(self._harden(own, plan), axis=1)
        out["clk"] = np.packbits(self._harden(clk, self._clk_plan), axis=1)
        out["block"] = self._block_keys(parts, signatures, count).reshape(out["block"].shape)
        return out

    @staticmethod
    def _harden(bits: np.ndarray, plan: FilterHardening) -> np.ndarray:
        """Harden built filters; a missing value (no bit set) stays all zero, so it still reads as missing."""
        if plan.build_bits == plan.num_bits and plan.taps is None:
            return bits
        empty = ~bits.any(axis=1)
        hardened = apply_hardening(bits, plan)
        hardened[empty] = False
        return hardened

    def _block_keys(
        self, parts: list[np.ndarray], signatures: dict[int, tuple[np.ndarray, list[np.ndarray]]], count: int
    ) -> np.ndarray:
        """Every rule's keys, in rule order; 0 where a record has none.

        An exact rule's key is its parts' keyed hashes mixed with a keyed rule salt (0 if
        a part is missing); each part is already a keyed hash of the transformed value, so
        the mix reveals nothing unkeyed, and mixing in numpy keeps the per-record cost to
        table look-ups. A similarity rule's are its band keys
        (:mod:`linkage.agency.similarity`), from the keyed hashes of its fields' tokens.
        """
        block = self._similarity.band_keys(signatures, count)
        exact = [self._columns[i] for i, rule in enumerate(self.protocol.blocking) if isinstance(rule, BlockingRule)]
        for column, (salt, rule_parts) in zip(exact, self._rules, strict=True):
            key = np.full(count, salt, dtype=np.uint64)
            present = np.ones(count, dtype=bool)
            for field_index, transform_index in rule_parts:
                part = parts[field_index][:, transform_index]
                present &= part != 0
                key = mix_keys(key ^ part)
            key[key == 0] = 1
            block[:, column] = np.where(present, key, np.uint64(0))
        return block
