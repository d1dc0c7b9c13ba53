"""CEM and MPPI on a linear latent system with a known optimum, plus loop invariants."""

from __future__ import annotations

import pytest
import torch
from planning_helpers import linear_system

from jepalab.planning import PlannerConfig, PlanningError, cem, goal_energy, mppi, plan

H, A = 5, 2
PLANNERS = {"cem": cem, "mppi": mppi}


def cfg_for(method: str, **kw) -> PlannerConfig:
    base = dict(method=method, horizon=H, samples=512, iterations=15, action_dim=A,
                action_low=-4.0, action_high=4.0, init_std=1.5, min_std=0.0)
    return PlannerConfig(**{**base, **kw})


def reachable_goal(sys, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a_true = 0.6 * (torch.rand(1, H, A, generator=g) * 2 - 1)
    return sys.unroll(a_true)[0, -1]


@pytest.mark.parametrize("method", ["cem", "mppi"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reaches_a_reachable_goal(method, seed):
    sys = linear_system(seed)
    goal = reachable_goal(sys)
    cost = goal_energy(goal)  # L1, final step: optimum 0, reached by infinitely many plans
    cfg = cfg_for(method, action_low=-1.0, action_high=1.0, init_std=0.5, min_std=0.05)
    res = plan(sys.unroll, cost, cfg, torch.Generator().manual_seed(0))
    z_final = sys.unroll(res.actions[None])[0, -1]
    start_gap = (sys.unroll(torch.zeros(1, H, A))[0, -1] - goal).norm()
    assert (z_final - goal).norm() < 0.1 * start_gap
    # The reported energy is the returned plan's exact energy.
    exact = cost(sys.unroll(res.actions[None])).item()
    assert res.final_energy == pytest.approx(exact, rel=1e-3, abs=1e-6)
    rand = torch.rand(2000, H, A, generator=torch.Generator().manual_seed(5)) * 2 - 1
    assert res.final_energy < cost(sys.unroll(rand)).min().item()


@pytest.mark.parametrize("method", ["cem", "mppi"])
def test_matches_least_squares_optimum(method):
    """Uniformly weighted L2 over all steps is a least-squares problem in the actions."""
    sys = linear_system()
    goal = reachable_goal(sys)
    c, G = sys.affine(H)  # z_t = c_t + G_t a
    d = goal.numel()
    rows = torch.cat([G[t] for t in range(H)]).double() / (H * d) ** 0.5
    rhs = torch.cat([goal - c[t] for t in range(H)]).double() / (H * d) ** 0.5
    a_star = torch.linalg.lstsq(rows, rhs[:, None]).solution[:, 0].float().reshape(H, A)
    assert a_star.abs().max() < 3.5  # box bounds (+-4) inactive at the optimum
    cost = goal_energy(goal, metric="l2", weights="all")
    e_star = cost(sys.unroll(a_star[None])).item()
    assert e_star > 0.05  # the intermediate steps cannot all sit on the goal

    res = plan(sys.unroll, cost, cfg_for(method), torch.Generator().manual_seed(0))
    assert e_star - 1e-5 <= res.final_energy <= 1.03 * e_star
    rand = torch.rand(2000, H, A, generator=torch.Generator().manual_seed(5)) * 8 - 4
    assert res.final_energy < cost(sys.unroll(rand)).min().item()
    assert res.energy_trace[-1] < res.energy_trace[0]


@pytest.mark.parametrize("method", ["cem", "mppi"])
def test_bounds_respected_per_dim(method):
    sys = linear_system()
    goal = 50 * reachable_goal(sys)  # far away: the best plans push against the bounds
    low, high = (-0.3, -1.0), (0.5, 0.2)
    seen = []

    def unroll(a):
        seen.append(a.clone())
        return sys.unroll(a)

    cfg = cfg_for(method, action_low=low, action_high=high, samples=64, iterations=3)
    res = plan(unroll, goal_energy(goal), cfg, torch.Generator().manual_seed(0))
    lo, hi = torch.tensor(low), torch.tensor(high)
    for a in [res.actions[None], *seen]:
        assert (a >= lo).all() and (a <= hi).all()
    assert any(bool((a == lo).any() or (a == hi).any()) for a in seen)  # clipping happened


@pytest.mark.parametrize("method", ["cem", "mppi"])
def test_one_batched_call_per_iteration(method):
    sys = linear_system()
    shapes = []

    def unroll(a):
        shapes.append(tuple(a.shape))
        assert torch.is_inference_mode_enabled()
        return sys.unroll(a)

    cfg = cfg_for(method, samples=48, iterations=4)
    res = PLANNERS[method](unroll, goal_energy(reachable_goal(sys)), cfg,
                           torch.Generator().manual_seed(0))
    assert shapes == [(48, H, A)] * 4
    assert res.iterations == 4 and len(res.energy_trace) == 4
    assert res.final_energy == min(res.energy_trace)
    assert res.actions.shape == (H, A) and res.time_s > 0
    assert torch.is_grad_enabled()  # inference mode did not leak


@pytest.mark.parametrize("method", ["cem", "mppi"])
def test_deterministic_given_the_generator(method):
    sys = linear_system()
    cost = goal_energy(reachable_goal(sys))
    cfg = cfg_for(method, samples=32, iterations=3)
    r1, r2, r3 = (plan(sys.unroll, cost, cfg, torch.Generator().manual_seed(s)) for s in (7, 7, 8))
    assert torch.equal(r1.actions, r2.actions) and r1.energy_trace == r2.energy_trace
    assert not torch.equal(r1.actions, r3.actions)
    direct = PLANNERS[method](sys.unroll, cost, cfg, torch.Generator().manual_seed(7))
    assert torch.equal(direct.actions, r1.actions)  # plan() dispatches on cfg.method


@pytest.mark.parametrize("method", ["cem", "mppi"])
def test_init_is_scored_and_never_lost(method):
    """The warm-start mean is candidate 0: a plan can only be as bad as its init."""
    sys = linear_system()
    goal = reachable_goal(sys)
    cost = goal_energy(goal)
    good = plan(sys.unroll, cost, cfg_for(method), torch.Generator().manual_seed(0)).actions
    e_init = cost(sys.unroll(good[None])).item()
    res = plan(sys.unroll, cost, cfg_for(method, samples=8, iterations=1, init_std=3.0),
               torch.Generator().manual_seed(1), init=good)
    assert res.final_energy <= e_init + 1e-7


def test_token_latents_and_nan_energies():
    """Latents may be [S, H, N, D]; NaN energies never win."""
    sys = linear_system()
    goal = reachable_goal(sys)

    def unroll(a):  # 3 tokens per step; candidate 1.. with NaN
        z = sys.unroll(a)[:, :, None].expand(-1, -1, 3, -1).clone()
        z[1::2] = float("nan")
        return z

    cfg = cfg_for("mppi", samples=32, iterations=3)
    res = plan(unroll, goal_energy(goal[None].expand(3, -1)), cfg, torch.Generator().manual_seed(0))
    assert all(torch.isfinite(torch.tensor(res.energy_trace)))


def test_bad_unroll_and_cost_outputs_are_named():
    sys = linear_system()
    cfg = cfg_for("cem", samples=8, iterations=1)
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(PlanningError, match="unroll"):
        plan(lambda a: sys.unroll(a)[:, :2], goal_energy(sys.z0), cfg, gen)
    with pytest.raises(PlanningError, match="cost"):
        plan(sys.unroll, lambda z: z.sum(-1), cfg, gen)
    with pytest.raises(PlanningError, match="plan.init"):
        plan(sys.unroll, goal_energy(sys.z0), cfg, gen, init=torch.zeros(H + 1, A))
