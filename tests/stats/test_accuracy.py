"""95% intervals: coverage computed exactly from the noise's distribution, for a grid of scales and truths."""

import copy
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.protocol import parse_protocol
from stats import figures
from stats.accuracy import (
    Z,
    _worst_quantile_miss,
    count_lower,
    half_width,
    mean_interval,
    mean_pivot_widths,
    noise_variance,
    one_sided_width,
    quantile_interval,
    quantile_threshold,
    shown_count_interval,
)
from stats.cells import OutputRules
from stats.dp import prepare, release
from stats.query import parse_query
from tests.helpers import noise_pmf, people_table

DISTRIBUTIONS = ["Integer Gaussian", "Integer Laplace"]
# Scales of the example protocol's counts (9 rows a person): epsilon=2 gives 4.5, rho=0.05 28.46;
# one row a person: epsilon=2 gives 0.5, rho=0.1 2.236; and coarse and fine ones around them.
SCALES = [0.3, 0.5, 1.0, 2.236, 4.5, 9.0, 28.46, 75.0]


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("scale", SCALES)
def test_widths_are_the_least_whole_numbers_that_hold_95_percent_of_the_noise(distribution, scale):
    support, probabilities = noise_pmf(distribution, scale)
    h = half_width(distribution, scale)
    assert probabilities[np.abs(support) <= h].sum() >= 0.95
    assert h == 0 or probabilities[np.abs(support) <= h - 1].sum() < 0.95, "a narrower interval would do"
    h1 = one_sided_width(distribution, scale)
    assert probabilities[support <= h1].sum() >= 0.95
    assert h1 == 0 or probabilities[support <= h1 - 1].sum() < 0.95, "a smaller bound would do"
    assert h1 <= h


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("scale", [1e-3, 1e-6, 1e-9])
def test_noise_too_small_to_move_a_count_has_a_width_of_zero(distribution, scale):
    """OpenDP gives the discrete Laplace's accuracy as -inf below scale ~0.0014 (a count at
    epsilon 1e5): ``math.ceil`` of it raised OverflowError, a 500 from the service."""
    assert half_width(distribution, scale) == 0
    assert one_sided_width(distribution, scale) == 0


def _pure(protocol):
    document = copy.deepcopy(protocol.document)
    document["releases"]["budget"] = {"epsilon": 20.0}
    return parse_protocol(document)


@pytest.fixture(scope="module")
def small_table(protocol):
    return people_table(protocol, 50)


@pytest.mark.parametrize("cost", ["--epsilon 2", "--epsilon 0.5", "--rho 0.05", "--rho 2"])
def test_a_count_interval_holds_every_truth_95_to_97_percent_of_the_time_small_counts_included(
    protocol, small_table, cost
):
    """Exact coverage of the released interval of ``max(0, truth + noise)`` for truths from 0 up.

    Clamping a negative noisy count to 0 made the symmetric interval hold every truth up to
    its half-width ``h`` whenever ``noise <= h``: 97.5% of the time, not 95% (a count of 2
    people read 99.0% at rho=0.05 and 97.8% at epsilon=2 on the bench).
    """
    used = _pure(protocol) if "epsilon" in cost else protocol
    prepared = prepare(small_table, parse_query(used, ["count", *cost.split()]), used)
    distribution, scale = prepared.parts["main"].noise("Length")
    support, probabilities = noise_pmf(distribution, scale)
    h = half_width(distribution, scale)
    top = 4 * h + 5
    intervals = {}  # the interval the answer states for each shown value
    for shown in range(0, top + support[-1] + 1):
        cell = figures.answer(prepared, {"main": {(): {"len": shown}}}).cells[0]
        intervals[shown] = (cell.lower, cell.upper)
    two_sided = probabilities[np.abs(support) <= h].sum()
    one_sided = probabilities[support <= one_sided_width(distribution, scale)].sum()
    for truth in range(top):
        shown = np.maximum(0, truth + support)
        covered = np.array([intervals[v][0] <= truth <= intervals[v][1] for v in shown])
        coverage = probabilities[covered].sum()
        assert coverage >= 0.95, f"truth {truth}: {coverage:.4f}"
        # as tight as the discrete noise allows: the one- or two-sided step just above 95%
        assert coverage <= max(two_sided, one_sided) + 1e-9, f"truth {truth}: {coverage:.4f}"
    assert max(two_sided, one_sided) < 0.97 or h <= 2, "these scales are fine enough to land within 95-97%"


def test_count_lower_is_monotone_and_never_above_the_symmetric_interval_s_lower_end_plus_one():
    for two_sided, one_sided in [(13, 10), (56, 47), (1, 1), (4, 4)]:
        ends = [count_lower(v, two_sided, one_sided) for v in range(0, 6 * two_sided)]
        assert ends == sorted(ends)
        for value, end in enumerate(ends):
            assert end <= value
            assert max(0, value - two_sided) <= end <= max(0, value - two_sided) + two_sided - one_sided + 1


@pytest.mark.slow
def test_small_counts_are_covered_95_not_97_percent_of_the_time_by_opendps_own_noise(protocol):
    """Empirical, with OpenDP's sampler (not seedable): 2,000 releases of a count of one person.

    The old interval held it 97.5% of the time (P(noise <= 13) at scale 4.5), the new one 95.2%;
    the bounds are 4 standard deviations of 2,000 releases from 95.2%.
    """
    pure = _pure(protocol)
    tiny = people_table(pure, 1)
    prepared = prepare(tiny, parse_query(pure, ["count", "--epsilon", "2"]), pure)
    hits = 0
    for _ in range(2000):
        cell = release(prepared).cells[0]
        hits += cell.lower <= 1 <= cell.upper
    assert 0.93 <= hits / 2000 <= 0.97, hits


def _simulate_quantile(counts, q, sd, releases, seed):
    rng = np.random.default_rng(seed)
    counts = np.asarray(counts, dtype=float)
    true_bin = int(np.argmax(np.cumsum(counts) - q * counts.sum() >= 0))
    hits = 0
    for _ in range(releases):
        noisy = counts + np.rint(rng.normal(0, sd, len(counts)))
        found = quantile_interval(list(noisy), q, sd * sd) or (0, len(counts) - 1)
        hits += found[0] <= true_bin <= found[1]
    return hits / releases


@pytest.mark.parametrize(
    ("counts", "q"),
    [
        ([50] * 10 + [1] + [49] * 10, 0.5),  # the quantile's bin all but empty: the worst case
        ([50] * 10 + [0, 0, 1] + [49] * 10, 0.5),
        ([30] * 61, 0.3),
        ([5] * 61, 0.9),
    ],
)
def test_a_quantile_interval_holds_the_true_bin_at_least_95_percent_of_the_time(counts, q):
    coverage = _simulate_quantile(counts, q, 20.0, 2000, seed=3)
    assert coverage >= 0.94, coverage  # 95% less 2 standard deviations of 2,000 releases


def _quantile_coverage(counts, q, distribution, scale, z, releases, seed):
    """Share of releases whose interval holds the true bin, with OpenDP-shaped integer noise (not a normal)."""
    rng = np.random.default_rng(seed)
    support, pmf = noise_pmf(distribution, scale)
    counts = np.asarray(counts, dtype=float)
    true_bin = int(np.argmax(np.cumsum(counts) - q * counts.sum() >= 0))
    variance = noise_variance(distribution, scale)
    noise = rng.choice(support, size=(releases, len(counts)), p=pmf)
    hits = 0
    for row in noise:
        found = quantile_interval(list(counts + row), q, variance, z) or (0, len(counts) - 1)
        hits += found[0] <= true_bin <= found[1]
    return hits / releases


def _worst_data(q, bins, true_bin, people=10**6):
    """Everyone below the q-quantile in the bin before ``true_bin``, one person in it, the rest in the bin after."""
    below = math.ceil(q * people) - 1
    counts = [0] * bins
    counts[true_bin - 1], counts[true_bin], counts[true_bin + 1] = below, 1, people - below - 1
    return counts


# The quantile interval's threshold (issue 16): 1.96 standard deviations a side spent 2.5% + 2.5% by
# a union bound, but the two ends cannot both be at their worst on one data set, so the stated
# 95% held 96% or more of the time on every data set, the worst included (the bench's quantile
# cells read 97.3-99.5%). The threshold is now the least whose worst case is 95%.
@pytest.mark.parametrize(
    ("distribution", "scale", "q", "bins"),
    [("Integer Gaussian", 32.86, 0.5, 61), ("Integer Laplace", 6.0, 0.3, 61), ("Integer Laplace", 1.0, 0.9, 31)],
)
def test_the_quantile_threshold_is_the_least_that_holds_95_percent_on_the_worst_data(distribution, scale, q, bins):
    z = quantile_threshold(distribution, scale, q, bins)
    assert 1.8 < z < 1.93, z
    assert _worst_quantile_miss(z, distribution, scale, q, bins, rounds=4) <= 0.05
    assert _worst_quantile_miss(z - 0.01, distribution, scale, q, bins, rounds=1) > 0.05, "not the least"
    assert _worst_quantile_miss(Z, distribution, scale, q, bins) < 0.045, "1.96 was loose by half a point or more"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("distribution", "scale", "q", "bins"),
    [("Integer Gaussian", 32.86, 0.5, 61), ("Integer Laplace", 6.0, 0.3, 61)],
)
def test_releases_on_the_worst_data_hold_the_quantile_95_not_96_percent_of_the_time(distribution, scale, q, bins):
    z = quantile_threshold(distribution, scale, q, bins)
    worst = [_worst_data(q, bins, true_bin) for true_bin in (1, bins // 2, bins - 2)]
    new = [_quantile_coverage(counts, q, distribution, scale, z, 4000, seed) for seed, counts in enumerate(worst)]
    old = [_quantile_coverage(counts, q, distribution, scale, Z, 4000, seed) for seed, counts in enumerate(worst)]
    # 12,000 releases each: 0.2 points of standard error
    assert 0.944 <= np.mean(new) <= 0.956, new
    assert np.mean(old) >= 0.956, old


@pytest.mark.parametrize("counts", [[-20.0, 0.0, 0.0, -40.0], [-30.0, 5.0, 0.0, -30.0]])
def test_the_last_bin_is_kept_unless_the_bin_before_rules_it_out(counts):
    # The last bin's G is (1 - q) n >= 0 whatever the noise: a noisy total far below 0 used to
    # drop it (G(3) = -30 and -27.5, below -1.96 sd = -19.6) while the bin before did not rule
    # it out (G(2) = 10 and 2.5, under 19.6), so a quantile in it was missed.
    assert quantile_interval(counts, 0.5, 100.0) == (0, 3)


@pytest.mark.slow
@pytest.mark.parametrize("where", [0, 30, 60])
def test_a_quantile_of_very_few_people_is_held_at_least_95_percent_of_the_time(where):
    for people in (1, 2, 5):
        counts = [0] * 61
        counts[where] = people
        z = quantile_threshold("Integer Gaussian", 32.86, 0.5, 61)
        coverage = _quantile_coverage(counts, 0.5, "Integer Gaussian", 32.86, z, 2000, people)
        assert coverage >= 0.94, (people, where, coverage)  # 95% less 2 standard errors


GAUSS, LAPLACE = ("Integer Gaussian", 40.25), ("Integer Laplace", 9.0)  # a count's at rho=0.05 and epsilon=2
MEAN_NOISES = [
    (GAUSS, GAUSS, 1.0),
    (LAPLACE, LAPLACE, 1.0),
    (("Integer Gaussian", 2093.0), GAUSS, 52.0),
    (("Integer Laplace", 468.0), LAPLACE, 52.0),
]


@pytest.mark.parametrize(("sum_noise", "count_noise", "upper"), MEAN_NOISES)
def test_a_mean_s_pivot_width_leaves_out_5_percent_of_the_noise_exactly(sum_noise, count_noise, upper):
    # At the true mean m, sum - m count is e1 - m e2 whatever the data: c(m) is its 95% point, from the
    # noises' own distributions (checked here by direct convolution on the integer lattice for m = upper).
    points, widths = mean_pivot_widths(sum_noise, count_noise, 0.0, upper)
    m, c = points[-1], widths[-1]
    e1 = np.arange(-int(40 * sum_noise[1]) - 10, int(40 * sum_noise[1]) + 11)
    e2 = np.arange(-int(40 * count_noise[1]) - 10, int(40 * count_noise[1]) + 11)

    def pmf(noise, support):
        gaussian = "Gaussian" in noise[0]
        weights = np.exp(-(support**2) / (2 * noise[1] ** 2)) if gaussian else np.exp(-abs(support) / noise[1])
        return weights / weights.sum()

    p1, p2 = pmf(sum_noise, e1), pmf(count_noise, e2)
    cdf1 = np.concatenate([[0.0], np.cumsum(p1)])  # cdf1[i] = P(e1 < e1[0] + i)

    def outside(width):  # P(|e1 - m e2| > width)
        high = np.searchsorted(e1, width + m * e2, side="right")  # first index with e1 > width + m k
        low = np.searchsorted(e1, m * e2 - width, side="left")  # first index with e1 >= m k - width
        return float(p2 @ (1 - cdf1[high] + cdf1[low]))

    assert outside(c) <= 0.05 + 1e-9
    assert outside(c - 1) > 0.05, "c(m) is the least such width, to a whole unit of the sum"


@settings(max_examples=200, deadline=None)
@given(st.integers(-300, 1500), st.integers(-200, 1200), st.sampled_from([0, 1]))
def test_a_mean_s_interval_holds_every_mean_its_pivot_accepts(noisy_sum, noisy_count, which):
    sum_noise, count_noise, upper = MEAN_NOISES[which]
    points, widths = mean_pivot_widths(sum_noise, count_noise, 0.0, upper)
    found = mean_interval(float(noisy_sum), float(noisy_count), points, widths)
    accepted = [m for m, c in zip(points, widths, strict=True) if abs(noisy_sum - m * noisy_count) <= c]
    if not accepted:
        return
    assert found is not None
    assert found[0] <= min(accepted) and max(accepted) <= found[1]


def _shown_coverage(interval, truth, support, probabilities, rules):
    """Exactly, the share of a truth's shown releases whose interval holds it."""
    shown = held = 0.0
    for noise, probability in zip(support.tolist(), probabilities.tolist(), strict=True):
        value = rules.rounded(truth + noise)
        if rules.suppressed(value):
            continue
        lower, upper = interval(value)
        shown += probability
        held += probability if lower <= truth <= upper else 0.0
    return held / shown if shown > 1e-12 else 1.0


@pytest.mark.parametrize(
    ("distribution", "scale", "threshold", "base"),
    [("Integer Laplace", 4.5, 20, 1), ("Integer Gaussian", 6.0, 20, 1), ("Integer Laplace", 3.0, 10, 5)],
)
def test_a_shown_count_s_interval_holds_95_percent_of_the_counts_shown_whatever_the_truth(
    distribution, scale, threshold, base
):
    # A count under a suppression rule is shown only when its noise took it to the threshold: the
    # usual interval (value +- half-width, its lower end count_lower's) then held a truth of 10 in
    # under half of the releases shown. The interval given that it is shown holds every truth.
    rules = OutputRules(threshold, base)
    support, probabilities = noise_pmf(distribution, scale)
    width = half_width(distribution, scale) + base // 2
    one_sided = one_sided_width(distribution, scale) + base // 2
    cache: dict[int, tuple[float, float]] = {}

    def shown(value):
        if value not in cache:
            cache[value] = shown_count_interval(value, threshold, distribution, scale, rules.rounded, base)
        return cache[value]

    def usual(value):
        return count_lower(value, width, one_sided), value + width

    truths = range(0, 3 * threshold)
    assert min(_shown_coverage(shown, t, support, probabilities, rules) for t in truths) >= 0.95 - 1e-9
    assert min(_shown_coverage(usual, t, support, probabilities, rules) for t in truths) < 0.5
    # far above the threshold it is the usual interval
    far = 3 * threshold + 10 * width
    assert shown(far) == (far - width, far + width) or base > 1
