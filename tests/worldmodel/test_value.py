"""The learned cost-to-go: its TD targets, its step inversion, that it learns shortest-path
distances on a known graph, and its path through the world model and the planner."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from jepalab.config import ValueConfig
from jepalab.eval.downstream import spearman
from jepalab.models.value import (
    GoalValue,
    draw_goal,
    hindsight_goal,
    layout_mates,
    quasimetric_loss,
    value_loss,
)
from jepalab.objectives.jepa import ema_update


class ConstValue(GoalValue):
    """V(z, g) = a fixed number per call (for hand-checked targets)."""

    def __init__(self, v: float, gamma: float = 0.9) -> None:
        super().__init__(2, 8, 1, gamma)
        self.v = v

    def forward(self, z, g):
        z, g = torch.broadcast_tensors(z, g)
        return torch.full(z.shape[:-1], self.v) + 0.0 * self.net(torch.cat([z, g], -1))[..., 0]


def test_targets_are_zero_at_the_goal_and_the_max_of_backup_and_logged_return():
    gamma, tau = 0.9, 0.9
    online, target = ConstValue(-2.0, gamma), ConstValue(-5.0, gamma)
    z = torch.zeros(4, 2)
    steps = torch.tensor([0, 1, 10, -1])
    loss, m = value_loss(online, target, z, z, z, steps, tau)
    backup = -1 + gamma * -5.0  # -5.5
    logged = [-(1 - gamma**k) / (1 - gamma) for k in (1, 10)]  # -1.0, -6.51
    y = torch.tensor([0.0, max(backup, logged[0]), max(backup, logged[1]), backup])
    diff = y - (-2.0)
    w = torch.where(diff > 0, tau, 1 - tau)
    assert math.isclose(float(loss.detach()), float((w * diff**2).mean()), rel_tol=1e-6)
    assert m["value_mean"] == pytest.approx(-2.0)


def test_steps_to_go_inverts_the_discounted_value():
    gamma = 0.95
    for d in (0.0, 1.0, 7.0, 40.0):
        v = ConstValue(-(1 - gamma**d) / (1 - gamma), gamma)
        got = float(v.steps_to_go(torch.zeros(1, 2), torch.zeros(1, 2)).detach()[0])
        assert got == pytest.approx(d, abs=1e-2)


def random_walks(n: int, eps: int, length: int) -> torch.Tensor:
    """`eps` random walks of `length` steps on the states 0..n-1 of a line: [eps, length + 1]."""
    rng = np.random.default_rng(0)
    walks = []
    for _ in range(eps):
        s = [int(rng.integers(n))]
        for _ in range(length):
            s.append(int(np.clip(s[-1] + rng.choice([-1, 1]), 0, n - 1)))
        walks.append(s)
    return torch.tensor(walks)


def test_quasimetric_learning_recovers_shortest_paths_from_random_walks():
    """The same random walks, learned as a quasimetric (push random pairs of an episode apart,
    each logged step at most 1): d(s, g) must come out as |s - g| although the walks take far
    longer between the two; a one-step violation shows in the loss's metrics."""
    torch.manual_seed(0)
    n, eps, length = 10, 60, 40
    walks, eye = random_walks(n, eps, length), torch.eye(n)
    value = GoalValue(n, 64, 2, 0.9, form="metric", embed=16)
    opt = torch.optim.Adam(value.parameters(), 3e-3)
    for _ in range(600):
        e, t = torch.randint(eps, (128,)), torch.randint(length, (128,))
        tg = torch.randint(length + 1, (128,))  # goals before the frame count too
        loss, m = quasimetric_loss(value, eye[walks[e, t]], eye[walks[e, t + 1]],
                                   eye[walks[e, tg]], penalty=10.0, cap=40.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    s, g = (x.flatten() for x in torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"))
    with torch.no_grad():
        d = value.steps_to_go(eye[s], eye[g]).numpy()
    true = (s - g).abs().numpy()
    assert spearman(d, true) > 0.95, spearman(d, true)
    assert np.abs(d - true).mean() < 0.5, np.abs(d - true).mean()
    assert m["value_violation"] < 0.05 and m["value_push"] > 0
    value.net[-1].weight.data.mul_(3.0)  # stretch phi: one steps apart read as more than one
    _, stretched = quasimetric_loss(value, eye[:1], eye[1:2], eye[:1], 10.0, 40.0)
    assert stretched["value_violation"] > 1.0
    with pytest.raises(ValueError, match="form 'metric'"):
        quasimetric_loss(GoalValue(n, 8, 1, 0.9), eye[:1], eye[1:2], eye[:1], 10.0, 40.0)
    with pytest.raises(ValueError, match="needs form 'metric'"):
        ValueConfig(learning="quasimetric")


@pytest.mark.parametrize(("form", "layout"), [("diff", 0.0), ("metric", 0.0), ("diff", 1.0)])
def test_learns_shortest_path_lengths_from_random_walks_on_a_chain(form, layout):
    """States 0..9 on a line (one-hot latents), random-walk episodes of 40 steps; after training
    on hindsight goals (reached = the same state), steps_to_go(s, g) must be |s - g| within
    one step on average, ranks included. The random walk's own hitting times are far longer, so
    a value of the average logged action (expectile 0.5) or the worst fails. With `layout` > 0
    each episode's latents also carry a fixed random vector of that scale (16 dims: a room
    layout that dominates the latent and never changes within an episode), fresh for the test
    pairs: "diff" must still read the state (an MLP of [z, g] reached a Spearman of only 0.80
    there, 0.44 at scale 2, when this test was written)."""
    torch.manual_seed(0)
    n, eps, length, nuisance = 10, 60, 40, 16 if layout else 0
    walks = random_walks(n, eps, length)
    eye = torch.eye(n)

    def latent(states: torch.Tensor, rooms: torch.Tensor) -> torch.Tensor:
        return torch.cat([eye[states], rooms], -1)

    rooms = layout * torch.randn(eps, nuisance)
    gamma = 0.9
    value = GoalValue(n + nuisance, 64, 2, gamma, form=form, embed=16)
    target = copy.deepcopy(value).requires_grad_(False)
    opt = torch.optim.Adam(value.parameters(), 3e-3)
    for _ in range(800):
        e = torch.randint(eps, (128,))
        t = torch.randint(length, (128,))
        tg = torch.where(torch.rand(128) < 0.2, t, torch.randint(length + 1, (128,)))
        steps = torch.where(tg >= t, tg - t, torch.full_like(t, -1))
        steps = torch.where(walks[e, t] == walks[e, tg], 0, steps)
        loss, _ = value_loss(value, target, latent(walks[e, t], rooms[e]),
                             latent(walks[e, t + 1], rooms[e]), latent(walks[e, tg], rooms[e]),
                             steps, 0.9)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema_update(target, value, 0.95)
    s, g = (x.flatten() for x in torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"))
    room = layout * torch.randn(1, nuisance).expand(len(s), nuisance)  # an unseen layout
    with torch.no_grad():
        d = value.steps_to_go(latent(s, room), latent(g, room)).numpy()
    true = (s - g).abs().numpy()
    rho = spearman(d, true)
    assert rho > 0.95, rho
    assert np.abs(d - true).mean() < 1.0, np.abs(d - true).mean()


@pytest.mark.parametrize("form", ["diff", "mlp"])
def test_the_mlp_forms_read_the_goal_relative_to_the_start_or_as_it_is(form):
    torch.manual_seed(0)
    value = GoalValue(4, 16, 2, 0.9, form=form)
    z, g = torch.randn(2, 8, 4)
    with torch.no_grad():
        x = torch.cat([z, g - z if form == "diff" else g], -1)
        assert torch.allclose(value(z, g), -torch.nn.functional.softplus(value.net(x))[..., 0])
    assert GoalValue(4, 16, 2, 0.9).form == "diff"  # the default


def _star_distances(norm: str) -> tuple[np.ndarray, np.ndarray]:
    """Quasimetric learning on a star of three arms of two steps (0 the centre; arms 1-2, 3-4,
    5-6): the learned distances between all nodes and the true ones."""
    edges = [(0, 1), (1, 2), (0, 3), (3, 4), (0, 5), (5, 6)]
    arm = [0, 1, 2, 1, 2, 1, 2]  # steps from the centre
    true = np.array([[abs(arm[a] - arm[b]) if a == b or 0 in (a, b) or (a + 1) // 2 == (b + 1) // 2
                      else arm[a] + arm[b] for b in range(7)] for a in range(7)])
    torch.manual_seed(0)
    eye = torch.eye(7)
    value = GoalValue(7, 64, 2, 0.9, form="metric", embed=16, norm=norm)
    opt = torch.optim.Adam(value.parameters(), 3e-3)
    src, dst = (torch.tensor([e[i] for e in edges] + [e[1 - i] for e in edges]) for i in (0, 1))
    for _ in range(1500):
        i, g = torch.randint(len(src), (128,)), torch.randint(7, (128,))
        loss, _ = quasimetric_loss(value, eye[src[i]], eye[dst[i]], eye[g], 10.0, 40.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return value.distance(eye[:, None], eye[None]).numpy(), true


def test_an_l1_metric_holds_a_tree_that_l2_cannot():
    """Three arms meeting at a point (as two rooms meet at a door) embed in l1 but not in l2,
    which must read some tip-to-tip pairs nearer than they are: l1 learns distances in one
    proportion to the true ones (the constraint's slack), l2 does not."""
    spread = {}
    for norm in ("l1", "l2"):
        d, true = _star_distances(norm)
        ratio = d[true > 0] / true[true > 0]
        spread[norm] = ratio.max() / ratio.min()
    assert spread["l1"] < 1.15 < spread["l2"], spread
    value = GoalValue(5, 32, 2, 0.95, form="metric", embed=8, norm="l1")
    z, g = torch.randn(2, 4, 5)
    with torch.no_grad():
        emb = value.net(z) - value.net(g)
        assert torch.allclose(value.distance(z, g), emb.abs().sum(-1), atol=1e-3)
    with pytest.raises(ValueError, match="norm"):
        GoalValue(5, 32, 2, 0.95, form="metric", norm="l3")


def test_the_metric_form_is_a_distance_in_steps():
    torch.manual_seed(0)
    value = GoalValue(5, 32, 2, 0.95, form="metric", embed=8)
    z, g, w = torch.randn(3, 16, 5)
    with torch.no_grad():
        d_zg, d_gz = value.steps_to_go(z, g), value.steps_to_go(g, z)
        emb = value.net(z) - value.net(g)
        assert torch.allclose(d_zg, emb.norm(dim=-1), rtol=1e-3, atol=1e-3)
        assert torch.allclose(d_zg, d_gz, atol=1e-3)
        assert value(g, g).abs().max() < 1e-3
        assert (d_zg <= value.steps_to_go(z, w) + value.steps_to_go(w, g) + 1e-3).all()
    with pytest.raises(ValueError, match="form"):
        GoalValue(5, 32, 2, 0.95, form="table")


def test_value_energy_weights_the_steps_to_go():
    from jepalab.errors import JepalabError

    class L1Steps(GoalValue):  # steps_to_go = |z - g| summed, by hand
        def steps_to_go(self, z, g):
            return (z - g).abs().sum(-1)

    value = L1Steps(3, 8, 1, 0.9)
    goal = torch.zeros(1, 3)
    lat = torch.stack([torch.ones(2, 3), torch.zeros(2, 3)])  # [S=2, H=2, D=3]
    lat[0, 1] = 0.0  # first candidate ends at the goal, second starts there
    assert value.energy("final")(goal)(lat).tolist() == [0.0, 0.0]
    lat[1, 1] = 2.0
    final = value.energy("final")(goal)(lat)
    mean = value.energy("all")(goal)(lat)
    assert final.tolist() == [0.0, 6.0] and mean.tolist() == [1.5, 3.0]
    with pytest.raises(JepalabError, match="weights"):
        value.energy("sometimes")


def test_draw_goal_takes_layout_mates_at_p_layout_and_else_the_hindsight_goal():
    v = ValueConfig(p_layout=0.3)
    lengths = [10, 20, 30]
    draws = [draw_goal(np.random.default_rng(i), 0, 4, lengths, [2], v) for i in range(2000)]
    other = [(e, f) for e, f in draws if e != 0]
    assert {e for e, _ in other} == {2} and abs(len(other) / 2000 - 0.3) < 0.04
    assert max(f for _, f in other) >= 25  # any frame of the mate's 30
    assert all(0 <= f < 10 for e, f in draws if e == 0)
    for i in range(50):  # no mates, or p_layout 0: the episode's hindsight goal, same draws
        plain = hindsight_goal(np.random.default_rng(i), 4, 10, v.gamma, v.p_current, v.p_future)
        assert draw_goal(np.random.default_rng(i), 0, 4, lengths, [], v) == (0, plain)
        assert draw_goal(np.random.default_rng(i), 0, 4, lengths, [1, 2], ValueConfig()) == (
            0, plain)


def test_layout_mates_are_the_other_listed_episodes_of_a_layout():
    layout = np.array([0, 0, 1, 0, 1, 2])
    assert layout_mates(layout, [0, 1, 2, 3, 5]) == {0: [1, 3], 1: [0, 3], 2: [], 3: [0, 1],
                                                     5: []}


def test_the_value_reads_a_coarser_grid_than_the_predictor():
    """value.pool: the latents pooled on the predictor's 4 x 4 grid, averaged onto 2 x 2, are
    the latents pooled on 2 x 2 directly; the value's network reads those."""
    from jepalab.config import WorldModelConfig
    from jepalab.models.value import GridPool
    from jepalab.models.vit import vit
    from jepalab.objectives.worldmodel import encode_latents

    torch.manual_seed(0)
    enc = vit("micro", img_size=32, patch_size=8, depth=1).eval()  # a 4 x 4 token grid
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        fine, coarse = encode_latents(enc, x, 4), encode_latents(enc, x, 2)
        torch.testing.assert_close(GridPool(4, 2)(fine), coarse)
        torch.testing.assert_close(GridPool(4, 2)(fine[None])[0], coarse)  # any leading dims
        cfg = ValueConfig(pool=2, **QUASIMETRIC_FIELDS)
        value = GoalValue.from_config(fine.shape[-1], cfg, side=4)
        plain = GoalValue.from_config(coarse.shape[-1], ValueConfig(**QUASIMETRIC_FIELDS))
        plain.net.load_state_dict(value.net.state_dict())
        torch.testing.assert_close(value.distance(fine[:2], fine[2:]),
                                   plain.distance(coarse[:2], coarse[2:]))
    assert isinstance(GoalValue.from_config(8, ValueConfig(pool=2), side=2).view, torch.nn.Identity)
    with pytest.raises(ValueError, match="must divide predictor.pool=4"):
        WorldModelConfig(encoder="e", data={"path": "d"}, value={"pool": 3},
                         predictor={"arch": "conv", "pool": 4})


QUASIMETRIC_FIELDS = {"form": "metric", "learning": "quasimetric"}


def test_keypoints_locate_each_channel_on_the_token_grid():
    """predictor.keypoints: after the pooled grid, each channel's soft-argmax (x then y, in
    (0, 1), row-major tokens); cold, it is the position of the channel's peak token, hot the
    grid's centre (tokens are layer-normed first). Only the MLP predictor reads it and the
    value cannot re-pool it."""
    from jepalab.config import PredictorConfig, WorldModelConfig
    from jepalab.objectives.worldmodel import encode_latents

    h = torch.full((1, 16, 4), -1.0)  # a 4 x 4 grid of 4 channels
    h[0, 1 * 4 + 3, 0] = h[0, 2 * 4 + 0, 1] = h[0, 0, 2] = 5.0
    z = encode_latents(lambda x: h, None, 2, keypoints=0.01)
    assert z.shape == (1, 4 * (4 + 2))
    torch.testing.assert_close(z[0, 16:19], torch.tensor([0.875, 0.125, 0.125]))  # x
    torch.testing.assert_close(z[0, 20:23], torch.tensor([0.375, 0.625, 0.125]))  # y
    torch.testing.assert_close(encode_latents(lambda x: h, None, 2)[0], z[0, :16])
    hot = encode_latents(lambda x: h, None, 1, keypoints=1e6)[0, 4:]
    torch.testing.assert_close(hot, torch.full((8,), 0.5), atol=1e-4, rtol=0)
    assert PredictorConfig(pool=2, keypoints=2.0).latent_dim(64) == 64 * 6
    with pytest.raises(ValueError, match="keypoints: needs arch 'mlp'"):
        PredictorConfig(arch="conv", keypoints=2.0)
    with pytest.raises(ValueError, match="value.pool: reads a grid, not keypoints"):
        WorldModelConfig(encoder="e", data={"path": "d"}, value={"pool": 1},
                         predictor={"pool": 2, "keypoints": 1.0})
