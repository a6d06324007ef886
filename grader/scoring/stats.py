"""Episode statistics: mean, std, median, IQM, a bootstrap CI of the mean and the success rate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from grader.result import Summary

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 20261122  # fixed: the same returns always give the same interval


def interquartile_mean(values: np.ndarray) -> float:
    """Mean of the middle 50% of the sorted values (the rliable IQM), with fractional weights."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = len(x)
    lo, hi = 0.25 * n, 0.75 * n
    # Weight of element i = overlap of [i, i+1) with [lo, hi).
    idx = np.arange(n)
    weights = np.clip(np.minimum(idx + 1, hi) - np.maximum(idx, lo), 0.0, 1.0)
    return float(np.sum(weights * x) / np.sum(weights))


def bootstrap_ci(values: np.ndarray, *, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, with a fixed RNG so it is reproducible."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 1:
        return float(x[0]), float(x[0])
    means = x[_resamples(len(x))].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


_drawn: dict[int, np.ndarray] = {}  # the resamples of one episode count, drawn ahead by preload()


def _resamples(n: int) -> np.ndarray:
    """The bootstrap's resampled indices for ``n`` values: a function of ``n`` and the fixed seed
    only (not of the values), so they can be drawn before the returns are known. Kept for one
    ``n`` at a time (100 episodes: 8 MB)."""
    drawn = _drawn.pop(n, None)
    if drawn is None:
        drawn = np.random.default_rng(BOOTSTRAP_SEED).integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))
    return drawn


def preload(episodes: int = 2) -> None:
    """Load what :func:`summarize` needs on first use (numpy's random generators and, through
    ``np.median``, numpy.ma: 15-20 ms) and draw the bootstrap's resamples for ``episodes``
    returns (5-20 ms for 100), e.g. while the last episodes run."""
    summarize([0.0, 0.0], success_threshold=0.0)
    _drawn.clear()
    if episodes > 1:
        _drawn[episodes] = _resamples(episodes)


def summarize(returns: Sequence[float], *, success_threshold: float | None) -> Summary:
    x = np.asarray(returns, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no episode returns to summarise")
    ci_low, ci_high = bootstrap_ci(x)
    return Summary(
        n=int(x.size),
        mean=float(x.mean()),
        std=float(x.std(ddof=0)),
        median=float(np.median(x)),
        iqm=interquartile_mean(x),
        ci_low=ci_low,
        ci_high=ci_high,
        success_rate=None if success_threshold is None else float(np.mean(x >= success_threshold)),
        min=float(x.min()),
        max=float(x.max()),
    )
