"""The env contract every jepalab scene implements.

Observation: ``{"pixels": uint8 [H, W, 3], "state": float32 [S]}`` with H = W = image_size.
``state`` is ground truth (poses) for probes and success only; planners never see it.
Action: ``Box([-1, 1]^A, float32)``. ``info`` always holds ``is_success`` (bool) and
``distance`` (float, scene units). Reward is ``-distance``. The episode terminates on success
(``terminate_on_success``, default True) and is truncated at ``max_episode_steps``.

Seeding: ``reset(seed=s)`` draws the task layout from ``default_rng(s)`` only; perturbation
conditions come from (perturbation seed, s, name). ``reset()`` without a seed draws the episode
seed from ``np_random``, so a seeded reset followed by unseeded ones is reproducible.

Goal: ``goal_state`` is the start state with the task entity (agent / pushed object / end
effector) placed at its goal; everything else stays where the episode started, except that in
a push the pusher is where a push ends (tabletop: ``push_end``; Push-T: where its scripted
pusher ends), as a successful episode's last frame shows it. ``render_goal``
renders that state under the episode's conditions (lighting, colours, camera, distractors) but
without step-time occluders.

Subclasses implement the ``_``-prefixed hooks below.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from jepalab.envs.perturb import ActionNoise, Perturbation
from jepalab.envs.raster import HandOccluder


class SceneEnv(gym.Env):
    """Base class: seeding, time limit, info, step-time perturbations, rendering plumbing."""

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}
    scene_name: str = "scene"  # instances may refine it (e.g. "tabletop-push")
    supported_perturbations: ClassVar[tuple[str, ...]] = ()
    default_max_episode_steps: ClassVar[int] = 100
    # Scenes whose actions are absolute positions scale the action-noise std down.
    action_noise_scale: ClassVar[float] = 1.0

    state_names: list[str]
    success_radius: float
    goal_state: np.ndarray

    def __init__(
        self,
        *,
        action_dim: int,
        state_low: np.ndarray,
        state_high: np.ndarray,
        image_size: int = 64,
        perturbation: Perturbation | None = None,
        max_episode_steps: int | None = None,
        terminate_on_success: bool = True,
        render_mode: str | None = "rgb_array",
    ) -> None:
        if not isinstance(image_size, (int, np.integer)) or not 16 <= image_size <= 1024:
            raise ValueError(
                f"{self.scene_name}: image_size must be an int in 16..1024, got {image_size!r}"
            )
        if render_mode not in (None, "rgb_array"):
            raise ValueError(
                f"{self.scene_name}: render_mode must be 'rgb_array' or None, got {render_mode!r}"
            )
        self.perturbation = perturbation if perturbation is not None else Perturbation()
        self.perturbation.check_supported(self.scene_name, self.supported_perturbations)
        steps = self.default_max_episode_steps if max_episode_steps is None else max_episode_steps
        if steps < 1:
            raise ValueError(f"{self.scene_name}: max_episode_steps must be >= 1, got {steps}")
        self.image_size = int(image_size)
        self.max_episode_steps = int(steps)
        self.terminate_on_success = bool(terminate_on_success)
        self.render_mode = render_mode
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(action_dim,), dtype=np.float32)
        n = self.image_size
        self.observation_space = gym.spaces.Dict(
            {
                "pixels": gym.spaces.Box(0, 255, shape=(n, n, 3), dtype=np.uint8),
                "state": gym.spaces.Box(
                    np.asarray(state_low, np.float32),
                    np.asarray(state_high, np.float32),
                    dtype=np.float32,
                ),
            }
        )
        self.episode_seed: int | None = None
        self.elapsed_steps = 0
        self._noise: ActionNoise | None = None
        self._occluder: HandOccluder | None = None
        self._last_pixels: np.ndarray | None = None

    # ------------------------------------------------------------------ scene hooks

    def _reset_scene(self, layout_rng: np.random.Generator) -> None:
        """Draw the layout from ``layout_rng`` (always the same calls), then apply reset-time
        perturbations (``self.perturbation.get(name)`` + ``component.rng(self.episode_seed)``)
        and set ``self.goal_state``."""
        raise NotImplementedError

    def _apply_action(self, action: np.ndarray) -> None:
        """Advance the scene by one control step with a clipped [-1, 1] action."""
        raise NotImplementedError

    def _state(self) -> np.ndarray:
        """Current ground-truth state, float32 [S] (layout = ``state_names``)."""
        raise NotImplementedError

    def _render_pixels(self) -> np.ndarray:
        """Current frame under the episode's conditions, uint8 [H, W, 3], no occluder."""
        raise NotImplementedError

    def render_goal(self) -> np.ndarray:
        """Goal image uint8 [H, W, 3]: ``goal_state`` rendered under this episode's conditions."""
        raise NotImplementedError

    def expert_action(self, rng: np.random.Generator) -> np.ndarray:
        """Scripted action in [-1, 1]^A for the current state (for data collection)."""
        raise NotImplementedError

    def waypoint(self, rng: np.random.Generator, edge: bool = False) -> np.ndarray:
        """A random target for ``expert_action(rng, target)`` (tours, ``policy: tour``) and
        ``reached(target)``: scenes whose expert can go anywhere define the three. ``edge``: a
        target pressed against an obstacle (``tour:...,edge=E``)."""
        raise NotImplementedError

    def reached(self, target: np.ndarray) -> bool:
        """Whether the scene is at ``target`` (a `waypoint`)."""
        raise NotImplementedError

    def _distance(self) -> float:
        raise NotImplementedError

    def _is_success(self) -> bool:
        return self._distance() < self.success_radius

    def _extra_info(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------ gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(0, 2**31 - 1))
        self.episode_seed = int(seed)
        self.elapsed_steps = 0
        noise = self.perturbation.get("action_noise")
        self._noise = (
            ActionNoise(noise.params["std"] * self.action_noise_scale, noise.rng(seed))
            if noise
            else None
        )
        occ = self.perturbation.get("occlusion")
        self._occluder = (
            HandOccluder.sample(
                self.image_size, occ.params["size"], occ.params["speed"], occ.rng(seed)
            )
            if occ
            else None
        )
        self._reset_scene(np.random.default_rng(self.episode_seed))
        return self._observe(), self._info()

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self.episode_seed is None:
            raise RuntimeError(f"{self.scene_name}: call reset() before step()")
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        if a.shape != self.action_space.shape or not np.all(np.isfinite(a)):
            raise ValueError(
                f"{self.scene_name}: action must be finite with shape {self.action_space.shape}, "
                f"got {np.asarray(action).shape}"
            )
        a = np.clip(a, -1.0, 1.0)
        if self._noise is not None:
            a = self._noise(a)
        self._apply_action(a)
        self.elapsed_steps += 1
        obs = self._observe()
        info = self._info()
        terminated = bool(info["is_success"]) and self.terminate_on_success
        truncated = self.elapsed_steps >= self.max_episode_steps
        return obs, -float(info["distance"]), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            return None
        if self._last_pixels is None:
            raise RuntimeError(f"{self.scene_name}: call reset() before render()")
        return self._last_pixels.copy()

    # ------------------------------------------------------------------ helpers

    def _observe(self) -> dict[str, np.ndarray]:
        pixels = self._render_pixels()
        if self._occluder is not None:
            pixels = self._occluder.apply(pixels, self.elapsed_steps)
        self._last_pixels = pixels
        return {"pixels": pixels.copy(), "state": self._state().astype(np.float32)}

    def _info(self) -> dict[str, Any]:
        info = {"is_success": bool(self._is_success()), "distance": float(self._distance())}
        info.update(self._extra_info())
        return info
