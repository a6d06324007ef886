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
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = x[rng.integers(0, len(x), size=(BOOTSTRAP_RESAMPLES, len(x)))].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def preload() -> None:
    """Load what :func:`summarize` needs on first use (numpy's random generators and, through
    ``np.quantile``, numpy.ma: 15-20 ms), e.g. while the last episodes run."""
    bootstrap_ci(np.zeros(2))


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
