"""Shared test problems for the planners: a linear latent system and a 2-D point env."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor


@dataclass
class LinearSystem:
    """z_{t+1} = A z_t + B a_t from z0; D=4 latent dims, 2 action dims."""

    A: Tensor  # [D, D]
    B: Tensor  # [D, A]
    z0: Tensor  # [D]
    calls: int = 0

    def unroll(self, actions: Tensor) -> Tensor:
        """actions [S, H, A] -> latents [S, H, D], all S candidates at once."""
        self.calls += 1
        z = self.z0.expand(actions.shape[0], -1)
        out = []
        for t in range(actions.shape[1]):
            z = z @ self.A.T + actions[:, t] @ self.B.T
            out.append(z)
        return torch.stack(out, 1)

    def affine(self, horizon: int) -> tuple[Tensor, Tensor]:
        """(c [H, D], G [H, D, H*A]) with z_t = c_t + G_t @ a.flatten(), found by probing."""
        a_dim = self.B.shape[1]
        c = self.unroll(torch.zeros(1, horizon, a_dim))[0]
        basis = torch.eye(horizon * a_dim).reshape(-1, horizon, a_dim)
        G = (self.unroll(basis) - c).permute(1, 2, 0)
        return c, G


def linear_system(seed: int = 0) -> LinearSystem:
    g = torch.Generator().manual_seed(seed)
    D, A = 4, 2
    # Orthonormal B columns keep the problem well conditioned, so the tolerances below test
    # the planners rather than the conditioning of a random draw.
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
    return LinearSystem(
        A=torch.eye(D) + 0.1 * torch.randn(D, D, generator=g),
        B=0.5 * q[:, :A],
        z0=torch.randn(D, generator=g),
    )


class PointEnv(gym.Env):
    """A 2-D point in [-1, 1]^2 moved by 0.2 * action; pixels show it as a 3x3 white blob.

    Follows the jepalab env contract: obs {"pixels", "state"}, info is_success/distance,
    unwrapped.render_goal(), terminates on success, truncates at max_episode_steps.
    """

    size = 32
    speed = 0.2
    success_radius = 0.12

    def __init__(self, max_episode_steps: int = 40) -> None:
        self.max_episode_steps = max_episode_steps
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = gym.spaces.Dict({
            "pixels": gym.spaces.Box(0, 255, (self.size, self.size, 3), np.uint8),
            "state": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
        })
        self.pos = np.zeros(2, np.float32)
        self.goal = np.zeros(2, np.float32)
        self.t = 0

    def draw(self, pos: np.ndarray) -> np.ndarray:
        img = np.zeros((self.size, self.size, 3), np.uint8)
        ij = np.round((pos + 1) / 2 * (self.size - 1)).astype(int)
        img[max(ij[1] - 1, 0):ij[1] + 2, max(ij[0] - 1, 0):ij[0] + 2] = 255
        return img

    def _obs(self) -> dict[str, np.ndarray]:
        return {"pixels": self.draw(self.pos), "state": self.pos.copy()}

    def _info(self) -> dict:
        d = float(np.linalg.norm(self.pos - self.goal))
        return {"is_success": d < self.success_radius, "distance": d}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-0.8, -0.4, 2).astype(np.float32)
        self.goal = self.np_random.uniform(0.4, 0.8, 2).astype(np.float32)
        self.t = 0
        return self._obs(), self._info()

    def step(self, action):
        a = np.clip(np.asarray(action, np.float32), -1, 1)
        self.pos = np.clip(self.pos + self.speed * a, -1, 1).astype(np.float32)
        self.t += 1
        info = self._info()
        return self._obs(), -info["distance"], info["is_success"], self.t >= \
            self.max_episode_steps, info

    def render(self) -> np.ndarray:
        return self.draw(self.pos)

    def render_goal(self) -> np.ndarray:
        return self.draw(self.goal)


def encode_point(pixels: Tensor) -> Tensor:
    """'Identity' encoder: uint8 [B, H, W, 3] -> the blob centre in state units, [B, 2]."""
    mask = pixels[..., 0].float() / 255.0  # [B, H, W]
    n = pixels.shape[1]
    coords = torch.linspace(-1, 1, n)
    mass = mask.sum((1, 2)).clamp_min(1e-6)
    x = (mask.sum(1) * coords).sum(1) / mass
    y = (mask.sum(2) * coords).sum(1) / mass
    return torch.stack([x, y], 1)


def unroll_point(z0: Tensor, actions: Tensor) -> Tensor:
    """The point's true dynamics in latent space: z0 [1, 2], actions [S, H, 2] -> [S, H, 2]."""
    z = z0.expand(actions.shape[0], -1)
    out = []
    for t in range(actions.shape[1]):
        z = (z + PointEnv.speed * actions[:, t]).clamp(-1, 1)
        out.append(z)
    return torch.stack(out, 1)
