"""Confidence intervals for evaluation outcomes (numpy, vectorised, deterministic given a seed).

* `wilson_ci(k, n)`: score interval of a success rate; stays inside [0, 1] and is sensible at
  k = 0 or k = n, where the normal (Wald) interval collapses to a point.
* `bootstrap_mean_ci(x)`: percentile bootstrap of a mean (continuous metrics: distances, times).
* `paired_bootstrap_diff(a, b)`: percentile bootstrap of mean(a − b) over pairs, resampling the
  pairs together; pairs are the same evaluation episode (same reset seed) under both arms, so
  the episode-to-episode difficulty cancels and the interval is much tighter than two
  independent intervals.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from jepalab.errors import JepalabError

# Resample in chunks so n_boot × n indices never exceed ~8M integers (64 MB).
_CHUNK_ELEMS = 8_000_000


def z_value(level: float = 0.95) -> float:
    if not 0.0 < level < 1.0:
        raise JepalabError(f"level must be in (0, 1), got {level}")
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson_ci(k: int | np.ndarray, n: int | np.ndarray, level: float = 0.95
              ) -> tuple[np.ndarray | float, np.ndarray | float, np.ndarray | float]:
    """(rate, low, high) of k successes in n trials; k, n scalars or broadcastable arrays."""
    k_arr = np.asarray(k, dtype=np.float64)
    n_arr = np.asarray(n, dtype=np.float64)
    if np.any(n_arr <= 0) or np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise JepalabError(f"wilson_ci needs 0 <= k <= n and n > 0, got k={k}, n={n}")
    z = z_value(level)
    p = k_arr / n_arr
    denom = 1.0 + z * z / n_arr
    centre = (p + z * z / (2 * n_arr)) / denom
    half = z * np.sqrt(p * (1 - p) / n_arr + z * z / (4 * n_arr * n_arr)) / denom
    # The interval always holds p; clip float round-off at the k = 0 and k = n ends.
    lo, hi = np.minimum(centre - half, p), np.maximum(centre + half, p)
    lo, hi = np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)
    if np.ndim(p) == 0:
        return float(p), float(lo), float(hi)
    return p, lo, hi


def _boot_means(x: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot] means of resamples (with replacement) of the rows of x [n]."""
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    per = max(1, _CHUNK_ELEMS // n)
    out = np.empty(n_boot)
    for start in range(0, n_boot, per):
        m = min(per, n_boot - start)
        idx = rng.integers(0, n, size=(m, n))
        out[start:start + m] = x[idx].mean(axis=1)
    return out


def _check(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise JepalabError(f"{name} must be a non-empty 1-D array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise JepalabError(f"{name} holds non-finite values")
    return x


def bootstrap_mean_ci(x: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95
                      ) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap CI of the mean of x [n]."""
    x = _check(x, "x")
    z_value(level)
    means = _boot_means(x, n_boot, seed)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    mean = float(x.mean())
    # A percentile interval can miss the point estimate in degenerate resamples; keep
    # low <= mean <= high, the invariant every evidence cell is validated against.
    return mean, float(min(lo, mean)), float(max(hi, mean))


def paired_bootstrap_diff(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0,
                          level: float = 0.95) -> tuple[float, float, float]:
    """(mean(a − b), low, high) with a [n], b [n] paired outcomes (pair i = same episode)."""
    a, b = _check(a, "a"), _check(b, "b")
    if a.shape != b.shape:
        raise JepalabError(f"paired outcomes need equal lengths, got {a.size} and {b.size}")
    return bootstrap_mean_ci(a - b, n_boot=n_boot, seed=seed, level=level)
