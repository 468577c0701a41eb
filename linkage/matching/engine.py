"""The linkage engine: encodings of two or more parties in, entities out.

Stages: check that the inputs belong together; for each pair of parties, generate
candidate pairs by blocking and compare them field by field (spread over a process pool
or a Dask cluster, one slice of records per task, so memory stays bounded); fit a Fellegi-Sunter model by EM
on the candidates and u from random pairs; choose the threshold (or take the given one);
solve the accepted pairs into entities. The CLI runs it in-process; the service runs the
same function as a job.

With a frozen model (:mod:`linkage.matching.frozen`), or when asked to freeze one, every
pair is decided by the frozen model alone, and the run also gives the stable mapping the
statistics side uses (:mod:`linkage.matching.stable`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from linkage.encodings import Encodings, check_compatible, content_order, read_encodings
from linkage.errors import InputError
from linkage.matching.block import rule_spans
from linkage.matching.compare import (
    Comparison,
    Feature,
    PartyFeatures,
    compare_pairs,
    comparisons_for,
    date_level_counts,
    decode_patterns,
    feature_levels,
    features_for,
    first_shared_salt,
)
from linkage.matching.frozen import FrozenModel, oversized_blocks
from linkage.matching.model import (
    FellegiSunterModel,
    estimate_u,
    fit_em_by_rule,
    fit_prior,
    shared_salt_pairs,
)
from linkage.matching.solve import Entity, solve_entities
from linkage.matching.stable import StableLinkage, stable_entities
from linkage.matching.tasks import (
    FrozenBlocks,
    ProgressCallback,
    count_slice,
    executor,
    run_tasks,
    scatter_slices,
    score_slice,
    slice_tasks,
)
from linkage.matching.threshold import choose_threshold
from linkage.protocol import BlockingRule, Protocol, Rule, matching_digest

__all__ = [
    "LinkResult",
    "ScoredCandidates",
    "check_inputs",
    "freeze_model",
    "link",
    "load_inputs",
    "score_candidates",
    "select_and_solve",
]

# Candidates less likely than this to match are dropped after scoring: far below any
# threshold, and keeping them would make memory grow with the candidate count.
PROBABILITY_FLOOR = 1e-3
RANDOM_PAIRS = 200_000
# One pass over every task of a run: (stage, "count" or "score"; that stage's arguments;
# progress) to each task's pair of parties and result.
PassRunner = Callable[[str, tuple[Any, ...], ProgressCallback | None], Iterator[tuple[tuple[int, int], Any]]]


def load_inputs(protocol: Protocol, paths: Sequence[str | Path]) -> list[Encodings]:
    """Load encodings files (or folders written by ``pprl encode``) and check them together."""
    encodings = [read_encodings(path) for path in paths]
    check_inputs(protocol, encodings)
    return encodings


def check_inputs(protocol: Protocol, encodings: Sequence[Encodings]) -> None:
    """Refuse inputs that cannot be linked together, saying which file differs in what.

    Raises:
        MismatchError: another protocol, secret or layout; one party twice (every problem listed,
            by :func:`~linkage.encodings.check_compatible`).
        InputError: fewer than two parties, an empty file, duplicated tokens.
    """
    if len(encodings) < 2:
        raise InputError("linkage needs the encodings of at least two parties; pass two or more files")
    check_compatible(protocol, [(str(item.path), item.header) for item in encodings])
    tokens = np.concatenate([np.ascontiguousarray(item.records["token"]).view("V16").ravel() for item in encodings])
    if len(np.unique(tokens)) != len(tokens):
        raise InputError(
            "the same record token appears twice in the inputs; a file was passed twice or copied "
            "between parties. Encode each party's list once"
        )


@dataclass(frozen=True)
class ScoredCandidates:
    """The candidate pairs of every pair of parties that may match, with their scores.

    Linkage side only: these never leave the engine (scores are not released).
    ``pairs_compared`` counts every candidate; the arrays hold those at or above the
    probability floor. ``priors`` are the match priors per pair of parties (indices) the
    probabilities were computed with, ``oversized`` the blocks skipped when they were
    frozen (``None``: those over the protocol's limit, counted on these records).
    ``weight`` is the solver's strength: the match weight with ties broken by the pair's
    similarity (:func:`linkage.matching.solve.with_tie_break`); ``probability`` comes from
    the match weight alone. ``ranks`` are each party's records' ranks in content order
    (:func:`~linkage.encodings.content_order`, the order ``pprl encode`` writes): the
    solver breaks its last ties by them, so that the order of the input changes nothing.
    """

    party_a: np.ndarray
    party_b: np.ndarray
    record_a: np.ndarray
    record_b: np.ndarray
    weight: np.ndarray
    probability: np.ndarray
    model: FellegiSunterModel
    sizes: tuple[int, ...]
    pairs_total: int
    pairs_compared: int
    priors: Mapping[tuple[int, int], float] = field(default_factory=dict)
    oversized: FrozenBlocks | None = None
    ranks: tuple[np.ndarray, ...] = ()

    def threshold(self) -> float:
        """The threshold ``auto`` chooses: the best expected F1 of what the solver keeps (:func:`choose_threshold`)."""
        rank_a, rank_b = self.ranked(np.ones(len(self.probability), dtype=bool))
        return choose_threshold(
            self.party_a, self.party_b, rank_a, rank_b, self.probability, self.sizes, self.priors, self.weight
        )

    def ranked(self, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ranks in content order of the chosen pairs' two records (their indices without ``ranks``)."""
        record_a, record_b = self.record_a[chosen], self.record_b[chosen]
        if not self.ranks:
            return record_a, record_b
        party_a, party_b = self.party_a[chosen], self.party_b[chosen]
        rank_a, rank_b = np.empty_like(record_a), np.empty_like(record_b)
        for party, ranks in enumerate(self.ranks):
            rank_a[party_a == party] = ranks[record_a[party_a == party]]
            rank_b[party_b == party] = ranks[record_b[party_b == party]]
        return rank_a, rank_b

    def unranked(self, groups: Sequence[tuple[tuple[int, int], ...]]) -> list[tuple[tuple[int, int], ...]]:
        """Groups of ``(party, rank)`` back as ``(party, record)``, each sorted, sorted by their first record."""
        if not self.ranks:
            return sorted(groups)
        orders = [np.argsort(ranks) for ranks in self.ranks]
        return sorted(tuple(sorted((party, int(orders[party][rank])) for party, rank in group)) for group in groups)


@dataclass(frozen=True)
class LinkResult:
    """What a linkage run produced (no scores).

    ``entities`` are the greedy solver's (record-level results); with a frozen model,
    ``stable`` is the stable mapping for the statistics side and ``model`` the frozen
    model the run used (or fitted and froze).
    """

    parties: tuple[str, ...]
    tokens: tuple[np.ndarray, ...]
    entities: list[Entity]
    threshold: float
    pairs_total: int
    pairs_compared: int
    pairs_accepted: int
    seconds: float
    model: FrozenModel | None = None
    stable: StableLinkage | None = None


def _random_pair_levels(
    encodings: Sequence[Encodings], comparisons: Sequence[Comparison], features: Sequence[Feature], seed: int = 0
) -> np.ndarray:
    """Feature levels of random cross-party pairs, to estimate u (fixed seed: same input, same output).

    A salted field is compared only within a salt, and random pairs rarely share one, so
    under a salt as many pairs again are drawn among records that share it
    (:func:`_same_salt_levels`).
    """
    rng = np.random.default_rng(seed)
    combos = list(itertools.combinations(range(len(encodings)), 2))
    per_combo = max(1, RANDOM_PAIRS // len(combos))
    # Drawn from the records in content order (as `pprl encode` writes them): the same
    # records in another order give the same u.
    party_features = [
        PartyFeatures.from_records(np.asarray(item.records)[content_order(item.records)], comparisons)
        for item in encodings
    ]
    salted = [i for i, f in enumerate(features) if any(comparisons[m].salted for m in f.members)]
    parts = []
    for a, b in combos:
        index_a = rng.integers(0, encodings[a].header.record_count, per_combo)
        index_b = rng.integers(0, encodings[b].header.record_count, per_combo)
        levels = compare_pairs(party_features[a], party_features[b], index_a, index_b, comparisons)
        parts.append(feature_levels(levels, features))
        if salted:
            pair = (party_features[a], party_features[b])
            parts.append(_same_salt_levels(pair, per_combo, rng, comparisons, features, salted))
    return np.concatenate(parts)


def _counted_date_levels(
    encodings: Sequence[Encodings], comparisons: Sequence[Comparison], features: Sequence[Feature]
) -> dict[int, np.ndarray]:
    """Per date feature, the level counts that :func:`_random_pair_levels`' pairs are expected to hold.

    Counted over every pair of each pair of parties (:func:`date_level_counts`) and scaled
    to the random pairs drawn from it. A date's exact and swapped levels are rare among
    random pairs (about 30 and 3 in 200,000 on the realistic synth), so their sampled u, and
    with it the weight of an agreeing date, moved by up to a bit from one draw to the next.
    A date grouped with other fields keeps its sampled levels.
    """
    combos = list(itertools.combinations(range(len(encodings)), 2))
    per_combo = max(1, RANDOM_PAIRS // len(combos))
    out = {}
    for index, feature in enumerate(features):
        comparison = comparisons[feature.members[0]]
        if len(feature.members) != 1 or comparison.field.kind != "date":
            continue
        dates = [
            np.asarray(item.records[comparison.field.name]).reshape(item.header.record_count, -1).astype(np.uint32)
            for item in encodings
        ]
        counts = np.zeros(feature.size)
        for a, b in combos:
            pairs = max(len(dates[a]) * len(dates[b]), 1)
            counts += date_level_counts(dates[a], dates[b], comparison) * (per_combo / pairs)
        out[index] = counts
    return out


def _same_salt_levels(
    pair: tuple[PartyFeatures, PartyFeatures],
    count: int,
    rng: np.random.Generator,
    comparisons: Sequence[Comparison],
    features: Sequence[Feature],
    salted: Sequence[int],
) -> np.ndarray:
    """Feature levels of random pairs that share a salt: the salted features' only, every other neutral.

    Pairs that agree on more of the salt field than their salt (a date, when the salt is
    its year) are left out: within one year, true matches are no longer rare among random
    pairs, and nearly all of them agree on the whole date, or on its day or month beside
    the year (a typo in the other). Those few among a hundred thousand random pairs rated
    an address, city and postcode agreeing together three times as likely among
    non-matches as it is (FEBRL4: u 0.00028 against 0.00008 unsalted).
    """
    index_a, index_b = shared_salt_pairs(pair[0].salts, pair[1].salts, count, rng)
    levels = compare_pairs(pair[0], pair[1], index_a, index_b, comparisons)
    salt_field = next(i for i, c in enumerate(comparisons) if c.salt_part is not None)
    salt = comparisons[salt_field]
    if salt.salt_part != "whole":
        keep = levels[:, salt_field] != salt.levels - 1
        # Shared through the year, a pair may agree on nothing more ("different" dates).
        through = first_shared_salt(pair[0].salts[index_a], pair[1].salts[index_b])
        through_year = np.isin(through, [k for k, part in enumerate(salt.salt_parts) if part == "year"])
        keep &= ~through_year | (levels[:, salt_field] == 0)
        levels = levels[keep]
    within = feature_levels(levels, features)
    for column, feature in enumerate(features):
        if column not in salted:
            within[:, column] = feature.neutral
    return within


def score_candidates(
    protocol: Protocol,
    encodings: Sequence[Encodings],
    *,
    workers: int = 1,
    floor: float = PROBABILITY_FLOOR,
    dask: str | None = None,
    on_progress: ProgressCallback | None = None,
    model: FrozenModel | None = None,
    freeze: bool = False,
) -> ScoredCandidates:
    """Block, compare and weigh every candidate pair of every pair of parties.

    Two passes over the candidates, so that memory never holds them all: the first only
    counts how many have each pattern of agreement levels, which is all the EM needs; the
    second scores them again under the fitted model and keeps those whose match
    probability reaches ``floor``. A task is a slice of a party's records, on the pool and
    on Dask alike, so every candidate is counted and scored once, and the result is the same.

    Args:
        protocol: the protocol.
        encodings: one loaded encodings file per party.
        workers: processes for candidate generation and comparison.
        floor: keep candidates with at least this match probability (0 keeps them all).
        dask: run the slices on this Dask scheduler instead of a local pool.
        on_progress: called with (tasks done, tasks) over both passes.
        model: a frozen model: weigh with it (no EM, no term frequencies) and skip its
            oversized blocks.
        freeze: fit the model as usual, but weigh without term frequencies and skip the
            blocks oversized now as a list, so that the model can be frozen
            (:class:`linkage.matching.frozen.FrozenModel`) and give the same scores later.
    """
    comparisons = comparisons_for(protocol)
    features = features_for(comparisons, protocol.comparison_groups)
    sizes = [item.header.record_count for item in encodings]
    parties = [item.header.party for item in encodings]
    oversized: FrozenBlocks | None = None
    if model is not None:
        oversized = model.oversized_for(parties, len(protocol.block_limits))
    elif freeze:
        oversized = oversized_blocks(encodings, protocol.block_limits)
    fixed = (model, freeze, oversized)
    with executor(protocol, encodings, workers, dask, oversized) as (runner, setup, slots):
        if runner is not None and runner.client is not None:
            skipped = oversized if oversized is not None else oversized_blocks(encodings, protocol.block_limits)
            scattered = scatter_slices(runner.client, setup[0], protocol, encodings, comparisons, skipped, slots)
            try:
                return _score(
                    encodings,
                    protocol.blocking,
                    comparisons,
                    features,
                    scattered.run,
                    len(scattered.tasks),
                    floor,
                    on_progress,
                    fixed,
                )
            finally:
                scattered.close()

        def run(stage: str, arguments: tuple[Any, ...], on_pass: ProgressCallback | None) -> Iterator[Any]:
            work = count_slice if stage == "count" else score_slice
            for task, result in run_tasks(encodings, work, (setup, *arguments), runner, slots, on_pass):
                yield task[:2], result

        tasks = len(slice_tasks(sizes, slots))
        return _score(encodings, protocol.blocking, comparisons, features, run, tasks, floor, on_progress, fixed)


def _score(
    encodings: Sequence[Encodings],
    rules: Sequence[Rule],
    comparisons: Sequence[Comparison],
    features: Sequence[Feature],
    run: PassRunner,
    tasks: int,
    floor: float,
    on_progress: ProgressCallback | None,
    fixed: tuple[FrozenModel | None, bool, FrozenBlocks | None] = (None, False, None),
) -> ScoredCandidates:
    """The two passes of :func:`score_candidates`, each over the ``tasks`` that ``run`` runs.

    Nothing here depends on the order in which tasks complete: pattern counts are summed
    and then taken in code order, and the kept candidates are put in canonical order
    (party a, party b, record a, record b), so the pool and Dask give the same model,
    scores and entities.
    """

    def progress(offset: int) -> ProgressCallback | None:
        return (lambda done, _total: on_progress(offset + done, 2 * tasks)) if on_progress else None

    sizes = [item.header.record_count for item in encodings]
    counted: dict[tuple[int, int], dict[int, int]] = {}
    by_rule: list[dict[int, int]] = [{} for _ in rules]
    candidates = 0
    spans = rule_spans(rule.columns for rule in rules)
    for parties, (distinct, counts, per_rule) in run("count", (comparisons, features, spans), progress(0)):
        table = counted.setdefault(parties, {})
        for code, count in zip(distinct.tolist(), counts.tolist(), strict=True):
            table[code] = table.get(code, 0) + count
        for rule_table, (rule_distinct, rule_counts) in zip(by_rule, per_rule, strict=True):
            for code, count in zip(rule_distinct.tolist(), rule_counts.tolist(), strict=True):
                rule_table[code] = rule_table.get(code, 0) + count
        candidates += int(counts.sum())
    # Code order: the EM's float sums must not depend on the order tasks completed in.
    counted = {parties: dict(sorted(table.items())) for parties, table in counted.items()}
    by_rule = [dict(sorted(table.items())) for table in by_rule]
    all_counts: dict[int, int] = {}
    for table in counted.values():
        for code, count in table.items():
            all_counts[code] = all_counts.get(code, 0) + count
    all_counts = dict(sorted(all_counts.items()))
    frozen, freeze, oversized = fixed
    if frozen is not None:
        priors = frozen.priors_for([item.header.party for item in encodings])
        return _score_pass(
            encodings, run, tasks, progress, comparisons, features, frozen.model, priors, floor, candidates, oversized
        )
    random_levels = _random_pair_levels(encodings, comparisons, features)
    # A session holds out the fields its rule forced to agree. A similarity rule forces none
    # to agree, and its candidates alone (families and neighbours beside heavily corrupted
    # matches) made EM take "alike on names or address" for the match class: it takes part
    # in the EM over all candidates, not as a session of its own.
    sessions = [
        (
            decode_patterns(np.fromiter(table, dtype=np.int64, count=len(table)), features),
            np.fromiter(table.values(), dtype=np.int64, count=len(table)),
            rule.fields,
        )
        for table, rule in zip(by_rule, rules, strict=True)
        if table and isinstance(rule, BlockingRule)
    ]
    model = fit_em_by_rule(
        decode_patterns(np.fromiter(all_counts, dtype=np.int64, count=len(all_counts)), features),
        np.fromiter(all_counts.values(), dtype=np.int64, count=len(all_counts)),
        sessions,
        features,
        estimate_u(
            random_levels,
            features,
            falling=[i for i, f in enumerate(features) if any(comparisons[m].fallback for m in f.members)],
            counted=_counted_date_levels(encodings, comparisons, features),
        ),
        total_pairs=_total_pairs(sizes),
    )
    priors = {
        (a, b): fit_prior(
            model,
            decode_patterns(np.fromiter(counted.get((a, b), {0: 0}), dtype=np.int64), features),
            np.fromiter(counted.get((a, b), {0: 0}).values(), dtype=np.int64),
            sizes[a] * sizes[b],
        )
        for a, b in itertools.combinations(range(len(sizes)), 2)
    }
    if freeze:
        model = replace(model, term_frequencies=False)
    return _score_pass(
        encodings, run, tasks, progress, comparisons, features, model, priors, floor, candidates, oversized
    )


def _score_pass(
    encodings: Sequence[Encodings],
    run: PassRunner,
    tasks: int,
    progress: Callable[[int], ProgressCallback | None],
    comparisons: Sequence[Comparison],
    features: Sequence[Feature],
    model: FellegiSunterModel,
    priors: Mapping[tuple[int, int], float],
    floor: float,
    candidates: int,
    oversized: FrozenBlocks | None,
) -> ScoredCandidates:
    """The second pass of :func:`_score`: weigh every candidate and keep those at or above the floor."""
    sizes = [item.header.record_count for item in encodings]
    parts: list[tuple[int, int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = []
    for (a, b), result in run("score", (comparisons, features, (model, priors, floor)), progress(tasks)):
        parts.append((a, b, result))
    party_a = np.concatenate([np.full(len(r[0]), a, dtype=np.int8) for a, _, r in parts] or [np.zeros(0, np.int8)])
    party_b = np.concatenate([np.full(len(r[0]), b, dtype=np.int8) for _, b, r in parts] or [np.zeros(0, np.int8)])
    record_a = np.concatenate([r[0] for _, _, r in parts] or [np.zeros(0, np.int32)])
    record_b = np.concatenate([r[1] for _, _, r in parts] or [np.zeros(0, np.int32)])
    weight = np.concatenate([r[2] for _, _, r in parts] or [np.zeros(0)])
    probability = np.concatenate([r[3] for _, _, r in parts] or [np.zeros(0)])
    del parts
    ranks = []
    for item in encodings:
        rank = np.empty(item.header.record_count, dtype=np.int64)
        rank[content_order(item.records)] = np.arange(item.header.record_count)
        ranks.append(rank)
    order = _canonical_order(party_a, party_b, record_a, record_b)
    if order is not None:
        party_a, party_b, record_a, record_b = party_a[order], party_b[order], record_a[order], record_b[order]
        weight, probability = weight[order], probability[order]
    return ScoredCandidates(
        party_a=party_a,
        party_b=party_b,
        record_a=record_a,
        record_b=record_b,
        weight=weight,
        probability=probability,
        model=model,
        sizes=tuple(sizes),
        pairs_total=_total_pairs(sizes),
        pairs_compared=candidates,
        priors=dict(priors),
        oversized=oversized,
        ranks=tuple(ranks),
    )


def _canonical_order(
    party_a: np.ndarray, party_b: np.ndarray, record_a: np.ndarray, record_b: np.ndarray
) -> np.ndarray | None:
    """The order that sorts pairs by (party a, party b, record a, record b); ``None`` if they are sorted.

    Slices come back sorted already (the pool's, in task order), so checking first costs
    the pool one linear pass instead of a sort.

    >>> a, b = np.array([0, 0, 0]), np.array([1, 1, 2])
    >>> _canonical_order(a, b, np.array([3, 1, 0]), np.array([0, 5, 9])).tolist()
    [1, 0, 2]
    >>> _canonical_order(a, b, np.array([1, 3, 0]), np.array([5, 0, 9])) is None
    True
    """
    if len(record_a) < 2:
        return None
    keys = (party_a, party_b, record_a, record_b)
    later = np.zeros(len(record_a) - 1, dtype=bool)
    tied = np.ones(len(record_a) - 1, dtype=bool)
    for key in keys:
        later |= tied & (key[1:] > key[:-1])
        tied &= key[1:] == key[:-1]
    if np.all(later | tied):
        return None
    # Per pair of parties, one 64-bit code per pair: tasks' results are sorted runs, which
    # a stable (merging) sort of one key exploits; a four-key lexsort took 3x as long.
    pair = party_a.astype(np.int16) * 256 + party_b
    order = np.argsort(pair, kind="stable")
    codes = (record_a[order].astype(np.uint64) << np.uint64(32)) | record_b[order].astype(np.uint64)
    bounds = [0, *(np.flatnonzero(np.diff(pair[order])) + 1).tolist(), len(order)]
    for start, stop in itertools.pairwise(bounds):
        order[start:stop] = order[start:stop][np.argsort(codes[start:stop], kind="stable")]
    return order


def _total_pairs(sizes: Sequence[int]) -> int:
    return sum(sizes[a] * sizes[b] for a, b in itertools.combinations(range(len(sizes)), 2))


def select_and_solve(scored: ScoredCandidates, threshold: float) -> tuple[list[Entity], int]:
    """Accept pairs at or above the probability threshold and solve them into entities."""
    accepted = scored.probability >= threshold
    rank_a, rank_b = scored.ranked(accepted)
    solved = solve_entities(scored.party_a[accepted], scored.party_b[accepted], rank_a, rank_b, scored.weight[accepted])
    entities = [Entity(records) for records in scored.unranked([entity.records for entity in solved])]
    return entities, int(accepted.sum())


def link(
    protocol: Protocol,
    encodings: Sequence[Encodings],
    *,
    threshold: float | None = None,
    workers: int = 1,
    dask: str | None = None,
    on_progress: ProgressCallback | None = None,
    model: FrozenModel | None = None,
    freeze: bool = False,
) -> LinkResult:
    """Link the parties' encodings into entities.

    Args:
        protocol: the protocol the encodings were made under.
        encodings: one loaded encodings file per party (see :func:`load_inputs`).
        threshold: match probability to accept a pair; ``None`` takes the frozen model's,
            else the protocol's, and a protocol's ``auto`` chooses it from the data
            (:func:`choose_threshold`).
        workers: processes for candidate generation and comparison.
        dask: a Dask scheduler address to run them on instead (same result as the pool).
        on_progress: called with (tasks done, tasks).
        model: a frozen model to decide every pair with (see :func:`score_candidates`).
        freeze: fit a model on these records and freeze it (returned as ``model``).

    Returns:
        The entities and counts, no scores; with ``model`` or ``freeze``, also the frozen
        model and the stable mapping.
    """
    started = time.perf_counter()
    check_inputs(protocol, encodings)
    scored = score_candidates(
        protocol, encodings, workers=workers, dask=dask, on_progress=on_progress, model=model, freeze=freeze
    )
    chosen = threshold if threshold is not None else (model.threshold if model is not None else protocol.threshold)
    if chosen is None:
        chosen = scored.threshold()
    entities, accepted = select_and_solve(scored, chosen)
    stable = None
    if model is not None or freeze:
        model = model if model is not None else freeze_model(protocol, encodings, scored, chosen)
        keep = scored.probability >= chosen
        rank_a, rank_b = scored.ranked(keep)
        ranked = stable_entities(
            scored.party_a[keep],
            scored.party_b[keep],
            rank_a,
            rank_b,
            scored.weight[keep],
            [item.header.record_count for item in encodings],
        )
        stable = replace(
            ranked,
            entities=[Entity(records) for records in scored.unranked([e.records for e in ranked.entities])],
            ambiguous=scored.unranked(ranked.ambiguous),
        )
    return LinkResult(
        parties=tuple(item.header.party for item in encodings),
        tokens=tuple(np.ascontiguousarray(item.records["token"]) for item in encodings),
        entities=entities,
        threshold=chosen,
        pairs_total=scored.pairs_total,
        pairs_compared=scored.pairs_compared,
        pairs_accepted=accepted,
        seconds=time.perf_counter() - started,
        model=model,
        stable=stable,
    )


def freeze_model(
    protocol: Protocol, encodings: Sequence[Encodings], scored: ScoredCandidates, threshold: float
) -> FrozenModel:
    """The model a freezing run fitted, with its priors, threshold and oversized blocks, by party id."""
    parties = tuple(item.header.party for item in encodings)
    oversized = scored.oversized or {}
    return FrozenModel(
        fingerprint=protocol.fingerprint,
        parties=parties,
        records={item.header.party: item.header.record_count for item in encodings},
        model=scored.model,
        priors={(parties[a], parties[b]): prior for (a, b), prior in scored.priors.items()},
        threshold=threshold,
        oversized={(parties[a], parties[b]): keys for (a, b), keys in oversized.items()},
        matching=matching_digest(protocol),
    )
