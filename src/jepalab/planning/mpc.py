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


class EpisodeCorrection:
    """The model's one-step errors on this episode's executed transitions, added back inside
    every planned rollout: where the model is wrong about this scene (moves an agent into a
    wall, say), plans starting near an executed transition see what happened instead.

    Each executed step (z, a) -> z' stores the residual r = z' - model(z, a). A rollout step
    from (z_h, a_h) adds sum_i k_i r_i / max(1, sum_i k_i), with k_i = exp(-d(z_h, z_i) / (2
    scale * s) - |a_h - a_i|^2 / (2 action_scale^2)); d is the mean squared difference per
    latent number and s the median d between consecutive executed frames (one step of motion).
    Far from every executed transition the model is unchanged. For Markov (one-frame) models:
    rollouts are stepped one action at a time."""

    def __init__(self, unroll_from: UnrollFrom, scale: float = 1.0,
                 action_scale: float = 0.5) -> None:
        if scale <= 0 or action_scale <= 0:
            raise PlanningError(
                f"EpisodeCorrection: scale and action_scale must be > 0, got {scale}, "
                f"{action_scale}")
        self.unroll_from, self.scale, self.action_scale = unroll_from, scale, action_scale
        self.z: list[Tensor] = []
        self.a: list[Tensor] = []
        self.r: list[Tensor] = []
        self.moves: list[float] = []

    def observe(self, z: Tensor, action: Tensor, z_next: Tensor) -> None:
        """One executed step: z, z_next [1, ...] latents, action [A]."""
        a = action.reshape(1, 1, -1).to(z.dtype)
        self.r.append((z_next - self.unroll_from(z, a)[:, 0])[0])
        self.z.append(z[0])
        self.a.append(a[0, 0])
        self.moves.append(float(((z_next - z) ** 2).mean()))

    def unroll(self, z0: Tensor, actions: Tensor) -> Tensor:
        """The planner's unroll (z0 [1, ...], actions [S, H, A] -> [S, H, ...]), corrected."""
        if not self.r:
            return self.unroll_from(z0, actions)
        zs, rs = torch.stack(self.z).flatten(1), torch.stack(self.r).flatten(1)  # [M, D]
        acts = torch.stack(self.a)  # [M, A]
        s = max(float(np.median(self.moves)), 1e-6) * self.scale
        z = z0.expand(actions.shape[0], *z0.shape[1:])
        out = []
        for h in range(actions.shape[1]):
            a = actions[:, h]
            nxt = self.unroll_from(z, a[:, None])[:, 0]
            d = torch.cdist(z.flatten(1), zs) ** 2 / zs.shape[1]  # [S, M]
            da = torch.cdist(a.to(acts.dtype), acts) ** 2
            k = torch.exp(-d / (2 * s) - da / (2 * self.action_scale**2))
            corr = (k @ rs) / k.sum(1, keepdim=True).clamp(min=1.0)
            z = nxt + corr.view_as(nxt)
            out.append(z)
        return torch.stack(out, 1)


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
    correction: EpisodeCorrection | None = None,
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
    correction: an `EpisodeCorrection` of `unroll_from`, fresh for this episode: every frame
    is then encoded, each executed step is observed, and plans use its corrected unroll.
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
    unroll = correction.unroll if correction is not None else unroll_from
    z_prev: Tensor | None = None
    action = np.zeros(0, np.float32)
    while steps < limit:
        if correction is not None or not queue:
            with torch.inference_mode():
                z0 = encode(torch.from_numpy(pixels.copy())[None])
                if correction is not None and z_prev is not None:
                    correction.observe(z_prev, torch.from_numpy(action), z0)
            z_prev = z0
        if not queue:
            init = shift_plan(prev, replan_every) if cfg.warm_start and prev is not None else None
            res = plan(partial(unroll, z0), cost, cfg, generator, init)
            plan_time += res.time_s
            energies.append(res.final_energy)
            prev = res.actions
            queue = list(res.actions[:replan_every].cpu().numpy().astype(np.float32))
        action = queue.pop(0)
        ob, _, terminated, truncated, info = env.step(action)
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
