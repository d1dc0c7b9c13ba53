"""A learned cost-to-go for planning: a goal-conditioned value over pooled latents.

Why: a latent distance to the goal is a myopic energy. On two-rooms the straight line to a goal
in the other room runs into the wall, and a planner that minimises it stops there
(`benchmarks/planning_ceiling.py`: ~55 % success with a *perfect* model, 96 % with the exact
path length). The value learns "how many steps from z to g" from the same offline trajectories
the world model trains on, with no reward and no labels:

    V(z, g) = -(1 - gamma^d) / (1 - gamma)  <= 0       (d: steps to go, `steps_to_go` inverts it)

trained by expectile TD on hindsight goals (goal-conditioned IQL value learning): for a
transition z -> z' and a goal g drawn from the same episode,

    y = 0                                  if g is z's own frame
    y = max(-1 + gamma * V_tgt(z', g),     the one-step backup through a slow target copy,
            -(1 - gamma^k) / (1 - gamma))  the return of the logged path, when g is k steps later
    loss = |tau - 1(y < V)| * (y - V)^2    tau > 0.5: an upper expectile, the best logged action
                                           rather than the average one (IQL)

Both targets bound the optimal value from below for a deterministic scene, so the max is one
too; the logged path's return makes long horizons learnable in few steps, the backup stitches
paths across episodes.

Or, with `ValueConfig.learning: quasimetric` (form "metric" only), the distance d(z, g) itself
is learned with the objective of quasimetric RL (QRL, Wang et al. 2023; here with the symmetric
"metric" form), for the same transitions and goals:

    loss = softplus(cap - d(z, g); beta 0.1) + penalty * relu(d(z, z') - 1)^2

It pushes every (frame, goal) pair as far apart as the one-step constraints let it, which
leaves d at the fewest steps the data's transitions chain together (goals from before the frame
count too, so a random walk's long way between two states does not count). No target copy, no
bootstrapping, no expectile to tune. On the demo encoder's latents (3,000 episodes, 4,000
world-model steps) it read fresh layouts with a Spearman of 0.83 against the true path length
(3.9 steps mean error; expectile TD: 0.71, 4.6 steps) and planned two-rooms at 46 % over 200
episodes (TD: 26 %; `benchmarks/value_planning.py --value-learning quasimetric`, README).

Three forms of V (`ValueConfig.form`):
- "diff" (default), an MLP of [z, g - z]. What z and g share (the room's layout: most of a
  self-supervised latent's variance) cancels in g - z, so the net sees what differs from the
  start. On the demo's JEPA latents an MLP of [z, g] did not learn to compare them at all (its
  value stayed near a constant: Spearman -0.00 against the true path length on fresh layouts);
  the same MLP of [z, g - z] reached 0.54 (`benchmarks/value_planning.py`, README).
- "mlp", an MLP of [z, g] (world models trained before "diff" existed record it).
- "metric", the steps to go as a distance d = ||phi(z) - phi(g)|| in a learned embedding
  (HIQL's parametrisation, here with one shared phi). A metric is zero at the goal, symmetric
  and obeys the triangle inequality, as shortest-path lengths do in a scene whose moves can be
  undone (navigation), so it generalises from fewer pairs; it cannot express one-way moves (a
  push that cannot be undone). `ValueConfig.norm` picks the norm: l2, or l1 = sum_i |phi_i(z)
  - phi_i(g)|. Paths around an obstacle are not Euclidean: three arms that meet at a point (a
  tree; two rooms joined at a door are one, to the door's width) embed isometrically in l1 but
  in no l2, which must read some pairs on different arms nearer than they are (tested on a
  star). On two-rooms that is the wall's two faces at one height: trained the same way, the l2
  value read a goal behind the wall nearer from the face than from the door in 11 of 40 fresh
  layouts, the l1 value in 3, and planned at 89 % against 96 % (`wall_face` of
  `benchmarks/value_planning.py`; docs/findings.md).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jepalab.config import VALUE_FORMS, VALUE_NORMS, ValueConfig
from jepalab.models.mlp import mlp
from jepalab.planning.base import Cost, check_weights, step_energy

# The ValueConfig fields of quasimetric learning as the benchmarks measure it: goals drawn
# uniformly from the episode (a goal at the frame itself teaches a distance nothing).
QUASIMETRIC = {"form": "metric", "learning": "quasimetric", "p_current": 0.0, "p_future": 0.0}


class GridPool(nn.Module):
    """Pooled latents on a side x side grid, flattened D-major as `encode_latents` does
    [..., D * side^2] -> the same averaged onto a coarser to x to grid [..., D * to^2]."""

    def __init__(self, side: int, to: int) -> None:
        super().__init__()
        if side % to:
            raise ValueError(f"GridPool: a {side} x {side} grid does not pool onto {to} x {to}")
        self.side, self.to = side, to

    def forward(self, z: Tensor) -> Tensor:
        grid = z.reshape(-1, z.shape[-1] // self.side**2, self.side, self.side)
        return F.avg_pool2d(grid, self.side // self.to).reshape(*z.shape[:-1], -1)


class GoalValue(nn.Module):
    """V(z, g) <= 0 from latents z [..., D] and goals g [..., D] (broadcast). With `view` (a
    `GridPool`) the value reads both through it (a coarser grid than the predictor's)."""

    def __init__(self, latent_dim: int, hidden: int, depth: int, gamma: float,
                 form: str = "diff", embed: int = 64, view: GridPool | None = None,
                 norm: str = "l2") -> None:
        super().__init__()
        if norm not in VALUE_NORMS:
            raise ValueError(f"value norm must be one of {VALUE_NORMS}, got {norm!r}")
        self.norm = norm
        if form not in VALUE_FORMS:
            raise ValueError(f"value form must be one of {VALUE_FORMS}, got {form!r}")
        self.latent_dim, self.gamma, self.form = latent_dim, float(gamma), form
        self.view = view if view is not None else nn.Identity()
        d = latent_dim if view is None else latent_dim // view.side**2 * view.to**2
        self.net = (mlp(d, embed, hidden, depth) if form == "metric"
                    else mlp(2 * d, 1, hidden, depth))

    def forward(self, z: Tensor, g: Tensor) -> Tensor:
        if self.form == "metric":  # phi of a goal shared by many z is computed once
            return steps_value(self.distance(z, g), self.gamma)
        z, g = torch.broadcast_tensors(self.view(z), self.view(g))
        x = torch.cat([z, g - z if self.form == "diff" else g], -1)
        return -F.softplus(self.net(x).squeeze(-1))

    def distance(self, z: Tensor, g: Tensor) -> Tensor:
        """Form "metric": the steps to go as a distance ||phi(z) - phi(g)||."""
        return self.between(self.embed(z), self.embed(g))

    def between(self, a: Tensor, b: Tensor) -> Tensor:
        """The distance of embeddings a, b [..., embed] (`embed`) in the value's norm, with a
        gradient at 0."""
        sq = (a - b).square()
        return (sq.sum(-1) + 1e-8).sqrt() if self.norm == "l2" else (sq + 1e-8).sqrt().sum(-1)

    def embed(self, z: Tensor) -> Tensor:
        """Form "metric": phi(z), the embedding whose distances are the steps to go."""
        if self.form != "metric":
            raise ValueError(f"GoalValue.distance needs form 'metric', not {self.form!r}")
        return self.net(self.view(z))

    @classmethod
    def from_config(cls, latent_dim: int, cfg: ValueConfig, side: int = 1) -> GoalValue:
        """side: the grid the latents are pooled on (the predictor's `pool`)."""
        view = GridPool(side, cfg.pool) if cfg.pool and cfg.pool != side else None
        return cls(latent_dim, cfg.hidden, cfg.depth, cfg.gamma, cfg.form, cfg.embed, view,
                   cfg.norm)

    def energy(self, weights: str | Tensor = "final", where: str = "value"
               ) -> Callable[[Tensor], Cost]:
        """The planner's energy (`run_episode(energy=...)`): goal latent -> cost of predicted
        latents [S, H, D] in steps to the goal, over the steps as `step_energy` weights them
        ("final": from the last predicted step). Weights are checked here, not at the first plan.
        """
        check_weights(weights, where)

        def energy(z_goal: Tensor) -> Cost:
            goal = z_goal.reshape(1, 1, -1)
            return step_energy(lambda latents: self.steps_to_go(latents, goal), weights, where)

        return energy

    def steps_to_go(self, z: Tensor, g: Tensor) -> Tensor:
        """The value as a number of steps, d = log(1 + (1 - gamma) V) / log(gamma)."""
        floor = -1.0 / (1.0 - self.gamma) + 1e-4
        v = self(z, g).clamp(min=floor)
        return torch.log1p((1.0 - self.gamma) * v) / math.log(self.gamma)


def steps_value(steps: Tensor, gamma: float) -> Tensor:
    """The value of being `steps` steps from the goal, -(1 - gamma^steps) / (1 - gamma) (the
    inverse of `GoalValue.steps_to_go`)."""
    return -(1.0 - gamma ** steps) / (1.0 - gamma)


def value_loss(
    value: GoalValue, target: GoalValue, z: Tensor, z_next: Tensor, goal: Tensor,
    goal_steps: Tensor, expectile: float,
) -> tuple[Tensor, dict[str, float]]:
    """Expectile TD loss of the module docstring on a batch of transitions.

    z, z_next, goal: [B, D]; goal_steps [B] (int): steps from z's frame to the goal's frame,
    0 when the goal is z's own frame (reached), < 0 when it is not later in the episode (no
    logged return). expectile: weight of targets above the value (1 - it below).
    """
    gamma = value.gamma
    with torch.no_grad():
        k = goal_steps.to(z.dtype)
        backup = -1.0 + gamma * target(z_next, goal)
        logged = steps_value(k.clamp(min=0.0), gamma)
        y = torch.where(goal_steps > 0, torch.maximum(backup, logged), backup)
        y = torch.where(goal_steps == 0, torch.zeros_like(y), y)
    v = value(z, goal)
    diff = y - v
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    loss = (weight * diff.square()).mean()
    return loss, {"value_loss": float(loss.detach()), "value_mean": float(v.detach().mean())}


def quasimetric_loss(value: GoalValue, z: Tensor, z_next: Tensor, goal: Tensor,
                     penalty: float, cap: float) -> tuple[Tensor, dict[str, float]]:
    """Quasimetric learning of the steps to go (module docstring) on a batch of transitions
    z -> z_next [B, D] and goals [B, D] of the same episodes: push d(z, goal) up (saturating
    near `cap` steps) under the penalised constraint d(z, z_next) <= 1."""
    here = value.embed(z)  # phi(z) once for both distances
    far = value.between(here, value.embed(goal))
    local = value.between(here, value.embed(z_next))
    push = F.softplus(cap - far, beta=0.1).mean()
    violation = F.relu(local - 1.0).square().mean()
    loss = push + penalty * violation
    return loss, {"value_loss": float(loss.detach()), "value_push": float(push.detach()),
                  "value_violation": float(violation.detach()),
                  "value_mean": float(steps_value(far.detach(), value.gamma).mean())}


def layout_mates(layout: np.ndarray, episodes: Sequence[int]) -> dict[int, list[int]]:
    """Per episode e of `episodes`, the others of `episodes` whose layout id (layout[e],
    `TrajectoryStore.layout_ids`) is e's: the `mates` of `draw_goal`."""
    groups: dict[int, list[int]] = defaultdict(list)
    for e in episodes:
        groups[int(layout[e])].append(e)
    return {e: [m for m in groups[int(layout[e])] if m != e] for e in episodes}


def draw_goal(rng: np.random.Generator, e: int, t: int, lengths: Sequence[int],
              mates: Sequence[int], v: ValueConfig) -> tuple[int, int]:
    """A goal (episode, frame) for a transition from frame t of episode e: with probability
    `v.p_layout`, any frame of one of `mates` (the other episodes of e's layout), else
    `hindsight_goal` in e. lengths[i]: frames of episode i."""
    if len(mates) and v.p_layout > 0 and rng.random() < v.p_layout:
        other = int(mates[rng.integers(len(mates))])
        return other, int(rng.integers(lengths[other]))
    return e, hindsight_goal(rng, t, lengths[e], v.gamma, v.p_current, v.p_future)


def hindsight_goal(rng: np.random.Generator, t: int, frames: int, gamma: float,
                   p_current: float, p_future: float) -> int:
    """A goal frame for a transition from frame t of an episode of `frames` frames: t itself
    (p_current), a later frame at a geometric offset of mean 1 / (1 - gamma) (p_future), else
    any frame of the episode."""
    u = rng.random()
    if u < p_current:
        return t
    if u < p_current + p_future:
        return min(t + int(rng.geometric(1.0 - gamma)), frames - 1)
    return int(rng.integers(frames))
