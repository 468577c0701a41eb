"""The only module that imports anonlink: CLK Dice similarity and greedy solving.

Keeping anonlink behind these two functions lets the rest of pprl work on numpy arrays
and makes anonlink replaceable.
"""

from __future__ import annotations

import warnings
from array import array
from collections.abc import Sequence

import numpy as np
from bitarray import bitarray

with warnings.catch_warnings():
    # anonlink 0.15 imports pkg_resources, which warns on import; nothing for users to act on.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    from anonlink.similarities import dice_coefficient_accelerated
    from anonlink.solving import probabilistic_greedy_solve

__all__ = ["clk_dataset", "clk_dice_pairs", "greedy_groups"]


def clk_dataset(clks: np.ndarray) -> list[bitarray]:
    """Packed CLKs (records, bytes) as the bitarrays anonlink works on; convert once, reuse."""
    out = []
    for row in clks:
        bits = bitarray(endian="big")
        bits.frombytes(row.tobytes())
        out.append(bits)
    return out


def clk_dice_pairs(
    clks_a: Sequence[bitarray], clks_b: Sequence[bitarray], threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs whose CLK Dice coefficient is at least ``threshold``, by anonlink's C++ popcount.

    Args:
        clks_a: CLKs from :func:`clk_dataset`.
        clks_b: the other party's, same length.
        threshold: the Dice threshold.

    Returns:
        (index in A, index in B), int64, sorted by A then B.
    """
    if not len(clks_a) or not len(clks_b):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    _, (index_a, index_b) = dice_coefficient_accelerated([clks_a, clks_b], threshold)
    a = np.frombuffer(index_a, dtype=np.uint32).astype(np.int64)
    b = np.frombuffer(index_b, dtype=np.uint32).astype(np.int64)
    order = np.lexsort((b, a))
    return a[order], b[order]


def greedy_groups(
    strength: np.ndarray,
    party_a: np.ndarray,
    party_b: np.ndarray,
    record_a: np.ndarray,
    record_b: np.ndarray,
    merge_share: float,
) -> Sequence[Sequence[tuple[int, int]]]:
    """Run anonlink's probabilistic greedy solver; pairs must be sorted strongest first."""
    candidates = (
        array("d", strength.astype(np.float64)),
        (array("I", party_a.astype(np.uint32)), array("I", party_b.astype(np.uint32))),
        (array("I", record_a.astype(np.uint32)), array("I", record_b.astype(np.uint32))),
    )
    groups: Sequence[Sequence[tuple[int, int]]] = probabilistic_greedy_solve(
        candidates, merge_threshold=merge_share, deduplicated=True
    )
    return groups
