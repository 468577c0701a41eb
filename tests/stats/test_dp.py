"""Differentially private answers: right plans, tight calibration, consistent overlaps, honest intervals."""

import copy
import math
import shlex
from fractions import Fraction

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from linkage.errors import BudgetExceeded
from linkage.protocol import parse_protocol
from stats.budget import FileLedger, Loss
from stats.dp import Answer, answer_query, prepare, project_to_counts
from stats.entities import entity_table, membership_patterns
from stats.query import parse_query
from tests.helpers import people

NOISELESS = "--rho 1000000"  # noise with a scale below 0.001: the answer is the exact statistic


def release(table, protocol, text):
    return prepare(table, parse_query(protocol, shlex.split(text)), protocol).release()


def values(answer):
    return {cell.key: cell.value for cell in answer.cells}


def test_counts_follow_filters_and_groups_with_every_public_key(protocol, table):
    answer = release(table, protocol, f"count --by region --where member:police,msd {NOISELESS}")
    both = table.filter(pl.col("member:police") & pl.col("member:msd"))
    exact = dict(both.group_by("region").len().iter_rows())
    expected_keys = {(region,) for region in protocol.attribute("region").categories} | {(None,)}
    assert set(values(answer)) == expected_keys, "keys come from the protocol, never from the data"
    assert values(answer) == {key: exact.get(key[0], 0) for key in expected_keys}


def test_keys_of_empty_groups_are_still_answered(protocol, table):
    answer = release(table, protocol, f"count --by region --where region=Otago {NOISELESS}")
    got = values(answer)
    assert len(got) == len(protocol.attribute("region").categories) + 1
    assert got[("Otago",)] == table.filter(pl.col("region") == "Otago").height
    assert all(value == 0 for key, value in got.items() if key != ("Otago",))


def test_sum_mean_and_quantile_are_the_exact_statistics_without_noise(protocol, table):
    weeks = table["weeks_supported"].drop_nulls()
    assert values(release(table, protocol, f"sum weeks_supported {NOISELESS}"))[()] == weeks.sum()
    mean = values(release(table, protocol, f"mean weeks_supported {NOISELESS}"))[()]
    assert mean == pytest.approx(weeks.mean(), abs=1e-3)
    housed = table.filter(pl.col("member:haven"))
    shares = values(release(table, protocol, f"mean housed_within_90_days --by member:police {NOISELESS}"))
    for flag in (True, False):
        group = housed.filter(pl.col("member:police") == flag)["housed_within_90_days"].drop_nulls()
        assert shares[(flag,)] == pytest.approx(group.mean(), abs=1e-3)
    months = table["months_in_nz"].drop_nulls().sort()
    median = values(release(table, protocol, f"quantile months_in_nz {NOISELESS}"))[()]
    rank = months.search_sorted(median)
    assert abs(rank - len(months) / 2) <= 0.02 * len(months)


def test_the_noise_is_no_more_than_the_cost_requires(protocol, table):
    count = prepare(table, parse_query(protocol, ["count", "--rho", "0.1"]), protocol)
    scale = count.summary["scale"][0]
    assert scale == pytest.approx(1 / math.sqrt(2 * 0.1), rel=1e-6), "a count's zCDP scale is 1/sqrt(2 rho)"
    assert count.measurement.map(1) <= 0.1
    assert count.preview().cells[0].half_width == 4.0, "OpenDP accuracy 5 means |error| <= 4 w.p. 95%"
    total = prepare(table, parse_query(protocol, ["sum", "weeks_supported", "--rho", "0.1"]), protocol)
    assert total.summary["scale"][0] == pytest.approx(52 / math.sqrt(0.2), rel=1e-6)


@pytest.mark.parametrize("rows", [2, 3])
def test_a_person_who_may_make_several_rows_is_protected_whole(protocol, table, rows):
    document = copy.deepcopy(protocol.document)
    document["releases"]["rows_per_person"] = rows
    several = parse_protocol(document)
    for query, single in (("count --rho 0.1", 1 / math.sqrt(0.2)), ("count --by region --rho 0.1", 1 / math.sqrt(0.2))):
        prepared = prepare(table, parse_query(several, query.split()), several)
        assert prepared.summary["scale"][0] == pytest.approx(rows * single, rel=1e-6), query
        assert prepared.measurement.map(rows) <= 0.1


def test_a_pure_epsilon_protocol_gets_laplace_noise(protocol, table):
    document = copy.deepcopy(protocol.document)
    document["releases"]["budget"] = {"epsilon": 2.0}
    pure = parse_protocol(document)
    prepared = prepare(table, parse_query(pure, ["count", "--epsilon", "0.5"]), pure)
    assert "discrete Laplace" in prepared.mechanism
    assert prepared.summary["scale"][0] == pytest.approx(2.0, rel=1e-6)
    assert prepared.measurement.map(1) <= 0.5


def test_overlap_cells_are_consistent_non_negative_integers(protocol, table):
    answer = release(table, protocol, "overlap --by region --rho 0.05")
    patterns = membership_patterns(protocol)
    by_region: dict = {}
    for cell in answer.cells:
        assert isinstance(cell.value, int) and cell.value >= 0
        by_region.setdefault(cell.key[0], {})[cell.key[1]] = cell.value
    derived = {cell.key: cell.value for cell in answer.derived}
    for region, cells in by_region.items():
        assert set(cells) == set(patterns)
        assert derived[(region, "any")] == sum(cells.values())
        for label in patterns:
            wanted = set(label.split("+"))
            assert derived[(region, label)] == sum(v for p, v in cells.items() if wanted <= set(p.split("+")))


def test_overlap_without_noise_is_the_exact_membership_histogram(protocol, table):
    answer = release(table, protocol, f"overlap {NOISELESS}")
    exact = dict(table.group_by("pattern").len().iter_rows())
    assert values(answer) == {(p,): exact.get(p, 0) for p in membership_patterns(protocol)}


@given(st.lists(st.floats(min_value=-50, max_value=500, allow_nan=False), min_size=1, max_size=15))
def test_projection_gives_non_negative_integers_with_the_noisy_total(noisy):
    counts = project_to_counts(noisy)
    assert all(isinstance(c, int) and c >= 0 for c in counts)
    assert sum(counts) == max(0, round(sum(noisy)))


def test_output_rules_round_to_base_three_and_suppress_small_counts(protocol, table):
    document = copy.deepcopy(protocol.document)
    document["releases"]["output_rules"] = {"suppress_below": 40, "round_to_base": 3}
    ruled = parse_protocol(document)
    answer = release(table, ruled, "count --by region --where member:haven --rho 0.5")
    assert all(cell.value is None or cell.value % 3 == 0 for cell in answer.cells)
    assert any(cell.value is None and "suppressed: below 40" in cell.note for cell in answer.cells)
    assert all(cell.value is None or cell.value >= 40 for cell in answer.cells)
    assert "counts are rounded to a multiple of 3" in " ".join(answer.notes)


def test_a_refused_query_releases_nothing_and_a_dry_run_spends_nothing(protocol, table, tmp_path):
    ledger = FileLedger(tmp_path / "l", protocol)
    spec = parse_query(protocol, ["count", "--rho", "0.7"])
    first = answer_query(table, spec, protocol, ledger.spend, "ana")
    assert first.released and first.cells[0].value is not None
    with pytest.raises(BudgetExceeded, match="only ρ=0.3 of the project's ρ=1 is left"):
        answer_query(table, spec, protocol, ledger.spend, "ana")
    preview = answer_query(table, spec, protocol, ledger.spend, "ana", dry_run=True)
    assert not preview.released and preview.cells[0].value is None and preview.cells[0].half_width == 2.0
    budget = ledger.budget()
    assert len(budget.entries) == 1 and budget.spent == Loss.of(rho=0.7)
    assert "discrete Gaussian" in budget.entries[0].mechanism


def test_answers_survive_json(protocol, table):
    answer = release(table, protocol, "overlap --rho 0.1")
    assert Answer.from_json(answer.to_json()) == answer


def test_people_fixture_is_what_the_tests_think(protocol):
    mapping, attributes = people(protocol, 200, seed=5)
    table = entity_table(protocol, mapping, attributes)
    assert table.height == 200
    assert Fraction(table["shared"].sum(), 200) > Fraction(1, 5)


def test_a_histogram_by_two_attributes_has_every_pair_of_public_keys(protocol, table):
    answer = release(table, protocol, f"count --by region,member:police {NOISELESS}")
    exact = {(r, p): n for r, p, n in table.group_by("region", "member:police").len().iter_rows()}
    regions = (*protocol.attribute("region").categories, None)
    assert values(answer) == {(r, p): exact.get((r, p), 0) for r in regions for p in (True, False)}
