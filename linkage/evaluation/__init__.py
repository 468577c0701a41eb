"""Linkage quality against known truth, blocking analysis, and synthetic client lists to measure on.

For development, benchmarks and audit; nothing here runs in the service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from linkage._lazy import lazy_exports

if TYPE_CHECKING:
    from linkage.evaluation.blocking import BlockingAnalysis, LargeBlock, RuleCoverage, analyse_blocking
    from linkage.evaluation.evaluate import Evaluation, evaluate_linkage
    from linkage.evaluation.scores import (
        ClusterScores,
        PairwiseScores,
        cluster_scores,
        pairwise_scores,
        read_truth,
        true_pairs,
    )
    from linkage.evaluation.synth import synthesise_population

__all__ = [
    "BlockingAnalysis",
    "ClusterScores",
    "Evaluation",
    "LargeBlock",
    "PairwiseScores",
    "RuleCoverage",
    "analyse_blocking",
    "cluster_scores",
    "evaluate_linkage",
    "pairwise_scores",
    "read_truth",
    "synthesise_population",
    "true_pairs",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "BlockingAnalysis": "linkage.evaluation.blocking",
        "ClusterScores": "linkage.evaluation.scores",
        "Evaluation": "linkage.evaluation.evaluate",
        "LargeBlock": "linkage.evaluation.blocking",
        "PairwiseScores": "linkage.evaluation.scores",
        "RuleCoverage": "linkage.evaluation.blocking",
        "analyse_blocking": "linkage.evaluation.blocking",
        "cluster_scores": "linkage.evaluation.scores",
        "evaluate_linkage": "linkage.evaluation.evaluate",
        "pairwise_scores": "linkage.evaluation.scores",
        "read_truth": "linkage.evaluation.scores",
        "synthesise_population": "linkage.evaluation.synth",
        "true_pairs": "linkage.evaluation.scores",
    },
)
