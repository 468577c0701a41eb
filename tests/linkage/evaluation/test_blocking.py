"""Blocking analysis: per rule, in protocol order, what is proposed and added, with and without truth."""

import dataclasses
import itertools

import numpy as np
import pytest

from linkage.evaluation.blocking import analyse_blocking
from linkage.evaluation.scores import read_truth, record_people
from linkage.matching.block import BlockIndex, candidate_pairs, rule_spans
from linkage.matching.engine import load_inputs, score_candidates
from linkage.protocol import SimilarityRule, load_protocol
from linkage.token_files import read_keymap
from tests.helpers import EXAMPLE_PROTOCOL, PARTIES


@pytest.fixture(scope="module")
def inputs(agencies):
    protocol = load_protocol(EXAMPLE_PROTOCOL)
    encodings = load_inputs(protocol, [agencies[party] for party in PARTIES])
    keymaps = {party: read_keymap(agencies[party] / "keymap.csv") for party in PARTIES}
    return protocol, encodings, record_people(encodings, keymaps, read_truth(agencies["truth"]))


def rule_candidates(protocol, encodings, columns, people=None):
    """Pairs (or true pairs) that a set of block key columns proposes alone, over every pair of parties."""
    limits = [protocol.block_limits[c] for c in columns]
    found = 0
    for a, b in itertools.combinations(range(len(encodings)), 2):
        keys = [np.asarray(encodings[p].records["block"]).reshape(len(encodings[p].records), -1) for p in (a, b)]
        index_a, index_b = candidate_pairs(
            keys[0][:, columns], 0, BlockIndex.build(keys[0][:, columns], keys[1][:, columns], limits)
        )
        if people is None:
            found += len(index_a)
        else:
            found += int(((people[a][index_a] == people[b][index_b]) & (people[a][index_a] >= 0)).sum())
    return found


def test_each_rule_counts_what_it_proposes_and_adds_in_rule_order(inputs):
    protocol, encodings, people = inputs
    analysis = analyse_blocking(protocol, encodings, people)
    spans = rule_spans(rule.columns for rule in protocol.blocking)
    assert [rule.rule for rule in analysis.rules] == [rule.name for rule in protocol.blocking]
    earlier: list[int] = []
    for coverage, (first, stop) in zip(analysis.rules, spans, strict=True):
        columns = list(range(first, stop))
        assert coverage.candidates == rule_candidates(protocol, encodings, columns)
        assert coverage.true_pairs == rule_candidates(protocol, encodings, columns, people)
        assert coverage.cumulative == rule_candidates(protocol, encodings, earlier + columns)
        earlier += columns
    assert sum(rule.added for rule in analysis.rules) == analysis.candidate_pairs
    assert analysis.rules[-1].cumulative_share == 1.0
    assert analysis.rules[-1].pair_completeness == analysis.pair_completeness
    assert sum(rule.true_added for rule in analysis.rules) == analysis.true_pairs_kept
    # The engine compares exactly the pairs analysed.
    assert analysis.candidate_pairs == score_candidates(protocol, encodings).pairs_compared
    pairs = [block.pairs for block in analysis.largest_blocks]
    assert pairs == sorted(pairs, reverse=True)
    assert all(block.records[0] * block.records[1] == block.pairs for block in analysis.largest_blocks)


def test_without_truth_only_counts(inputs):
    protocol, encodings, _ = inputs
    analysis = analyse_blocking(protocol, encodings)
    assert analysis.pair_completeness is None and analysis.true_pairs is None
    assert all(rule.true_pairs is None and rule.pair_completeness is None for rule in analysis.rules)
    assert analysis.candidates_per_record == analysis.candidate_pairs / max(len(e.records) for e in encodings)


def test_oversized_blocks_are_counted_and_skipped(inputs):
    protocol, encodings, people = inputs
    whole = analyse_blocking(protocol, encodings, people)
    assert whole.true_pairs_skipped == 0
    # No block at all: every true pair that shares a key shares it only in skipped blocks.
    rules = tuple(
        dataclasses.replace(rule, max_block_pairs=0) if isinstance(rule, SimilarityRule) else rule
        for rule in protocol.blocking
    )
    nothing = dataclasses.replace(protocol, max_block_pairs=0, blocking=rules)
    none_kept = analyse_blocking(nothing, encodings, people)
    assert none_kept.candidate_pairs == 0 and none_kept.true_pairs_kept == 0
    assert none_kept.true_pairs_skipped == whole.true_pairs_kept > 0
    tight = dataclasses.replace(protocol, max_block_pairs=2)
    analysis = analyse_blocking(tight, encodings, people)
    by_date = analysis.rules[0]
    assert by_date.oversized_blocks > 0 and by_date.oversized_pairs > 2 * by_date.oversized_blocks
    assert by_date.candidates == rule_candidates(tight, encodings, [0])
    limits = {rule.name: rule.max_block_pairs for rule in tight.blocking if isinstance(rule, SimilarityRule)}
    for block in analysis.largest_blocks:
        limit = limits[block.rule.split(" band ")[0]] if " band " in block.rule else 2
        assert block.skipped == (block.pairs > limit)
