from __future__ import annotations

import warnings

import numpy as np
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    gym_pusht = pytest.importorskip("gym_pusht")

from gym_pusht.envs.pusht import PushTEnv as StockPushT  # noqa: E402
from scene_checks import check_perturbation_claim, expert_episode, rollout  # noqa: E402

from jepalab.envs import make, supported_perturbations  # noqa: E402
from jepalab.envs.pusht import AGENT_RADIUS, GOAL_POSE, inside_t, to_local  # noqa: E402


def test_adapter_matches_stock_physics_and_pixels() -> None:
    env = make("pusht", image_size=96, draw_goal_zone=True)
    stock = StockPushT(obs_type="pixels_agent_pos", observation_width=96, observation_height=96)
    acts = np.random.default_rng(0).uniform(-1, 1, size=(12, 2)).astype(np.float32)
    pix, states = rollout(env, 7, acts)
    obs, _ = stock.reset(seed=7)
    for a in acts:
        obs, *_ = stock.step((a.astype(np.float64) + 1.0) * 256.0)
    assert np.allclose(states[-1][:2], obs["agent_pos"], atol=1e-3)
    assert np.allclose(states[-1][2:4], np.asarray(stock.block.position), atol=1e-3)
    # The own rasteriser draws what the stock 512x512 renderer draws (up to outlines).
    diff = np.abs(pix[-1].astype(int) - obs["pixels"].astype(int))
    assert diff.mean() < 8.0 and np.mean(diff.max(-1) > 100) < 0.03


def test_determinism_and_action_mapping() -> None:
    env = make("pusht")
    acts = np.random.default_rng(1).uniform(-1, 1, size=(6, 2)).astype(np.float32)
    p1, s1 = rollout(env, 3, acts)
    p2, s2 = rollout(env, 3, acts)
    assert np.array_equal(p1, p2) and np.array_equal(s1, s2)
    env.reset(seed=3)
    for _ in range(15):
        obs, *_ = env.step(np.array([-0.5, 0.5], np.float32))
    assert np.allclose(obs["state"][:2], [128.0, 384.0], atol=3.0)


def test_success_on_hand_built_state() -> None:
    env = make("pusht")
    env.reset(seed=0)
    u = env.unwrapped
    u.inner.block.angle = GOAL_POSE[2]  # angle first: pymunk rotates about the centre of mass
    u.inner.block.position = list(GOAL_POSE[:2])
    u.inner.agent.position = [450.0, 450.0]
    obs, _, term, _, info = env.step(np.array([450.0, 450.0]) / 256.0 - 1.0)
    assert info["is_success"] and term and info["coverage"] > 0.95 and info["distance"] < 3.0
    u.inner.block.position = [GOAL_POSE[0] + 30.0, GOAL_POSE[1]]
    _, _, term, _, info = env.step(np.array([450.0, 450.0]) / 256.0 - 1.0)
    assert not info["is_success"] and not term


def test_goal_image_and_expert_progress() -> None:
    env = make("pusht")
    obs, info = env.reset(seed=1)
    goal = env.unwrapped.render_goal()
    assert goal.shape == obs["pixels"].shape and not np.array_equal(goal, obs["pixels"])
    rng = np.random.default_rng(0)
    d0 = info["distance"]
    for _ in range(150):
        *_, info = env.step(env.unwrapped.expert_action(rng))
    assert info["distance"] < 0.5 * d0


def test_goal_agent_is_where_the_scripted_push_ends() -> None:
    env = make("pusht", perturb="physics_shift", severity=2)
    env.reset(seed=1)
    u = env.unwrapped
    g = u.goal_state
    assert np.allclose(g[2:], GOAL_POSE, atol=1e-5)
    # The pusher ends touching the T at its goal pose, not where it started.
    local = to_local(GOAL_POSE, g[None, :2])
    assert inside_t(local, margin=AGENT_RADIUS + 4)[0] and not inside_t(local, AGENT_RADIUS - 4)[0]
    assert np.linalg.norm(g[:2] - u.reset(seed=1)[0]["state"][:2]) > 2 * AGENT_RADIUS
    # Drawn from the reset seed only (stock physics): the perturbed episode's goal is the clean one.
    clean = make("pusht")
    clean.reset(seed=1)
    assert np.array_equal(clean.unwrapped.goal_state, g)


@pytest.mark.parametrize("perturb", supported_perturbations("pusht"))
def test_perturbation_claims_and_expert(perturb: str) -> None:
    check_perturbation_claim("pusht", perturb)
    env = make("pusht", perturb=perturb, severity=2, perturb_seed=1, image_size=32)
    # The scripted pusher solves ~95 % of clean episodes; allow one miss in three.
    assert sum(expert_episode(env, s)["is_success"] for s in range(3)) >= 2
