"""MPC episodes on a 2-D point env with an exact 'identity' encoder, and the GIF writer."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from planning_helpers import PointEnv, encode_point, unroll_point

from jepalab.planning import (
    EpisodeCorrection,
    PlannerConfig,
    PlanningError,
    goal_energy,
    run_episode,
    shift_plan,
    write_gif,
)


def point_cfg(method: str, **kw) -> PlannerConfig:
    return PlannerConfig(**{"method": method, "horizon": 6, "samples": 64, "iterations": 3,
                            "action_dim": 2, **kw})


def test_identity_encoder_recovers_the_state():
    env = PointEnv()
    obs, _ = env.reset(seed=3)
    z = encode_point(torch.from_numpy(obs["pixels"])[None])
    assert np.abs(z[0].numpy() - obs["state"]).max() < 2 / (env.size - 1)


@pytest.mark.parametrize(("method", "replan_every"), [("cem", 1), ("mppi", 1), ("mppi", 3)])
def test_mpc_reaches_the_goal(method, replan_every):
    env = PointEnv(max_episode_steps=40)
    obs, info0 = env.reset(seed=0)
    calls = []

    def unroll_from(z0, actions):
        calls.append(actions.shape[0])
        return unroll_point(z0, actions)

    res = run_episode(env, encode_point, unroll_from, point_cfg(method),
                      torch.Generator().manual_seed(0), replan_every=replan_every, obs=obs,
                      weights="all")
    assert res.success and res.final_distance < env.success_radius < info0["distance"]
    # Straight-line distance / top speed bounds the steps from below; a sane plan is close.
    fewest = int(np.ceil(info0["distance"] / (env.speed * np.sqrt(2))))
    assert res.steps <= fewest + 4
    assert res.replans == int(np.ceil(res.steps / replan_every)) == len(res.energies)
    assert len(calls) == res.replans * 3 and set(calls) == {64}
    assert res.plan_time_per_step_s == pytest.approx(res.plan_time_s / res.steps)
    assert res.frames == [] and res.goal_frame.shape == (32, 32, 3)
    assert res.final_state == pytest.approx(env.pos.tolist())  # the state it ended in
    json.dumps(res.to_dict())  # JSON-ready, no images
    assert "frames" not in res.to_dict()


def test_mpc_without_warm_start_and_start_frame_from_render(tmp_path):
    env = PointEnv(max_episode_steps=40)
    env.reset(seed=1)
    res = run_episode(env, encode_point, unroll_point, point_cfg("cem", warm_start=False),
                      torch.Generator().manual_seed(0), record_frames=True)
    assert res.success
    assert len(res.frames) == res.steps + 1  # the start frame, then one per step
    path = write_gif(res.frames, res.goal_frame, tmp_path / "ep.gif",
                     extra_panels=[res.frames[::-1]])
    with Image.open(path) as im:
        assert im.n_frames == len(res.frames)
        assert im.size == (2 * (3 * 32 + 2 * 2), 2 * 32)  # 3 panels + 2 separators, scale 2
    assert [p.name for p in tmp_path.iterdir()] == ["ep.gif"]  # no temp file left


def test_warm_start_passes_the_shifted_plan():
    """With warm start, each plan's candidate 0 is the previous plan shifted by one step."""
    env = PointEnv(max_episode_steps=3)
    env.reset(seed=2)
    cost = goal_energy(encode_point(torch.from_numpy(env.render_goal())[None]))
    batches = []

    def unroll_from(z0, actions):
        batches.append((z0.clone(), actions.clone()))
        return unroll_point(z0, actions)

    cfg = point_cfg("cem", iterations=1)
    res = run_episode(env, encode_point, unroll_from, cfg, torch.Generator().manual_seed(0))
    assert len(batches) == res.steps == 3
    assert torch.equal(batches[0][1][0], torch.zeros(6, 2))  # no init: mid-point of the bounds
    for (z0, cands), (_, nxt) in zip(batches, batches[1:]):
        # One iteration per plan, so the plan is this batch's lowest-energy candidate.
        plan_actions = cands[cost(unroll_point(z0, cands)).argmin()]
        assert torch.equal(nxt[0], shift_plan(plan_actions))

    env.reset(seed=2)
    batches.clear()
    cold = dataclasses.replace(cfg, warm_start=False)
    run_episode(env, encode_point, unroll_from, cold, torch.Generator().manual_seed(0))
    assert all(torch.equal(a[0], torch.zeros(6, 2)) for _, a in batches)


def test_step_limits_and_bad_arguments():
    env = PointEnv(max_episode_steps=100)
    env.reset(seed=0)
    res = run_episode(env, encode_point, unroll_point, point_cfg("cem"),
                      torch.Generator().manual_seed(0), max_steps=2)
    assert res.steps == 2 and not res.success
    with pytest.raises(PlanningError, match="replan_every"):
        run_episode(env, encode_point, unroll_point, point_cfg("cem"),
                    torch.Generator().manual_seed(0), replan_every=7)
    with pytest.raises(PlanningError, match="write_gif"):
        write_gif([], np.zeros((4, 4, 3), np.uint8), "unused.gif")


def _free(z0, actions):
    """A model that knows no wall: z' = z + 0.2 a."""
    return z0.expand(actions.shape[0], -1)[:, None] + 0.2 * torch.cumsum(actions, 1)


def test_episode_correction_learns_a_wall_where_it_was_met_and_nowhere_else():
    fix = EpisodeCorrection(_free)
    right, up = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    # two executed steps: a free one the model gets right, then a push into a wall at x = 0
    fix.observe(torch.tensor([[-0.2, 0.0]]), right, torch.tensor([[0.0, 0.0]]))
    fix.observe(torch.tensor([[0.0, 0.0]]), right, torch.tensor([[0.0, 0.0]]))
    assert fix.r[0].abs().max() < 1e-6 and fix.r[1].tolist() == pytest.approx([-0.2, 0.0])
    at_wall = torch.tensor([[0.0, 0.0]])
    pushes = torch.stack([right.repeat(3, 1), up.repeat(3, 1)])  # [2 candidates, 3 steps, 2]
    model, fixed = _free(at_wall, pushes), fix.unroll(at_wall, pushes)
    assert model[0, -1, 0] == pytest.approx(0.6)
    assert fixed[0, -1, 0] < 0.25 * 0.6  # into the wall: most of the phantom motion is gone
    assert fixed[1] == pytest.approx(model[1], abs=0.02)  # along it: another action, unchanged
    far = torch.tensor([[-0.8, 0.0]])  # far from every executed step: the model as it was
    assert fix.unroll(far, pushes)[:, :2] == pytest.approx(_free(far, pushes)[:, :2], abs=1e-3)
    empty = EpisodeCorrection(_free)
    assert torch.equal(empty.unroll(far, pushes), _free(far, pushes))
    with pytest.raises(PlanningError, match="scale"):
        EpisodeCorrection(_free, scale=0.0)


def test_mpc_with_a_correction_observes_every_executed_step():
    env = PointEnv(max_episode_steps=40)
    obs, _ = env.reset(seed=0)
    fix = EpisodeCorrection(unroll_point)
    res = run_episode(env, encode_point, unroll_point, point_cfg("cem"),
                      torch.Generator().manual_seed(0), replan_every=2, obs=obs,
                      weights="all", correction=fix)
    assert res.success
    assert len(fix.r) == res.steps - 1  # every step but the last, after which it stopped
    # the model is the point's own dynamics: its one-step errors are the pixel grid's
    assert max(float(r.abs().max()) for r in fix.r) < 2 / (env.size - 1)
