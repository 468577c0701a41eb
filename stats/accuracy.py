"""How accurate a differentially private answer is: 95% intervals from OpenDP's noise.

Pure functions of a noise distribution and its scale (as OpenDP's
``summarize_polars_measurement`` names them) and of released numbers; nothing here draws
noise or reads data. Every interval is stated for a confidence of 95%:

- one noisy count or integer sum: the noise is a whole number, and OpenDP's accuracy ``a``
  says ``P(|noise| >= a) <= 0.05``, so the truth is within ``ceil(a) - 1`` (not ``a - 1``,
  which is too narrow whenever ``a`` is not a whole number: a discrete Laplace at scale 0.5
  has ``a`` = 1.78, and ``a - 1`` covered 76% of the time, ``ceil(a) - 1`` covers 96.8%);
- a sum of several noisy cells: the normal approximation with the cells' exact variances;
- a mean: Fieller's confidence set from the noisy sum and count (:func:`mean_interval`), exact
  for the noise whatever the data;
- a quantile: a confidence interval for the true quantile read off a noisy histogram (see
  :func:`quantile_interval`), at the least threshold that holds 95% on the worst data set
  (:func:`quantile_threshold`), and the exponential mechanism's own rank bound
  (:func:`quantile_rank_bound`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from statistics import NormalDist

import numpy as np
import opendp.prelude as dp

__all__ = [
    "ALPHA",
    "CONFIDENCE",
    "Z",
    "count_lower",
    "half_width",
    "mean_interval",
    "mean_pivot_widths",
    "noise_variance",
    "one_sided_width",
    "quantile_interval",
    "quantile_rank_bound",
    "quantile_threshold",
    "scale_for_half_width",
    "sum_half_width",
]

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
Z = 1.959963984540054  # the normal quantile for a two-sided 95% interval
# Above this scale OpenDP's exact discrete Gaussian accuracy takes seconds (it sums the tail
# term by term: 0.5 s at 1e6, 7 s at 1e7); the continuous Gaussian's tail is then as good.
EXACT_GAUSSIAN_UP_TO = 1e4


def _gaussian(distribution: str) -> bool:
    return "Gaussian" in distribution


def noise_variance(distribution: str, scale: float) -> float:
    """The variance of OpenDP's integer noise at ``scale`` (an upper bound for the discrete Gaussian).

    The discrete Gaussian's variance is at most ``scale**2`` (Canonne, Kamath and Steinke
    2020, Proposition 19); the discrete Laplace's, ``2p / (1 - p)**2`` with ``p = exp(-1/scale)``.

    >>> noise_variance("Integer Gaussian", 3.0)
    9.0
    >>> round(noise_variance("Integer Laplace", 2.0), 2)
    7.84
    """
    if _gaussian(distribution):
        return scale * scale
    p = math.exp(-1 / scale)
    return 2 * p / (1 - p) ** 2


def half_width(distribution: str, scale: float) -> int:
    """The half-width of a 95% interval around one value with OpenDP's integer noise at ``scale``.

    >>> half_width("Integer Gaussian", 1 / math.sqrt(0.2))  # a count at rho=0.1
    4
    >>> half_width("Integer Laplace", 0.5)  # a count at epsilon=2: OpenDP's accuracy is 1.78
    1
    """
    if _gaussian(distribution):
        if scale > EXACT_GAUSSIAN_UP_TO:
            # P(|X| >= k) of the discrete Gaussian is P(|N| >= k - 1/2) to far better than a
            # part in a thousand at this scale, so ceil(z * scale) keeps at least 95%.
            return math.ceil(Z * scale)
        accuracy = float(dp.discrete_gaussian_scale_to_accuracy(scale, ALPHA))
    else:
        accuracy = float(dp.discrete_laplacian_scale_to_accuracy(scale, ALPHA))
    if accuracy == -math.inf:
        # OpenDP's answer below scale ~0.0014 (a count at epsilon 1e5): the noise is 0 but
        # with a chance under 1e-300, so no interval is wider than the value itself.
        return 0
    return max(0, math.ceil(accuracy) - 1)


@functools.lru_cache(maxsize=256)
def one_sided_width(distribution: str, scale: float, confidence: float = CONFIDENCE) -> int:
    """The least whole ``h`` with ``P(noise <= h) >= confidence`` for OpenDP's integer noise at ``scale``.

    Exact from the distribution: the discrete Laplace's tail is ``P(X > h) = p^(h+1) / (1 + p)``
    with ``p = exp(-1/scale)``; the discrete Gaussian's is summed from its probabilities
    (above :data:`EXACT_GAUSSIAN_UP_TO`, the continuous Gaussian's quantile, rounded up).

    >>> one_sided_width("Integer Laplace", 4.5)  # a count at epsilon=2, 9 rows a person: P(X <= 10) = 0.952
    10
    >>> one_sided_width("Integer Gaussian", 1 / math.sqrt(0.2))  # rho=0.1, one row: P(X <= 3) = 0.943
    4
    """
    alpha = 1 - confidence
    if _gaussian(distribution):
        if scale > EXACT_GAUSSIAN_UP_TO:
            return math.ceil(NormalDist().inv_cdf(confidence) * scale)
        probabilities = _pmf(distribution, scale)
        reach = len(probabilities) // 2
        above = np.cumsum(probabilities[::-1])[::-1]  # above[i] = P(X >= i - reach)
        # the least h with P(X > h) = above[h + 1 + reach] <= alpha (1e-12: the sum's rounding)
        tails = above[reach + 1 :]
        return int(np.argmax(tails <= alpha + 1e-12))
    p = math.exp(-1 / scale)
    if p == 0:
        return 0
    h = max(0, math.ceil(math.log(alpha * (1 + p)) / math.log(p)) - 1)
    while p ** (h + 1) / (1 + p) > alpha:  # the logarithms' rounding, either way
        h += 1
    while h > 0 and p**h / (1 + p) <= alpha:
        h -= 1
    return h


def count_lower(value: int, two_sided: float, one_sided: float) -> float:
    """The lower end of a released count's 95% interval, whose upper end is ``value + two_sided``.

    A noisy count is shown as ``max(0, truth + noise)`` (then rounded), so for a small truth
    a negative noise can never push the shown value below the truth's interval: the interval
    ``max(0, value - two_sided) .. value + two_sided`` would hold a truth up to ``two_sided``
    whenever ``noise <= two_sided``, 97.5% of the time, not 95%. Inverting, for each truth
    ``t``, the acceptance region ``value <= t + one_sided`` when ``t <= two_sided`` and
    ``|value - t| <= two_sided`` above (Neyman's construction) keeps at least 95% for every
    truth (``one_sided`` is the one-sided 95% bound of the noise, rounding included) and
    gives this lower end; the upper end stays ``value + two_sided``. It differs from
    ``max(0, value - two_sided)`` only for values below ``2 * two_sided``.

    >>> count_lower(0, 13, 10), count_lower(5, 13, 10), count_lower(20, 13, 10)
    (0.0, 0.0, 10.0)
    >>> count_lower(25, 13, 10), count_lower(100, 13, 10)  # no truth up to 13 reaches 25 with noise <= 10
    (14.0, 87.0)
    """
    if value <= two_sided + one_sided:
        return max(0.0, float(value - one_sided))
    return float(max(two_sided + 1, value - two_sided))


def shown_count_interval(
    value: int, threshold: int, distribution: str, scale: float, publish: Callable[[int], int], base: int = 1
) -> tuple[float, float]:
    """A count's 95% interval given that it is shown, under a rule that shows it from ``threshold`` up.

    A count is published as ``publish(truth + noise)`` and shown when that reaches the
    threshold. The usual interval holds the truth in 95% of all releases, but a small truth
    is shown only when its noise was high, so among the releases shown it held far less
    often: at epsilon 2 with ``suppress_below`` 20, a truth of 10 was held by 20% of the
    intervals shown (docs/dp-intervals.md). This inverts, for every truth ``t``, the
    equal-tailed 95% test of the published value's distribution given that it is shown
    (Neyman's construction, on the exact noise): the intervals shown hold the truth at
    least 95% of the time, whatever the truth. Far above the threshold it is the usual
    interval; near it the lower end reaches down, to 0 when nothing tells a small truth from
    a larger one (the discrete Laplace forgets how far below the threshold it started).
    Truths whose chance to be shown underflows (under about 1e-300) are left out.

    Args:
        value: the shown count (at least ``threshold``).
        threshold: the least count shown (the protocol's ``suppress_below``, at least 1).
        distribution: OpenDP's noise distribution.
        scale: its scale.
        publish: the published count of a noisy count (at least 0, rounded to the base).
        base: the rounding base (``publish`` moves a count by at most half of it).

    >>> shown = [shown_count_interval(v, 20, "Integer Gaussian", 5.0, lambda y: max(0, y)) for v in (20, 30, 60)]
    >>> shown, half_width("Integer Gaussian", 5.0)  # 60 is far above: 60 +- 10 as without the rule
    ([(0.0, 27.0), (18.0, 40.0), (50.0, 70.0)], 10)
    """

    def least(reaching: int) -> int:  # the least whole noisy count published at ``reaching`` or more
        y = reaching - base - 1
        while publish(y) < reaching:
            y += 1
        return y

    tail = _at_least(distribution, scale)
    # No truth ten scales above the value keeps it out of its lower 2.5% tail.
    truths = np.arange(0, value + base + int(10 * scale) + 10)
    with np.errstate(divide="ignore", invalid="ignore"):
        shown = tail(least(threshold) - truths)
        at_least_value = tail(least(value) - truths) / shown
        at_most_value = 1 - tail(least(value + 1) - truths) / shown
    kept = truths[(at_least_value > ALPHA / 2) & (at_most_value > ALPHA / 2)]
    if not kept.size:  # not seen on any noise tried; the widest answer is still a true one
        return 0.0, float(truths[-1])
    return float(kept.min()), float(kept.max())


EXACT_SUMS_UP_TO = 50.0  # noise scales whose sums of cells are computed exactly (a convolution of pmfs)


def _pmf(distribution: str, scale: float) -> np.ndarray:
    """OpenDP's integer noise distribution at ``scale`` on -t..t, with t far in the tail."""
    reach = int(40 * scale) + 10
    support = np.arange(-reach, reach + 1, dtype=float)
    if _gaussian(distribution):
        weights = np.exp(-(support**2) / (2 * scale * scale))
    else:
        weights = np.exp(-np.abs(support) / scale)
    normalised: np.ndarray = weights / weights.sum()
    return normalised


def sum_half_width(distribution: str, scale: float, cells: int, rounding: int = 1) -> float:
    """95% half-width of the sum of ``cells`` independent noisy cells, each rounded to a multiple of ``rounding``.

    One cell: :func:`half_width` plus the rounding's largest error. Several, unrounded, at a
    scale up to 50: exact, from the convolution of the noise's probabilities (the sum is a
    whole number, and the normal approximation under-covered coarse noise: 91% for two cells
    of a discrete Laplace at scale 0.5). Otherwise the normal approximation (rounding
    counted as uniform noise of variance ``rounding**2 / 12``), as a whole number when the
    sum is one.

    >>> sum_half_width("Integer Laplace", 0.5, 2)
    2.0
    """
    if cells == 0:
        return 0.0
    if cells == 1:
        return float(half_width(distribution, scale) + rounding // 2)
    if rounding == 1 and scale <= EXACT_SUMS_UP_TO and cells <= 64:
        return _exact_sum_half_width(distribution, scale, cells)
    variance = noise_variance(distribution, scale) + (rounding * rounding / 12 if rounding > 1 else 0.0)
    width = Z * math.sqrt(cells * variance)
    return float(math.ceil(width)) if rounding == 1 else width


@functools.lru_cache(maxsize=256)
def _exact_sum_half_width(distribution: str, scale: float, cells: int) -> float:
    """The least whole ``h`` with ``P(|sum of cells noises| <= h) >= 0.95``: the pmf's ``cells``-th power by FFT."""
    one = _pmf(distribution, scale)
    length = cells * (len(one) - 1) + 1
    size = 1 << (length - 1).bit_length()
    total = np.clip(np.fft.irfft(np.fft.rfft(one, size) ** cells, size)[:length], 0, None)
    middle = length // 2
    inside = total[middle] + np.concatenate([[0.0], np.cumsum(total[middle + 1 :] + total[middle - 1 :: -1][:middle])])
    return float(np.searchsorted(inside, CONFIDENCE - 1e-9))


def _at_least(distribution: str, scale: float) -> Callable[[np.ndarray], np.ndarray]:
    """``k -> P(X >= k)`` for OpenDP's integer noise ``X`` at ``scale``, on whole numbers ``k``.

    The discrete Laplace's in closed form (``p^k / (1 + p)`` for ``k >= 1``); the discrete
    Gaussian's summed from its probabilities up to :data:`EXACT_GAUSSIAN_UP_TO`, above it the
    continuous Gaussian's at ``k - 1/2``.
    """
    if not _gaussian(distribution):
        p = math.exp(-1 / scale)

        def laplace(k: np.ndarray) -> np.ndarray:
            positive = np.power(p, np.maximum(k, 1)) / (1 + p)
            negative = 1 - np.power(p, np.maximum(1 - k, 1)) / (1 + p)
            tail: np.ndarray = np.where(k >= 1, positive, negative)
            return tail

        return laplace
    if scale > EXACT_GAUSSIAN_UP_TO:
        normal = NormalDist(0, scale)
        survival = np.vectorize(lambda k: 1 - normal.cdf(k - 0.5))
        return lambda k: np.asarray(survival(k), dtype=float)
    probabilities = _pmf(distribution, scale)
    reach = len(probabilities) // 2
    table = np.append(np.cumsum(probabilities[::-1])[::-1], 0.0)  # table[i] = P(X >= i - reach); then 0

    def gaussian(k: np.ndarray) -> np.ndarray:
        return np.where(k <= -reach, 1.0, table[np.clip(k + reach, 0, 2 * reach + 1).astype(int)])

    return gaussian


def _count_points(distribution: str, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """OpenDP's integer noise at ``scale`` as its whole-number points and probabilities (above 1e-13)."""
    probabilities = _pmf(distribution, scale)
    reach = len(probabilities) // 2
    keep = probabilities > 1e-13
    return np.arange(-reach, reach + 1, dtype=float)[keep], probabilities[keep] / probabilities[keep].sum()


MEAN_GRID = 256  # segments of the attribute's range a mean's confidence set is computed on


@functools.lru_cache(maxsize=64)
def mean_pivot_widths(
    sum_noise: tuple[str, float], count_noise: tuple[str, float], lower: float, upper: float
) -> tuple[np.ndarray, np.ndarray]:
    """Points ``m`` of ``lower..upper`` and the least ``c(m)`` with ``P(|e1 - m e2| > c(m)) <= 0.05``.

    ``e1`` is the noisy sum's noise and ``e2`` the noisy count's (OpenDP's, independent); at the
    true mean ``m``, the released ``sum - m count`` is exactly ``e1 - m e2``, whatever the data
    (Fieller's pivot). Computed from the noises' own distributions: for every ``m`` at once, by
    bisection on ``c``, summing ``P(|e1 + m k| > c)`` over ``e2 = k``.
    """
    points = np.linspace(lower, upper, MEAN_GRID + 1)
    at_least = _at_least(*sum_noise)
    ks, weights = _noise_points(*count_noise) if count_noise[1] > 50 else _count_points(*count_noise)
    shifts = points[:, None] * ks[None, :]  # m k: e1 - m e2 at e2 = k

    def miss(c: np.ndarray) -> np.ndarray:  # P(|e1 - m e2| > c) for each point's c
        # e1 > c + m k  <=>  e1 >= floor(c + m k) + 1;  e1 < m k - c  <=>  -e1 >= 1 - ceil(m k - c)
        high = at_least(np.floor(c[:, None] + shifts) + 1)
        low = at_least(1 - np.ceil(shifts - c[:, None]))
        result: np.ndarray = (high + low) @ weights
        return result

    spread = math.sqrt(noise_variance(*sum_noise) + max(lower * lower, upper * upper) * noise_variance(*count_noise))
    low_c, high_c = np.zeros_like(points), np.full_like(points, 20 * spread + 2)
    for _ in range(60):  # to well under a thousandth of a unit of the sum
        middle = (low_c + high_c) / 2
        fails = miss(middle) > ALPHA
        low_c, high_c = np.where(fails, middle, low_c), np.where(fails, high_c, middle)
        if float(np.max(high_c - low_c)) < 1e-3:
            break
    return points, high_c


def mean_interval(
    noisy_sum: float, noisy_count: float, points: np.ndarray, widths: np.ndarray
) -> tuple[float, float] | None:
    """A 95% confidence interval for a mean from its noisy sum and count (Fieller's method, exact for the noise).

    The true mean ``m`` satisfies ``|noisy_sum - m noisy_count| <= c(m)`` in 95% of releases
    whatever the data (:func:`mean_pivot_widths`); the interval is every ``m`` of the
    attribute's range that does. Between two of the points, ``c`` is taken as the larger of
    its two ends, so the interval holds every ``m`` that passes and a hair more. No delta
    method: it holds for a group of one person as for a million.

    Returns:
        The least and largest mean that pass, or ``None`` if none does (a release in the 5%).

    >>> points, widths = mean_pivot_widths(("Integer Gaussian", 40.0), ("Integer Gaussian", 40.0), 0.0, 1.0)
    >>> low, high = mean_interval(600.0, 1000.0, points, widths)
    >>> round(low, 3), round(high, 3)
    (0.512, 0.696)
    """
    left, right = points[:-1], points[1:]
    c = np.maximum(widths[:-1], widths[1:])
    # on a segment, sum - m count is linear in m: where it is within +-c is the m between two roots
    if noisy_count != 0:
        a = (noisy_sum - c) / noisy_count
        b = (noisy_sum + c) / noisy_count
        low, high = np.maximum(left, np.minimum(a, b)), np.minimum(right, np.maximum(a, b))
    else:
        inside = abs(noisy_sum) <= c
        low, high = np.where(inside, left, np.inf), np.where(inside, right, -np.inf)
    passing = low <= high
    if not passing.any():
        return None
    return float(low[passing].min()), float(high[passing].max())


def scale_for_half_width(distribution: str, target: float) -> float:
    """The largest noise scale whose :func:`half_width` is at most ``target`` (at least 1).

    >>> scale = scale_for_half_width("Integer Gaussian", 5)
    >>> half_width("Integer Gaussian", scale), half_width("Integer Gaussian", scale * 1.01) > 5
    (5, True)
    """
    wanted = math.floor(target)
    low, high = 1e-3, max(1.0, float(wanted))
    while half_width(distribution, high) <= wanted:
        low, high = high, high * 2
    for _ in range(60):  # bisection: half_width is non-decreasing in the scale
        middle = (low + high) / 2
        if half_width(distribution, middle) <= wanted:
            low = middle
        else:
            high = middle
    return low


def quantile_rank_bound(scale: float, sensitivity: float, q: float, candidates: int) -> float:
    """The exponential mechanism's rank bound, in people, from OpenDP's scale of its quantile.

    OpenDP scores candidate ``c`` as ``|(1 - q) * #(x < c) - q * #(x > c)|`` times ``alpha_den``
    (the denominator of its fraction for ``q``), a score whose sensitivity is
    ``max(alpha_num, alpha_den - alpha_num)``, i.e. ``alpha_den * max(q, 1 - q)``, and adds
    Gumbel noise of ``scale`` (in score units; ``scale = global scale * sensitivity``).
    One person more or less below ``c`` moves the score by ``alpha_den`` times one rank, so
    in ranks the mechanism's scale is ``scale / alpha_den = scale * max(q, 1 - q) / sensitivity``.
    By the exponential mechanism's utility bound, with probability 95% the released
    candidate's score is within ``scale_in_ranks * ln(candidates / 0.05)`` of the best one's.

    >>> round(quantile_rank_bound(3.1623, 1.0, 0.5, 121), 2)  # rho=0.05, median of 0..120
    12.32
    >>> round(quantile_rank_bound(40833608682.27, 12912720851, 0.3, 121), 2)  # the same at q=0.3
    17.25
    """
    in_ranks = scale * max(q, 1 - q) / sensitivity
    return in_ranks * math.log(candidates / ALPHA)


def _noise_points(distribution: str, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """OpenDP's integer noise at ``scale`` as at most 401 points and weights, for sums over it.

    Its probabilities (exact up to scale 20, else its shape), cells of a wide support merged
    into 401 at their mean: only ever summed against U's smooth distribution function.
    """
    if scale <= 20:
        probabilities = _pmf(distribution, scale)
        reach = len(probabilities) // 2
        keep = probabilities > 1e-15
        points, weights = np.arange(-reach, reach + 1, dtype=float)[keep], probabilities[keep]
    else:
        points = np.linspace(-1, 1, 4001) * (10 if _gaussian(distribution) else 36) * scale
        weights = np.exp(-((points / scale) ** 2) / 2) if _gaussian(distribution) else np.exp(-np.abs(points) / scale)
        weights = weights / weights.sum()
    if len(points) <= 401:
        return points, weights
    cells = np.minimum(((points - points[0]) / (points[-1] - points[0]) * 401).astype(int), 400)
    mass = np.bincount(cells, weights, 401)
    centres = np.bincount(cells, weights * points, 401) / np.where(mass > 0, mass, 1)
    return centres[mass > 0], mass[mass > 0]


@functools.lru_cache(maxsize=130)  # one quantile's bins, twice over: each entry is 128 kB
def _others_distribution(distribution: str, scale: float, q: float, bins: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Points and ``P(U <= point)`` for the noise of every bin but ``j`` in ``G(j)``.

    ``U = (1 - q) sum_{i<j} e_i - q sum_{i>j} e_i``, from the noise's own distribution, by FFT
    on a grid of a hundredth of U's standard deviation. (The normal approximation is too thin
    in the tails for the discrete Laplace: at the worst case it read a 5.0% miss where
    releases missed 5.06%.)
    """
    noise, weights = _noise_points(distribution, scale)
    sd = math.sqrt(noise_variance(distribution, scale) * ((1 - q) ** 2 * j + q * q * (bins - j - 1)))
    step, size = sd / 100, 1 << 13  # +-41 standard deviations

    def spectrum(factor: float, copies: int) -> np.ndarray:
        pmf = np.zeros(size)
        np.add.at(pmf, np.rint(factor * noise / step).astype(int) % size, weights)
        powered: np.ndarray = np.fft.rfft(pmf) ** copies
        return powered

    density = np.clip(np.roll(np.fft.irfft(spectrum(1 - q, j) * spectrum(-q, bins - j - 1), size), size // 2), 0, None)
    return (np.arange(size) - size // 2) * step, np.cumsum(density) / density.sum()


def _worst_quantile_miss(z: float, distribution: str, scale: float, q: float, bins: int, rounds: int = 3) -> float:
    """The largest probability, over every data set, that :func:`quantile_interval` at ``z`` misses the true bin.

    The miss is ``p_low + p_high`` (see :func:`quantile_threshold`). For a true bin ``J`` with
    ``G(J - 1) = -u < 0 <= G(J) = v``, the noise on those two is ``U - q e`` and ``U + (1 - q) e``
    (``e`` bin ``J``'s own, ``U`` every other bin's, both from the noise's distribution), and the
    worst data set puts everyone else in bins ``J - 1`` and ``J + 1`` (as many as it takes for
    no other bin's noisy ``G`` to cross the line), so ``p_low = P(both below -z sd)`` and
    ``p_high = P(both at least z sd)``; their sum is searched over ``u, v >= 0`` on a grid near
    the corner (a tenth of U's standard deviation apart, up to half of it), refined ``rounds - 1``
    times around its highest point, for every ``J``.
    """
    variance = noise_variance(distribution, scale)
    noise, weights = _noise_points(distribution, scale)
    e = noise[:, None]

    def sd(j: int) -> float:  # of the noise on G(j)
        return math.sqrt(variance * ((1 - q) ** 2 * (j + 1) + q * q * (bins - j - 1)))

    # A true bin at either end is missed on one side only: bin 0 when G(0) is noisily below
    # -z sd, the last bin when G of the one before is noisily at least z sd.
    points, cdf = _others_distribution(distribution, scale, q, bins, 0)
    worst = float(weights @ np.interp(-z * sd(0) - (1 - q) * noise, points, cdf))
    points, cdf = _others_distribution(distribution, scale, q, bins, bins - 1)
    worst = max(worst, float(weights @ (1 - np.interp(z * sd(bins - 2) + q * noise, points, cdf))))
    for j in range(1, bins - 1):
        before, at = sd(j - 1), sd(j)
        rest = math.sqrt(variance * ((1 - q) ** 2 * j + q * q * (bins - j - 1)))  # sd of U
        points, cdf = _others_distribution(distribution, scale, q, bins, j)
        centre, step = (0.0, 0.0), 0.1 * rest
        for _ in range(rounds):
            us = np.unique(np.clip(centre[0] + step * np.arange(-5, 6), 0, None))
            vs = np.unique(np.clip(centre[1] + step * np.arange(-5, 6), 0, None))
            u, v = (grid.ravel() for grid in np.meshgrid(us, vs))
            low = np.minimum(u - z * before + q * e, -v - z * at - (1 - q) * e)  # p_low = P(U < low)
            high = np.maximum(u + z * before + q * e, z * at - v - (1 - q) * e)  # p_high = P(U >= high)
            values = weights @ (np.interp(low, points, cdf) + 1 - np.interp(high, points, cdf))
            best = int(np.argmax(values))
            worst = max(worst, float(values[best]))
            centre, step = (float(u[best]), float(v[best])), step / 5
    return worst


Z_ONE_SIDED = NormalDist().inv_cdf(CONFIDENCE)  # 1.645: below it, one end alone would miss more than 5%


@functools.lru_cache(maxsize=256)
def quantile_threshold(distribution: str, scale: float, q: float, bins: int) -> float:
    """The least ``z`` at which :func:`quantile_interval` holds the true bin in 95% of releases for every data set.

    The interval is the first to the last kept bin, so it misses the true bin ``J`` only if
    no bin up to ``J`` is kept (every noisy ``G(j) < -z sd``, ``j <= J``: probability
    ``p_low``) or none from ``J`` on is (every noisy ``G(j) >= z sd``, ``J - 1 <= j <= bins - 2``:
    ``p_high``); the two exclude each other. Each is at most 2.5% at ``z`` = 1.96, but the
    two cannot be at their worst on one data set: ``p_low`` nears 2.5% when ``G(J) = 0`` and
    ``G(J - 1)`` is far below 0 (a full bin ``J``), ``p_high`` when ``G(J - 1) = 0`` and
    ``G(J)`` is far above (also a full bin). With bin ``J`` all but empty, each needs two
    noisy ``G`` past the line, not one, and the worst sum is 3.8-4.4% (31-64 bins): the union
    bound 2.5% + 2.5% is loose. This is the ``z`` whose worst miss over every data set
    (:func:`_worst_quantile_miss`) is 5%: bisection on a coarse search, then raised until
    the full search agrees; about 1.85-1.90 for 31-64 bins, never below 1.645.

    >>> round(quantile_threshold("Integer Gaussian", 32.86, 0.5, 61), 2)
    1.85
    """
    if bins < 3 or noise_variance(distribution, scale) == 0:
        return Z  # (without noise, as at epsilon 1e5, every z keeps exactly the true bin)
    low, high = Z_ONE_SIDED, Z
    for _ in range(12):
        middle = (low + high) / 2
        if _worst_quantile_miss(middle, distribution, scale, q, bins, rounds=1) <= ALPHA:
            high = middle
        else:
            low = middle
    while high < Z and _worst_quantile_miss(high, distribution, scale, q, bins) > ALPHA:
        high = min(Z, high + 0.002)
    return high


def quantile_interval(counts: Sequence[float], q: float, variance: float, z: float = Z) -> tuple[int, int] | None:
    """The bins that may hold the q-quantile, from noisy counts of people per bin (a 95% interval).

    With ``A(j)`` the people in bins ``0..j`` and ``n`` everyone, ``G(j) = A(j) - q n`` rises
    with ``j``, and the quantile lies in the first bin ``J`` where ``G(J) >= 0`` (and
    ``G(J - 1) < 0``). Each noisy ``G(j) = (1 - q) A(j) - q (n - A(j))`` has variance
    ``variance * ((1 - q)^2 (j + 1) + q^2 (bins - j - 1))``; a bin is kept unless its
    noisy ``G`` is more than ``z`` standard deviations below 0, or the bin before it has a
    noisy ``G`` at least ``z`` above 0 (the last bin's ``G``, ``(1 - q) n``, is never below
    0, so only the second rules it out), and the interval runs from the first kept bin to the
    last. At ``z`` = 1.96 the true ``J`` is missed only by one of two events of at most 2.5%
    each (normal approximation); :func:`quantile_threshold` gives the least ``z`` that still
    keeps the miss under 5% for every data set, since the two cannot both be at their worst.

    Returns:
        The first and last bin kept, or ``None`` if no bin is (the caller then states the
        whole range of the attribute).

    >>> quantile_interval([10, 10, 10, 10, 10, 10, 10, 10], 0.5, 0.0)  # no noise: the 4th bin
    (3, 3)
    >>> quantile_interval([10, 10, 10, 10, 10, 10, 10, 10], 0.5, 4.0)
    (3, 4)
    """
    bins = len(counts)
    total = sum(counts)
    kept = []
    below = 0.0
    previous_high = False  # "the bin before has G at least z sd above 0"; false before the first
    for j, count in enumerate(counts):
        below += count
        g = (1 - q) * below - q * (total - below)
        sd = math.sqrt(variance * ((1 - q) ** 2 * (j + 1) + q * q * (bins - j - 1)))
        # G of the last bin is (1 - q) n >= 0 whatever the noise says: only the bin before can rule it out
        if (g + z * sd >= 0 or j == bins - 1) and not previous_high:
            kept.append(j)
        previous_high = g - z * sd >= 0
    if not kept:
        return None
    return kept[0], kept[-1]
