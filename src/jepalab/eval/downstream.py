"""Value estimation and label efficiency on frozen latents.

Value head: regress steps-to-goal (or any scalar value such as a discounted return) from the
concatenation [z, z_goal] ([N, 2D]) with a linear or MLP probe; judged by MAE and by Spearman rank
correlation, since a planner that uses the value only needs its ordering to be right.

Label efficiency: how the probe error on a fixed test set falls with the number of labelled
trials. For each seed, one random permutation of the trials (episodes when `groups` is given,
else rows) is drawn and each budget takes its prefix, so budgets are nested within a seed and the
curve's noise comes from the draw, not from unrelated subsets. The interval is a Student-t
confidence interval of the mean error across seeds. `area_under_curve` summarises a curve as one
number for comparison tables (see its docstring).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jepalab.errors import JepalabError
from jepalab.eval.probes import (
    ArrayLike,
    Probe,
    as_array,
    fit_linear_probe,
    fit_mlp_probe,
    regression_metrics,
)

HEADS = ("linear", "mlp", "knn")


def rankdata(a: ArrayLike) -> np.ndarray:
    """Ranks 1..N of a 1-D array, ties get the average of their ranks."""
    x = as_array(a, "a", 1)
    order = np.argsort(x, kind="mergesort")
    sx = x[order]
    # start of each run of equal values -> average rank of the run
    starts = np.flatnonzero(np.r_[True, sx[1:] != sx[:-1]])
    ends = np.r_[starts[1:], len(x)]
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman rank correlation of two 1-D arrays (NaN if either is constant)."""
    ra, rb = rankdata(a), rankdata(b)
    if ra.shape != rb.shape:
        raise JepalabError(f"spearman: shapes {ra.shape} and {rb.shape} differ")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / den) if den > 0 else math.nan


def value_metrics(pred: ArrayLike, target: ArrayLike) -> dict[str, float]:
    """{"mae", "rmse", "spearman"} of predicted vs true values, both [N]."""
    p, t = as_array(pred, "pred", 1), as_array(target, "target", 1)
    if p.shape != t.shape:
        raise JepalabError(f"pred shape {p.shape} != target shape {t.shape}")
    return {"mae": float(np.abs(p - t).mean()), "rmse": float(np.sqrt(((p - t) ** 2).mean())),
            "spearman": spearman(p, t)}


def value_features(Z: ArrayLike, Z_goal: ArrayLike) -> np.ndarray:
    """[z, z_goal]: Z [N, D] and Z_goal [N, D] (or [D], one goal for all rows) -> [N, 2D]."""
    z = as_array(Z, "Z", 2)
    g = as_array(Z_goal, "Z_goal", (1, 2))
    g = np.broadcast_to(g, z.shape) if g.ndim == 1 and g.shape[0] == z.shape[1] else g
    if g.shape != z.shape:
        raise JepalabError(f"Z_goal shape {g.shape} does not match Z shape {z.shape}")
    return np.concatenate([z, g], axis=1)


@dataclass
class ValueHead:
    """A probe on [z, z_goal] that predicts a scalar value (e.g. steps to goal)."""

    probe: Probe

    def predict(self, Z: ArrayLike, Z_goal: ArrayLike) -> np.ndarray:
        """Z [N, D], Z_goal [N, D] or [D] -> values [N]."""
        return self.probe.predict(value_features(Z, Z_goal))[:, 0]

    def evaluate(self, Z: ArrayLike, Z_goal: ArrayLike, target: ArrayLike) -> dict[str, float]:
        return value_metrics(self.predict(Z, Z_goal), target)

    def save(self, path: str | Path) -> Path:
        return self.probe.save(path)

    @classmethod
    def load(cls, path: str | Path) -> ValueHead:
        probe = Probe.load(path)
        if probe.out_dim != 1 or probe.in_dim % 2:
            raise JepalabError(f"{path}: not a value head (in {probe.in_dim}, out {probe.out_dim})")
        return cls(probe)


def fit_value_head(Z: ArrayLike, Z_goal: ArrayLike, target: ArrayLike, head: str = "mlp",
                   seed: int = 0, groups: ArrayLike | None = None, ridge: float = 1e-3,
                   **mlp_kwargs: Any) -> ValueHead:
    """Fit a value head: Z [N, D], Z_goal [N, D] or [D], target [N] (steps-to-goal or return).

    head="linear" (ridge) or "mlp" (`fit_mlp_probe`, extra keyword arguments go to it; `groups`
    [N] keeps whole episodes together in its early-stopping split).
    """
    x = value_features(Z, Z_goal)
    y = as_array(target, "target", 1)
    if head == "linear":
        return ValueHead(fit_linear_probe(x, y, ridge=ridge, names=["value"]))
    if head == "mlp":
        return ValueHead(fit_mlp_probe(x, y, seed=seed, groups=groups, names=["value"],
                                       **mlp_kwargs))
    raise JepalabError(f"value head: unknown {head!r} (choose linear or mlp)")


class BudgetPoint(NamedTuple):
    budget: int  # labelled trials (episodes, or rows without groups)
    mean_error: float  # mean over seeds of the test error (mean RMSE or MAE over variables)
    ci_low: float  # Student-t confidence interval of that mean (NaN with a single seed)
    ci_high: float


def _t_cdf(x: float, df: int) -> float:
    # P(T <= x) for x >= 0: 0.5 + integral of the t density over [0, x] (Simpson, fine grid);
    # scipy is not a dependency and the density is smooth, so this is accurate to ~1e-9.
    n = 4000
    u = np.linspace(0.0, x, n + 1)
    logc = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    f = np.exp(logc - (df + 1) / 2 * np.log1p(u**2 / df))
    h = x / n
    return 0.5 + h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())


def t_quantile(q: float, df: int) -> float:
    """The q-quantile (0.5 < q < 1) of Student's t with df degrees of freedom (bisection)."""
    if not 0.5 < q < 1 or df < 1:
        raise JepalabError(f"t_quantile: need 0.5 < q < 1 and df >= 1, got q={q}, df={df}")
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < q:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < q else (lo, mid)
    return (lo + hi) / 2


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean; (mean, NaN, NaN) for one value."""
    v = np.asarray(values, dtype=np.float64)
    m = float(v.mean())
    if len(v) < 2:
        return m, math.nan, math.nan
    half = t_quantile(0.5 + level / 2, len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return m, m - half, m + half


def _fit_predict(head: str, z: np.ndarray, y: np.ndarray, z_test: np.ndarray, seed: int,
                 groups: np.ndarray | None, head_kwargs: dict[str, Any]) -> np.ndarray:
    if head == "linear":
        return fit_linear_probe(z, y, **head_kwargs).predict(z_test)
    if head == "mlp":
        return fit_mlp_probe(z, y, seed=seed, groups=groups, **head_kwargs).predict(z_test)
    from jepalab.eval.retrieval import knn_probe  # faiss only when asked for

    return knn_probe(z, y, z_test, **head_kwargs)


def label_efficiency(Z_train: ArrayLike, Y_train: ArrayLike, Z_test: ArrayLike,
                     Y_test: ArrayLike, budgets: Sequence[int] = (10, 20, 50, 100, 200, 500),
                     seeds: Sequence[int] = (0, 1, 2), head: str = "linear",
                     groups: ArrayLike | None = None, metric: str = "rmse", level: float = 0.95,
                     head_kwargs: dict[str, Any] | None = None) -> list[BudgetPoint]:
    """Test error against the number of labelled training trials.

    Z_train [N, D], Y_train [N, S] (or [N]); Z_test [M, D], Y_test [M, S]. A trial is an episode
    (rows sharing a `groups` [N] id) or, without groups, a row. For each budget b and seed, a
    probe of kind `head` ("linear", "mlp" or "knn"; options in `head_kwargs`) is fitted on the
    first b trials of the seed's permutation and scored on the whole test set by `metric`
    ("rmse" or "mae", averaged over state variables, scene units). Budgets larger than the number
    of trials are dropped. Returns one BudgetPoint per kept budget, ascending.
    """
    if head not in HEADS:
        raise JepalabError(f"label_efficiency head: unknown {head!r} (choose from {HEADS})")
    if metric not in ("rmse", "mae"):
        raise JepalabError(f"label_efficiency metric: unknown {metric!r} (choose rmse or mae)")
    if not seeds:
        raise JepalabError("label_efficiency seeds: need at least one seed")
    z = as_array(Z_train, "Z_train", 2)
    y = as_array(Y_train, "Y_train", (1, 2))
    z_test, y_test = as_array(Z_test, "Z_test", 2), as_array(Y_test, "Y_test", (1, 2))
    if len(y) != len(z) or len(y_test) != len(z_test):
        raise JepalabError(f"rows: Z_train {len(z)} vs Y_train {len(y)}, Z_test {len(z_test)} "
                           f"vs Y_test {len(y_test)}")
    g = np.arange(len(z)) if groups is None else np.asarray(groups)
    if g.shape != (len(z),):
        raise JepalabError(f"groups: expected shape ({len(z)},), got {g.shape}")
    trials = np.unique(g)
    kept = sorted({int(b) for b in budgets if 1 <= int(b) <= len(trials)})
    if not kept:
        raise JepalabError(f"budgets {list(budgets)}: none in [1, {len(trials)}] (trials)")
    head_kwargs = dict(head_kwargs or {})
    errors: dict[int, list[float]] = {b: [] for b in kept}
    for seed in seeds:
        order = np.random.default_rng(seed).permutation(trials)
        for b in kept:
            rows = np.flatnonzero(np.isin(g, order[:b]))
            if len(rows) < 2:
                raise JepalabError(f"budget {b}: only {len(rows)} labelled row(s); need >= 2")
            pred = _fit_predict(head, z[rows], y[rows], z_test, seed,
                                g[rows] if groups is not None else None, head_kwargs)
            errors[b].append(regression_metrics(pred, y_test)[f"{metric}_mean"])
    return [BudgetPoint(b, *mean_ci(errors[b], level)) for b in kept]


def area_under_curve(points: Sequence[BudgetPoint | tuple[float, ...]]) -> float:
    """Normalised area under an error-vs-budget curve on a log-budget axis.

    Trapezoid rule over x = ln(budget), divided by ln(max budget / min budget): the mean error
    over the log-budget range, in the error's own units (lower is better). Each doubling of the
    budget weighs the same, so small budgets are not drowned out by the long tail. Curves are
    comparable only over the same budgets. A single point returns its error.
    """
    pts = sorted((float(p[0]), float(p[1])) for p in points)
    if not pts:
        raise JepalabError("area_under_curve: no points")
    b = np.array([p[0] for p in pts])
    e = np.array([p[1] for p in pts])
    if (b <= 0).any() or not np.isfinite(e).all() or len(np.unique(b)) != len(b):
        raise JepalabError("area_under_curve: budgets must be distinct and > 0, errors finite")
    if len(pts) == 1:
        return float(e[0])
    x = np.log(b)
    return float(((x[1:] - x[:-1]) * (e[1:] + e[:-1]) / 2).sum() / (x[-1] - x[0]))
