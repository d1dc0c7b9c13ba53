"""Offline world-model diagnostics on held-out episodes (the val split recorded in the checkpoint).

- `rollout_error_vs_horizon`: latent error of an open-loop rollout with the true actions, per
  step h = 1..H, next to the "nothing moves" reference (z_h predicted as z_0), optionally the
  state error of a probe applied to the predicted latents.
- `true_action_rank`: for held-out transitions, the energy d(rollout(z_t, a), z_{t+h}) of the
  true action sequence ranked among random sequences drawn uniformly in the action bounds: is the
  energy minimum at the true action? (V-JEPA 2-AC reports it is not always.)
- `plot_diagnostics`: both as one PNG.

Windows (episode, t) are drawn without replacement from a seeded numpy generator. Windows of one
episode are correlated, so 95 % intervals are percentile bootstraps over episodes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from jepalab.errors import JepalabError
from jepalab.io import atomic_path

Probe = Callable[[np.ndarray], np.ndarray]  # latents [N, ...] -> states [N, S]
BOOTSTRAP_DRAWS = 1000


def _episodes(wm: Any, store: Any, episodes: Sequence[int] | np.ndarray | None) -> np.ndarray:
    """The given episodes, or the checkpoint's val split if `store` is its training data."""
    if episodes is None and store.fingerprint() != wm.manifest["data_fingerprint"]:
        raise JepalabError(
            f"diagnostics: {store.path} is not the dataset this world model was trained on (data "
            "fingerprint differs), so its val split does not apply; pass episodes=..."
        )
    eps = np.asarray(wm.val_episodes if episodes is None else episodes, np.int64)
    if eps.size == 0:
        raise JepalabError(
            "diagnostics: no episodes to evaluate (the checkpoint's val split is "
            "empty; pass episodes=...)"
        )
    return eps


def _windows(
    store: Any, episodes: np.ndarray, horizon: int, n: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """n windows of horizon+1 frames -> obs uint8 [n, H+1, h, w, 3], actions [n, H, A],
    states [n, H+1, S], episode [n]."""
    from jepalab.data.loaders import TransitionDataset

    if horizon < 1 or n < 1:
        raise JepalabError(
            f"diagnostics: horizon and sample count must be >= 1, got {horizon}, {n}"
        )
    ds = TransitionDataset(store, horizon, episodes=episodes)
    pick = np.sort(rng.choice(len(ds), size=min(n, len(ds)), replace=False))
    where = [ds.locate(int(i)) for i in pick]
    items = [store.transition(e, t, horizon) for e, t in where]
    return {key: np.stack([it[key] for it in items]) for key in ("obs", "actions", "states")} | {
        "episode": np.array([e for e, _ in where], np.int64)
    }


def _state0(wm: Any, states: np.ndarray) -> Tensor | None:
    """The start state when the predictor takes states, else None."""
    return torch.from_numpy(states[:, 0]).to(wm.device) if wm.state_dim else None


def _bootstrap(
    values: np.ndarray, groups: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """values [n, K] -> (mean [K], ci95 [K, 2]): percentile bootstrap resampling episodes."""
    mean = values.mean(0)
    ids, inv = np.unique(groups, return_inverse=True)
    if len(ids) < 2:
        return mean, np.stack([mean, mean], -1)  # one episode: no spread to resample
    sums = np.zeros((len(ids), values.shape[1]))
    np.add.at(sums, inv, values)
    counts = np.bincount(inv).astype(float)
    draw = rng.integers(0, len(ids), size=(BOOTSTRAP_DRAWS, len(ids)))
    boot = sums[draw].sum(1) / counts[draw].sum(1)[:, None]  # [draws, K]
    return mean, np.percentile(boot, [2.5, 97.5], axis=0).T


def _summary(values: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    mean, ci = _bootstrap(values, groups, rng)
    return {"mean": mean.tolist(), "ci95": ci.tolist()}


def rollout_error_vs_horizon(
    wm: Any,
    store: Any,
    episodes: Sequence[int] | np.ndarray | None = None,
    horizon: int = 8,
    n_windows: int = 256,
    seed: int = 0,
    probe: Probe | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Open-loop rollout error per step on held-out windows (default: wm.val_episodes).

    Returns {"horizon": [1..H], "l1", "l2", "copy_l1": {"mean": [H], "ci95": [H x [lo, hi]]},
    and with a probe "state_error" (Euclidean, probe(predicted latents) vs true states) and
    "state_error_encoded" (probe(encoded true frames), the probe's own floor); "n_windows",
    "n_episodes", "episodes", "seed"}. l1/l2: mean |.| / (.)^2 over latent elements."""
    rng = np.random.default_rng(seed)
    eps = _episodes(wm, store, episodes)
    w = _windows(store, eps, horizon, n_windows, rng)
    l1: list[Tensor] = []
    l2: list[Tensor] = []
    copy: list[Tensor] = []
    st_pred: list[np.ndarray] = []
    st_true: list[np.ndarray] = []
    dev = wm.device
    with torch.inference_mode():
        for i in range(0, len(w["episode"]), batch_size):
            sl = slice(i, i + batch_size)
            z = wm.encode_frames(w["obs"][sl], batch_size)
            acts = torch.from_numpy(w["actions"][sl]).to(dev)
            pred = wm.rollout(z[:, 0], acts, _state0(wm, w["states"][sl]))
            err = (pred - z[:, 1:]).flatten(2)
            l1.append(err.abs().mean(-1))
            l2.append(err.pow(2).mean(-1))
            copy.append((z[:, :1] - z[:, 1:]).flatten(2).abs().mean(-1))
            if probe is not None:
                st = w["states"][sl, 1:]
                for latents, out in ((pred, st_pred), (z[:, 1:], st_true)):
                    flat = latents.flatten(0, 1).cpu().numpy()
                    dec = np.asarray(probe(flat)).reshape(*st.shape[:2], -1)
                    out.append(np.linalg.norm(dec - st, axis=-1))
    groups = w["episode"]
    result: dict[str, Any] = {"horizon": list(range(1, horizon + 1))}
    for name, parts in (("l1", l1), ("l2", l2), ("copy_l1", copy)):
        result[name] = _summary(torch.cat(parts).cpu().numpy(), groups, rng)
    if probe is not None:
        result["state_error"] = _summary(np.concatenate(st_pred), groups, rng)
        result["state_error_encoded"] = _summary(np.concatenate(st_true), groups, rng)
    return result | {
        "n_windows": len(groups),
        "n_episodes": len(np.unique(groups)),
        "episodes": eps.tolist(),
        "seed": seed,
    }


def _bounds(
    value: float | Sequence[float] | None, data: np.ndarray, reduce: Callable, name: str
) -> np.ndarray:
    """Per-dimension action bound: given (scalar or [A]) or from the data ([n, H, A])."""
    a = data.shape[-1]
    if value is None:
        return reduce(data.reshape(-1, a), axis=0).astype(np.float32)
    arr = np.asarray(value, np.float32)
    arr = np.full(a, arr, np.float32) if arr.ndim == 0 else arr
    if arr.shape != (a,) or not np.isfinite(arr).all():
        raise JepalabError(f"true_action_rank.{name}: a float or {a} finite floats, got {value!r}")
    return arr


def true_action_rank(
    wm: Any,
    store: Any,
    episodes: Sequence[int] | np.ndarray | None = None,
    n_candidates: int = 64,
    horizon: int = 1,
    seed: int = 0,
    n_transitions: int = 256,
    action_low: float | Sequence[float] | None = None,
    action_high: float | Sequence[float] | None = None,
    chunk: int = 16,
) -> dict[str, Any]:
    """Rank of the true action sequence's energy among `n_candidates` uniform random ones.

    Energy: mean |rollout(z_t, a)[h] - z_{t+h}| over latent elements (the planner's L1, final
    step). Bounds default to the per-dimension min/max of the evaluated true actions. Rank 1 =
    lowest energy; ties count half. Returns {"ranks" [n], "normalized_ranks" [n] ((rank-1)/C:
    0 best, ~U[0, 1] for an energy blind to actions), "mean_normalized_rank" (+ "_ci95"),
    "frac_rank1", "frac_top5pct", "energy_true_mean", "energy_random_median_mean",
    "action_bounds", "horizon", "n_candidates", "n", "episodes", "seed"}."""
    if n_candidates < 1:
        raise JepalabError(f"true_action_rank.n_candidates: must be >= 1, got {n_candidates}")
    rng = np.random.default_rng(seed)
    eps = _episodes(wm, store, episodes)
    w = _windows(store, eps, horizon, n_transitions, rng)
    low = _bounds(action_low, w["actions"], np.min, "action_low")
    high = _bounds(action_high, w["actions"], np.max, "action_high")
    n, a_dim, c1 = len(w["episode"]), w["actions"].shape[-1], n_candidates + 1
    cands = rng.uniform(low, high, size=(n, n_candidates, horizon, a_dim)).astype(np.float32)
    acts = np.concatenate([w["actions"][:, None], cands], 1)  # [n, C+1, H, A], true first
    dev = wm.device
    energies = []
    with torch.inference_mode():
        for i in range(0, n, chunk):
            sl = slice(i, i + chunk)
            z = wm.encode_frames(w["obs"][sl][:, [0, horizon]], chunk * 2)  # z_t, z_{t+h}
            b = z.shape[0]
            s0 = _state0(wm, w["states"][sl])
            pred = wm.rollout(
                z[:, 0].repeat_interleave(c1, 0),
                torch.from_numpy(acts[sl].reshape(b * c1, horizon, a_dim)).to(dev),
                s0.repeat_interleave(c1, 0) if s0 is not None else None,
            )[:, -1]
            diff = pred.reshape(b, c1, -1) - z[:, 1].reshape(b, 1, -1)
            energies.append(diff.abs().mean(-1).cpu().numpy())
    e = np.concatenate(energies)  # [n, C+1]
    true, rand = e[:, :1], e[:, 1:]
    ranks = 1.0 + (rand < true).sum(1) + 0.5 * (rand == true).sum(1)
    norm = (ranks - 1.0) / n_candidates
    _, ci = _bootstrap(norm[:, None], w["episode"], rng)
    return {
        "ranks": ranks.tolist(),
        "normalized_ranks": norm.tolist(),
        "mean_normalized_rank": float(norm.mean()),
        "mean_normalized_rank_ci95": ci[0].tolist(),
        "frac_rank1": float((ranks == 1.0).mean()),
        "frac_top5pct": float((norm <= 0.05).mean()),
        "energy_true_mean": float(true.mean()),
        "energy_random_median_mean": float(np.median(rand, 1).mean()),
        "action_bounds": {"low": low.tolist(), "high": high.tolist()},
        "horizon": horizon,
        "n_candidates": n_candidates,
        "n": n,
        "episodes": eps.tolist(),
        "seed": seed,
    }


def plot_diagnostics(results: dict[str, Any], out_png: str | Path) -> Path:
    """results {"rollout": rollout_error_vs_horizon(...), "rank": true_action_rank(...)} (either
    may be missing) -> a two-panel PNG written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ro = results.get("rollout")
    if ro:
        h = np.asarray(ro["horizon"])
        for key, label, style in (("l1", "world model", "-"), ("copy_l1", "copy z_0", "--")):
            mean, ci = np.asarray(ro[key]["mean"]), np.asarray(ro[key]["ci95"])
            ax1.plot(h, mean, style, marker="o", label=label)
            ax1.fill_between(h, ci[:, 0], ci[:, 1], alpha=0.25)
        ax1.set_xlabel("rollout step h")
        ax1.set_ylabel("latent L1 error")
        ax1.set_title(f"rollout error ({ro['n_windows']} windows, {ro['n_episodes']} episodes)")
        ax1.legend()
    else:
        ax1.text(0.5, 0.5, "rollout error not computed", ha="center", va="center")
    rk = results.get("rank")
    if rk:
        ax2.hist(rk["normalized_ranks"], bins=20, range=(0.0, 1.0), color="tab:green")
        ax2.axhline(rk["n"] / 20, color="grey", ls="--", label="action-blind energy")
        ax2.set_xlabel("normalised rank of the true action (0 = lowest energy)")
        ax2.set_ylabel("transitions")
        ax2.set_title(
            f"true-action rank: mean {rk['mean_normalized_rank']:.2f}, "
            f"top-1 {rk['frac_rank1']:.0%} (C={rk['n_candidates']}, h={rk['horizon']})"
        )
        ax2.legend()
    else:
        ax2.text(0.5, 0.5, "true-action rank not computed", ha="center", va="center")
    fig.tight_layout()
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out
