"""The encodings file: what an agency sends to the linkage service.

Format ``pprl-encodings`` version 1, one file ``encodings.pprl``:

=========  ==========================================================================
bytes      content
=========  ==========================================================================
0-7        magic ``PPRLENC1``
8-11       header length H, unsigned 32-bit little endian
12-12+H    header: UTF-8 JSON object, padded with spaces (see :class:`EncodingsHeader`)
rest       ``record_count`` fixed-size records, laid out as the header's ``layout``
=========  ==========================================================================

A record is a random 128-bit token, the packed CLK (most significant bit first, as
clkhash's bitarray), then the per-field encodings and the block keys. Nothing in it is
unkeyed: no raw identifier, no client id. The header carries the protocol fingerprint,
the party, a secret check value, the record count and a SHA-256 of the records, so that a
file made under another protocol or secret, or a truncated file, is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from linkage.errors import InputError, MismatchError, PprlError
from linkage.protocol import STRING_KINDS, Protocol

__all__ = [
    "ENCODINGS_FILE",
    "PLACEHOLDER_DAY",
    "check_compatible",
    "content_order",
    "Encodings",
    "EncodingsHeader",
    "EncodingsWriter",
    "copy_column",
    "read_encodings",
    "read_header",
    "record_layout",
    "salted_copies",
]

ENCODINGS_FILE = "encodings.pprl"
FORMAT = "pprl-encodings"
FORMAT_VERSION = 1
MAGIC = b"PPRLENC1"
_PREFIX = len(MAGIC) + 4
_MAX_HEADER = 1 << 20
# A date's day and month hashes on a day its protocol declares a placeholder (an unknown
# day and month, such as 1 January for many refugees): the encoder sends this instead of
# their keyed hashes (0 is a missing date), and the service compares such a date by its year.
PLACEHOLDER_DAY = 1


@dataclass(frozen=True)
class EncodingsHeader:
    """The header of an encodings file.

    Attributes:
        format: always ``pprl-encodings``.
        format_version: version of this layout.
        protocol: the protocol's name.
        fingerprint: SHA-256 of everything in the protocol that affects encodings.
        party: the party that made the file.
        secret_check: keyed hash of a constant; equal only for the same secret.
        record_count: number of records.
        clk_bits: length of the record-level CLK.
        layout: the record's fields: ``[name, dtype, count]`` each.
        blocking: the blocking rules, in the order of the ``block`` columns (a similarity
            rule has a column per band).
        records_sha256: SHA-256 of all records, to detect truncation or corruption.
    """

    format: str
    format_version: int
    protocol: str
    fingerprint: str
    party: str
    secret_check: str
    record_count: int
    clk_bits: int
    layout: tuple[tuple[str, str, int], ...]
    blocking: tuple[str, ...]
    records_sha256: str

    @property
    def dtype(self) -> np.dtype[Any]:
        """The numpy structured dtype of one record."""
        return np.dtype([(name, kind, (count,)) if count > 1 else (name, kind) for name, kind, count in self.layout])

    def to_json(self) -> str:
        """The header as compact JSON."""
        return json.dumps(asdict(self), separators=(",", ":"))


def record_layout(protocol: Protocol) -> tuple[tuple[str, str, int], ...]:
    """The record layout an encodings file of this protocol has.

    >>> from linkage.protocol import load_protocol
    >>> layout = record_layout(load_protocol("schemas/examples/social_services.json"))
    >>> layout[:3]
    (('token', 'u1', 16), ('clk', 'u1', 128), ('given_name', 'u1', 32))
    """
    layout: list[tuple[str, str, int]] = [("token", "u1", 16), ("clk", "u1", protocol.clk_bits // 8)]
    for spec in protocol.fields:
        if spec.kind == "date":
            layout.append((spec.name, "<u4", 3))
        elif spec.kind == "category":
            layout.append((spec.name, "<u4", 1))
        else:
            assert spec.num_bits is not None  # noqa: S101 - the schema requires it for these kinds
            layout.append((spec.name, "u1", spec.num_bits // 8))
    # Under further salts, every salted filter again, once per salt (after the fields, so
    # that every earlier column keeps its place).
    for name in salted_copies(protocol):
        layout.append((name, "u1", protocol.field(name.partition("@")[0]).num_bits // 8))  # type: ignore[operator]
    layout.append(("block", "<u8", sum(rule.columns for rule in protocol.blocking)))
    return tuple(layout)


def copy_column(field: str, salt_index: int) -> str:
    """The column of a field's filter under its protocol's salt number ``salt_index`` (0: the first).

    >>> copy_column("given_name", 0), copy_column("given_name", 1)
    ('given_name', 'given_name@1')
    """
    return field if salt_index == 0 else f"{field}@{salt_index}"


def salted_copies(protocol: Protocol) -> tuple[str, ...]:
    """Columns of the filters encoded again under the protocol's second and third salt.

    >>> from linkage.protocol import Hardening, load_protocol, with_hardening
    >>> protocol = load_protocol("schemas/examples/social_services.json")
    >>> two = Hardening(salt=("date_of_birth", "year"), also_salt=(("date_of_birth", "month_day"),))
    >>> salted_copies(with_hardening(protocol, two))[:2]
    ('given_name@1', 'surname@1')
    """
    hardening = protocol.hardening
    if not hardening.salts_target("fields") or not hardening.also_salt:
        return ()
    salt_field = hardening.salts[0][0]
    return tuple(
        copy_column(spec.name, index)
        for index in range(1, len(hardening.salts))
        for spec in protocol.fields
        if spec.kind in STRING_KINDS and spec.num_bits and spec.name != salt_field
    )


class EncodingsWriter:
    """Writes an encodings file record by record, with a correct header at the end.

    The header is written first with room reserved, then rewritten in place once the
    record count and checksum are known. Use it as a context manager; the caller writes
    into a temporary folder and renames it when done, so a half-written file is never seen.
    """

    def __init__(self, path: Path, *, protocol: Protocol, party: str, secret_check: str) -> None:
        layout = record_layout(protocol)
        self._header = EncodingsHeader(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            protocol=protocol.name,
            fingerprint=protocol.fingerprint,
            party=party,
            secret_check=secret_check,
            record_count=0,
            clk_bits=protocol.clk_bits,
            layout=layout,
            blocking=tuple(rule.name for rule in protocol.blocking),
            records_sha256="0" * 64,
        )
        self.dtype = self._header.dtype
        widest = EncodingsHeader(**{**asdict(self._header), "record_count": 10**15})
        self._header_bytes = len(widest.to_json().encode()) + 64
        self._file: BinaryIO = path.open("wb")
        self._file.write(b"\0" * (_PREFIX + self._header_bytes))
        self._sha = hashlib.sha256()
        self._count = 0

    def write(self, records: np.ndarray) -> None:
        """Append records (a structured array of :attr:`dtype`)."""
        if records.dtype != self.dtype:
            raise ValueError("records do not have this file's layout")
        data = np.ascontiguousarray(records).tobytes()
        self._sha.update(data)
        self._file.write(data)
        self._count += len(records)

    def close(self) -> EncodingsHeader:
        """Write the final header, flush to disk and close; returns the header."""
        header = EncodingsHeader(
            **{**asdict(self._header), "record_count": self._count, "records_sha256": self._sha.hexdigest()}
        )
        text = header.to_json().encode().ljust(self._header_bytes)
        self._file.seek(0)
        self._file.write(MAGIC + struct.pack("<I", len(text)) + text)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return header

    def abort(self) -> None:
        """Close without finishing (the caller discards the temporary folder)."""
        self._file.close()

    def __enter__(self) -> EncodingsWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass(frozen=True)
class Encodings:
    """An encodings file as loaded: its header and its records (memory-mapped)."""

    path: Path
    header: EncodingsHeader
    records: np.ndarray


def resolve_encodings_path(path: str | Path) -> Path:
    """Accept an encodings file or the folder ``pprl encode`` wrote it into."""
    path = Path(path)
    if path.is_dir():
        path = path / ENCODINGS_FILE
    if not path.is_file():
        raise InputError(
            f"{path}: no encodings file here; pass an encodings.pprl file or the folder written by `pprl encode`",
            path=str(path),
        )
    return path


def _parse_header(handle: BinaryIO, shown: str) -> tuple[EncodingsHeader, int]:
    prefix = handle.read(_PREFIX)
    if len(prefix) < _PREFIX or prefix[: len(MAGIC)] != MAGIC:
        raise InputError(
            f"{shown}: not a pprl encodings file (it does not start with {MAGIC.decode()}); "
            "pass a file written by `pprl encode`",
            path=shown,
        )
    (length,) = struct.unpack("<I", prefix[len(MAGIC) :])
    raw = handle.read(length) if length <= _MAX_HEADER else b""
    damaged = InputError(f"{shown}: the encodings header is damaged or truncated; encode the file again", path=shown)
    try:
        fields = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise damaged from exc
    problems = _header_problems(fields)
    if problems:
        raise InputError(
            f"{shown}: the encodings header is damaged or was not written by `pprl encode` "
            f"({'; '.join(problems[:3])}); encode the file again",
            path=shown,
            problems=problems,
        )
    fields["layout"] = tuple(tuple(item) for item in fields["layout"])
    fields["blocking"] = tuple(fields["blocking"])
    header = EncodingsHeader(**fields)
    try:
        _ = header.dtype
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"{shown}: the encodings header's record layout is not valid; encode the file again", path=shown
        ) from exc
    if header.format != FORMAT or header.format_version != FORMAT_VERSION:
        raise InputError(
            f"{shown}: encodings format {header.format} v{header.format_version} is not "
            f"supported (this pprl reads {FORMAT} v{FORMAT_VERSION}); encode again with this version",
            path=shown,
        )
    return header, _PREFIX + length


_HEADER_TYPES: dict[str, type] = {
    "format": str,
    "format_version": int,
    "protocol": str,
    "fingerprint": str,
    "party": str,
    "secret_check": str,
    "record_count": int,
    "clk_bits": int,
    "layout": list,
    "blocking": list,
    "records_sha256": str,
}


def _header_problems(fields: object) -> list[str]:
    """What is wrong with a decoded header: missing or unknown keys, values of the wrong type.

    >>> _header_problems({"format": "pprl-encodings", "record_count": "12"})[:2]
    ["missing 'format_version'", "missing 'protocol'"]
    >>> _header_problems([])
    ['not a JSON object']
    """
    if not isinstance(fields, dict):
        return ["not a JSON object"]
    problems = [f"missing {key!r}" for key in _HEADER_TYPES if key not in fields]
    problems += [f"unknown key {str(key)[:40]!r}" for key in fields if key not in _HEADER_TYPES]
    for key, kind in _HEADER_TYPES.items():
        value = fields.get(key)
        if key in fields and (not isinstance(value, kind) or isinstance(value, bool)):
            problems.append(f"{key!r} is a {type(value).__name__}, not a {kind.__name__}")
    if isinstance(fields.get("record_count"), int) and fields["record_count"] < 0:
        problems.append("'record_count' is negative")
    layout = fields.get("layout")
    if isinstance(layout, list) and not all(
        isinstance(item, list)
        and len(item) == 3
        and isinstance(item[0], str)
        and isinstance(item[1], str)
        and isinstance(item[2], int)
        and not isinstance(item[2], bool)
        and 0 < item[2] <= 1 << 16
        for item in layout
    ):
        problems.append("'layout' is not a list of [name, type, count]")
    blocking = fields.get("blocking")
    if isinstance(blocking, list) and not all(isinstance(item, str) for item in blocking):
        problems.append("'blocking' is not a list of rule names")
    return problems


def read_header(path: str | Path, *, shown_as: str | None = None) -> EncodingsHeader:
    """Read only the header of an encodings file (or of the folder holding it).

    Args:
        path: the file or folder.
        shown_as: how messages name the file (e.g. "the upload": never a server's path).
    """
    resolved = resolve_encodings_path(path)
    with resolved.open("rb") as handle:
        return _parse_header(handle, shown_as or str(resolved))[0]


def read_encodings(path: str | Path, *, verify: bool = True, shown_as: str | None = None) -> Encodings:
    """Load an encodings file, memory-mapped, after checking it is complete.

    Args:
        path: an ``encodings.pprl`` file or the folder holding it.
        verify: also check the records' SHA-256 (reads the whole file once).
        shown_as: how messages name the file (e.g. "the upload": never a server's path).

    Raises:
        InputError: not an encodings file, truncated, or corrupted.
    """
    resolved = resolve_encodings_path(path)
    shown = shown_as or str(resolved)
    with resolved.open("rb") as handle:
        header, offset = _parse_header(handle, shown)
    dtype = header.dtype
    expected = offset + header.record_count * dtype.itemsize
    actual = resolved.stat().st_size
    if actual != expected:
        raise InputError(
            f"{shown}: {actual} bytes where the header promises {expected} "
            f"({header.record_count} records); the file is truncated or damaged, copy or encode it again",
            path=shown,
        )
    if header.record_count == 0:
        records = np.zeros(0, dtype=dtype)
    else:
        records = np.memmap(resolved, dtype=dtype, mode="r", offset=offset, shape=(header.record_count,))
    if verify:
        digest = hashlib.sha256()
        step = max(1, (64 << 20) // dtype.itemsize)
        for start in range(0, header.record_count, step):
            digest.update(np.ascontiguousarray(records[start : start + step]).tobytes())
        if digest.hexdigest() != header.records_sha256:
            raise InputError(
                f"{shown}: the records do not match the header's checksum; the file is "
                "damaged, copy or encode it again",
                path=shown,
            )
    return Encodings(path=resolved, header=header, records=records)


def check_compatible(
    protocol: Protocol,
    inputs: Sequence[tuple[str, EncodingsHeader]],
    *,
    uploader: str | None = None,
    stored: Mapping[str, str] | None = None,
) -> None:
    """Refuse encodings that cannot be linked together under ``protocol``, listing every problem.

    The one check of compatibility, for ``pprl link`` (several files) and for the service
    (one upload, against the other parties' stored uploads).

    Args:
        protocol: the protocol they must have been made under.
        inputs: ``(how to name it, header)`` of each file.
        uploader: the party the files must belong to (the service: the credential's party).
        stored: the secret check of every other party's stored upload (the service).

    Raises:
        MismatchError: another protocol, layout or secret; a party not in the protocol,
            twice, or not the uploader's. Every problem is listed.
        InputError: only empty files.
    """
    problems: list[str] = []
    empty: list[str] = []
    layout = record_layout(protocol)
    known = {party.id for party in protocol.parties}
    seen: dict[str, str] = {}
    checks: dict[str, tuple[str, str]] = {}
    for shown, header in inputs:
        if header.fingerprint != protocol.fingerprint:
            problems.append(
                f"{shown} was encoded under protocol fingerprint {header.fingerprint[:12]}..., but the protocol "
                f"{protocol.name!r} has {protocol.fingerprint[:12]}...; encode it again with the agreed protocol "
                "(`pprl protocol validate` prints its fingerprint)"
            )
        elif header.layout != layout or header.clk_bits != protocol.clk_bits:
            problems.append(
                f"{shown} has a record layout this protocol does not produce; encode it again with this pprl version"
            )
        if header.party not in known:
            problems.append(f"{shown} belongs to party {header.party!r}, which is not in protocol {protocol.name!r}")
        elif uploader is not None and header.party != uploader:
            problems.append(
                f"{shown} was encoded for party {header.party!r}, but your token is for party {uploader!r}; "
                f"upload {uploader}'s own encodings (`pprl encode --party {uploader}`)"
            )
        if header.party in seen:
            problems.append(
                f"{shown} and {seen[header.party]} are both from party {header.party!r}; pass one file per party"
            )
        seen.setdefault(header.party, shown)
        checks.setdefault(header.secret_check, (shown, header.party))
        if header.record_count == 0:
            empty.append(f"{shown} has no records; encode a non-empty client list")
    if len(checks) > 1:
        named = " and ".join(shown for shown, _ in checks.values())
        problems.append(f"{named} were encoded with different secrets; every party must use the same shared secret")
    for other, check in sorted((stored or {}).items()):
        differing = [shown for shown, header in inputs if header.party != other and header.secret_check != check]
        if differing:
            problems.append(
                f"{differing[0]} was encoded with a different shared secret than the encodings party {other!r} "
                "uploaded; every party must encode with the same secret. If yours is right, "
                f"{other} must encode again and upload with --replace"
            )
    if problems:
        raise _listed(MismatchError, "these encodings cannot be linked together", problems + empty)
    if empty:
        raise _listed(InputError, "these encodings files are empty", empty)


def _listed(kind: type[PprlError], summary: str, problems: list[str]) -> PprlError:
    """One problem as the message; several under a summary, each listed."""
    if len(problems) == 1:
        return kind(problems[0])
    return kind(summary, problems=problems)


def content_order(records: np.ndarray) -> np.ndarray:
    """The order of records by a 64-bit hash of their CLKs, ties by token (a function of the content only).

    ``pprl encode`` writes its records in this order, so that the file's order says
    nothing of the client file's; the engine draws its random pairs and breaks its last
    ties in it, so that the order of the records it is given changes nothing.

    The hash mixes every 64-bit word of the CLK (FNV-1a style, with shifts) and ends with
    SplitMix64's finaliser, so that similar CLKs land far apart.

    >>> records = np.zeros(3, dtype=[("token", "u1", 16), ("clk", "u1", 8)])
    >>> records["clk"][:, 0] = [3, 1, 2]
    >>> forward = records[content_order(records)]
    >>> backward = records[::-1][content_order(records[::-1])]
    >>> bool((forward == backward).all())
    True
    """
    clk = np.ascontiguousarray(records["clk"]).reshape(len(records), records.dtype["clk"].itemsize)
    words = np.pad(clk, ((0, 0), (0, -clk.shape[1] % 8))).view("<u8")
    mixed = np.full(len(records), 0xCBF29CE484222325, dtype=np.uint64)
    for column in words.T:
        mixed = (mixed ^ column) * np.uint64(0x100000001B3)
        mixed ^= mixed >> np.uint64(29)
    for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        mixed ^= mixed >> np.uint64(shift)
        mixed *= np.uint64(factor)
    mixed ^= mixed >> np.uint64(31)
    tokens = np.ascontiguousarray(records["token"]).reshape(len(records), records.dtype["token"].itemsize).view("<u8")
    return np.lexsort((tokens[:, 1], tokens[:, 0], mixed))
