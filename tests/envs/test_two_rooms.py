from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from scene_checks import check_perturbation_claim, expert_episode, rollout

from jepalab.envs import make, supported_perturbations


def test_contract_and_determinism() -> None:
    env = make("two-rooms", image_size=48)
    obs, info = env.reset(seed=3)
    assert obs["pixels"].shape == (48, 48, 3) and obs["pixels"].dtype == np.uint8
    assert obs["state"].dtype == np.float32 and len(obs["state"]) == len(env.unwrapped.state_names)
    assert isinstance(info["is_success"], bool) and isinstance(info["distance"], float)
    acts = np.random.default_rng(1).uniform(-1, 1, size=(10, 2)).astype(np.float32)
    p1, s1 = rollout(env, 3, acts)
    p2, s2 = rollout(make("two-rooms", image_size=48), 3, acts)
    assert np.array_equal(p1, p2) and np.array_equal(s1, s2)
    p3, _ = rollout(env, 4, acts)
    assert not np.array_equal(p1[0], p3[0])


def test_start_and_goal_in_different_rooms() -> None:
    env = make("two-rooms", random_wall=True)
    walls = set()
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        s, g = obs["state"], env.unwrapped.goal_state
        assert (s[0] < s[2]) != (g[0] < s[2]), "start and goal must be on opposite sides"
        walls.add(round(float(s[2]), 3))
    assert len(walls) > 10


def test_layout_every_shares_the_wall_among_consecutive_seeds(tmp_path) -> None:
    from jepalab.data.collect import collect
    from jepalab.data.store import TrajectoryStore

    env = make("two-rooms", random_wall=True, layout_every=3)
    walls, starts = [], []
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        walls.append(tuple(obs["state"][2:]))
        starts.append(tuple(obs["state"][:2]))
        assert (obs["state"][0] < obs["state"][2]) != (env.unwrapped.goal[0] < obs["state"][2])
    assert walls[0] == walls[1] == walls[2] != walls[3] == walls[4] == walls[5]
    assert len(set(starts)) == 6
    plain, _ = make("two-rooms", random_wall=True).reset(seed=4)
    assert plain["state"][1] == starts[4][1]  # the same draws: y does not depend on the wall
    with pytest.raises(ValueError, match="layout_every"):
        make("two-rooms", random_wall=True, layout_every=0)
    store = TrajectoryStore.open(collect(
        "two-rooms", 5, tmp_path / "d", policy="random", image_size=16, max_steps=2,
        progress=False, seed=1, scene_kwargs={"random_wall": True, "layout_every": 2}))
    assert store.layout_ids().tolist() == [0, 1, 1, 2, 2]  # seeds 1..5 // 2
    wall = [tuple(store.series(e, "states")[0, 2:]) for e in range(5)]
    assert wall[1] == wall[2] != wall[3] == wall[4] and wall[0] != wall[1]


def test_success_on_hand_built_states() -> None:
    env = make("two-rooms")
    env.reset(seed=0)
    u = env.unwrapped
    u.set_agent(u.goal + np.array([0.02, 0.0]))
    _, reward, term, _, info = env.step(np.zeros(2, np.float32))
    assert info["is_success"] and term and info["distance"] == pytest.approx(0.02)
    assert reward == pytest.approx(-0.02)
    u.set_agent(u.goal + np.array([0.0, u.success_radius + 0.01]))
    _, _, term, _, info = env.step(np.zeros(2, np.float32))
    assert not info["is_success"] and not term


def test_wall_blocks_motion_and_door_lets_through() -> None:
    env = make("two-rooms", perturb="physics_shift", severity=3)
    env.reset(seed=0)
    u = env.unwrapped
    xl, xr, dl, dh = u._slab()
    u.set_agent(np.array([0.3, 0.15]))  # far from the door (door band 0.47..0.53)
    for _ in range(30):
        obs, *_ = env.step(np.array([1.0, -0.3], np.float32))
        assert obs["state"][0] <= xl + 1e-9, "the agent went into the wall"
    assert obs["state"][0] == pytest.approx(xl) and obs["state"][1] < 0.1  # slid along it
    u.set_agent(np.array([0.3, u.door_y]))
    for _ in range(20):
        obs, *_ = env.step(np.array([1.0, 0.0], np.float32))
    assert obs["state"][0] > xr


def test_vectorised_move_is_the_step_rule() -> None:
    env = make("two-rooms", random_wall=True)
    u = env.unwrapped
    rng = np.random.default_rng(0)
    for seed in range(20):
        env.reset(seed=seed)
        p = rng.uniform(0.03, 0.97, (64, 2))
        d = rng.uniform(-0.15, 0.15, (64, 2))  # up to 3x max_step: sub-stepping is exercised
        one_by_one = np.stack([u._move(p[i].copy(), d[i]) for i in range(64)])
        np.testing.assert_allclose(u.move(p, d), one_by_one, atol=1e-12)


def test_unroll_is_stepping_the_scene() -> None:
    env = make("two-rooms", random_wall=True, terminate_on_success=False)
    u = env.unwrapped
    rng = np.random.default_rng(1)
    for seed in range(5):
        env.reset(seed=seed)
        start = u.agent.copy()
        actions = rng.uniform(-1, 1, (3, 12, 2)).astype(np.float32)
        path = u.unroll(start[None], actions)
        assert path.shape == (3, 12, 2)
        for s in range(3):
            u.set_agent(start)
            for t in range(12):
                env.step(actions[s, t])
                np.testing.assert_allclose(path[s, t], u.agent, atol=1e-12)


def test_path_length_goes_around_the_wall() -> None:
    env = make("two-rooms", random_wall=True)
    env.reset(seed=3)
    u = env.unwrapped
    xl, xr, dl, dh = u._slab()
    # same room as the goal: straight line; other room: at least that, and through the door
    same = np.array([u.goal[0] + (0.05 if u.goal[0] < u.wall_x else -0.05), u.goal[1]])
    assert u.path_length(same) == pytest.approx(0.05)
    u.goal = np.array([xr + 0.2, u.door_y])
    start = np.array([xl - 0.1, u.door_y])  # straight through the door's centre
    assert u.path_length(start) == pytest.approx(0.1 + (xr - xl) + 0.2)
    far = np.array([xl - 0.1, 0.05 if u.door_y > 0.5 else 0.95])  # the wall is in the way
    assert u.path_length(far) > np.linalg.norm(far - u.goal) + 0.01
    assert u.path_length(np.stack([start, far])).shape == (2,)


def test_expert_solves_clean_and_random_wall() -> None:
    for kw in ({}, {"random_wall": True}):
        env = make("two-rooms", **kw)
        assert all(expert_episode(env, s)["is_success"] for s in range(8))


@pytest.mark.parametrize("perturb", supported_perturbations("two-rooms"))
def test_perturbation_claims_and_expert(perturb: str) -> None:
    check_perturbation_claim("two-rooms", perturb)
    env = make("two-rooms", perturb=perturb, severity=2, perturb_seed=1)
    assert all(expert_episode(env, s)["is_success"] for s in range(3))


def test_goal_image() -> None:
    env = make("two-rooms")
    obs, _ = env.reset(seed=2)
    goal = env.unwrapped.render_goal()
    assert goal.shape == obs["pixels"].shape and not np.array_equal(goal, obs["pixels"])
    env.unwrapped.set_agent(env.unwrapped.goal)
    obs, *_ = env.step(np.zeros(2, np.float32))
    assert np.array_equal(goal, obs["pixels"])


def test_render_at_shows_the_agent_there_and_moves_nothing() -> None:
    env = make("two-rooms", random_wall=True)
    obs, _ = env.reset(seed=3)
    u = env.unwrapped
    agent, xy = u.agent.copy(), np.array([0.2, 0.7])
    frame = u.render_at(xy)
    assert np.array_equal(u.agent, agent) and np.array_equal(u.render(), obs["pixels"])
    assert np.array_equal(frame, u.set_agent(xy)["pixels"])
    with pytest.raises(RuntimeError, match="reset"):
        make("two-rooms").unwrapped.render_at(xy)


def test_time_limit_truncates() -> None:
    env = make("two-rooms", max_episode_steps=5)
    env.reset(seed=0)
    flags = [env.step(np.zeros(2, np.float32))[3] for _ in range(5)]
    assert flags == [False] * 4 + [True]


@pytest.mark.filterwarnings("ignore:.*not having a spec")
def test_gymnasium_checker_and_registry() -> None:
    check_env(make("two-rooms", perturb="occlusion+action_noise", severity=1))
    env = gym.make("jepalab/TwoRooms-v0", perturb="lighting_shift", severity=2)
    obs, _ = env.reset(seed=0)
    assert obs["pixels"].shape == (64, 64, 3)
    check_env(env.unwrapped)


def test_bad_action_is_rejected() -> None:
    env = make("two-rooms")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3, np.float32))


def test_expert_reaches_a_waypoint_in_the_other_room() -> None:
    env = make("two-rooms", random_wall=True, terminate_on_success=False)
    u = env.unwrapped
    for s in range(4):
        env.reset(seed=s)
        rng = np.random.default_rng(s)
        target = u._room_point(rng, 1 if u.agent[0] < u.wall_x else -1)  # behind the wall
        for _ in range(64):
            if u.reached(target):
                break
            env.step(u.expert_action(rng, target))
        assert u.reached(target) and not u.reached(u.goal + 1.0)
        w = u.waypoint(rng)
        assert 0 < w[0] < 1 and 0 < w[1] < 1 and abs(w[0] - u.wall_x) > u.agent_radius
        xl, xr, dl, dh = u._slab()
        e = np.stack([u.waypoint(rng, edge=True) for _ in range(40)])
        assert set(np.round(e[:, 0], 9)) == {round(xl, 9), round(xr, 9)}  # both faces
        e = e[(e[:, 1] < dl) | (e[:, 1] > dh)]  # off the door: a step into the wall stays put
        assert len(e) >= 10
        into = np.where(e[:, :1] < u.wall_x, 1.0, -1.0) * np.array([[u.max_step, 0.0]])
        np.testing.assert_allclose(u.move(e, into)[:, 0], e[:, 0])
