"""Paired percentile bootstrap over photos: one draw of resamples, one interval routine.

Every method of a run is scored on the same resamples (``bootstrap_resamples``), so methods are
compared on the same draws. A resample is a row of photo positions drawn with replacement; a
statistic maps one resample to a number, and its interval is the percentile interval of those
numbers (``bootstrap_ci``). The mean of per-photo values, the common case, is taken over all
resamples at once (``mean_ci``) and goes through the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

N_BOOT = 1000


def bootstrap_resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] photo positions drawn with replacement; shared by all methods (paired comparison)."""
    return np.random.default_rng([seed, 11]).integers(0, n, size=(n_boot, n)) if n else np.zeros((n_boot, 0), int)


def percentile_interval(values: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of one statistic's values over the resamples (non-finite ones left out)."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if not len(values):
        return math.nan, math.nan
    return float(np.quantile(values, alpha / 2)), float(np.quantile(values, 1 - alpha / 2))


def bootstrap_ci(
    stat: Callable[[np.ndarray], float], resamples: np.ndarray, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile interval of ``stat`` over photo resamples (rows of position arrays)."""
    return percentile_interval(np.array([stat(r) for r in resamples], float), alpha)


def mean_ci(values: np.ndarray, resamples: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of the mean of per-photo ``values``: ``bootstrap_ci`` of the mean, all
    resamples in one array operation."""
    means = np.asarray(values, float)[resamples].mean(axis=1) if resamples.size else np.zeros(0)
    return percentile_interval(means, alpha)
