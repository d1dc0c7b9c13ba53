from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("pygame")  # classic-control rendering

from jepalab.envs import make  # noqa: E402
from jepalab.envs.perturb import PerturbationError  # noqa: E402


def test_pendulum_contract() -> None:
    env = make("gym:Pendulum-v1", image_size=32)
    obs, info = env.reset(seed=0)
    ref = gym.make("Pendulum-v1")
    ref_obs, _ = ref.reset(seed=0)
    assert obs["pixels"].shape == (32, 32, 3) and obs["pixels"].dtype == np.uint8
    assert np.allclose(obs["state"], ref_obs) and info["is_success"] is False
    obs, reward, term, trunc, info = env.step(np.array([1.0], np.float32))
    ref_obs, ref_reward, *_ = ref.step(np.array([2.0], np.float32))  # [-1, 1] -> [-2, 2]
    assert np.allclose(obs["state"], ref_obs) and reward == pytest.approx(ref_reward)
    assert env.unwrapped.inner.unwrapped.last_u == pytest.approx(2.0)
    env.step(np.array([-1.0], np.float32))
    assert env.unwrapped.inner.unwrapped.last_u == pytest.approx(-2.0)
    with pytest.raises(NotImplementedError, match="goal"):
        env.unwrapped.render_goal()
    env.close()


def test_pendulum_time_limit_and_perturbations() -> None:
    env = make("gym:Pendulum-v1", image_size=32, max_episode_steps=3)
    clean, _ = env.reset(seed=1)
    flags = [env.step(np.zeros(1, np.float32))[3] for _ in range(3)]
    assert flags == [False, False, True]
    lit = make("gym:Pendulum-v1", image_size=32, perturb="lighting_shift+camera_shift", severity=2)
    obs, _ = lit.reset(seed=1)
    assert np.array_equal(obs["state"], clean["state"])
    assert not np.array_equal(obs["pixels"], clean["pixels"])
    with pytest.raises(PerturbationError, match="gym:Pendulum-v1.*distractors"):
        make("gym:Pendulum-v1", perturb="distractors")


def test_rejects_discrete_actions() -> None:
    with pytest.raises(ValueError, match="continuous Box"):
        make("gym:CartPole-v1")
