"""Linkage quality against known truth, and the synthetic client lists to measure it on.

For development, benchmarks and audit; nothing here runs in the service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from linkage._lazy import lazy_exports

if TYPE_CHECKING:
    from linkage.evaluation.scores import (
        BlockingScores,
        ClusterScores,
        PairwiseScores,
        blocking_scores,
        cluster_scores,
        pairwise_scores,
        read_truth,
        true_pairs,
    )
    from linkage.evaluation.synth import synthesise_population

__all__ = [
    "BlockingScores",
    "ClusterScores",
    "PairwiseScores",
    "blocking_scores",
    "cluster_scores",
    "pairwise_scores",
    "read_truth",
    "synthesise_population",
    "true_pairs",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "BlockingScores": "linkage.evaluation.scores",
        "ClusterScores": "linkage.evaluation.scores",
        "PairwiseScores": "linkage.evaluation.scores",
        "blocking_scores": "linkage.evaluation.scores",
        "cluster_scores": "linkage.evaluation.scores",
        "pairwise_scores": "linkage.evaluation.scores",
        "read_truth": "linkage.evaluation.scores",
        "synthesise_population": "linkage.evaluation.synth",
        "true_pairs": "linkage.evaluation.scores",
    },
)
