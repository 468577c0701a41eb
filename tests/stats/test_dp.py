"""Differentially private answers: right plans, tight calibration, consistent overlaps, honest intervals."""

import contextlib
import copy
import math
import shlex
from dataclasses import replace
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import opendp.prelude as dp
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linkage.errors import BudgetExceeded, InputError, PprlError, ProtocolError
from linkage.protocol import parse_protocol
from stats import figures
from stats.accuracy import half_width, shown_count_interval
from stats.answers import Answer
from stats.budget import FileLedger, Loss
from stats.cells import project_to_counts
from stats.dp import answer_query, prepare, preview, release
from stats.entities import entity_table, membership_patterns
from stats.query import parse_query
from tests.helpers import people, people_table

NOISELESS = "--rho 1000000000"  # a sum of weeks (9 rows of up to 52 a person) gets noise of scale 0.01: exact


def released(table, protocol, text):
    return release(prepare(table, parse_query(protocol, shlex.split(text)), protocol))


def values(answer):
    return {cell.key: cell.value for cell in answer.cells}


def test_counts_follow_filters_and_groups_with_every_public_key(protocol, table):
    answer = released(table, protocol, f"count --by region --where member:police,msd {NOISELESS}")
    both = table.filter(pl.col("member:police") & pl.col("member:msd"))
    exact = dict(both.group_by("region").len().iter_rows())
    expected_keys = {(region,) for region in protocol.attribute("region").categories} | {(None,)}
    assert set(values(answer)) == expected_keys, "keys come from the protocol, never from the data"
    assert values(answer) == {key: exact.get(key[0], 0) for key in expected_keys}


def test_keys_of_empty_groups_are_still_answered(protocol, table):
    answer = released(table, protocol, f"count --by region --where region=Otago {NOISELESS}")
    got = values(answer)
    assert len(got) == len(protocol.attribute("region").categories) + 1
    assert got[("Otago",)] == table.filter(pl.col("region") == "Otago").height
    assert all(value == 0 for key, value in got.items() if key != ("Otago",))


def test_sum_mean_and_quantile_are_the_exact_statistics_without_noise(protocol, table):
    weeks = table["weeks_supported"].drop_nulls()
    assert values(released(table, protocol, f"sum weeks_supported {NOISELESS}"))[()] == weeks.sum()
    mean = values(released(table, protocol, f"mean weeks_supported {NOISELESS}"))[()]
    assert mean == pytest.approx(weeks.mean(), abs=1e-3)
    housed = table.filter(pl.col("member:haven"))
    shares = values(released(table, protocol, f"mean housed_within_90_days --by member:police {NOISELESS}"))
    for flag in (True, False):
        group = housed.filter(pl.col("member:police") == flag)["housed_within_90_days"].drop_nulls()
        assert shares[(flag,)] == pytest.approx(group.mean(), abs=1e-3)
    months = table["months_in_nz"].drop_nulls().sort()
    median = values(released(table, protocol, f"quantile months_in_nz {NOISELESS}"))[()]
    rank = months.search_sorted(median)
    assert abs(rank - len(months) / 2) <= 0.02 * len(months)


def test_the_noise_is_no_more_than_the_cost_requires(protocol, table):
    rows = protocol.rows_per_person  # one person: up to 9 rows with three parties (docs/privacy-unit.md)
    count = prepare(table, parse_query(protocol, ["count", "--rho", "0.1"]), protocol)
    scale = count.summary["scale"][0]
    assert scale == pytest.approx(rows / math.sqrt(2 * 0.1), rel=1e-6), "a count's zCDP scale is k/sqrt(2 rho)"
    assert count.measurement.map(rows) <= 0.1
    assert preview(count).cells[0].half_width == 39.0, "OpenDP accuracy 40 means |error| <= 39 w.p. 95%"
    total = prepare(table, parse_query(protocol, ["sum", "weeks_supported", "--rho", "0.1"]), protocol)
    assert total.summary["scale"][0] == pytest.approx(rows * 52 / math.sqrt(0.2), rel=1e-6)


def test_the_privacy_unit_is_a_person_of_as_many_rows_as_the_parties_squared(protocol):
    assert protocol.rows_per_person == len(protocol.parties) ** 2 == 9
    document = copy.deepcopy(protocol.document)
    document["releases"]["rows_per_person"] = 1
    with pytest.raises(ProtocolError) as refused:
        parse_protocol(document)
    assert "rows_per_person: 1 is below the 9 rows one person can move" in str(refused.value)


@pytest.mark.parametrize("rows", [9, 12])
@pytest.mark.parametrize("measure", ["rho", "epsilon"])
def test_a_person_who_may_make_several_rows_is_protected_whole(protocol, table, rows, measure):
    # Group privacy: a release calibrated at one row would cost a person of k rows k² rho
    # (zCDP) or k epsilon; calibrated at k rows, it costs the person what it says.
    document = copy.deepcopy(protocol.document)
    document["releases"]["rows_per_person"] = rows
    document["releases"]["budget"] = {measure: 2.0}
    several = parse_protocol(document)
    for query in (f"count --{measure} 0.1", f"count --by region --{measure} 0.1"):
        prepared = prepare(table, parse_query(several, query.split()), several)
        single = 1 / math.sqrt(0.2) if measure == "rho" else 1 / 0.1
        assert prepared.summary["scale"][0] == pytest.approx(rows * single, rel=1e-6), query
        assert prepared.measurement.map(rows) <= 0.1
        one_row = prepared.measurement.map(1)
        assert one_row == pytest.approx(0.1 / rows**2 if measure == "rho" else 0.1 / rows, rel=1e-6)


def test_a_pure_epsilon_protocol_gets_laplace_noise(protocol, table):
    document = copy.deepcopy(protocol.document)
    document["releases"]["budget"] = {"epsilon": 2.0}
    pure = parse_protocol(document)
    prepared = prepare(table, parse_query(pure, ["count", "--epsilon", "0.5"]), pure)
    assert "discrete Laplace" in prepared.mechanism
    assert prepared.summary["scale"][0] == pytest.approx(2.0 * pure.rows_per_person, rel=1e-6)
    assert prepared.measurement.map(pure.rows_per_person) <= 0.5


def test_overlap_cells_are_consistent_non_negative_integers(protocol, table):
    answer = released(table, protocol, "overlap --by region --rho 0.05")
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
    answer = released(table, protocol, f"overlap {NOISELESS}")
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
    answer = released(table, ruled, "count --by region --where member:haven --rho 0.5")
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
    assert not preview.released and preview.cells[0].value is None and preview.cells[0].half_width == 15.0
    budget = ledger.budget()
    assert len(budget.entries) == 1 and budget.spent == Loss.of(rho=0.7)
    assert "discrete Gaussian" in budget.entries[0].mechanism


def test_answers_survive_json(protocol, table):
    answer = released(table, protocol, "overlap --rho 0.1")
    assert Answer.from_json(answer.to_json()) == answer


def test_people_fixture_is_what_the_tests_think(protocol):
    mapping, attributes = people(protocol, 200, seed=5)
    table = entity_table(protocol, mapping, attributes)
    assert table.height == 200
    assert Fraction(table["shared"].sum(), 200) > Fraction(1, 5)


def test_a_histogram_by_two_attributes_has_every_pair_of_public_keys(protocol, table):
    answer = released(table, protocol, f"count --by region,member:police {NOISELESS}")
    exact = {(r, p): n for r, p, n in table.group_by("region", "member:police").len().iter_rows()}
    regions = (*protocol.attribute("region").categories, None)
    assert values(answer) == {(r, p): exact.get((r, p), 0) for r in regions for p in (True, False)}


# -- issue 16, section 2: intervals that are true ------------------------------------------


def true_quantiles(values, q):
    """Every value that is a true q-quantile of ``values``: #(x < v) <= q n <= #(x <= v)."""
    ordered = sorted(values)
    n = len(ordered)
    low = min(v for v in range(ordered[0], ordered[-1] + 1) if sum(x <= v for x in ordered) >= q * n)
    return {
        v for v in range(low, ordered[-1] + 1) if sum(x < v for x in ordered) <= q * n <= sum(x <= v for x in ordered)
    }


@pytest.mark.parametrize("q", [0.1, 0.3, 0.5, 0.9])
def test_a_quantile_is_stated_with_an_interval_in_the_attributes_units_for_every_q(protocol, table, q):
    spec = parse_query(protocol, shlex.split(f"quantile months_in_nz --q {q} --where member:haven --rho 0.2"))
    prepared = prepare(table, spec, protocol)
    months = table.filter(pl.col("member:haven"))["months_in_nz"].drop_nulls().to_list()
    truth = true_quantiles(months, q)
    covered = released = 0
    for _ in range(40):
        cell = release(prepared).cells[0]
        if cell.value is None:
            # No figure for this small group in this release (its noisy histogram summed under
            # the suppression threshold: about 1 run in 50 at q 0.9): no interval either.
            assert cell.half_width is None and cell.lower is None and cell.upper is None
            continue
        released += 1
        assert cell.half_width <= 120, "a half-width in months, not in (mis-scaled) ranks"
        assert 0 <= cell.lower <= cell.upper <= 120, "the interval is in months, within the attribute's bounds"
        assert cell.lower >= cell.value - cell.half_width
        covered += any(cell.lower <= t <= cell.upper for t in truth)
    assert released >= 35, f"{40 - released} of 40 releases suppressed"
    assert covered >= 0.85 * released, f"{covered} of {released} intervals held the true {q}-quantile"


def test_the_quantile_rank_bound_divides_opendps_score_scale_by_the_scores_sensitivity(protocol, table):
    from stats.accuracy import quantile_rank_bound

    spec = parse_query(protocol, shlex.split("quantile months_in_nz --q 0.3 --rho 0.05"))
    main = prepare(table, spec, protocol).parts["main"]
    scale = float(main.summary["scale"][0])
    assert scale > 1e9, "OpenDP's scale is in score units: alpha_den (about 1.8e10) times a rank"
    bound = quantile_rank_bound(scale, scale / main.global_scale, 0.3, 121)
    assert bound == pytest.approx(main.global_scale * 0.7 * math.log(121 / 0.05))
    # Tens of people per row one person can move (issue 16: 9 rows for three parties), not 2.2e11.
    assert 20 < bound / protocol.rows_per_person < 60


@pytest.mark.slow
def test_a_discrete_laplace_count_interval_covers_95_percent_at_epsilon_2(protocol, table):
    document = copy.deepcopy(protocol.document)
    document["releases"]["budget"] = {"epsilon": 20.0}
    pure = parse_protocol(document)
    prepared = prepare(table, parse_query(pure, ["count", "--epsilon", "2"]), pure)
    scale = prepared.summary["scale"][0]
    width = preview(prepared).cells[0].half_width
    p = math.exp(-1 / scale)
    exact = (1 - p) / (1 + p) * (1 + 2 * sum(p**k for k in range(1, int(width) + 1)))
    assert exact >= 0.95, f"P(|noise| <= {width}) is {exact:.3f} for OpenDP's discrete Laplace at scale {scale}"
    truth = table.height
    # 2,000 releases: at 95% coverage the hits are 1,900 +- 9.7, so 92.5% is 5 standard
    # deviations down (a false alarm under one in a million runs; 300 releases at 92% failed
    # about one run in 200, and did in CI), while the old half-width's 76% fails at once.
    hits = sum(abs(release(prepared).cells[0].value - truth) <= width for _ in range(2000))
    assert hits >= 0.925 * 2000, f"{hits} of 2000"


def test_overlap_under_a_filter_noises_only_the_patterns_it_leaves_possible(protocol, table):
    # At 81 times the cost, the noise of one row at 0.05 (a person is 9 rows: issue 16).
    spec = parse_query(
        protocol, shlex.split(f"overlap --where member:haven --rho {0.05 * protocol.rows_per_person**2}")
    )
    prepared = prepare(table, spec, protocol)
    shown = {cell.key[-1]: cell for cell in preview(prepared).cells}
    for pattern in ("msd", "police", "msd+police"):
        assert shown[pattern].value == 0 and shown[pattern].half_width == 0
        assert "no one can be in this group" in shown[pattern].note
    assert prepared.parts["main"].keys.height == 4, "only patterns with haven go to OpenDP"
    haven = table.filter(pl.col("member:haven")).height
    errors = []
    for _ in range(150):
        derived = {cell.key[-1]: cell.value for cell in release(prepared).derived}
        errors.append(derived["haven"] - haven)
    assert abs(sum(errors) / len(errors)) < 1.5, "no mass pushed off the real cells onto impossible ones"


def test_cells_a_filter_rules_out_are_exact_zeros_and_a_filter_that_rules_out_everyone_is_refused(protocol, table):
    answer = released(
        table, protocol, "count --by member:police,region --where nonmember:police --where region=Otago --rho 0.1"
    )
    for cell in answer.cells:
        if cell.key != (False, "Otago"):
            assert cell.value == 0 and cell.half_width == 0, cell
    mean = released(table, protocol, "mean weeks_supported --by member:msd --rho 0.1")
    assert {c.key: c.note for c in mean.cells}[(False,)].startswith("no one can be in this group")
    with pytest.raises(InputError, match="rules out everyone"):
        released(table, protocol, "count --where nonmember:msd,police,haven --rho 0.1")
    with pytest.raises(InputError, match="rules out everyone"):
        released(table, protocol, "count --where weeks_supported>=60 --rho 0.1")


def ruled(protocol, **rules):
    document = copy.deepcopy(protocol.document)
    document["releases"]["output_rules"] = rules
    return parse_protocol(document)


def recoverable(cells, derived, values, threshold):
    """Groups of suppressed cells whose total the shown figures pin down at fewer than ``threshold`` people."""
    import itertools

    import numpy as np

    patterns = [cell.key[-1] for cell in cells]
    hidden = [i for i, cell in enumerate(cells) if cell.value is None]
    rows = [np.eye(len(cells))[i] for i, cell in enumerate(cells) if cell.value is not None]
    for cell in derived:
        if cell.value is not None:
            parties = None if cell.key[-1] == "any" else set(cell.key[-1].split("+"))
            rows.append(np.array([1.0 if parties is None or parties <= set(p.split("+")) else 0.0 for p in patterns]))
    shown = np.array(rows).reshape(-1, len(cells))
    rank = np.linalg.matrix_rank(shown) if len(rows) else 0
    found = []
    for size in range(1, len(hidden) + 1):
        for group in itertools.combinations(hidden, size):
            vector = np.zeros(len(cells))
            vector[list(group)] = 1
            if np.linalg.matrix_rank(np.vstack([shown, vector])) == rank and sum(values[i] for i in group) < threshold:
                found.append(group)
    return found


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(counts=st.lists(st.integers(min_value=-5, max_value=120), min_size=7, max_size=7))
def test_no_suppressed_overlap_cell_can_be_worked_out_from_the_figures_shown(protocol, table, counts):
    strict = ruled(protocol, suppress_below=20)
    prepared = prepare(table, parse_query(strict, shlex.split("overlap --rho 0.1")), strict)
    rows = {
        (pattern,): {"pattern": pattern, "len": count}
        for pattern, count in zip(membership_patterns(strict), counts, strict=True)
    }
    answer = figures.answer(prepared, {"main": rows})
    unruled = prepare(table, parse_query(protocol, shlex.split("overlap --rho 0.1")), protocol)
    values = [cell.value for cell in figures.answer(unruled, {"main": rows}).cells]
    assert recoverable(list(answer.cells), list(answer.derived), values, 20) == []
    assert all(cell.value is None or cell.value >= 20 for cell in answer.cells)
    for cell in answer.derived:
        assert cell.value is None or cell.value >= 20 or cell.value == 0 and cell.half_width == 0


def test_a_count_shown_under_a_suppression_rule_states_its_interval_given_that_it_is_shown(protocol, table):
    # Shown only when its noise reached the threshold, a count near it held a small truth far less
    # than 95% of the time under the usual interval (tests/stats/test_accuracy.py measures it).
    strict = ruled(protocol, suppress_below=20)
    prepared = prepare(table, parse_query(strict, shlex.split("count --rho 0.1")), strict)
    distribution, scale = prepared.parts["main"].noise("Length")
    for value in (20, 45, 400):
        cell = figures.answer(prepared, {"main": {prepared.keys[0]: {"len": value}}}).cells[0]
        lower, upper = shown_count_interval(value, 20, distribution, scale, lambda y: max(0, y))
        assert (cell.value, cell.lower, cell.upper) == (value, lower, upper)
        assert cell.half_width is not None and cell.half_width >= max(value - lower, upper - value)
    assert (lower, upper) == (400 - half_width(distribution, scale), 400 + half_width(distribution, scale))
    unruled = prepare(table, parse_query(protocol, shlex.split("count --rho 0.1")), protocol)
    cell = figures.answer(unruled, {"main": {unruled.keys[0]: {"len": 20}}}).cells[0]
    assert cell.upper == 20 + half_width(distribution, scale)  # without a rule, every count is shown


def test_means_over_groups_below_the_threshold_are_withheld_and_intervals_stay_within_bounds(protocol, table):
    strict = ruled(protocol, suppress_below=30)
    prepared = prepare(
        table, parse_query(strict, shlex.split("mean housed_within_90_days --by member:police --rho 0.001")), strict
    )
    assert set(prepared.parts) == {"main", "count"}
    assert "on the group's count, for the suppression rule" in prepared.mechanism
    spent = sum(part.measurement.map(strict.rows_per_person) for part in prepared.parts.values())
    assert spent <= 0.001 * (1 + 1e-9), spent
    rows = {
        (True,): {"member:police": True, "housed_within_90_days": 25, "len": 40},
        (False,): {"member:police": False, "housed_within_90_days": 39, "len": 40},
    }
    sizes = {(True,): {"len": 29}, (False,): {"len": 30}}
    cells = {cell.key: cell for cell in figures.answer(prepared, {"main": rows, "count": sizes}).cells}
    assert cells[(True,)].value is None and "suppressed: fewer than 30 people" in cells[(True,)].note
    kept = cells[(False,)]
    assert kept.value == pytest.approx(39 / 40)
    assert 0 <= kept.lower <= kept.value <= kept.upper <= 1, "the interval of a share stays within 0..1"
    assert kept.half_width <= 1


def _noise(rng, distribution, scale, size):
    """OpenDP's integer noise (its distribution as OpenDP's summary names it), drawn here for post-processing."""
    reach = int(40 * scale) + 10
    support = np.arange(-reach, reach + 1)
    gaussian = "Gaussian" in distribution
    weights = np.exp(-(support**2) / (2 * scale * scale)) if gaussian else np.exp(-abs(support) / scale)
    return rng.choice(support, size=size, p=weights / weights.sum())


@pytest.mark.parametrize(("text", "group", "rule"), [("--epsilon 2", 5, 20), ("--rho 0.05", 100, 0)])
def test_the_intervals_of_the_means_shown_hold_the_mean_95_percent_of_the_time(protocol, table, text, group, rule):
    # Issue 16: a mean was shown only when the noisy count it divides by passed the suppression rule, so
    # for a small group it was shown only when that count's noise was high, which pulled the mean and its
    # interval down: 5 people at the upper bound, suppress_below 20, epsilon 2: 72% of the intervals shown
    # held the mean. The delta method also fell short where the count's noise is large against the group:
    # 100 people at the upper bound, rho 0.05: 92.7%. Noise drawn from OpenDP's stated distributions.
    strict = ruled(protocol, suppress_below=rule) if rule else protocol
    prepared = prepare(table, parse_query(strict, shlex.split(f"mean weeks_supported {text}")), strict)
    rng = np.random.default_rng(16)
    reps, truth = 4000, 52.0
    draws = {
        name: {aggregate: _noise(rng, *part.noise(aggregate), reps) for aggregate in ("Sum", "Length")}
        if name == "main"
        else {"Length": _noise(rng, *part.noise("Length"), reps)}
        for name, part in prepared.parts.items()
    }
    shown = held = 0
    for i in range(reps):
        rows = {"main": {(): {"weeks_supported": int(group * 52 + draws["main"]["Sum"][i]),
                              "len": int(group + draws["main"]["Length"][i])}}}  # fmt: skip
        if "count" in draws:
            rows["count"] = {(): {"len": int(group + draws["count"]["Length"][i])}}
        cell = figures.answer(prepared, rows).cells[0]
        if cell.value is not None:
            shown += 1
            held += cell.lower <= truth <= cell.upper
    assert shown >= 200, shown
    # three standard errors under 95% (0.929 for 1,000 shown, 0.940 for 4,000); the old code read 0.72 and 0.927
    assert held / shown >= 0.95 - 3 * math.sqrt(0.05 * 0.95 / shown), (held, shown)


def test_an_epsilon_delta_query_is_answered_within_its_loss(protocol, table):
    document = copy.deepcopy(protocol.document)
    document["releases"]["budget"] = {"epsilon": 3.0, "delta": 1e-6}
    approx = parse_protocol(document)
    texts = (
        "count --by region --epsilon 0.5 --delta 1e-7",
        "mean weeks_supported --epsilon 1 --delta 1e-6",
        "quantile months_in_nz --by member:police --epsilon 1 --delta 1e-6",
        "overlap --epsilon 1 --delta 1e-7",
    )
    for text in texts:
        prepared = prepare(table, parse_query(approx, shlex.split(text)), approx)
        spent_epsilon = spent_delta = 0.0
        for part in prepared.parts.values():  # at the rows one person can move, not at one row
            loss = part.measurement.map(approx.rows_per_person)
            epsilon, delta = loss if isinstance(loss, tuple) else (loss, 0.0)
            spent_epsilon, spent_delta = spent_epsilon + epsilon, spent_delta + delta
        spec = prepared.spec
        assert spent_epsilon <= float(spec.cost.amount) * (1 + 1e-9), text
        assert spent_delta <= float(spec.cost.delta), text
        assert all(cell.value is not None for cell in release(prepared).cells)
        if spec.kind == "quantile":  # OpenDP's report-noisy-min under pure DP, named and scaled in ranks
            assert "exponential mechanism" in prepared.mechanism and "ExponentialMin" not in prepared.mechanism


def test_a_gaussian_is_chosen_for_epsilon_delta_when_it_has_less_noise(table):
    from stats.budget import Loss
    from stats.dp import _measure

    frame = table.lazy()
    domain = dp.with_margin(dp.domain_of(frame, infer=True), dp.polars.Margin(by=(), max_length=10**9))
    query = frame.select(*(pl.col("weeks_supported").fill_null(0).dp.sum((0, 52)).alias(f"s{i}") for i in range(40)))

    def plan(measure, scale):
        return dp.m.make_private_lazyframe(domain, dp.symmetric_distance(), measure, query, global_scale=scale)

    measurement, summary, _, converted = _measure(plan, Loss.of(epsilon=1, delta=1e-5), 1)
    assert converted and "Gaussian" in summary["distribution"][0]
    epsilon, delta = measurement.map(1)
    assert epsilon <= 1 and delta <= 1e-5


# -- issue 15, row 2: a release never holds the ledger while OpenDP works, and has a time limit --


def test_the_ledger_is_held_only_to_check_and_record_never_while_opendp_plans_or_releases(
    protocol, table, tmp_path, monkeypatch
):
    import contextlib

    import stats.dp

    ledger = FileLedger(tmp_path / "l", protocol)
    held = []
    work = []

    @contextlib.contextmanager
    def spend(who, query, cost):
        held.append(True)
        with ledger.spend(who, query, cost) as receipt:
            yield receipt
        held.pop()

    real_prepare, real_release = stats.dp.prepare, stats.dp.release
    monkeypatch.setattr(stats.dp, "prepare", lambda *a: work.append(("plan", bool(held))) or real_prepare(*a))
    monkeypatch.setattr(
        stats.dp, "release", lambda prepared: work.append(("release", bool(held))) or real_release(prepared)
    )
    answer = answer_query(table, parse_query(protocol, ["count", "--rho", "0.1"]), protocol, spend, "ana")
    assert answer.released and work == [("plan", False), ("release", False)]
    assert len(ledger.budget().entries) == 1


def test_a_release_that_takes_too_long_is_refused_cleanly_and_spends_nothing(protocol, table, tmp_path, monkeypatch):
    import threading

    import stats.dp
    from stats.dp import ReleaseTimeout

    ledger = FileLedger(tmp_path / "l", protocol)
    stuck = threading.Event()
    monkeypatch.setattr(stats.dp, "release", lambda _prepared: stuck.wait(30))
    spec = parse_query(protocol, ["count", "--rho", "0.1"])
    try:
        with pytest.raises(
            ReleaseTimeout, match="took longer than 0.2 s and was stopped; nothing was released or spent"
        ):
            answer_query(table, spec, protocol, ledger.spend, "ana", timeout=0.2)
    finally:
        stuck.set()
    assert ledger.budget().entries == ()
    assert ReleaseTimeout.http_status == 503


@pytest.mark.parametrize(
    "text", ["count --rho 1e-17", "sum weeks_supported --rho 1e-15", "quantile months_in_nz --rho 1e-16"]
)
def test_a_cost_too_small_to_answer_anything_is_refused_before_opendp_works_on_it(protocol, table, text):
    with pytest.raises(InputError, match=r"is so small that the noise would be .* ask for at least rho="):
        prepare(table, parse_query(protocol, shlex.split(text)), protocol)


def test_a_large_noise_scale_gets_its_accuracy_quickly_and_truly(protocol, table):
    from stats.accuracy import EXACT_GAUSSIAN_UP_TO, half_width

    exact = half_width("Integer Gaussian", EXACT_GAUSSIAN_UP_TO)
    fast = half_width("Integer Gaussian", EXACT_GAUSSIAN_UP_TO * (1 + 1e-9))
    assert fast >= exact and fast - exact <= 1, "the continuous tail agrees with OpenDP's at the switch"
    prepared = prepare(table, parse_query(protocol, shlex.split("count --rho 1e-10")), protocol)
    rows = protocol.rows_per_person  # the noise protects the rows one person can move (issue 16)
    assert preview(prepared).cells[0].half_width == pytest.approx(1.96 * 70711 * rows, rel=1e-3)


# -- issue 16, section 3: what analysts expect -------------------------------------------------


def test_binned_groups_count_the_people_in_each_public_bin(protocol, table):
    answer = released(table, protocol, f"count --by weeks_supported,member:police {NOISELESS}")
    weeks = table["weeks_supported"]
    police = table["member:police"]
    bins = {"0-12": (0, 12), "13-25": (13, 25), "26-38": (26, 38), "39-52": (39, 52)}
    for (label, flag), value in values(answer).items():
        if label is None:
            expected = table.filter(weeks.is_null() & (police == flag)).height
        else:
            low, high = bins[label]
            expected = table.filter(weeks.is_between(low, high) & (police == flag)).height
        assert value == expected, (label, flag)
    means = released(table, protocol, f"mean weeks_supported --by 'weeks_supported[0,26]' {NOISELESS}")
    low = table.filter(pl.col("weeks_supported") < 26)["weeks_supported"].mean()
    assert values(means)[("0-25",)] == pytest.approx(low, abs=1e-3)
    assert values(means)[(None,)] is None, "no one without weeks_supported has a mean of it"


@pytest.mark.parametrize("text", ["count --by region", "overlap", "sum weeks_supported --where member:msd"])
def test_the_cost_for_a_target_half_width_is_the_least_that_gives_it(protocol, table, text):
    from stats.budget import Loss
    from stats.dp import cost_for_half_width

    spec = parse_query(protocol, shlex.split(text), default_cost=Loss.of(rho=1))
    target = 5 if "sum" not in text else 400
    found = cost_for_half_width(table, spec, protocol, target)
    assert all(cell.half_width <= target for cell in preview(prepare(table, found, protocol)).cells)
    cheaper = replace(found, cost=Loss.of(rho=float(found.cost.amount) * 0.9))
    assert any(cell.half_width > target for cell in preview(prepare(table, cheaper, protocol)).cells)
    with pytest.raises(InputError, match="depends on how many people each group has"):
        cost_for_half_width(table, replace(spec, kind="mean"), protocol, 5)


def test_an_answer_shows_its_rho_as_epsilon_delta_too(protocol, table):
    answer = answer_query(table, parse_query(protocol, ["count", "--rho", "0.05"]), protocol, None, "ana", dry_run=True)
    assert answer.cost_shown == "ρ=0.05 (≈ ε=1.472, δ=1e-06)"
    assert answer.to_json()["approx_dp"] == {"epsilon": 1.472, "delta": 1e-06}
    assert Answer.from_json(answer.to_json()) == answer


def _quantile_rows(prepared, histogram, size=None):
    """OpenDP rows for an ungrouped quantile: a value, its histogram (everyone in the first bins), its count."""
    rows = {"main": {(): {"months_in_nz": 30}}, "histogram": {}}
    left = histogram
    for index in range(len(prepared.bins)):
        rows["histogram"][(str(index),)] = {"len": min(left, 10) if left > 0 else 0}
        left -= min(left, 10) if left > 0 else 0
    if size is not None:
        rows["count"] = {(): {"len": size}}
    return rows


def test_a_quantile_s_suppression_is_decided_on_its_own_count_not_on_the_histogram(protocol, table):
    # Issue 16: deciding it on the histogram's total released the interval only when that total's
    # noise was high, which biased the interval read off the same noise: under suppress_below 20 a
    # quantile of 1 to 5 people (discrete Laplace of scale 1) was held by 6-34% of the intervals shown.
    strict = ruled(protocol, suppress_below=20)
    prepared = prepare(table, parse_query(strict, shlex.split("quantile months_in_nz --rho 0.08")), strict)
    assert set(prepared.parts) == {"main", "histogram", "count"}
    rows = protocol.rows_per_person
    spent = sum(part.measurement.map(rows) for part in prepared.parts.values())
    assert spent <= 0.08 * (1 + 1e-9), spent
    shown = figures.answer(prepared, _quantile_rows(prepared, histogram=5, size=50)).cells[0]
    assert shown.value == 30 and shown.lower is not None, "a small histogram total does not withhold it"
    hidden = figures.answer(prepared, _quantile_rows(prepared, histogram=500, size=12)).cells[0]
    assert hidden.value is None and "suppressed: fewer than 20 people" in hidden.note
    assert "on the group's count, for the suppression rule" in prepared.mechanism


def test_without_a_suppression_rule_a_quantile_is_never_withheld(protocol, table):
    # Withholding it when the histogram's noisy total was under 1 made the 95% a share of the
    # releases that noise let through (93-94% for the quantile of 1 or 2 people).
    prepared = prepare(table, parse_query(protocol, shlex.split("quantile months_in_nz --rho 0.08")), protocol)
    assert set(prepared.parts) == {"main", "histogram"}
    cell = figures.answer(prepared, _quantile_rows(prepared, histogram=0)).cells[0]
    assert cell.value == 30 and cell.lower is not None and cell.upper is not None


@contextlib.contextmanager
def free_spend(_who, _query, _cost):
    """A ledger that pays for anything: only the query's own checks refuse."""
    yield SimpleNamespace(mechanism=None)


@pytest.fixture(scope="module")
def small_people(protocol):
    return people_table(protocol, 200)


_COLUMNS = ["region", "member:msd", "member:police,msd", "nonmember:haven", "shared", "weeks_supported", "months_in_nz"]
_COLUMNS += ["police_contacts", "police_contacts[0,1,5]", "police_contacts[5,1]", "housed_within_90_days", "x", ""]
_NUMBERS = ["0", "-1", "1e-20", "1e-3", "0.05", "1", "100", "1e5", "1e9", "1e10", "nan", "inf", "0x10", "", "1e308"]
_CONDITIONS = st.tuples(
    st.sampled_from(_COLUMNS), st.sampled_from(["=", ">=", "<=", "<"]), st.sampled_from(_NUMBERS)
).map("".join)
_OPTIONS = st.one_of(
    st.tuples(st.sampled_from(["--rho", "--epsilon", "--delta", "--q"]), st.sampled_from(_NUMBERS)),
    st.tuples(st.just("--by"), st.sampled_from(_COLUMNS)),
    st.tuples(st.just("--where"), st.one_of(st.sampled_from(_COLUMNS), _CONDITIONS)),
    st.tuples(st.sampled_from(["--rho=1e5", "--epsilon=1e5", "--by", "--x", "region"])),
    st.tuples(st.sampled_from(["--by", "--where", "--rho"]), st.text(max_size=6)),
)
_COSTS = st.tuples(
    st.sampled_from(["--rho", "--epsilon"]), st.sampled_from(["0.05", "1", "1e5", "1e9", "1e-20", "nan"])
)
_QUERIES = st.tuples(
    st.sampled_from(["count", "sum", "mean", "quantile", "overlap", "Count"]),
    st.lists(st.sampled_from(_COLUMNS), max_size=1),
    st.lists(_OPTIONS, max_size=2),
    _COSTS,
).map(lambda parts: [parts[0], *parts[1], *[word for option in (*parts[2], parts[3]) for word in option]])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=_QUERIES, dry_run=st.booleans())
def test_every_query_is_answered_or_refused_with_the_fix_never_a_crash(protocol, small_people, words, dry_run):
    # Issue 16's goal: no query input reaches a 500. `count --epsilon 1e5` did: OpenDP states
    # the discrete Laplace's accuracy as -inf at so small a scale, and math.ceil(-inf) raised.
    try:
        answer = answer_query(
            small_people, parse_query(protocol, words, files=False), protocol, free_spend, "ana", dry_run=dry_run
        )
    except PprlError as exc:
        assert exc.message
    else:
        assert answer.cells


@pytest.mark.parametrize("kind", ["count --by region", "overlap", "sum weeks_supported"])
def test_a_huge_epsilon_is_answered_with_no_noise_to_speak_of(protocol, small_people, kind):
    answer = preview(prepare(small_people, parse_query(protocol, [*kind.split(), "--epsilon", "1e5"]), protocol))
    assert all(cell.half_width == 0 for cell in answer.cells)


@pytest.mark.parametrize("cost", ["--epsilon 1", "--epsilon 35881"])
def test_a_dry_run_refuses_a_cost_in_another_measure_as_the_release_does(protocol, small_people, cost):
    # The dry run planned `overlap --epsilon 35881` on a rho budget (and, before the half-width
    # fix, crashed doing it) while the release refused it: a dry run must say what the release will.
    spec = parse_query(protocol, ["overlap", *cost.split()])
    for dry_run in (True, False):
        with pytest.raises(InputError, match="budget is in rho, so give the query's cost as --rho, not --epsilon"):
            answer_query(small_people, spec, protocol, free_spend, "ana", dry_run=dry_run)


def test_a_quantile_with_no_noise_to_speak_of_is_planned_without_dividing_by_zero(protocol, small_people):
    # Found by attack: at --epsilon 1e5 the histogram's noise has no variance, and the search
    # for the interval's threshold divided by its standard deviation (a RuntimeWarning).
    spec = parse_query(protocol, ["quantile", "months_in_nz", "--epsilon", "1e5"])
    cell = release(prepare(small_people, spec, protocol)).cells[0]
    assert cell.lower is not None and cell.upper is not None and cell.lower <= cell.value <= cell.upper
