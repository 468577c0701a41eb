"""What runs on the agency's machine: the shared secret, and encoding a client file.

:func:`encode_csv` streams a client CSV through :mod:`linkage.encode` on a process pool
and writes, into a temporary folder renamed only when complete:

* ``encodings.pprl``: tokens and encodings, for the linkage service;
* ``attributes.csv``: ``token``, ``consent`` and the outcome columns, for the statistics side;
* ``keymap.csv``: ``token,client_id``, which never leaves the agency;
* ``rejected.csv``: with ``on_error="skip"`` only, every rejected row and why.
"""

from __future__ import annotations

import csv
import difflib
import io
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from linkage.clk import MIN_SECRET_BYTES, Keys, derive_keys, secret_check
from linkage.encode import PreparedRows, RecordEncoder, RowProblem, prepare_rows
from linkage.encodings import ENCODINGS_FILE, EncodingsWriter
from linkage.errors import InputError, OutputExistsError, SecretError
from linkage.protocol import Protocol

__all__ = [
    "EncodeSummary",
    "encode_csv",
    "generate_secret",
    "parse_secret",
    "write_secret",
]

SECRET_BYTES = 32
CHUNK_ROWS = 4000
MAX_LISTED_PROBLEMS = 50
ProgressCallback = Callable[[int, int], None]


def generate_secret() -> bytes:
    """A fresh 256-bit secret from the operating system's CSPRNG."""
    return secrets.token_bytes(SECRET_BYTES)


def write_secret(path: Path, secret: bytes) -> None:
    """Write a secret as hex to a new file readable by its owner only (mode 0600).

    Raises:
        OutputExistsError: the file exists; a secret is never overwritten.
    """
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise OutputExistsError(
            f"{path} already exists; a secret is never overwritten. Choose another path, or "
            "delete the old secret only if no encodings made with it are still needed",
            path=str(path),
        ) from exc
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(secret.hex() + "\n")


def parse_secret(text: str, source: str) -> bytes:
    """Parse a secret written by ``pprl keygen`` (hex).

    Args:
        text: the file's or variable's content.
        source: where it came from, for messages (never the secret itself).

    Raises:
        SecretError: not hex, or shorter than 256 bits.

    >>> len(parse_secret("ab" * 32, "test"))
    32
    """
    stripped = text.strip()
    try:
        secret = bytes.fromhex(stripped)
    except ValueError as exc:
        raise SecretError(f"{source}: the secret is not hexadecimal; use the file `pprl keygen` wrote") from exc
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretError(
            f"{source}: the secret has {len(secret) * 8} bits, fewer than {MIN_SECRET_BYTES * 8}; "
            "make one with `pprl keygen --out FILE` and share it with the other agencies"
        )
    return secret


@dataclass(frozen=True)
class EncodeSummary:
    """What :func:`encode_csv` did."""

    party: str
    records: int
    rejected: int
    seconds: float
    files: tuple[Path, ...]
    fingerprint: str
    warnings: tuple[str, ...]


# Each pool worker builds its encoder once, from what the initializer hands it.
_worker: tuple[Protocol, str, RecordEncoder] | None = None


def _init_worker(protocol: Protocol, party_id: str, keys: Keys) -> None:
    global _worker  # noqa: PLW0603 - one encoder per worker process, by design
    _worker = (protocol, party_id, RecordEncoder(protocol, keys))


def _work(rows: Sequence[tuple[int, Sequence[str]]]) -> tuple[PreparedRows, np.ndarray]:
    assert _worker is not None  # noqa: S101 - set by _init_worker
    protocol, party_id, encoder = _worker
    prepared = prepare_rows(protocol, party_id, rows)
    return prepared, encoder.encode(prepared.values)


class _TrackedBytes(io.RawIOBase):
    """A binary file that remembers how far it has been read, for progress."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        count = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        self.position += count or 0
        return count  # type: ignore[no-any-return]


def _check_header(header: list[str], expected: Sequence[str], path: Path) -> tuple[list[int], list[str]]:
    """Column positions of the expected columns, and the names of ignored extra columns."""
    if len(header) == 1 and any(sep in header[0] for sep in ";\t|"):
        found = next(sep for sep in ";\t|" if sep in header[0])
        raise InputError(
            f"{path} line 1: the header has one column; the file seems to use {found!r} between "
            "columns. Save it as comma-separated CSV (in Excel: Save As > CSV UTF-8)",
            path=str(path),
            line=1,
        )
    stripped = [name.strip() for name in header]
    duplicated = sorted({name for name in stripped if stripped.count(name) > 1})
    problems = [f"column {name!r} appears more than once" for name in duplicated]
    for name in expected:
        if name not in stripped:
            close = difflib.get_close_matches(name, stripped, n=1, cutoff=0.6)
            hint = f" (is {close[0]!r} a misspelling of it?)" if close else ""
            problems.append(f"column {name!r} is missing{hint}")
    if problems:
        raise InputError(
            f"{path} line 1: the header does not have the protocol's columns; rename or add "
            f"them so that it has {', '.join(expected)}",
            path=str(path),
            line=1,
            problems=problems,
        )
    extra = [name for name in stripped if name not in expected]
    return [stripped.index(name) for name in expected], extra


def _read_chunks(
    path: Path,
    reader: Iterator[list[str]],
    positions: list[int],
    width: int,
    line_of: Callable[[], int],
    duplicates: dict[int, int],
    id_column: str,
) -> Iterator[tuple[list[tuple[int, list[str]]], list[RowProblem]]]:
    chunk: list[tuple[int, list[str]]] = []
    problems: list[RowProblem] = []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{path} near line {line_of() + 1}: not UTF-8 text ({exc.reason}); save the file "
                "as UTF-8 (in Excel: Save As > CSV UTF-8)",
                path=str(path),
                line=line_of() + 1,
            ) from exc
        except csv.Error as exc:
            raise InputError(
                f"{path} line {line_of()}: malformed CSV ({exc}); check the quoting of that line",
                path=str(path),
                line=line_of(),
            ) from exc
        line = line_of()
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != width:
            problems.append(RowProblem(line, None, f"has {len(row)} columns where the header has {width}"))
            continue
        if line in duplicates:
            problems.append(
                RowProblem(
                    line,
                    id_column,
                    f"the client id is also on line {duplicates[line]}; each client must appear once",
                )
            )
            continue
        chunk.append((line, [row[i] for i in positions]))
        if len(chunk) >= CHUNK_ROWS:
            yield chunk, problems
            chunk, problems = [], []
    if chunk or problems:
        yield chunk, problems


def _describe(problem: RowProblem, path: Path) -> str:
    where = f"{path} line {problem.line}"
    if problem.column:
        where += f", column {problem.column!r}"
    return f"{where}: {problem.reason}"


def encode_csv(
    protocol: Protocol,
    party_id: str,
    secret: bytes,
    input_path: Path,
    out_dir: Path,
    *,
    on_error: str = "fail",
    workers: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> EncodeSummary:
    """Encode one party's client CSV into the files for the linkage and statistics sides.

    Args:
        protocol: the validated protocol.
        party_id: the party whose clients these are.
        secret: the shared secret.
        input_path: the client CSV (UTF-8, comma-separated, the protocol's columns).
        out_dir: the folder to create; it must not exist yet (or be empty).
        on_error: ``fail`` (any bad row stops with every problem listed, nothing written)
            or ``skip`` (bad rows go to ``rejected.csv`` with their reason).
        workers: processes to use; ``None`` means every core, 1 means in this process.
        on_progress: called with (bytes read, total bytes).

    Returns:
        What was written.

    Raises:
        InputError: the file is malformed or, with ``fail``, has bad rows.
        OutputExistsError: ``out_dir`` exists and is not empty.
    """
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', not {on_error!r}")
    protocol.party(party_id)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise OutputExistsError(
            f"{out_dir} already exists and is not empty; choose a new output folder",
            path=str(out_dir),
        )
    if not input_path.is_file():
        raise InputError(f"{input_path}: no such file", path=str(input_path))
    started = time.perf_counter()
    keys = derive_keys(secret, protocol)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{secrets.token_hex(4)}")
    tmp.mkdir(parents=True)
    try:
        summary = _encode_into(protocol, party_id, keys, input_path, tmp, on_error, workers, on_progress)
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = tuple(out_dir / f.name for f in summary.files)
    return EncodeSummary(
        party=party_id,
        records=summary.records,
        rejected=summary.rejected,
        seconds=time.perf_counter() - started,
        files=files,
        fingerprint=protocol.fingerprint,
        warnings=summary.warnings,
    )


def _encode_into(
    protocol: Protocol,
    party_id: str,
    keys: Keys,
    input_path: Path,
    tmp: Path,
    on_error: str,
    workers: int | None,
    on_progress: ProgressCallback | None,
) -> EncodeSummary:
    expected = protocol.columns_for(party_id)
    attributes = protocol.party(party_id).attributes
    total = input_path.stat().st_size
    if total == 0:
        raise InputError(f"{input_path}: the file is empty; export the client list with its header row")
    workers = workers or os.cpu_count() or 1
    problems: list[RowProblem] = []
    written = 0
    with (
        input_path.open("rb") as raw,
        (tmp / "keymap.csv").open("w", newline="", encoding="utf-8") as keymap_file,
        (tmp / "attributes.csv").open("w", newline="", encoding="utf-8") as attributes_file,
        EncodingsWriter(
            tmp / ENCODINGS_FILE, protocol=protocol, party=party_id, secret_check=secret_check(keys)
        ) as writer,
    ):
        tracked = _TrackedBytes(raw)
        text = io.TextIOWrapper(io.BufferedReader(tracked), encoding="utf-8-sig", newline="")
        reader = csv.reader(text, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            header = []
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{input_path} line 1: not UTF-8 text; save the file as UTF-8 (in Excel: Save As > CSV UTF-8)",
                path=str(input_path),
                line=1,
            ) from exc
        if not header:
            raise InputError(f"{input_path}: no header row; the first line must name the columns")
        positions, extra = _check_header(header, expected, input_path)
        warnings = tuple(f"{input_path}: column {name!r} is not in the protocol and is ignored" for name in extra)
        keymap = csv.writer(keymap_file, lineterminator="\n")
        keymap.writerow(["token", "client_id"])
        attribute_writer = csv.writer(attributes_file, lineterminator="\n")
        attribute_writer.writerow(["token", "consent", *attributes])
        duplicates = _duplicate_id_lines(input_path, positions[0])
        chunks = _read_chunks(
            input_path, reader, positions, len(header), lambda: reader.line_num, duplicates, expected[0]
        )

        def consume(prepared: PreparedRows, records: np.ndarray) -> None:
            nonlocal written
            problems.extend(prepared.problems)
            if not len(records):
                return
            raw_tokens = secrets.token_bytes(16 * len(records))
            records["token"] = np.frombuffer(raw_tokens, dtype=np.uint8).reshape(-1, 16)
            writer.write(records)
            hex_tokens = [raw_tokens[i : i + 16].hex() for i in range(0, len(raw_tokens), 16)]
            keymap.writerows(zip(hex_tokens, prepared.client_ids, strict=True))
            attribute_writer.writerows(
                [token, "true" if consent else "false", *values]
                for token, consent, values in zip(hex_tokens, prepared.consent, prepared.attributes, strict=True)
            )
            written += len(records)

        for prepared, records in _map_chunks(protocol, party_id, keys, chunks, workers, problems):
            consume(prepared, records)
            if on_progress:
                on_progress(min(tracked.position, total), total)
        rejected_lines = {p.line for p in problems}
        if problems and on_error == "fail":
            problems.sort(key=lambda p: p.line)
            listed = [_describe(p, input_path) for p in problems[:MAX_LISTED_PROBLEMS]]
            if len(problems) > MAX_LISTED_PROBLEMS:
                listed.append(f"... and {len(problems) - MAX_LISTED_PROBLEMS} more")
            raise InputError(
                f"{input_path}: {len(rejected_lines)} row(s) cannot be encoded; nothing was written. "
                "Fix them, or pass --on-error skip to encode the rest and list these in rejected.csv",
                path=str(input_path),
                problems=listed,
            )
    if written == 0:
        raise InputError(f"{input_path}: no row could be encoded; nothing was written", path=str(input_path))
    files = [tmp / ENCODINGS_FILE, tmp / "attributes.csv", tmp / "keymap.csv"]
    if problems:
        _write_rejected(tmp / "rejected.csv", problems)
        files.append(tmp / "rejected.csv")
    return EncodeSummary(
        party=party_id,
        records=written,
        rejected=len(rejected_lines),
        seconds=0.0,
        files=tuple(files),
        fingerprint=protocol.fingerprint,
        warnings=warnings,
    )


def _map_chunks(
    protocol: Protocol,
    party_id: str,
    keys: Keys,
    chunks: Iterator[tuple[list[tuple[int, list[str]]], list[RowProblem]]],
    workers: int,
    problems: list[RowProblem],
) -> Iterator[tuple[PreparedRows, np.ndarray]]:
    """Prepare and encode chunks in order, on a pool with a bounded number in flight."""
    if workers <= 1:
        _init_worker(protocol, party_id, keys)
        for rows, row_problems in chunks:
            problems.extend(row_problems)
            yield _work(rows)
        return
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(protocol, party_id, keys)) as pool:
        pending: list[Future[tuple[PreparedRows, np.ndarray]]] = []
        for rows, row_problems in chunks:
            problems.extend(row_problems)
            pending.append(pool.submit(_work, rows))
            if len(pending) >= 2 * workers:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()


def _duplicate_id_lines(path: Path, id_position: int) -> dict[int, int]:
    """Lines whose client id also appears on another line, each mapped to one such line.

    A first pass over the file that keeps only a 64-bit hash and a line number per row, so
    memory stays small; every occurrence of a repeated id is rejected, since which one is
    right cannot be known here. Rows too short to have an id are left to the main pass.
    """
    hashes: list[int] = []
    lines: list[int] = []
    with path.open(encoding="utf-8-sig", newline="", errors="replace") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        try:
            for row in reader:
                if len(row) > id_position and row[id_position].strip():
                    hashes.append(hash(row[id_position].strip()))
                    lines.append(reader.line_num)
        except csv.Error:
            pass  # the main pass reports malformed CSV with its line
    if not hashes:
        return {}
    hash_array = np.array(hashes, dtype=np.int64)
    order = np.argsort(hash_array, kind="stable")
    sorted_hashes = hash_array[order]
    same = np.flatnonzero(sorted_hashes[1:] == sorted_hashes[:-1])
    out: dict[int, int] = {}
    for index in same:
        first, second = lines[order[index]], lines[order[index + 1]]
        out.setdefault(first, second)
        out[second] = first
    return out


def _write_rejected(path: Path, problems: Sequence[RowProblem]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["line", "column", "reason"])
        for problem in sorted(problems, key=lambda p: p.line):
            writer.writerow([problem.line, problem.column or "", problem.reason])
