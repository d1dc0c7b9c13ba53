"""Receding-horizon control: plan in latent space, execute a few actions, re-plan.

    res = run_episode(env, wm.encode, wm.unroll_from, cfg, torch.Generator().manual_seed(0))

The env must already be reset (the caller owns reset seeds). The goal image is encoded once;
every `replan_every` steps the current frame is encoded, a plan of `cfg.horizon` actions is
made (warm-started from the previous plan shifted by the executed steps when
`cfg.warm_start`), and its first `replan_every` actions are executed. The episode stops on
success, termination or truncation, or after `max_steps`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from jepalab.io import atomic_path
from jepalab.planning.base import (
    Cost,
    PlannerConfig,
    PlanningError,
    goal_energy,
    plan,
    shift_plan,
)

Encode = Callable[[Tensor], Tensor]  # uint8 [B, H, W, 3] -> latents [B, ...]
UnrollFrom = Callable[[Tensor, Tensor], Tensor]  # z0 [1, ...], actions [S, H, A] -> [S, H, ...]


@dataclass
class EpisodeResult:
    """One MPC episode.

    steps: env steps taken.  final_distance: info["distance"] after the last step.
    plan_time_s: total planning wall time; plan_time_per_step_s = plan_time_s / steps (amortised
    over env steps, so replan_every=k divides it by about k); replans: plan calls made.
    energies: final energy of each plan, in order.  frames: uint8 [H, W, 3] observations, the
    start frame first (only with record_frames).  goal_frame: the goal image.
    final_state: the observation's "state" after the last step (empty if it has none).
    """

    success: bool
    steps: int
    final_distance: float
    plan_time_s: float
    plan_time_per_step_s: float
    replans: int
    energies: list[float]
    frames: list[np.ndarray] = field(default_factory=list, repr=False)
    goal_frame: np.ndarray | None = field(default=None, repr=False)
    final_state: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no images)."""
        skip = ("frames", "goal_frame")
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


def _step_limit(env: Any, max_steps: int | None) -> int:
    if max_steps is not None:
        if not isinstance(max_steps, int) or max_steps < 1:
            raise PlanningError(f"run_episode.max_steps: must be an int >= 1, got {max_steps!r}")
        return max_steps
    limit = getattr(env.unwrapped, "max_episode_steps", None)
    if limit is None and getattr(env, "spec", None) is not None:
        limit = env.spec.max_episode_steps
    if limit is None:
        raise PlanningError("run_episode.max_steps: required, the env declares no step limit")
    return int(limit)


def run_episode(
    env: Any,
    encode: Encode,
    unroll_from: UnrollFrom,
    cfg: PlannerConfig,
    generator: torch.Generator,
    replan_every: int = 1,
    max_steps: int | None = None,
    record_frames: bool = False,
    obs: dict[str, np.ndarray] | None = None,
    metric: str = "l1",
    weights: str | Tensor = "final",
    energy: Callable[[Tensor], Cost] | None = None,
) -> EpisodeResult:
    """Run one goal-reaching episode from the env's current state (see module docstring).

    obs: the observation returned by the caller's `env.reset`; if None the start frame is
    `env.render()` (jepalab scenes render exactly the last observation's pixels).
    metric, weights: the energy, `goal_energy(z_goal, metric, weights)`. With weights="final"
    a plan that reaches the goal inside the horizon is free to dawdle first (the receding
    horizon then keeps postponing); "all" rewards getting close early. Actions are moved to
    the host as float32 numpy arrays for `env.step`.
    energy: another energy, goal latent -> cost callable (e.g. a cost-to-go); replaces
    metric and weights.
    """
    if not isinstance(replan_every, int) or not 1 <= replan_every <= cfg.horizon:
        raise PlanningError(
            f"run_episode.replan_every: must be an int in 1..horizon={cfg.horizon}, "
            f"got {replan_every!r}"
        )
    limit = _step_limit(env, max_steps)
    goal_frame = np.asarray(env.unwrapped.render_goal(), dtype=np.uint8)
    pixels = np.asarray(obs["pixels"] if obs is not None else env.render(), dtype=np.uint8)
    with torch.inference_mode():
        z_goal = encode(torch.from_numpy(goal_frame.copy())[None])
        cost = energy(z_goal) if energy is not None else goal_energy(z_goal, metric, weights)
    frames = [pixels] if record_frames else []
    energies: list[float] = []
    plan_time, steps, success, distance = 0.0, 0, False, float("nan")
    ob: dict[str, Any] = {}
    prev: Tensor | None = None
    queue: list[np.ndarray] = []
    while steps < limit:
        if not queue:
            with torch.inference_mode():
                z0 = encode(torch.from_numpy(pixels.copy())[None])
            init = shift_plan(prev, replan_every) if cfg.warm_start and prev is not None else None
            res = plan(partial(unroll_from, z0), cost, cfg, generator, init)
            plan_time += res.time_s
            energies.append(res.final_energy)
            prev = res.actions
            queue = list(res.actions[:replan_every].cpu().numpy().astype(np.float32))
        ob, _, terminated, truncated, info = env.step(queue.pop(0))
        steps += 1
        pixels = np.asarray(ob["pixels"], dtype=np.uint8)
        if record_frames:
            frames.append(pixels)
        success, distance = bool(info["is_success"]), float(info["distance"])
        if success or terminated or truncated:
            break
    return EpisodeResult(
        success=success,
        steps=steps,
        final_distance=distance,
        plan_time_s=plan_time,
        plan_time_per_step_s=plan_time / max(steps, 1),
        replans=len(energies),
        energies=energies,
        frames=frames,
        goal_frame=goal_frame,
        final_state=np.asarray(ob.get("state", ()), np.float64).ravel().tolist(),
    )


def write_gif(
    frames: Sequence[np.ndarray],
    goal_frame: np.ndarray,
    path: str | Path,
    extra_panels: Sequence[Sequence[np.ndarray]] | None = None,
    fps: int = 10,
    scale: int = 2,
) -> Path:
    """Write an animated GIF: observation | goal | extra panels, side by side (atomic write).

    frames: uint8 [H, W, 3] per step.  extra_panels: panels, each one uint8 [H, W, 3] image
    per frame (e.g. decoded predictions).  scale: nearest-neighbour upscaling factor.
    """
    from PIL import Image

    if len(frames) == 0:
        raise PlanningError(f"write_gif: no frames to write to {path}")
    panels = list(extra_panels or [])
    for j, p in enumerate(panels):
        if len(p) != len(frames):
            raise PlanningError(
                f"write_gif.extra_panels[{j}]: has {len(p)} images, need one per frame "
                f"({len(frames)})"
            )
    goal = np.asarray(goal_frame, dtype=np.uint8)
    images = []
    for i, f in enumerate(frames):
        row = [np.asarray(f, np.uint8), goal, *(np.asarray(p[i], np.uint8) for p in panels)]
        if any(r.shape != row[0].shape or r.ndim != 3 for r in row):
            raise PlanningError(
                f"write_gif: frame {i} panels must share one [H, W, 3] shape, got "
                f"{[r.shape for r in row]}"
            )
        sep = np.full((row[0].shape[0], 2, 3), 255, np.uint8)
        strip = np.concatenate([x for r in row for x in (r, sep)][:-1], axis=1)
        strip = strip.repeat(scale, 0).repeat(scale, 1)
        images.append(Image.fromarray(strip))
    path = Path(path)
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=int(1000 / fps), loop=0)
    return path
