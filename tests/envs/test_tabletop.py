from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mujoco")

import gymnasium as gym  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402
from scene_checks import check_perturbation_claim, expert_episode, rollout  # noqa: E402

from jepalab.envs import make, supported_perturbations  # noqa: E402


@pytest.fixture(scope="module")
def push():
    env = make("tabletop-push")
    yield env
    env.close()


def test_contract_and_determinism(push) -> None:
    obs, info = push.reset(seed=1)
    u = push.unwrapped
    assert obs["pixels"].shape == (64, 64, 3) and obs["pixels"].dtype == np.uint8
    assert obs["state"].shape == (len(u.state_names),) and obs["state"].dtype == np.float32
    assert {"is_success", "distance", "yaw_error"} <= set(info)
    acts = np.random.default_rng(0).uniform(-1, 1, size=(8, 2)).astype(np.float32)
    p1, s1 = rollout(push, 1, acts)
    p2, s2 = rollout(push, 1, acts)
    assert np.array_equal(p1, p2) and np.array_equal(s1, s2)
    assert not np.array_equal(p1[0], p1[-1])  # the pusher moved in view
    # The ee tracks the integrated target: 8 full-right steps move it about 8 * max_step.
    obs, _ = push.reset(seed=1)
    x0 = obs["state"][0]
    for _ in range(8):
        obs, *_ = push.step(np.array([1.0, 0.0], np.float32))
    assert obs["state"][0] - x0 == pytest.approx(8 * u.max_step, abs=0.02)


def test_success_on_hand_built_state(push) -> None:
    push.reset(seed=2)
    u = push.unwrapped
    u._set_pose(u.data, "cube", u.goal[:2] + 0.01, u.goal[2] + np.pi / 2 + 0.1)
    u._mj.mj_forward(u.model, u.data)
    info = u._info()
    assert info["is_success"] and info["yaw_error"] == pytest.approx(0.1, abs=1e-6)
    u._set_pose(u.data, "cube", u.goal[:2] + 0.01, u.goal[2] + 0.5)
    assert not u._info()["is_success"]  # right place, wrong yaw
    u._set_pose(u.data, "cube", u.goal[:2] + 0.03, u.goal[2])
    assert not u._info()["is_success"]


def test_goal_not_drawn_and_goal_image(push) -> None:
    obs, _ = push.reset(seed=3)
    u = push.unwrapped
    u.goal = u.goal + np.array([0.05, 0.05, 0.3])
    assert np.array_equal(u._render_pixels(), obs["pixels"])  # no goal marker in observations
    goal_img = u.render_goal()
    assert not np.array_equal(goal_img, obs["pixels"])
    gs = u.goal_state
    assert not np.allclose(gs[3:5], obs["state"][3:5])  # cube at its goal
    # The ee where a straight push ends: behind the cube's goal on the start -> goal line,
    # outside the cube, at the push height.
    line = gs[3:5] - obs["state"][3:5]
    behind = gs[3:5] - gs[:2]
    assert gs[2] == obs["state"][2]
    assert float(behind @ line) / (np.linalg.norm(behind) * np.linalg.norm(line)) > 0.999
    assert 0.025 + 0.015 < np.linalg.norm(behind) < 0.025 * np.sqrt(2) + 0.015 + 0.01


def test_push_unroll_is_the_scene_physics(push) -> None:
    obs, _ = push.reset(seed=5)
    u = push.unwrapped
    actions = np.random.default_rng(0).uniform(-1, 1, (3, 5, 2)).astype(np.float32)
    pred = u.unroll(actions)
    assert pred.shape == (3, 5, len(u.state_names))
    assert np.array_equal(u._state(), obs["state"])  # the episode is not touched
    for t, a in enumerate(actions[2]):
        ob, *_ = push.step(a)
        assert np.array_equal(pred[2, t], ob["state"])


def test_reach_expert_and_checker() -> None:
    env = make("tabletop-reach", camera="top", image_size=32)
    assert all(expert_episode(env, s)["is_success"] for s in range(3))
    check_env(env, skip_render_check=True)
    env.close()


def test_registered_push_passes_checker() -> None:
    env = gym.make("jepalab/TabletopPush-v0", image_size=32, perturb="occlusion", severity=1)
    check_env(env.unwrapped)  # its spec re-makes it for the render-mode checks
    env.close()


def test_push_expert_clean(push) -> None:
    assert all(expert_episode(push, s)["is_success"] for s in range(4))


@pytest.mark.parametrize("perturb", supported_perturbations("tabletop-push"))
def test_perturbation_claims_and_expert(perturb: str) -> None:
    check_perturbation_claim("tabletop-push", perturb, image_size=48)
    env = make("tabletop-push", perturb=perturb, severity=2, perturb_seed=1, image_size=32)
    assert sum(expert_episode(env, s)["is_success"] for s in range(2)) == 2
    env.close()


def test_object_reorder_moves_only_the_other_object() -> None:
    clean = make("tabletop-push", image_size=32)
    pert = make("tabletop-push", perturb="object_reorder", severity=2, image_size=32)
    for seed in range(3):
        s_c, _ = clean.reset(seed=seed)
        s_p, _ = pert.reset(seed=seed)
        s_c, s_p = s_c["state"], s_p["state"]
        assert np.array_equal(s_c[:7], s_p[:7])  # ee and the pushed cube untouched
        assert np.array_equal(clean.unwrapped.goal, pert.unwrapped.goal)
        assert np.linalg.norm(s_c[7:9] - s_p[7:9]) >= 0.3 * 0.4 - 1e-6


def test_mug_target_and_wrist_camera() -> None:
    env = make("tabletop-push", target_object="mug", camera="wrist", image_size=32)
    info = expert_episode(env, 0)
    assert info["is_success"] and info["yaw_error"] == 0.0
    env.close()


def test_unsupported_kwargs() -> None:
    with pytest.raises(ValueError, match="camera"):
        make("tabletop-push", camera="side")
    with pytest.raises(ValueError, match="fixes"):
        make("tabletop-push", task="reach")
