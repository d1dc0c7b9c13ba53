"""Closed-loop control with a latent world model: MPC episodes in a scene, summarised.

The same function serves `jepalab plan` and every planning cell of an evaluation panel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from jepalab.config import ControllerConfig, PlanConfig, SceneConfig
from jepalab.envs import make
from jepalab.errors import JepalabError
from jepalab.eval.extras import save_frames
from jepalab.eval.stats import wilson_ci
from jepalab.io import atomic_write_json
from jepalab.planning import EpisodeCorrection, PlannerConfig, run_episode, write_gif
from jepalab.planning.mpc import UnrollFrom


def planner_config(ctrl: ControllerConfig, action_space: Any) -> PlannerConfig:
    """The controller's planner settings completed with the scene's action bounds."""
    params = {"action_dim": int(action_space.shape[0]),
              "action_low": float(np.min(action_space.low)),
              "action_high": float(np.max(action_space.high)), **ctrl.planner}
    try:
        return PlannerConfig(**params)
    except TypeError as e:
        raise JepalabError(f"controller.planner: {e}") from None


@dataclass
class EpisodeRow:
    episode: int
    reset_seed: int
    success: bool
    steps: int
    final_distance: float
    plan_time_s: float
    plan_time_per_step_s: float
    final_state: list[float]  # the scene's state after the last step


def run_episodes(world_model: Any, scene: SceneConfig, ctrl: ControllerConfig, seeds: list[int],
                 perturb: str | None = None, severity: int = 1, perturb_seed: int = 0,
                 gif_dir: Path | None = None, gifs: int = 0, progress: bool = True,
                 frames_path: Path | None = None,
                 model: Callable[[Any], UnrollFrom] | None = None) -> list[EpisodeRow]:
    """One MPC episode per reset seed; GIFs of the first `gifs` episodes under gif_dir, a few
    frames of the first episode as frames_path (.npy) for the card. model: scene -> the
    planner's unroll, in place of the world model's (e.g. the scene's own dynamics on encoded
    frames, to tell the model's error from the energy's); it is taken as exact, so
    `controller.correct` is not applied to it (its unroll need not start from the latent it is
    given, which the correction's one-step residuals assume)."""
    gifs = max(gifs, int(frames_path is not None))
    env = make(scene.name, image_size=scene.image_size, perturb=perturb, severity=severity,
               perturb_seed=perturb_seed, **scene.kwargs)
    cfg = planner_config(ctrl, env.action_space)
    energy = world_model.value_energy(ctrl.weights) if ctrl.metric == "value" else None
    correct = ctrl.correct if model is None else None  # a given model is exact
    if correct and world_model.predictor.context != 1:
        raise JepalabError("controller.correct: needs a Markov world model (predictor.arch "
                           f"mlp or conv); this one attends to {world_model.predictor.context} "
                           "frames")
    rows = []
    bar = tqdm(seeds, desc=f"plan {scene.name}{'+' + perturb if perturb else ''}",
               disable=not progress, unit="ep")
    for i, seed in enumerate(bar):
        obs, _ = env.reset(seed=seed)
        gen = torch.Generator().manual_seed(seed)
        with torch.inference_mode():
            unroll = model(env) if model is not None else world_model.unroll_from
            fix = EpisodeCorrection(unroll, correct) if correct else None
            res = run_episode(env, world_model.encode, unroll, cfg, gen,
                              replan_every=ctrl.replan_every, max_steps=ctrl.max_steps,
                              record_frames=i < gifs, obs=obs, metric=ctrl.metric,
                              weights=ctrl.weights, energy=energy, correction=fix)
        if i < gifs and gif_dir is not None:
            write_gif(res.frames, res.goal_frame, gif_dir / f"episode_{seed}.gif")
        if i == 0 and frames_path is not None:
            save_frames(frames_path, [*res.frames, res.goal_frame])
        rows.append(EpisodeRow(i, seed, bool(res.success), int(res.steps),
                               float(res.final_distance), float(res.plan_time_s),
                               float(res.plan_time_per_step_s), res.final_state))
        bar.set_postfix(success=f"{np.mean([r.success for r in rows]):.2f}")
    env.close()
    return rows


def summarize(rows: list[EpisodeRow]) -> dict[str, Any]:
    """Success rate with a Wilson 95 % interval, mean final distance, steps and planning time."""
    n = len(rows)
    p, lo, hi = wilson_ci(sum(r.success for r in rows), n)
    return {"episodes": n, "success_rate": float(p), "success_ci95": [float(lo), float(hi)],
            "final_distance": float(np.mean([r.final_distance for r in rows])),
            "steps": float(np.mean([r.steps for r in rows])),
            "plan_time_per_step_s": float(np.mean([r.plan_time_per_step_s for r in rows])),
            "plan_time_per_episode_s": float(np.mean([r.plan_time_s for r in rows]))}


def plan(cfg: PlanConfig, progress: bool = True) -> dict[str, Any]:
    """`jepalab plan`: run cfg.episodes MPC episodes, write summary.json, episodes.json, GIFs."""
    from jepalab.train.worldmodel import load_world_model

    wm = load_world_model(cfg.world_model)
    out = Path(cfg.out_dir)
    seeds = [cfg.seed + e for e in range(cfg.episodes)]
    rows = run_episodes(wm, cfg.scene, cfg.controller, seeds, cfg.perturb, cfg.severity,
                        gif_dir=out / "gifs", gifs=cfg.gifs, progress=progress)
    summary = {"world_model": cfg.world_model, "scene": cfg.scene.name, "perturb": cfg.perturb,
               "severity": cfg.severity, **summarize(rows)}
    atomic_write_json(out / "episodes.json", [r.__dict__ for r in rows])
    atomic_write_json(out / "summary.json", summary)
    return summary
