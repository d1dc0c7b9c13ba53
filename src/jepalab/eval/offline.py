"""Offline downstream tasks of a contract, scored per evaluation episode like planning episodes.

Every task gives each evaluation episode a continuous error and passes it when the error is at
most the task's `tolerance`, so all tasks share the episode store, the Wilson CIs, the paired
rules and the card. Heads are fitted on the world model's training episodes (clean data, frozen
latents); evaluation episodes are collected per condition × evaluation seed with the same reset
seeds for both arms (one dataset, shared), so outcomes are paired.

  state_estimation  linear probe latent -> state; error: mean Euclidean state error over the
                    episode's frames (scene units)
  rollout           open-loop rollout of the action-conditioned predictor over rollout_horizon
                    from every window start, probed; error: mean Euclidean error of the probed
                    final state (scene units)
  retrieval         exact FAISS index over training latents; error: mean state distance of each
                    frame's k nearest training frames (scene units)
  value             linear value head on [z, z_goal] predicting steps to the goal (the first
                    success frame; episodes that never succeed are skipped); error: mean
                    absolute error in steps
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from jepalab.data.store import TrajectoryStore
from jepalab.errors import JepalabError
from jepalab.eval.probes import Probe, fit_linear_probe

TASKS = ("state_estimation", "rollout", "retrieval", "value")
MIX = "mixture:0.5"
DEFAULTS: dict[str, dict[str, Any]] = {  # policy: what collects the evaluation episodes
    "state_estimation": {"tolerance": 0.05, "policy": MIX},
    "rollout": {"tolerance": 0.1, "policy": MIX},
    "retrieval": {"tolerance": 0.1, "k": 5, "policy": MIX},
    "value": {"tolerance": 5.0, "policy": "expert"},  # steps-to-goal needs reached goals
}
_HEADS: dict[str, Heads] = {}  # per process: world-model path -> fitted heads


def task_params(task: str, params: dict[str, Any]) -> dict[str, Any]:
    if task not in TASKS:
        raise JepalabError(f"task: unknown offline task {task!r} (choose from {', '.join(TASKS)})")
    unknown = sorted(set(params) - set(DEFAULTS[task]))
    if unknown:
        raise JepalabError(f"task_params: {unknown} not used by task '{task}' (allowed: "
                           f"{', '.join(DEFAULTS[task])})")
    return {**DEFAULTS[task], **params}


def _steps_to_goal(success: np.ndarray) -> tuple[int, np.ndarray] | None:
    """(first success index g, steps g - t for t <= g), or None if the episode never succeeds."""
    hit = np.flatnonzero(np.asarray(success).astype(bool))
    if not len(hit):
        return None
    g = int(hit[0])
    return g, (g - np.arange(g + 1)).astype(np.float64)


@dataclass
class Heads:
    wm: Any
    probe: Probe
    index: Any
    states: np.ndarray  # training states [N, S], rows of the index
    value: Probe | None


def heads(wm_path: str) -> Heads:
    """Fit (once per process) the probe, index and value head of a world model's latents."""
    if wm_path in _HEADS:
        return _HEADS[wm_path]
    from jepalab.eval.downstream import value_features
    from jepalab.eval.retrieval import LatentIndex
    from jepalab.train.worldmodel import load_world_model

    wm = load_world_model(wm_path)
    store = TrajectoryStore.open(wm.manifest["data_path"], verify=False)
    zs, ys, vx, vy = [], [], [], []
    for e in wm.manifest["split"]["train_episodes"]:
        ep = store.episode(e)
        z = wm.encode_frames(ep["frames"], flat=True).double().numpy()
        zs.append(z)
        ys.append(np.asarray(ep["states"], np.float64))
        sg = _steps_to_goal(ep["success"])
        if sg is not None:
            g, steps = sg
            vx.append(value_features(z[: g + 1], z[g]))
            vy.append(steps)
    z_all, y_all = np.concatenate(zs), np.concatenate(ys)
    value = fit_linear_probe(np.concatenate(vx), np.concatenate(vy)) if vx else None
    _HEADS[wm_path] = Heads(wm, fit_linear_probe(z_all, y_all), LatentIndex(z_all), y_all, value)
    return _HEADS[wm_path]


def episode_error(task: str, params: dict[str, Any], h: Heads, ep: dict[str, Any],
                  horizon: int) -> float | None:
    """The task's error on one evaluation episode (None: the episode has nothing to score)."""
    from jepalab.eval.downstream import value_features

    frames, states = ep["frames"], np.asarray(ep["states"], np.float64)
    z = h.wm.encode_frames(frames, flat=True).double().numpy()
    if task == "state_estimation":
        return float(np.linalg.norm(h.probe.predict(z) - states, axis=1).mean())
    if task == "retrieval":
        _, idx = h.index.search(z, int(params["k"]))
        return float(np.linalg.norm(h.states[idx] - states[:, None], axis=2).mean())
    if task == "value":
        sg = _steps_to_goal(ep["success"])
        if sg is None or h.value is None:
            return None
        g, steps = sg
        pred = h.value.predict(value_features(z[: g + 1], z[g]))[:, 0]
        return float(np.abs(pred - steps).mean())
    # rollout: from every start with `horizon` actions left, roll out and probe the end state
    n = len(ep["actions"]) - horizon + 1
    if n < 1:
        return None
    z0 = h.wm.encode_frames(frames[:n])
    with torch.inference_mode():
        acts = np.stack([ep["actions"][t : t + horizon] for t in range(n)])
        pred = h.wm.rollout(z0, torch.from_numpy(acts).float(), None)[:, -1]
        pred = (pred if pred.ndim == 2 else pred.mean(1)).double().numpy()
    return float(np.linalg.norm(h.probe.predict(pred) - states[horizon : horizon + n],
                                axis=1).mean())
