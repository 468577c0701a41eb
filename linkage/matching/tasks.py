"""Where the engine's tasks run: in this process, on a local process pool, or on Dask.

On the pool a task is a slice of the first party's records against all of the second
party's (:func:`slice_tasks`); each worker process loads a job's encodings once
(memory-mapped, from their files) and keeps what it derives from them (block indexes,
field arrays, term frequencies) for every task of the job. On Dask, :func:`executor`
hands the engine a client instead, and tasks are block partitions
(:mod:`linkage.matching.partition`), unless the protocol asks for an all-pairs CLK
prefilter, which keeps slices over encodings broadcast to every worker.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import multiprocessing
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from linkage.dask_cluster import Sealed, connect, parallelism
from linkage.encodings import Encodings, read_encodings
from linkage.matching.anonlink_bridge import clk_dataset, clk_dice_pairs
from linkage.matching.block import BlockIndex, candidate_pairs, sorted_unique, split_codes
from linkage.matching.compare import (
    Comparison,
    Feature,
    PartyFeatures,
    compare_pairs,
    encode_patterns,
    feature_levels,
    record_salts,
)
from linkage.matching.model import (
    TF_KINDS,
    FellegiSunterModel,
    term_frequencies,
    value_fingerprints,
)
from linkage.matching.passes import key_columns, pattern_counts, weigh_pairs
from linkage.protocol import Protocol

ProgressCallback = Callable[[int, int], None]
SLICE_RECORDS = 20_000
MIN_SLICE_RECORDS = 1_000


# A frozen model's oversized blocks (:mod:`linkage.matching.frozen`): per pair of parties
# (their indices in this run), per rule, the block keys to skip. Decided when the model was
# fitted, not by counting the records linked now: a count would let one person's records
# open or close a block of other people's pairs.
FrozenBlocks = Mapping[tuple[int, int], tuple[np.ndarray, ...]]
# What a worker needs for a job's tasks: the job's key, each party's records (a path to
# load them from, or on Dask the sealed records scattered to it), each block key column's
# block size limit (or the frozen oversized blocks), CLK prefilter.
Setup = tuple[str, tuple[Any, ...], tuple[int, ...] | FrozenBlocks, float | None]
State = dict[str, Any]


# Per worker process (pool or Dask worker): each job's inputs, loaded once and reused by
# every task of the job, with what is derived from them. A Dask worker may run tasks of
# two jobs at once, in threads: a task holds its job's state, never another job's.
_states: dict[str, State] = {}
_states_lock = threading.RLock()
_KEPT_STATES = 2


def _inputs(setup: Setup) -> State:
    """This job's state in this worker, loading its inputs on first use."""
    key, sources, max_block_pairs, clk_prefilter = setup
    with _states_lock:
        state = _states.get(key)
        if state is None:
            while len(_states) >= _KEPT_STATES:
                del _states[next(iter(_states))]
            records = [
                source.value if isinstance(source, Sealed) else read_encodings(source, verify=False).records
                for source in sources
            ]
            state = _states[key] = {
                "records": records,
                "max_block_pairs": max_block_pairs,
                "clk_prefilter": clk_prefilter,
            }
        return state


def forget_inputs(key: str) -> None:
    """Drop a finished job's inputs and everything derived from them from this worker."""
    with _states_lock:
        _states.pop(key, None)


def _cached(state: State, key: str, build: Callable[[], Any]) -> Any:
    """``state[key]``, built once even when several threads ask for it at the same time."""
    with _states_lock:
        if key not in state:
            state[key] = build()
        return state[key]


def _clks(state: State, party: int) -> Any:
    return _cached(state, f"clks/{party}", lambda: clk_dataset(np.ascontiguousarray(state["records"][party]["clk"])))


def _features(state: State, party: int, comparisons: Sequence[Comparison]) -> PartyFeatures:
    return _cached(  # type: ignore[no-any-return]
        state, f"features/{party}", lambda: PartyFeatures.from_records(state["records"][party], comparisons)
    )


def _block_index(state: State, party_a: int, party_b: int) -> BlockIndex:
    records: list[np.ndarray] = state["records"]

    def build() -> BlockIndex:
        limit = state["max_block_pairs"]
        frozen = isinstance(limit, Mapping)
        index = BlockIndex.build(
            np.asarray(records[party_a]["block"]).reshape(len(records[party_a]), -1),
            np.asarray(records[party_b]["block"]).reshape(len(records[party_b]), -1),
            np.iinfo(np.int64).max if frozen else limit,
        )
        return replace(index, oversized=limit[(party_a, party_b)]) if frozen else index

    return _cached(state, f"index/{party_a}/{party_b}", build)  # type: ignore[no-any-return]


def _key_columns(state: State, party: int) -> np.ndarray:
    records: np.ndarray = state["records"][party]
    return _cached(state, f"key_columns/{party}", lambda: key_columns(records["block"].reshape(len(records), -1)))  # type: ignore[no-any-return]


def frequencies_of(state: State, comparisons: Sequence[Comparison]) -> list[list[np.ndarray]]:
    """Per party, per name field, the share of all records holding each record's value."""
    records: list[np.ndarray] = state["records"]

    def build() -> list[list[np.ndarray]]:
        # A salted field's term frequencies are shares within its first salt.
        salts = [record_salts(party, comparisons)[:, :1].ravel() for party in records]
        per_field = [
            term_frequencies(
                [value_fingerprints(np.ascontiguousarray(party[c.field.name]).view(np.uint64)) for party in records],
                salts if c.salted else None,
            )
            for c in comparisons
            if c.field.kind in TF_KINDS
        ]
        return [[field[party] for field in per_field] for party in range(len(records))]

    return _cached(state, "frequencies", build)  # type: ignore[no-any-return]


def _slice_patterns(
    state: State, task: tuple[int, int, int, int], comparisons: Sequence[Comparison], features: Sequence[Feature]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs of one slice and the pattern code of each."""
    index_a, index_b, levels = _slice_levels(state, task, comparisons)
    return index_a, index_b, encode_patterns(feature_levels(levels, features), features)


def _slice_levels(
    state: State, task: tuple[int, int, int, int], comparisons: Sequence[Comparison]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs of one slice and their field levels."""
    party_a, party_b, start, stop = task
    records: list[np.ndarray] = state["records"]
    keys = np.asarray(records[party_a]["block"][start:stop]).reshape(stop - start, -1)
    index_a, index_b = candidate_pairs(keys, start, _block_index(state, party_a, party_b))
    prefilter = state["clk_prefilter"]
    if prefilter is not None:
        dice_a, dice_b = clk_dice_pairs(_clks(state, party_a)[start:stop], _clks(state, party_b), prefilter)
        width = len(records[party_b])
        codes = sorted_unique(np.concatenate([index_a * width + index_b, (dice_a + start) * width + dice_b]))
        index_a, index_b = split_codes(codes, width)
    levels = compare_pairs(
        _features(state, party_a, comparisons), _features(state, party_b, comparisons), index_a, index_b, comparisons
    )
    return index_a, index_b, levels


def count_slice(
    task: tuple[int, int, int, int],
    setup: Setup,
    comparisons: Sequence[Comparison],
    features: Sequence[Feature],
    spans: Sequence[tuple[int, int]],
) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Pass 1: how many candidates of the slice have each pattern, overall and per blocking rule (its ``spans``)."""
    state = _inputs(setup)
    index_a, index_b, patterns = _slice_patterns(state, task, comparisons, features)
    columns_a, columns_b = (_key_columns(state, party) for party in task[:2])
    return pattern_counts(patterns, columns_a, columns_b, (index_a, index_b), spans)


def score_slice(
    task: tuple[int, int, int, int],
    setup: Setup,
    comparisons: Sequence[Comparison],
    features: Sequence[Feature],
    scoring: tuple[FellegiSunterModel, dict[tuple[int, int], float], float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pass 2: the slice's candidates whose match probability reaches the floor, with scores."""
    state = _inputs(setup)
    index_a, index_b, levels = _slice_levels(state, task, comparisons)
    frequencies = frequencies_of(state, comparisons)
    keep, weights, probability = weigh_pairs(
        levels,
        comparisons,
        features,
        scoring,
        (task[0], task[1]),
        ([f[index_a] for f in frequencies[task[0]]], [f[index_b] for f in frequencies[task[1]]]),
    )
    return index_a[keep].astype(np.int32), index_b[keep].astype(np.int32), weights[keep], probability[keep]


def slice_tasks(sizes: Sequence[int], workers: int) -> list[tuple[int, int, int, int]]:
    """Slices of the first party of each pair of parties.

    Small enough to keep every worker busy (several tasks each) and memory bounded, large
    enough to amortise the per-task overhead.
    """
    tasks = []
    for a, b in itertools.combinations(range(len(sizes)), 2):
        step = max(MIN_SLICE_RECORDS, min(SLICE_RECORDS, -(-sizes[a] // (4 * workers))))
        tasks += [(a, b, start, min(start + step, sizes[a])) for start in range(0, sizes[a], step)]
    return tasks


@dataclass(frozen=True)
class Runner:
    """Where tasks run: how to submit one (a future back), and how to wait for many."""

    submit: Callable[..., Any]
    as_completed: Callable[[list[Any]], Iterable[Any]]
    # On Dask without a CLK prefilter: the client, to scatter block partitions' inputs.
    client: Any = None


@contextmanager
def executor(
    protocol: Protocol,
    encodings: Sequence[Encodings],
    workers: int,
    dask: str | None = None,
    oversized: FrozenBlocks | None = None,
) -> Iterator[tuple[Runner | None, Setup, int]]:
    """Where the tasks run: (runner, or ``None`` for this process; inputs setup; parallelism).

    With ``dask`` (a scheduler address such as ``tcp://10.0.0.5:8786``) the tasks run on
    that Dask cluster, and the runner carries the client: :func:`score_candidates` then
    cuts block partitions and scatters each task's records to one worker
    (:func:`partition_tasks`). A protocol with a ``clk_prefilter`` (an all-pairs CLK
    scan, which no block partition can hold) runs slices instead, as on the pool: each
    party's encodings are scattered to every worker once, at the start, and each task
    carries only its slice bounds and the model. Either way the encodings travel sealed
    (Dask never prints them), the workers need no shared file system, a task lost with a
    worker is run again elsewhere with the same result, and at the end the workers drop
    the job's inputs. With ``oversized`` (a frozen model's), those blocks are skipped
    instead of the blocks over the protocol's ``max_block_pairs``.
    """
    key = secrets.token_hex(8)
    limits = (protocol.block_limits if oversized is None else oversized, protocol.clk_prefilter)
    if dask is not None:
        with connect(dask) as client:
            from distributed import as_completed  # an optional extra, present if connect worked

            partitioned = protocol.clk_prefilter is None
            sources = (
                []
                if partitioned
                else client.scatter(
                    [Sealed(np.asarray(item.records)) for item in encodings], broadcast=True, hash=False
                )
            )
            runner = Runner(
                submit=lambda *args: client.submit(*args, pure=False),
                as_completed=lambda futures: as_completed(futures),
                client=client if partitioned else None,
            )
            try:
                yield runner, (key, tuple(sources), *limits), parallelism(client)
            finally:
                client.cancel(sources)
                client.run(forget_inputs, key, on_error="ignore")
        return
    setup: Setup = (key, tuple(str(item.path) for item in encodings), *limits)
    if workers <= 1:
        try:
            yield None, setup, 1
        finally:
            forget_inputs(key)
        return
    # Forking a process in which other threads run (the service runs links from a thread)
    # can copy a lock one of them holds: there, workers come from a single-threaded fork server.
    method = "fork" if threading.current_thread() is threading.main_thread() else "forkserver"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        yield Runner(submit=pool.submit, as_completed=concurrent.futures.as_completed), setup, workers


def run_tasks(
    encodings: Sequence[Encodings],
    work: Callable[..., Any],
    arguments: tuple[Any, ...],
    runner: Runner | None,
    workers: int,
    on_progress: ProgressCallback | None,
) -> Iterator[tuple[tuple[int, int, int, int], Any]]:
    """Run ``work(task, *arguments)`` over every slice; results come back in task order.

    Progress counts tasks as they complete, in whatever order the workers finish them;
    results are handed on in task order (so that the same inputs give the same
    entities wherever they ran), each released as soon as it has been handed on.
    """
    tasks = slice_tasks([item.header.record_count for item in encodings], workers)
    if on_progress:
        on_progress(0, len(tasks))
    if runner is None:
        for done, task in enumerate(tasks, start=1):
            result = work(task, *arguments)
            if on_progress:
                on_progress(done, len(tasks))
            yield task, result
        return
    futures: list[Any] = [runner.submit(work, task, *arguments) for task in tasks]
    position = {id(future): number for number, future in enumerate(futures)}
    finished: set[int] = set()
    handed_on = 0
    for done, future in enumerate(runner.as_completed(list(futures)), start=1):
        if on_progress:
            on_progress(done, len(tasks))
        finished.add(position[id(future)])
        del future
        while handed_on in finished:
            result = futures[handed_on].result()
            futures[handed_on] = None
            finished.discard(handed_on)
            yield tasks[handed_on], result
            handed_on += 1
