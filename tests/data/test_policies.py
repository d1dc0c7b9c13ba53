from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from fake_scene import make_fake

from jepalab.data.collect import policy_rng
from jepalab.data.policies import canonical_spec, make_policy, parse_policy_spec
from jepalab.errors import JepalabError

BOX = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)


def _random_actions(spec: str, n: int, space=BOX) -> np.ndarray:
    rng = np.random.default_rng(0)
    pol = make_policy(spec, space)
    pol.reset(rng)
    return np.stack([pol.act(None, None, rng) for _ in range(n)])


def _lag1(x: np.ndarray) -> float:
    return float(np.corrcoef(x[:-1], x[1:])[0, 1])


def test_random_is_temporally_correlated_and_bounded():
    smooth = _random_actions("random:corr=0.9,scale=0.3", 4000)
    white = _random_actions("random:corr=0,scale=0.3", 4000)
    assert smooth.dtype == np.float32 and smooth.shape == (4000, 2)
    assert 0.8 < _lag1(smooth[:, 0]) < 0.95
    assert abs(_lag1(white[:, 0])) < 0.1
    assert np.std(smooth) == pytest.approx(0.3, rel=0.2)  # stationary scale
    wild = _random_actions("random:scale=5", 500)
    assert wild.min() == -1.0 and wild.max() == 1.0  # clipped to the bounds


def test_random_respects_an_asymmetric_box():
    space = gym.spaces.Box(np.array([0.0, -2.0], np.float32), np.array([1.0, 2.0], np.float32))
    a = _random_actions("random:scale=3", 2000, space)
    assert (a >= space.low).all() and (a <= space.high).all()
    assert a[:, 0].min() == 0.0 and a[:, 1].max() == 2.0


def test_expert_and_mixture_per_episode():
    env = make_fake("fake")
    expert = make_policy("expert", env.action_space)
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(0)
    a = expert.act(env, obs, rng)
    direction = env.goal - env.pos
    assert float(np.dot(a, direction)) > 0  # heads for the goal
    mix = make_policy("mixture:0.3", env.action_space)
    modes = []
    for s in range(400):
        mix.reset(policy_rng(s))
        modes.append(mix.mode)
    assert set(modes) == {"expert", "random"}
    assert np.mean([m == "expert" for m in modes]) == pytest.approx(0.3, abs=0.07)
    # Same episode rng -> same choice and same actions (what makes collection deterministic).
    runs = []
    for _ in range(2):
        obs, _ = env.reset(seed=5)
        rng = policy_rng(5)
        mix.reset(rng)
        runs.append((mix.mode, [mix.act(env, obs, rng) for _ in range(3)]))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_expert_needs_a_scripted_policy():
    class NoExpert(gym.Env):
        action_space = BOX

    with pytest.raises(JepalabError, match="no expert_action"):
        make_policy("expert", BOX).act(NoExpert(), None, np.random.default_rng(0))


def test_specs():
    assert canonical_spec("mixture:0.5") == canonical_spec("mixture:p=0.5,scale=0.6")
    assert canonical_spec("random") == "random:corr=0.8,scale=0.6"
    assert make_policy("expert:noise=0.1", BOX).spec == "expert:noise=0.1"
    assert parse_policy_spec("mixture:0.2,corr=0.5") == (
        "mixture",
        {"p": 0.2, "corr": 0.5, "scale": 0.6},
    )
    for bad, msg in [
        ("greedy", "unknown kind"),
        ("mixture:1.5", "p=1.5 must be in"),
        ("random:corr=1", "corr=1.0 must be"),
        ("random:speed=2", "unknown parameter"),
        ("random:0.3", "expected key=value"),
        ("mixture:p=x", "not a number"),
        ("", "expected a spec"),
    ]:
        with pytest.raises(JepalabError, match=msg):
            make_policy(bad, BOX)


def test_explore_wanders_then_follows_the_expert():
    env = make_fake("fake")
    scripted = np.array([0.125, -0.5], np.float32)
    env.unwrapped.expert_action = lambda rng: scripted  # marks the expert's actions
    pol = make_policy("explore:6,p=1", env.action_space)
    wandered = []
    for s in range(40):
        obs, _ = env.reset(seed=s)
        rng = policy_rng(s)
        pol.reset(rng)
        assert pol.mode == "explore" and 0 <= pol.wander <= 6
        k = pol.wander
        acts = np.stack([pol.act(env, obs, rng) for _ in range(k + 2)])
        assert not (acts[:k] == scripted).all(-1).any()  # k wandering steps, then the expert
        np.testing.assert_array_equal(acts[k:], np.stack([scripted, scripted]))
        wandered.append(k)
    assert set(wandered) == set(range(7))  # k ~ U{0..6}
    mix = make_policy("explore:6", env.action_space)
    modes = {(mix.reset(policy_rng(s)), mix.mode)[1] for s in range(100)}
    assert modes == {"explore", "random"}


def test_explore_specs():
    assert canonical_spec("explore:40") == "explore:steps=40.0,p=0.5,corr=0.8,scale=0.6"
    assert canonical_spec("mixture:0.5") == "mixture:p=0.5,corr=0.8,scale=0.6"  # unchanged
    with pytest.raises(JepalabError, match="steps=2.5 must be a whole number"):
        parse_policy_spec("explore:2.5")


def test_tour_goes_from_waypoint_to_waypoint_through_the_door():
    from jepalab.envs import make

    env = make("two-rooms", random_wall=True, terminate_on_success=False)
    u = env.unwrapped
    pol = make_policy("tour:1", env.action_space)
    assert pol.spec == "tour:p=1.0,corr=0.8,scale=0.6,edge=0.0,press=0.0"
    crossings, targets = [], set()
    for s in range(6):
        obs, _ = env.reset(seed=s)
        rng = policy_rng(s)
        pol.reset(rng)
        assert pol.mode == "tour"
        side = []
        for _ in range(64):
            obs, *_ = env.step(pol.act(env, obs, rng))
            targets.add(tuple(pol.expert.target))
            side.append(u.agent[0] < u.wall_x)
        crossings.append(int(np.sum(np.diff(side) != 0)))
    assert min(crossings) >= 1 and sum(crossings) >= 12  # several rooms per episode
    assert len(targets) >= 12  # each reached waypoint is followed by a new one
    modes = {(m.reset(policy_rng(s)), m.mode)[1]
             for m in [make_policy("tour:0.5", env.action_space)] for s in range(50)}
    assert modes == {"tour", "random"}
    fake = make_fake("fake")
    obs, _ = fake.reset(seed=0)
    with pytest.raises(JepalabError, match="no waypoint"):
        make_policy("tour:1", fake.action_space, policy_rng(0)).act(fake, obs, policy_rng(0))


def test_tour_edge_waypoints_press_against_the_wall_then_slide_on():
    from jepalab.envs import make

    env = make("two-rooms", random_wall=True, terminate_on_success=False)
    u = env.unwrapped
    pol = make_policy("tour:1,edge=1", env.action_space)
    assert pol.spec == "tour:p=1.0,corr=0.8,scale=0.6,edge=1.0,press=0.0"
    reached = 0
    for s in range(4):
        obs, _ = env.reset(seed=s)
        xl, xr, _, _ = u._slab()
        rng = policy_rng(s)
        pol.reset(rng)
        seen = set()
        for _ in range(64):
            obs, *_ = env.step(pol.act(env, obs, rng))
            t = tuple(pol.expert.target)
            assert min(abs(t[0] - xl), abs(t[0] - xr)) < 1e-9  # every target on a wall face
            seen.add(t)
        reached += len(seen) - 1  # each new target follows a reached one
    assert reached >= 4
    with pytest.raises(JepalabError, match="edge=1.5 must be in"):
        parse_policy_spec("tour:1,edge=1.5")


def test_tour_press_heads_straight_into_the_wall_after_an_edge_waypoint():
    from jepalab.envs import make

    env = make("two-rooms", random_wall=True, terminate_on_success=False)
    u = env.unwrapped
    pol = make_policy("tour:1,edge=1,press=6", env.action_space)
    assert pol.spec == "tour:p=1.0,corr=0.8,scale=0.6,edge=1.0,press=6.0"
    blocked = {0: 0, 6: 0}
    for press in blocked:
        pol = make_policy(f"tour:1,edge=1,press={press}", env.action_space)
        for s in range(4):
            obs, _ = env.reset(seed=s)
            rng = policy_rng(s)
            pol.reset(rng)
            for _ in range(64):
                a = pol.act(env, obs, rng)
                before = u.agent.copy()
                obs, *_ = env.step(a)
                # a move into the wall's face: full speed along x, little of it happening
                moved = abs(u.agent[0] - before[0])
                blocked[press] += int(abs(a[0]) > 0.99 and moved < 0.2 * u.max_step)
    assert blocked[0] == 0 and blocked[6] >= 8
    # press=0 leaves the tour's draws as they were: the same path as without the parameter
    paths = []
    for spec in ("tour:1,edge=0.5", "tour:1,edge=0.5,press=0"):
        pol, path = make_policy(spec, env.action_space), []
        obs, _ = env.reset(seed=3)
        rng = policy_rng(3)
        pol.reset(rng)
        for _ in range(40):
            obs, *_ = env.step(pol.act(env, obs, rng))
            path.append(u.agent.copy())
        paths.append(np.array(path))
    np.testing.assert_array_equal(*paths)
    with pytest.raises(JepalabError, match="press=1.5 must be"):
        parse_policy_spec("tour:1,press=1.5")
