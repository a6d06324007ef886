"""Unit tests of the episode statistics (grader.scoring.stats) against values worked out by hand.

The IQM is the mean of the middle half of the sorted returns, an element straddling a quartile
counting with the part of it inside; the interval is a percentile bootstrap of the mean with a
fixed seed; the success rate counts returns at or above the task's threshold.
"""

from __future__ import annotations

import numpy as np
import pytest

from grader.scoring.stats import bootstrap_ci, interquartile_mean, summarize


# --- IQM ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("values, expected", [
    ([1, 2, 3, 4], 2.5),  # quartiles fall between elements: the middle two, (2 + 3) / 2
    ([8, 1, 7, 2, 6, 3, 5, 4], 4.5),  # unsorted input: the middle four of 1..8, (3 + 4 + 5 + 6) / 4
    ([1, 2, 3, 4, 100], 3.0),  # n = 5: 2 and 4 count three quarters each: (0.75*2 + 3 + 0.75*4) / 2.5
    ([7], 7.0),  # one episode: its return
    ([-10, -10, 10, 10], 0.0),
])
def test_the_iqm_is_the_mean_of_the_middle_half(values, expected):
    assert interquartile_mean(np.array(values, dtype=float)) == pytest.approx(expected)


def test_the_iqm_ignores_an_outlier_the_mean_does_not():
    returns = np.array([200.0] * 7 + [-5000.0])  # one crash among eight landings
    assert interquartile_mean(returns) == 200.0
    assert returns.mean() < 0


# --- bootstrap interval of the mean ------------------------------------------------------------------
def test_the_interval_of_two_returns_is_their_range():
    """Two returns 0 and 1: a resample's mean is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4, so the
    2.5% and 97.5% quantiles of 10,000 resampled means are exactly 0 and 1."""
    assert bootstrap_ci(np.array([0.0, 1.0])) == (0.0, 1.0)


def test_the_interval_of_one_success_in_four():
    """Returns 0, 0, 0, 1: a resample's mean is k/4 with k ~ Binomial(4, 1/4). P(k = 0) = 0.32 puts
    the 2.5% quantile at 0; P(k <= 2) = 0.949 < 0.975 <= P(k <= 3) = 0.996 puts the 97.5% at 3/4."""
    assert bootstrap_ci(np.array([0.0, 0.0, 0.0, 1.0])) == (0.0, 0.75)


def test_the_interval_of_equal_returns_is_that_return():
    assert bootstrap_ci(np.array([5.0, 5.0, 5.0])) == (5.0, 5.0)
    assert bootstrap_ci(np.array([42.0])) == (42.0, 42.0)


def test_the_interval_is_reproducible_and_brackets_the_mean():
    returns = np.random.default_rng(0).normal(100.0, 30.0, size=50)
    low, high = bootstrap_ci(returns)
    assert bootstrap_ci(returns) == (low, high)  # a fixed seed: the same returns, the same interval
    assert low < returns.mean() < high
    # about 1.96 standard errors each side (30 / sqrt(50) = 4.2): the interval is ~16.6 wide
    assert 13.0 < high - low < 20.0


def test_a_wider_confidence_gives_a_wider_interval():
    returns = np.arange(20, dtype=float)
    low90, high90 = bootstrap_ci(returns, confidence=0.90)
    low99, high99 = bootstrap_ci(returns, confidence=0.99)
    assert low99 < low90 and high90 < high99


# --- the summary -------------------------------------------------------------------------------------
def test_the_summary_of_known_returns():
    s = summarize([2, 4, 4, 4, 5, 5, 7, 9], success_threshold=5)
    assert (s.n, s.mean, s.std, s.median, s.min, s.max) == (8, 5.0, 2.0, 4.5, 2.0, 9.0)  # std with ddof 0
    assert s.iqm == pytest.approx(4.5)  # the middle four: 4, 4, 5, 5
    assert s.success_rate == 0.5  # 5, 5, 7, 9: a return equal to the threshold succeeds


@pytest.mark.parametrize("returns, threshold, rate", [
    ([100, 200, 300, 250], 200, 0.75),
    ([-100, -50], 200, 0.0),
    ([250], 200, 1.0),
])
def test_the_success_rate_counts_returns_at_or_above_the_threshold(returns, threshold, rate):
    assert summarize(returns, success_threshold=threshold).success_rate == rate


def test_a_task_without_a_threshold_has_no_success_rate():
    assert summarize([1.0, 2.0], success_threshold=None).success_rate is None


@pytest.mark.parametrize("returns, median", [([3, 1, 2], 2.0), ([1, 2, 3, 10], 2.5)])
def test_the_median(returns, median):
    assert summarize(returns, success_threshold=None).median == median


def test_no_returns_is_an_error_not_a_summary():
    with pytest.raises(ValueError, match="no episode returns"):
        summarize([], success_threshold=None)


def test_the_resamples_drawn_ahead_give_the_same_interval():
    """``grade`` draws the bootstrap's resamples while the last episodes run (they depend on the
    number of returns and the fixed seed, not on the returns): the interval is the same either way,
    and resamples drawn for another number of episodes are not used."""
    from grader.scoring import stats

    returns = np.random.default_rng(3).normal(200.0, 40.0, size=37)
    fresh = bootstrap_ci(returns)
    stats.preload(37)
    assert stats._drawn and bootstrap_ci(returns) == fresh
    assert not stats._drawn  # used once
    stats.preload(12)
    assert bootstrap_ci(returns) == fresh and 12 in stats._drawn
    assert summarize(returns[:12], success_threshold=None) == summarize(returns[:12].copy(), success_threshold=None)
