"""Where the engine's tasks run: in this process, on a local process pool, or on Dask.

A task is a slice of the first party's records against all of the second party's
(:func:`slice_tasks`). On the pool each worker process loads a job's encodings once
(memory-mapped, from their files) and keeps what it derives from them (block indexes,
field arrays, term frequencies) for every task of the job. On Dask, :func:`executor`
hands the engine a client instead, and :func:`scatter_slices` sends every pair's second
party to every worker once and each slice of a first party to the one worker that runs
it: the same tasks, so the same candidates, whatever the blocking rules.
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
from dataclasses import dataclass
from typing import Any

import numpy as np

from linkage.dask_cluster import ScatteredTasks, Sealed, connect, parallelism
from linkage.encodings import Encodings, read_encodings
from linkage.matching.anonlink_bridge import clk_dataset, clk_dice_pairs
from linkage.matching.block import BlockIndex, candidate_pairs, sorted_unique, split_codes
from linkage.matching.compare import (
    Comparison,
    Feature,
    PartyFeatures,
    compare_and_measure,
    encode_patterns,
    feature_levels,
)
from linkage.matching.model import (
    FellegiSunterModel,
    term_frequencies,
    tf_fields,
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
            # A path on the pool; on Dask a party's sealed (records, term frequencies), or
            # None for a party that is only ever sliced (its slices come with their tasks).
            records = [
                source.value[0]
                if isinstance(source, Sealed)
                else (None if source is None else read_encodings(source, verify=False).records)
                for source in sources
            ]
            shipped = [source.value[1] if isinstance(source, Sealed) else None for source in sources]
            state = _states[key] = {
                "records": records,
                "shipped": shipped,
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
        keys_b = np.asarray(records[party_b]["block"]).reshape(len(records[party_b]), -1)
        if isinstance(limit, Mapping):
            return BlockIndex.of_keys(keys_b, limit[(party_a, party_b)])
        return BlockIndex.build(np.asarray(records[party_a]["block"]).reshape(len(records[party_a]), -1), keys_b, limit)

    return _cached(state, f"index/{party_a}/{party_b}", build)  # type: ignore[no-any-return]


def _key_columns(state: State, party: int) -> np.ndarray:
    records: np.ndarray = state["records"][party]
    return _cached(state, f"key_columns/{party}", lambda: key_columns(records["block"].reshape(len(records), -1)))  # type: ignore[no-any-return]


def frequencies_of(state: State, comparisons: Sequence[Comparison]) -> list[list[np.ndarray]]:
    """Per party, per field of :func:`~linkage.matching.model.tf_fields`, each value's share among all records."""
    records: list[np.ndarray] = state["records"]

    def build() -> list[list[np.ndarray]]:
        per_field = [
            term_frequencies(
                [
                    value_fingerprints(np.ascontiguousarray(party[comparisons[position].field.name]).view(np.uint64))
                    for party in records
                ]
            )
            for position in tf_fields(comparisons)
        ]
        return [[field[party] for field in per_field] for party in range(len(records))]

    return _cached(state, "frequencies", build)  # type: ignore[no-any-return]


def _slice_patterns(
    state: State, task: tuple[int, int, int, int], comparisons: Sequence[Comparison], features: Sequence[Feature]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs of one slice and the pattern code of each."""
    index_a, index_b, levels, _ = _slice_levels(state, task, comparisons)
    return index_a, index_b, encode_patterns(feature_levels(levels, features), features)


def _slice_levels(
    state: State, task: tuple[int, int, int, int], comparisons: Sequence[Comparison]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs of one slice, their field levels and similarities."""
    party_a, _, start, stop = task
    records: np.ndarray = state["records"][party_a]
    keys = np.asarray(records["block"][start:stop]).reshape(stop - start, -1)
    return _levels(
        state,
        task,
        keys,
        start,
        _features(state, party_a, comparisons),
        lambda: _clks(state, party_a)[start:stop],
        comparisons,
    )


def _levels(
    state: State,
    task: tuple[int, int, int, int],
    keys: np.ndarray,
    start: int,
    features_a: PartyFeatures,
    clks_a: Callable[[], Any],
    comparisons: Sequence[Comparison],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A slice's candidate pairs (index ``start`` for its first record), their field levels and similarities.

    ``keys`` are the slice's block keys, ``features_a`` its party's features as indexed
    from ``start``, ``clks_a`` gives the slice's CLKs (read only under a CLK prefilter).
    """
    party_a, party_b = task[:2]
    index_a, index_b = candidate_pairs(keys, start, _block_index(state, party_a, party_b))
    prefilter = state["clk_prefilter"]
    if prefilter is not None:
        dice_a, dice_b = clk_dice_pairs(clks_a(), _clks(state, party_b), prefilter)
        width = len(state["records"][party_b])
        codes = sorted_unique(np.concatenate([index_a * width + index_b, (dice_a + start) * width + dice_b]))
        index_a, index_b = split_codes(codes, width)
    levels, similarity = compare_and_measure(
        features_a, _features(state, party_b, comparisons), index_a, index_b, comparisons
    )
    return index_a, index_b, levels, similarity


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
    index_a, index_b, levels, similarity = _slice_levels(state, task, comparisons)
    frequencies = frequencies_of(state, comparisons)
    keep, weights, probability = weigh_pairs(
        levels,
        comparisons,
        features,
        scoring,
        (task[0], task[1]),
        ([f[index_a] for f in frequencies[task[0]]], [f[index_b] for f in frequencies[task[1]]]),
        similarity,
    )
    return index_a[keep].astype(np.int32), index_b[keep].astype(np.int32), weights[keep], probability[keep]


@dataclass(frozen=True)
class SliceInput:
    """One slice task's own input on Dask, scattered to the one worker that runs it.

    Attributes:
        task: (party a, party b, start, stop), as on the pool.
        records: the slice's records of party a, only the fields a task reads; ``None``
            when party a is broadcast anyway (it is some pair's second party).
        frequencies: those records' term frequencies per name field, over all records of
            all parties (``None`` with ``records``).
    """

    task: tuple[int, int, int, int]
    records: np.ndarray | None
    frequencies: list[np.ndarray] | None


def _scattered_levels(
    state: State, piece: SliceInput, comparisons: Sequence[Comparison]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """A scattered slice's candidates (party a's index local to the slice), levels, similarities, keys, frequencies."""
    party_a, party_b, start, stop = piece.task
    if piece.records is None:
        frequencies: list[np.ndarray] = [f[start:stop] for f in state["shipped"][party_a]]
        index_a, index_b, levels, similarity = _slice_levels(state, piece.task, comparisons)
        records = state["records"][party_a][start:stop]
        return index_a - start, index_b, levels, similarity, _keys(records), frequencies
    records = piece.records
    keys = _keys(records)
    index_a, index_b, levels, similarity = _levels(
        state,
        piece.task,
        keys,
        0,
        PartyFeatures.from_records(records, comparisons),
        lambda: clk_dataset(np.ascontiguousarray(records["clk"])),
        comparisons,
    )
    return index_a, index_b, levels, similarity, keys, piece.frequencies or []


def _keys(records: np.ndarray) -> np.ndarray:
    return np.asarray(records["block"]).reshape(len(records), -1)


def count_scattered_slice(
    sealed: Sealed[SliceInput],
    setup: Setup,
    comparisons: Sequence[Comparison],
    features: Sequence[Feature],
    spans: Sequence[tuple[int, int]],
) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Pass 1 on Dask: what :func:`count_slice` counts, for a slice scattered with its task."""
    state = _inputs(setup)
    piece = sealed.value
    index_a, index_b, levels, _, keys, _ = _scattered_levels(state, piece, comparisons)
    patterns = encode_patterns(feature_levels(levels, features), features)
    columns_b = _key_columns(state, piece.task[1])
    return pattern_counts(patterns, key_columns(keys), columns_b, (index_a, index_b), spans)


def score_scattered_slice(
    sealed: Sealed[SliceInput],
    setup: Setup,
    comparisons: Sequence[Comparison],
    features: Sequence[Feature],
    scoring: tuple[FellegiSunterModel, dict[tuple[int, int], float], float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pass 2 on Dask: :func:`score_slice` for a slice scattered with its task (indices in the parties)."""
    state = _inputs(setup)
    piece = sealed.value
    party_a, party_b, start, _ = piece.task
    index_a, index_b, levels, similarity, _, frequencies_a = _scattered_levels(state, piece, comparisons)
    keep, weights, probability = weigh_pairs(
        levels,
        comparisons,
        features,
        scoring,
        (party_a, party_b),
        ([f[index_a] for f in frequencies_a], [f[index_b] for f in state["shipped"][party_b]]),
        similarity,
    )
    return (index_a[keep] + start).astype(np.int32), index_b[keep].astype(np.int32), weights[keep], probability[keep]


@dataclass(frozen=True)
class ScatteredSlices:
    """The slice tasks of a run on Dask, their inputs scattered (:func:`scatter_slices`)."""

    tasks: list[tuple[int, int, int, int]]
    setup: Setup
    scattered: ScatteredTasks
    client: Any
    broadcast: list[Any]

    def run(
        self, stage: str, arguments: tuple[Any, ...], on_progress: ProgressCallback | None
    ) -> Iterator[tuple[tuple[int, int], Any]]:
        """One pass over every slice (a :data:`linkage.matching.engine.PassRunner`), results as tasks complete."""
        work = count_scattered_slice if stage == "count" else score_scattered_slice
        for number, result in self.scattered.run(work, (self.setup, *arguments), on_progress):
            yield self.tasks[number][:2], result

    def close(self) -> None:
        """Release the slices and the broadcast parties from the cluster."""
        self.scattered.close()
        self.client.cancel(self.broadcast)


def scatter_slices(
    client: Any,
    key: str,
    protocol: Protocol,
    encodings: Sequence[Encodings],
    comparisons: Sequence[Comparison],
    oversized: FrozenBlocks,
    slots: int,
) -> ScatteredSlices:
    """The pool's slice tasks on Dask: each pair's second party broadcast, each slice of its first scattered once.

    Every party that is some pair's second party (the one a slice is looked up in) goes
    to every worker once, with only the fields a task reads (block keys and the compared
    fields; the CLK only under a CLK prefilter) and its term frequencies (over all
    records of all parties: computed here, where every party is). A slice of a party
    that is never second (the first party of two) travels to one worker only, with its
    task. Blocks over their limit are found here on all records (``oversized``, as a
    frozen model's), since no worker holds the whole of a first party. The tasks and
    their candidates are the pool's, so the counts, scores and entities are too.
    """
    records = [np.asarray(item.records) for item in encodings]
    names = ["block", *(n for c in comparisons for n in c.columns)]
    if protocol.clk_prefilter is not None:
        names.append("clk")
    fields = [(name, records[0].dtype[name]) for name in dict.fromkeys(names)]
    frequencies = frequencies_of({"records": records}, comparisons)
    sizes = [len(party) for party in records]
    tasks = slice_tasks(sizes, slots)
    second = sorted({b for _, b, _, _ in tasks})
    futures = client.scatter(
        [Sealed((_cut_fields(records[party], fields), frequencies[party])) for party in second],
        broadcast=True,
        hash=False,
    )
    sources = tuple(futures[second.index(party)] if party in second else None for party in range(len(records)))
    setup: Setup = (key, sources, oversized, protocol.clk_prefilter)
    record_bytes = sum(dtype.itemsize for _, dtype in fields) + 8 * len(frequencies[0])

    def make_input(number: int) -> SliceInput:
        a, _, start, stop = tasks[number]
        if a in second:
            return SliceInput(tasks[number], None, None)
        return SliceInput(
            tasks[number], _cut_fields(records[a][start:stop], fields), [f[start:stop] for f in frequencies[a]]
        )

    # Placed by their records, sent or not, so that the workers share the work evenly.
    weights = [(stop - start) * record_bytes for _, _, start, stop in tasks]
    return ScatteredSlices(tasks, setup, ScatteredTasks(client, make_input, weights), client, list(futures))


def _cut_fields(records: np.ndarray, fields: list[tuple[str, np.dtype[Any]]]) -> np.ndarray:
    """The records with only the given fields (no token: a task never reads it)."""
    out = np.empty(len(records), dtype=fields)
    for name, _ in fields:
        out[name] = records[name]
    return out


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
    # On Dask: the client, to scatter the slices' inputs (:func:`scatter_slices`).
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
    scatters the slices' inputs (:func:`scatter_slices`); the setup's sources are left
    empty for it to fill. The encodings travel sealed (Dask never prints them), the
    workers need no shared file system, a task lost with a worker is run again elsewhere
    with the same result, and at the end the workers drop the job's inputs. With
    ``oversized`` (a frozen model's), those blocks are skipped instead of the blocks over
    the protocol's ``max_block_pairs``.
    """
    key = secrets.token_hex(8)
    limits = (protocol.block_limits if oversized is None else oversized, protocol.clk_prefilter)
    if dask is not None:
        with connect(dask) as client:
            from distributed import as_completed  # an optional extra, present if connect worked

            runner = Runner(
                submit=lambda *args: client.submit(*args, pure=False),
                as_completed=lambda futures: as_completed(futures),
                client=client,
            )
            try:
                yield runner, (key, (), *limits), parallelism(client)
            finally:
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
