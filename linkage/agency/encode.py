"""Encode a client file on the agency's machine, into the files each side receives.

:func:`encode_csv` streams a client file (a CSV or a spreadsheet, read by
:mod:`linkage.agency.sources`, its columns found by :mod:`linkage.agency.columns`) through
:mod:`linkage.agency.records` on a process pool and writes, into a temporary folder renamed
only when complete:

* ``encodings.pprl``: tokens and encodings, for the linkage service;
* ``attributes.csv``: ``token``, ``consent`` and the outcome columns, for the statistics side;
* ``keymap.csv``: ``token,client_id``, which never leaves the agency;
* ``rejected.csv``: with ``on_error="skip"`` only, every rejected row and why.

With ``dask`` the chunks are encoded as tasks on a Dask cluster instead of the pool; the
output is the same. The keys derived from the secret are shipped to every worker (once,
sealed so that they never appear in a log), so the cluster must be the agency's own.
"""

from __future__ import annotations

import csv
import io
import os
import secrets
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from linkage.agency.columns import ColumnChoice, choose_columns
from linkage.agency.hashing import Keys, derive_keys, secret_check
from linkage.agency.prepare import RowProblem, prepare_columns
from linkage.agency.records import RecordEncoder
from linkage.agency.sources import (
    ClientFile,
    ReadTask,
    Rows,
    Task,
    duplicate_lines,
    hash_client_ids,
    map_in_order,
    open_client_file,
    read_columns,
    rows_by_reference,
    task_rows,
)
from linkage.dask_cluster import Sealed, connect, parallelism
from linkage.encodings import ENCODINGS_FILE, EncodingsWriter, content_order, read_encodings
from linkage.errors import InputError, OutputExistsError, ServiceError
from linkage.file_modes import PRIVATE_FILE, private_dir
from linkage.protocol import Protocol

__all__ = [
    "EncodeSummary",
    "encode_csv",
]

MAX_LISTED_PROBLEMS = 50
LOST_CHUNK_RETRIES = 3
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class EncodeSummary:
    """What :func:`encode_csv` did, and which of the file's columns it read for which protocol column."""

    party: str
    records: int
    rejected: int
    seconds: float
    files: tuple[Path, ...]
    fingerprint: str
    warnings: tuple[str, ...]
    columns: ColumnChoice | None = None


# What a worker needs to encode chunks: protocol, party, keys, column positions, header width.
Setup = tuple[Protocol, str, Keys, list[int], int]
Worker = tuple[Protocol, str, RecordEncoder, list[int], int]

# Each pool worker builds its encoder once, from what the initializer hands it, and holds a
# spreadsheet's rows, which chunks then name by range (see sources.rows_by_reference).
_worker: Worker | None = None
_rows: Rows | None = None

# Each Dask worker builds one encoder per encoding job (a few jobs at most), on first use.
_remote: dict[str, Worker] = {}
_remote_lock = threading.Lock()
_REMOTE_JOBS = 4


def _init_worker(
    protocol: Protocol, party_id: str, keys: Keys, positions: list[int], width: int, rows: Rows | None
) -> None:
    global _worker, _rows  # one encoder per worker process, by design
    _worker = (protocol, party_id, RecordEncoder(protocol, keys), positions, width)
    _rows = rows


@dataclass
class _Chunk:
    """What a worker sends back for one chunk of the client file: ready-to-write output."""

    records: np.ndarray
    keymap: str
    attributes: str
    lines: np.ndarray
    id_hashes: np.ndarray
    problems: list[RowProblem]


def _work(task: Task) -> _Chunk:
    """Encode one chunk in a pool worker (or in this process)."""
    assert _worker is not None  # noqa: S101 - set by _init_worker
    return _encode_chunk(_worker, task_rows(task, _rows))


def _work_remote(job: str, setup: Sealed[Setup], task: Sealed[Task]) -> _Chunk:
    """Encode one chunk on a Dask worker, building the job's encoder on first use."""
    with _remote_lock:
        worker = _remote.get(job)
        if worker is None:
            while len(_remote) >= _REMOTE_JOBS:
                del _remote[next(iter(_remote))]
            protocol, party_id, keys, positions, width = setup.value
            worker = _remote[job] = (protocol, party_id, RecordEncoder(protocol, keys), positions, width)
    return _encode_chunk(worker, task_rows(task.value, None))


def _forget_remote(job: str) -> None:
    """Drop a finished job's encoder (and with it the keys) from a Dask worker."""
    with _remote_lock:
        _remote.pop(job, None)


def _encode_chunk(worker: Worker, task: ReadTask) -> _Chunk:
    """Read, check, normalise and encode one chunk of a client file."""
    protocol, party_id, encoder, positions, width = worker
    lines, cells, problems = read_columns(task, positions, width)
    prepared = prepare_columns(protocol, party_id, lines, cells).to_rows()
    problems.extend(prepared.problems)
    records = encoder.encode(prepared.values)
    raw_tokens = secrets.token_bytes(16 * len(records))
    records["token"] = np.frombuffer(raw_tokens, dtype=np.uint8).reshape(-1, 16)
    tokens = [raw_tokens[i : i + 16].hex() for i in range(0, len(raw_tokens), 16)]
    keymap, attributes = io.StringIO(), io.StringIO()
    csv.writer(keymap, lineterminator="\n").writerows(zip(tokens, prepared.client_ids, strict=True))
    csv.writer(attributes, lineterminator="\n").writerows(
        [token, "true" if consent else "false", *values]
        for token, consent, values in zip(tokens, prepared.consent, prepared.attributes, strict=True)
    )
    return _Chunk(
        records=records,
        keymap=keymap.getvalue(),
        attributes=attributes.getvalue(),
        lines=np.asarray(prepared.lines, dtype=np.int64),
        id_hashes=hash_client_ids(prepared.client_ids),
        problems=problems,
    )


def encode_csv(
    protocol: Protocol,
    party_id: str,
    secret: bytes,
    input_path: Path,
    out_dir: Path,
    *,
    sheet: str | None = None,
    columns: Mapping[str, str] | None = None,
    input_name: str | None = None,
    on_error: str = "fail",
    workers: int | None = None,
    dask: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> EncodeSummary:
    """Encode one party's client file into the files for the linkage and statistics sides.

    Args:
        protocol: the validated protocol.
        party_id: the party whose clients these are.
        secret: the shared secret.
        input_path: the client file: a CSV (UTF-8, comma-separated) or a spreadsheet
            (``.xlsx``, ``.ods``, ...), with a header row (see :mod:`linkage.agency.sources`).
        out_dir: the folder to create; it must not exist yet (or be empty).
        sheet: the spreadsheet's sheet to read (default: the first).
        columns: protocol column -> the file's column, for columns whose names differ
            from the protocol's and from their usual names (see :mod:`linkage.agency.columns`).
        input_name: how messages name the input file (default: its path).
        on_error: ``fail`` (any bad row stops with every problem listed, nothing written)
            or ``skip`` (bad rows go to ``rejected.csv`` with their reason).
        workers: processes to use; ``None`` means every core, 1 means in this process.
        dask: encode on this Dask scheduler (``tcp://HOST:PORT``) instead of a local pool.
            Every worker receives the keys derived from the secret (not the secret itself)
            and the client file's text: use only a cluster inside the agency.
        on_progress: called with (done, total): bytes of a CSV, rows of a spreadsheet.

    Returns:
        What was written, and which of the file's columns were read.

    Raises:
        InputError: the file is malformed, its columns cannot be told apart, or, with
            ``fail``, it has bad rows.
        OutputExistsError: ``out_dir`` exists and is not empty.
        ServiceError: the Dask scheduler cannot be reached.
    """
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', not {on_error!r}")
    protocol.party(party_id)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise OutputExistsError(
            f"{out_dir} already exists and is not empty; choose a new output folder",
            path=str(out_dir),
        )
    started = time.perf_counter()
    keys = derive_keys(secret, protocol)
    with open_client_file(input_path, sheet=sheet, name=input_name) as source:
        choice = choose_columns(
            source.header, protocol.columns_for(party_id), columns, where=source.where(source.header_line)
        )
        # The folder is 0700 from the start and its files 0600 before it gets its name: the key
        # map and the attributes are for this agency's eyes only.
        tmp = private_dir(out_dir.with_name(f".{out_dir.name}.tmp-{secrets.token_hex(4)}"))
        try:
            summary = _encode_into(protocol, party_id, keys, source, choice, tmp, on_error, workers, dask, on_progress)
            for path in tmp.iterdir():
                path.chmod(PRIVATE_FILE)
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
        columns=choice,
    )


def _encode_into(
    protocol: Protocol,
    party_id: str,
    keys: Keys,
    source: ClientFile,
    choice: ColumnChoice,
    tmp: Path,
    on_error: str,
    workers: int | None,
    dask: str | None,
    on_progress: ProgressCallback | None,
) -> EncodeSummary:
    expected = protocol.columns_for(party_id)
    attributes = protocol.party(party_id).attributes
    workers = workers or os.cpu_count() or 1
    problems: list[RowProblem] = []
    written = 0
    total = source.total
    with (
        (tmp / "keymap.csv").open("w", newline="", encoding="utf-8") as keymap_file,
        (tmp / "attributes.csv").open("w", newline="", encoding="utf-8") as attributes_file,
        EncodingsWriter(
            tmp / ENCODINGS_FILE, protocol=protocol, party=party_id, secret_check=secret_check(keys)
        ) as writer,
    ):
        warnings = tuple(
            f"{source.where()}: column {name!r} is not in the protocol and is ignored" for name in choice.ignored
        )
        keymap_file.write("token,client_id\n")
        csv.writer(attributes_file, lineterminator="\n").writerow(["token", "consent", *attributes])
        lines: list[np.ndarray] = []
        id_hashes: list[np.ndarray] = []
        # Progress counts the bytes up to the end of each chunk whose result is in, not the
        # bytes read ahead for chunks still in flight.
        read_up_to: deque[int] = deque()

        # A Dask worker is not forked from here: its chunks carry their rows.
        by_reference = dask is None and rows_by_reference(workers)

        def chunks() -> Iterator[Task]:
            for chunk in source.chunks(by_reference=by_reference):
                read_up_to.append(source.position)
                yield chunk

        setup: Setup = (protocol, party_id, keys, choice.positions, len(source.header))
        if dask is None:
            mapped = _map_chunks(setup, source.shared_rows if by_reference else None, chunks(), workers)
        else:
            mapped = _map_chunks_on_dask(setup, chunks(), dask)
        for chunk in mapped:
            problems.extend(chunk.problems)
            writer.write(chunk.records)
            keymap_file.write(chunk.keymap)
            attributes_file.write(chunk.attributes)
            lines.append(chunk.lines)
            id_hashes.append(chunk.id_hashes)
            written += len(chunk.records)
            done = read_up_to.popleft()
            if on_progress:
                on_progress(done, total)
        all_lines = np.concatenate(lines) if lines else np.zeros(0, dtype=np.int64)
        duplicates = duplicate_lines(np.concatenate(id_hashes) if id_hashes else all_lines, all_lines)
        problems += [
            RowProblem(
                line, expected[0], f"the client id is also on {source.unit} {other}; each client must appear once"
            )
            for line, other in duplicates.items()
        ]
        rejected_lines = {p.line for p in problems}
        if problems and on_error == "fail":
            problems.sort(key=lambda p: p.line)
            listed = [source.describe(p, choice) for p in problems[:MAX_LISTED_PROBLEMS]]
            if len(problems) > MAX_LISTED_PROBLEMS:
                listed.append(f"... and {len(problems) - MAX_LISTED_PROBLEMS} more")
            raise InputError(
                f"{source.where()}: {len(rejected_lines)} row(s) cannot be encoded; nothing was written. "
                "Fix them, or pass --on-error skip to encode the rest and list these in rejected.csv",
                path=source.name,
                problems=listed,
            )
    # Rows with a repeated client id were encoded before the repeat was known: they go now.
    # Every file that leaves the agency is put in an order of its own, so that its order says
    # nothing of the client file's (sorted by surname or by client id, it would rank every record).
    written = _drop_and_shuffle(tmp, protocol, party_id, keys, np.isin(all_lines, list(duplicates)))
    if written == 0:
        raise InputError(f"{source.where()}: no row could be encoded; nothing was written", path=source.name)
    files = [tmp / ENCODINGS_FILE, tmp / "attributes.csv", tmp / "keymap.csv"]
    if problems:
        _write_rejected(tmp / "rejected.csv", [_in_file_terms(p, choice) for p in problems])
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


def _map_chunks(setup: Setup, rows: Rows | None, chunks: Iterator[Task], workers: int) -> Iterator[_Chunk]:
    """Encode chunks in order, on a pool with a bounded number in flight (each worker holding ``rows``)."""
    return map_in_order(_work, chunks, workers, _init_worker, (*setup, rows))


def _map_chunks_on_dask(setup: Setup, chunks: Iterator[Task], address: str) -> Iterator[_Chunk]:
    """Encode chunks in order as Dask tasks, with a bounded number in flight.

    The setup (with the derived keys) is scattered to every worker once, not sent with
    each task. Each chunk of text is scattered to one worker, where its task then runs:
    the scheduler only ever sees the chunk's key (a chunk inside a task's description
    stayed in the scheduler's memory after the task had finished, about 1 GB for a file of
    two million rows). A chunk lost with its worker is scattered again from here, where
    the chunks in flight are kept. Tasks are marked impure: fresh tokens every time.
    """
    with connect(address) as client:
        from distributed.client import FutureCancelledError  # the optional extra, present here

        job = secrets.token_hex(8)
        [shared] = client.scatter([Sealed(setup)], broadcast=True, hash=False)
        window = 2 * parallelism(client)

        def lost(chunk: Task) -> ServiceError:
            return ServiceError(
                f"the Dask cluster at {address} lost the chunk from line {chunk[0]} "
                f"{LOST_CHUNK_RETRIES} times; check its workers, or encode without --dask"
            )

        def submit(chunk: Task) -> tuple[Task, Any, Any]:
            for attempt in range(LOST_CHUNK_RETRIES):
                try:
                    [text] = client.scatter([Sealed(chunk)], hash=False)
                    break
                except OSError as exc:  # sent to a worker that died before the scheduler knew
                    if attempt == LOST_CHUNK_RETRIES - 1:
                        raise lost(chunk) from exc
                    time.sleep(1)
            return chunk, text, client.submit(_work_remote, job, shared, text, pure=False)

        def result(entry: tuple[Task, Any, Any]) -> _Chunk:
            for attempt in range(LOST_CHUNK_RETRIES):
                try:
                    return entry[2].result()  # type: ignore[no-any-return]
                except FutureCancelledError as exc:  # its chunk was lost with its worker
                    if attempt == LOST_CHUNK_RETRIES - 1:
                        raise lost(entry[0]) from exc
                    entry = submit(entry[0])
            raise AssertionError("unreachable")  # pragma: no cover

        pending: deque[tuple[Task, Any, Any]] = deque()
        try:
            for chunk in chunks:
                pending.append(submit(chunk))
                if len(pending) >= window:
                    yield result(pending.popleft())
            while pending:
                yield result(pending.popleft())
        finally:
            client.cancel([future for _, text, task in pending for future in (text, task)] + [shared])
            client.run(_forget_remote, job, on_error="ignore")


def _drop_and_shuffle(tmp: Path, protocol: Protocol, party_id: str, keys: Keys, drop: np.ndarray) -> int:
    """Rewrite the outputs in ``tmp`` without the rows marked in ``drop``, each in its own order; returns rows kept.

    ``encodings.pprl`` is put in the order of a hash of each record's CLK (ties by token),
    ``attributes.csv`` in the order of its tokens: neither order says anything of the client
    file's, and the same people with the same secret give the same encodings file whatever
    the client file's order, so a linkage (whose greedy choices depend on the order of its
    inputs) gives the same entities. ``keymap.csv``, which stays at the agency, keeps the
    client file's order.
    """
    encodings = read_encodings(tmp / ENCODINGS_FILE, verify=False)
    kept = np.asarray(encodings.records[~drop])
    replacement = tmp / "encodings.rewrite"
    with EncodingsWriter(replacement, protocol=protocol, party=party_id, secret_check=secret_check(keys)) as writer:
        writer.write(np.ascontiguousarray(kept[content_order(kept)]))
    del encodings, kept
    os.replace(replacement, tmp / ENCODINGS_FILE)
    for name in ("keymap.csv", "attributes.csv"):
        if name == "keymap.csv" and not drop.any():
            continue
        with (tmp / name).open(newline="", encoding="utf-8") as handle:
            lines = list(csv.reader(handle))
        body = [row for row, dropped in zip(lines[1:], drop, strict=True) if not dropped]
        if name == "attributes.csv":
            body.sort(key=lambda row: row[0])
        with (tmp / name).open("w", newline="", encoding="utf-8") as handle:
            writer_csv = csv.writer(handle, lineterminator="\n")
            writer_csv.writerow(lines[0])
            writer_csv.writerows(body)
    return int((~drop).sum())


def _in_file_terms(problem: RowProblem, choice: ColumnChoice) -> RowProblem:
    """A problem naming the file's own column, as the agency finds it in its file."""
    if problem.column is None:
        return problem
    return RowProblem(problem.line, choice.header_of(problem.column), problem.reason, problem.client_id)


def _write_rejected(path: Path, problems: Sequence[RowProblem]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["line", "column", "reason"])
        for problem in sorted(problems, key=lambda p: p.line):
            writer.writerow([problem.line, problem.column or "", problem.reason])
