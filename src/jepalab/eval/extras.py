"""The card's measured extras for an evaluation: what each arm's latents carry, beyond control.

For run 0 of each arm, on the held-out (val) episodes of the world model's training data:
latent rollout error vs horizon, a label-efficiency curve (linear probe of the true state from
frozen latents, RMSE vs labelled episodes), latents for a 2-D PCA coloured by the first state
variable, and, for the candidate, the latent dimensions where one-step prediction errors spike
(the residual diagnostics behind the card's failure sentence). Frames come from the panel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from jepalab.data.store import TrajectoryStore
from jepalab.eval.downstream import label_efficiency
from jepalab.eval.residuals import latent_residuals
from jepalab.eval.rollout import rollout_error_vs_horizon

BUDGETS = (2, 5, 10, 20, 50)


def _latents(wm: Any, store: TrajectoryStore, episodes: list[int], every: int = 4
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled latents [N, D], states [N, S] and episode ids [N] of every `every`-th frame."""
    zs, ys, gs = [], [], []
    for e in episodes:
        ep = store.episode(e)
        zs.append(wm.encode_frames(ep["frames"][::every], flat=True).float().numpy())
        ys.append(np.asarray(ep["states"][::every], np.float64))
        gs.append(np.full(len(zs[-1]), e))
    return np.concatenate(zs), np.concatenate(ys), np.concatenate(gs)


def card_extras(world_models: dict[str, Any], horizon: int, seed: int = 0) -> dict[str, Any]:
    """world_models {arm: WorldModel} (all trained on one dataset) -> extras for `write_card`."""
    out: dict[str, Any] = {"rollout_error": {}, "label_efficiency": {}, "latents": {},
                           "label_efficiency_metric": "state probe RMSE (scene units)",
                           "latent_colour_name": "state[0] (agent x)"}
    for arm, wm in world_models.items():
        store = TrajectoryStore.open(wm.manifest["data_path"], verify=False)
        val = wm.val_episodes
        train = list(wm.manifest["split"]["train_episodes"])[: max(BUDGETS)]
        roll = rollout_error_vs_horizon(wm, store, horizon=horizon, n_windows=128, seed=seed)
        out["rollout_error"][arm] = list(zip(roll["horizon"], roll["l1"]["mean"]))
        z_tr, y_tr, g_tr = _latents(wm, store, train)
        z_te, y_te, _ = _latents(wm, store, val)
        pts = label_efficiency(z_tr, y_tr, z_te, y_te, budgets=BUDGETS, groups=g_tr,
                               seeds=(0, 1, 2))
        out["label_efficiency"][arm] = [(p[0], p[1]) for p in pts]
        out["latents"][arm] = (z_te[:400], y_te[:400, 0])
        if arm == "candidate":
            out["failure_residuals"] = {"dims": _residual_spikes(wm, store, val, seed)}
    return out


def _residual_spikes(wm: Any, store: TrajectoryStore, episodes: list[int], seed: int
                     ) -> list[int]:
    from jepalab.eval.rollout import _state0, _windows

    w = _windows(store, np.asarray(episodes), 1, 128, np.random.default_rng(seed))
    z = wm.encode_frames(w["obs"])
    with torch.inference_mode():
        pred = wm.rollout(z[:, 0], torch.from_numpy(w["actions"]), _state0(wm, w["states"]))
    rep = latent_residuals(pred[:, 0].flatten(1).float(), z[:, 1].flatten(1).float())
    return [int(d) for d in rep.spikes[:5]]


def save_frames(path: Path, frames: list[np.ndarray], keep: int = 8) -> None:
    """Up to `keep` evenly spaced frames of an episode as one uint8 .npy (atomic)."""
    from jepalab.io import atomic_path

    idx = np.linspace(0, len(frames) - 1, min(keep, len(frames))).round().astype(int)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.stack([np.asarray(frames[i], np.uint8) for i in idx]))
