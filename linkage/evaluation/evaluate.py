"""``pprl evaluate``'s work: score a linkage against known truth, and analyse its blocking.

One call, one frozen :class:`Evaluation` for the command to render. With the truth, the
entities and every party's key map: pairwise and cluster scores. With the protocol and
the encodings: the blocking analysis (:func:`linkage.evaluation.blocking.analyse_blocking`),
which needs no truth; with the truth too, pair completeness rule by rule, and on request
precision and recall by threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linkage.errors import InputError
from linkage.evaluation.blocking import BlockingAnalysis, analyse_blocking
from linkage.evaluation.scores import (
    ClusterScores,
    PairwiseScores,
    cluster_scores,
    pairwise_scores,
    read_truth,
    record_people,
    resolve_entities,
    threshold_curve,
    true_pairs,
)
from linkage.matching.engine import load_inputs, score_candidates
from linkage.protocol import Protocol
from linkage.token_files import read_entities, read_keymap

__all__ = ["CURVE_THRESHOLDS", "Evaluation", "evaluate_linkage"]

CURVE_THRESHOLDS = tuple(float(t) for t in np.round(np.linspace(0.05, 0.99, 40), 3))

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Evaluation:
    """What ``pprl evaluate`` found; a part is ``None`` (or empty) when its inputs were not given.

    Attributes:
        pairwise: precision, recall and F1 of the entities' cross-party pairs.
        true_pairs: the true cross-party pairs among the key maps' parties.
        clusters: people reproduced exactly as one entity.
        blocking: the blocking analysis (with pair completeness given the truth).
        curve: pairwise scores after solving, by match-probability threshold.
    """

    pairwise: PairwiseScores | None = None
    true_pairs: int | None = None
    clusters: ClusterScores | None = None
    blocking: BlockingAnalysis | None = None
    curve: tuple[tuple[float, PairwiseScores], ...] = ()


def evaluate_linkage(
    *,
    truth: Path | None = None,
    entities: Path | None = None,
    keymaps: Mapping[str, Path] | None = None,
    protocol: Protocol | None = None,
    encodings: Sequence[Path] = (),
    curve: bool = False,
    workers: int = 1,
    on_progress: ProgressCallback | None = None,
) -> Evaluation:
    """Score entities against the truth and analyse blocking, as far as the inputs allow.

    Args:
        truth: ``party,client_id,person_id`` rows.
        entities: ``pprl link``'s output.
        keymaps: per party, the key map ``pprl encode`` wrote (needed with the truth).
        protocol: the protocol, to analyse blocking of ``encodings``.
        encodings: one encodings file (or folder) per party, as linked.
        curve: also score the linkage at every threshold of :data:`CURVE_THRESHOLDS` (needs
            the truth, the protocol and the encodings; re-scores every candidate).
        workers: processes for re-scoring.
        on_progress: called with (slices done, slices) while analysing blocking.

    Raises:
        InputError: inputs that do not go together (named in the message), or files that
            do not match each other.
    """
    if (truth is None) != (not keymaps):
        raise InputError("the truth and the key maps go together: pass --truth with a --keymap per party")
    if entities is not None and truth is None:
        raise InputError("scoring entities needs the truth: pass --truth and a --keymap per party")
    if (protocol is None) != (not encodings):
        raise InputError("blocking analysis needs the protocol and the encodings: pass --protocol and --encodings")
    if entities is None and protocol is None:
        raise InputError("nothing to evaluate: pass --entities (with --truth), or --protocol with --encodings")
    if curve and (truth is None or protocol is None):
        raise InputError("precision and recall by threshold need --truth, --protocol and --encodings")
    maps = {party: read_keymap(path) for party, path in (keymaps or {}).items()}
    known = read_truth(truth) if truth is not None else None
    pairwise = clusters = None
    actual: set[tuple[tuple[str, str], tuple[str, str]]] = set()
    if known is not None and entities is not None:
        actual, true_clusters = true_pairs(known, maps)
        predicted = resolve_entities(read_entities(entities), maps)
        pairwise = pairwise_scores(predicted, actual)
        clusters = cluster_scores(predicted, true_clusters)
    if protocol is None:
        return Evaluation(pairwise=pairwise, true_pairs=len(actual) if pairwise else None, clusters=clusters)
    loaded = load_inputs(protocol, encodings)
    people = record_people(loaded, maps, known) if known is not None else None
    blocking = analyse_blocking(protocol, loaded, people, on_progress=on_progress)
    scored_curve: tuple[tuple[float, PairwiseScores], ...] = ()
    if curve and people is not None:
        scored = score_candidates(protocol, loaded, workers=workers)
        scored_curve = tuple(
            threshold_curve(
                scored.party_a,
                scored.party_b,
                scored.record_a,
                scored.record_b,
                scored.weight,
                scored.probability,
                people,
                CURVE_THRESHOLDS,
            )
        )
    return Evaluation(
        pairwise=pairwise,
        true_pairs=len(actual) if pairwise is not None else None,
        clusters=clusters,
        blocking=blocking,
        curve=scored_curve,
    )
