"""A tiny scene following the jepalab env contract, for data tests (fast, no simulator).

A point moves in the unit square towards a seeded goal; episodes terminate on success, so
lengths vary. Frames draw the agent, the goal and a time stripe (every frame differs).
`JEPALAB_TEST_STEP_DELAY` (seconds per step) slows it down for the kill/resume test without
changing the dataset's recorded config.
"""

from __future__ import annotations

import os
import time
from typing import Any

import gymnasium as gym
import numpy as np


class FakeScene(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}
    state_names = ["x", "y", "goal_x", "goal_y"]

    def __init__(
        self,
        image_size: int = 16,
        perturb: str | None = None,
        severity: int = 1,
        perturb_seed: int = 0,
        max_episode_steps: int = 12,
        speed: float = 0.15,
    ) -> None:
        self.n = image_size
        self.max_episode_steps = max_episode_steps
        self.speed = speed
        self.tint = 40 * severity if perturb else 0
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.observation_space = gym.spaces.Dict(
            {
                "pixels": gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
                "state": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
            }
        )
        self.delay = float(os.environ.get("JEPALAB_TEST_STEP_DELAY", "0"))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if barrier := os.environ.get("JEPALAB_TEST_BARRIER_DIR"):
            _wait_for_peers(barrier, 2)
        rng = np.random.default_rng(seed)
        self.pos = rng.uniform(0.1, 0.9, 2)
        self.goal = rng.uniform(0.1, 0.9, 2)
        self.t = 0
        return self._obs(), self._info()

    def step(self, action):
        a = np.clip(np.asarray(action, np.float64), -1, 1)
        self.pos = np.clip(self.pos + self.speed * a, 0.0, 1.0)
        self.t += 1
        if self.delay:
            time.sleep(self.delay)
        info = self._info()
        return (
            self._obs(),
            -info["distance"],
            info["is_success"],
            self.t >= self.max_episode_steps,
            info,
        )

    def _pixel(self, p: np.ndarray) -> tuple[int, int]:
        i = np.clip((p * (self.n - 1)).round().astype(int), 0, self.n - 1)
        return int(i[1]), int(i[0])

    def _render(self, pos: np.ndarray) -> np.ndarray:
        img = np.full((self.n, self.n, 3), 30 + self.tint, np.uint8)
        img[0, : min(self.t, self.n)] = 200  # time stripe
        img[self._pixel(self.goal)] = (0, 255, 0)
        img[self._pixel(pos)] = (255, 0, 0)
        return img

    def _obs(self) -> dict[str, np.ndarray]:
        state = np.concatenate([self.pos, self.goal]).astype(np.float32)
        return {"pixels": self._render(self.pos), "state": state}

    def _info(self) -> dict[str, Any]:
        d = float(np.linalg.norm(self.pos - self.goal))
        return {"is_success": d < 0.1, "distance": d}

    def expert_action(self, rng: np.random.Generator) -> np.ndarray:
        v = (self.goal - self.pos) / self.speed + rng.normal(0, 0.05, 2)
        return np.clip(v, -1, 1).astype(np.float32)

    def render_goal(self) -> np.ndarray:
        return self._render(self.goal)


def _wait_for_peers(folder: str, count: int, timeout: float = 20.0) -> None:
    """Register this process in `folder`, then wait until `count` processes have: proves that
    episodes really run in several processes at once (used by the workers test)."""
    open(os.path.join(folder, str(os.getpid())), "w").close()
    deadline = time.monotonic() + timeout
    while len(os.listdir(folder)) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def make_fake(name: str, **kwargs: Any) -> FakeScene:
    """An ``env_fn`` for ``collect``: same signature as ``jepalab.envs.make``."""
    if name != "fake":
        raise ValueError(f"unknown scene {name!r}; valid names: fake")
    return FakeScene(**kwargs)


def collect_fake(out, episodes: int = 6, **kw):
    """``collect`` on the fake scene with tiny defaults (16 px, chunks of 4, no progress bar)."""
    from jepalab.data.collect import collect

    kw = {
        "policy": "mixture:0.5",
        "image_size": 16,
        "episodes_per_chunk": 4,
        "progress": False,
        **kw,
    }
    return collect("fake", episodes, out, env_fn=make_fake, **kw)


def replay(store, e: int, image_size: int = 16, **env_kw) -> dict[str, np.ndarray]:
    """Re-simulate episode e from its seed with its stored actions (independent of collect)."""
    env = make_fake("fake", image_size=image_size, **env_kw)
    ep = store.episode(e)
    obs, _ = env.reset(seed=ep["seed"])
    frames, states = [obs["pixels"]], [obs["state"]]
    for a in ep["actions"]:
        obs, *_ = env.step(a)
        frames.append(obs["pixels"])
        states.append(obs["state"])
    return {"frames": np.stack(frames), "states": np.stack(states)}
