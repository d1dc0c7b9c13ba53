"""Generic adapter: any gymnasium env with ``render_mode="rgb_array"`` and a continuous Box
action space, mapped to the jepalab contract.

pixels = ``render()`` resized to image_size (area-averaged with PIL), state = the wrapped
observation flattened (float32), actions rescaled from [-1, 1] to the env's bounds,
``is_success`` = the wrapped info's ``is_success`` if present else False, ``distance`` = the
wrapped info's ``distance`` if present else NaN, reward = the wrapped env's reward. The
wrapped env's own time limit applies (``max_episode_steps`` overrides it). ``render_goal``
raises unless the env exposes a ``render_goal()`` itself.

Perturbations: lighting_shift (a pixel-level brightness / contrast / hue filter: there is no
scene to relight), camera_shift (view warp), occlusion and action_noise.
"""

from __future__ import annotations

import colorsys
from typing import Any

import gymnasium as gym
import numpy as np
from PIL import Image

from jepalab.envs import raster
from jepalab.envs.base import SceneEnv
from jepalab.envs.perturb import Perturbation, signed_uniform


class GymAdapterEnv(SceneEnv):
    scene_name = "gym"
    supported_perturbations = ("lighting_shift", "camera_shift", "occlusion", "action_noise")

    def __init__(
        self,
        env_id: str,
        *,
        image_size: int = 64,
        perturbation: Perturbation | None = None,
        max_episode_steps: int | None = None,
        terminate_on_success: bool = False,
        render_mode: str | None = "rgb_array",
        **env_kwargs: Any,
    ) -> None:
        try:
            inner = gym.make(env_id, render_mode="rgb_array", **env_kwargs)
        except gym.error.Error as e:
            raise ValueError(f"gym:{env_id}: cannot make the gymnasium env: {e}") from e
        space = inner.action_space
        if not isinstance(space, gym.spaces.Box) or not np.issubdtype(space.dtype, np.floating):
            inner.close()
            raise ValueError(f"gym:{env_id}: needs a continuous Box action space, got {space}")
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            inner.close()
            raise ValueError(f"gym:{env_id}: action bounds must be finite to rescale [-1, 1]")
        obs_dim = gym.spaces.flatdim(inner.observation_space)
        self.scene_name = f"gym:{env_id}"
        limit = max_episode_steps or (inner.spec.max_episode_steps if inner.spec else None) or 1000
        super().__init__(
            action_dim=int(np.prod(space.shape)),
            state_low=np.full(obs_dim, -np.inf),
            state_high=np.full(obs_dim, np.inf),
            image_size=image_size,
            perturbation=perturbation,
            max_episode_steps=limit,
            terminate_on_success=terminate_on_success,
            render_mode=render_mode,
        )
        self.inner = inner
        self.env_id = env_id
        self._low = space.low.astype(np.float64).reshape(-1)
        self._high = space.high.astype(np.float64).reshape(-1)
        self._space_shape = space.shape
        self.state_names = [f"obs_{i}" for i in range(obs_dim)]
        self.success_radius = float("nan")
        self.goal_state = np.full(obs_dim, np.nan, np.float32)
        self._obs: Any = None
        self._inner_info: dict[str, Any] = {}
        self._inner_done = False
        self._inner_reward = 0.0

    def _reset_scene(self, layout_rng: np.random.Generator) -> None:
        self._obs, self._inner_info = self.inner.reset(seed=self.episode_seed)
        seed = self.episode_seed
        assert seed is not None
        self._lut: np.ndarray | None = None
        self._warp: raster.ViewWarp | None = None
        if c := self.perturbation.get("lighting_shift"):
            rng = c.rng(seed)
            self._lut = _color_lut(
                signed_uniform(rng, c.params["brightness"]),
                signed_uniform(rng, c.params["contrast"]),
                signed_uniform(rng, c.params["hue_deg"]),
            )
        if c := self.perturbation.get("camera_shift"):
            rng = c.rng(seed)
            p = c.params
            self._warp = raster.ViewWarp.make(
                self.image_size,
                signed_uniform(rng, p["translate"]),
                signed_uniform(rng, p["translate"]),
                signed_uniform(rng, p["rotate_deg"]),
                signed_uniform(rng, p["zoom"]),
            )

    def _apply_action(self, action: np.ndarray) -> None:
        scaled = self._low + (action.astype(np.float64) + 1.0) * 0.5 * (self._high - self._low)
        native = scaled.reshape(self._space_shape).astype(self.inner.action_space.dtype)
        self._obs, reward, term, trunc, self._inner_info = self.inner.step(native)
        self._inner_reward = float(reward)
        self._inner_done = bool(term or trunc)

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        obs, _, terminated, truncated, info = super().step(action)
        # The wrapped env's reward is kept; its termination / truncation end the episode too.
        return obs, self._inner_reward, terminated or self._inner_done, truncated, info

    def _state(self) -> np.ndarray:
        flat = gym.spaces.flatten(self.inner.observation_space, self._obs)
        return np.asarray(flat, np.float32)

    def _distance(self) -> float:
        return float(self._inner_info.get("distance", np.nan))

    def _is_success(self) -> bool:
        return bool(self._inner_info.get("is_success", False))

    def _render_pixels(self) -> np.ndarray:
        frame = self.inner.render()
        if frame is None:
            raise RuntimeError(f"{self.scene_name}: render() returned None")
        img = Image.fromarray(np.asarray(frame, np.uint8)).resize(
            (self.image_size, self.image_size), Image.Resampling.BOX
        )
        out = np.asarray(img, np.uint8)[..., :3]
        if self._lut is not None:
            out = _apply_lut(out, self._lut)
        if self._warp is not None:
            out = self._warp.apply(out)
        return np.ascontiguousarray(out)

    def render_goal(self) -> np.ndarray:
        render_goal = getattr(self.inner.unwrapped, "render_goal", None)
        if not callable(render_goal):
            raise NotImplementedError(
                f"{self.scene_name}: the wrapped env has no goal image (no render_goal())"
            )
        frame = np.asarray(render_goal(), np.uint8)
        img = Image.fromarray(frame).resize(
            (self.image_size, self.image_size), Image.Resampling.BOX
        )
        return np.asarray(img, np.uint8)[..., :3].copy()

    def expert_action(self, rng: np.random.Generator) -> np.ndarray:
        """No scripted policy exists for an arbitrary env: uniform random in [-1, 1]^A."""
        return rng.uniform(-1.0, 1.0, size=self.action_space.shape).astype(np.float32)

    def close(self) -> None:
        self.inner.close()


def _color_lut(brightness: float, contrast: float, hue_deg: float) -> np.ndarray:
    """A 32^3 colour lookup table for the pixel-level lighting filter: uint8 [32, 32, 32, 3]."""
    levels = (np.arange(32) + 0.5) / 32.0
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    hsv = np.array([colorsys.rgb_to_hsv(*c) for c in grid])
    hsv[:, 0] = (hsv[:, 0] + hue_deg / 360.0) % 1.0
    rgb = np.array([colorsys.hsv_to_rgb(*c) for c in hsv])
    rgb = np.clip((rgb - 0.5) * (1.0 + contrast) + 0.5 + brightness, 0.0, 1.0)
    return (rgb * 255.0 + 0.5).astype(np.uint8).reshape(32, 32, 32, 3)


def _apply_lut(img: np.ndarray, lut: np.ndarray) -> np.ndarray:
    q = img >> 3
    return lut[q[..., 0], q[..., 1], q[..., 2]]
