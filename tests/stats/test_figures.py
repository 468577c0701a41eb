"""Figures read from OpenDP's noisy rows: an overlap cell's interval, exactly, over its own noise."""

import pytest

from stats.accuracy import count_lower, half_width, one_sided_width
from stats.cells import OutputRules, project_to_counts
from stats.figures import overlap_cell_interval
from tests.helpers import noise_pmf

# The noisy counts of the six other patterns of three agencies, each held fixed in turn: empty
# patterns whose noise fell below 0 (the projection takes it off the shown cells), a mixture,
# and patterns large enough that the projection moves nothing.
OTHERS = [[-6, -3, -9, -1, -4, -2], [-5, 0, 3, 120, 48, -8], [40, 35, 60, 25, 90, 70]]


def _coverage(interval, truths, others, rules, support, probabilities):
    """Exactly, over the cell's own noise (the others fixed), per truth: the share of its shown releases holding it."""
    kept = probabilities > 1e-15
    support, probabilities = support[kept].tolist(), probabilities[kept].tolist()
    read: dict[int, tuple[float, float] | None] = {}  # the interval of each noisy count (None: suppressed)
    for value in range(min(truths) + support[0], max(truths) + support[-1] + 1):
        noisy = [value, *others]
        read[value] = None if rules.suppressed(rules.rounded(project_to_counts(noisy)[0])) else interval(noisy)
    coverage = []
    for truth in truths:
        shown = held = 0.0
        for noise, probability in zip(support, probabilities, strict=True):
            if (bounds := read[truth + noise]) is not None:
                shown += probability
                held += probability if bounds[0] <= truth <= bounds[1] else 0.0
        coverage.append(held / shown if shown > 1e-12 else 1.0)
    return coverage


@pytest.mark.parametrize(("distribution", "scale"), [("Integer Laplace", 4.5), ("Integer Gaussian", 6.0)])
@pytest.mark.parametrize(("threshold", "base"), [(0, 1), (20, 1), (20, 5)])
def test_an_overlap_cell_s_interval_holds_95_percent_whatever_the_other_cells_noise(
    distribution, scale, threshold, base
):
    # The projection makes negative cells 0 and takes their deficit off the others, so a large cell
    # beside empty patterns was shown below its noisy count, and the interval around the shown count
    # held it 75% of the time (three agencies, discrete Laplace at epsilon 2). Read from the cell's own
    # noisy count, and given that it is shown under a rule, it holds every truth, whatever the others.
    rules = OutputRules(threshold, base)
    support, probabilities = noise_pmf(distribution, scale)
    width = half_width(distribution, scale) + base // 2
    one_sided = one_sided_width(distribution, scale) + base // 2

    def read(noisy):
        return overlap_cell_interval(noisy, 0, rules, distribution, scale)

    def around_shown(noisy):  # the interval before: around the projected count
        value = rules.rounded(project_to_counts(noisy)[0])
        return count_lower(value, width, one_sided), value + width

    truths = range(0, 3 * max(threshold, 20))
    for others in OTHERS:
        coverage = _coverage(read, truths, others, rules, support, probabilities)
        assert min(coverage) >= 0.95 - 1e-9, (others, coverage)
    assert min(_coverage(around_shown, truths, OTHERS[0], rules, support, probabilities)) < 0.85


@pytest.mark.parametrize("base", [1, 3])
def test_an_overlap_cell_s_interval_holds_its_shown_count_and_tells_no_more_than_the_base(base):
    rules = OutputRules(0, base)
    for noisy in ([40, -5, -4, 3, -6, 2, -7], [7, 300, -2], [0, 0, 0], [-3, 12]):
        shown = rules.rounded(project_to_counts(noisy)[0])
        lower, upper = overlap_cell_interval(noisy, 0, rules, "Integer Laplace", 4.5)
        assert 0 <= lower <= shown <= upper
        assert lower % base == 0 and upper % base == 0
