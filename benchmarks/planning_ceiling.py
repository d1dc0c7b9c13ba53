"""The planner's ceiling on two-rooms: MPC success with a *perfect* world model.

The latent is the agent's true (x, y) and the unroll is the scene's own collision rule (walls,
door, arena bounds; `TwoRoomsEnv.move`, vectorised over candidates), so any failure is the
planner's and the goal energy's, not the representation's. Same planner, energy and episode
settings as a contract's controller; success with a Wilson 95 % CI per setting. No encoder is
used. Energies: "l1", the contracts' distance to the goal latent; "path", the exact cost-to-go
(`TwoRoomsEnv.path_length`, the shortest way around the wall): the best a learned value could
do, to tell the search's limit from the energy's; "learned", the cost-to-go that
`jepalab.models.value` learns (expectile TD on hindsight goals, the world model's `value`
defaults) from the demo's data (300 collected episodes, half scripted, half random), here on the
true state (agent x, y, wall x, door y) instead of a latent: what the learning itself recovers
of the gap between "l1" and "path". Two diagnostics ask what limits "learned": the same network
regressed on the *exact* cost-to-go, "exact-pairs" on the (frame, hindsight goal) pairs TD
learns from, "exact-cover" from the same frames to goals drawn anywhere in the episode's layout
(both rooms). If "exact-pairs" stays near "learned" while "exact-cover" reaches "path", neither
the network, the planner nor TD is what is missing, but pairs of a start with a goal behind the
wall that the offline data never holds. "quasimetric" learns the steps to go as a distance
(`value.learning: quasimetric`) from the same data, goals drawn uniformly from the episode.
`--layout-every K` collects the values' episodes K to a wall (the scene's `layout_every`), so
with `--value-set p_layout=0.5` half the goals come from the layout's other episodes.

    python benchmarks/planning_ceiling.py [--episodes 20] [--value-steps 3000]
        [--only l1|path|learned|exact-pairs|exact-cover|quasimetric] [--value-policy mixture:0.5]
        [--value-data 300]   # episodes the values learn from; --value-policy tour:0.5: tours
        [--layout-every 1] [--value-set p_layout=0.5]   # episodes sharing walls, their goals
        [--out runs/bench/planning_ceiling.json]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import numpy as np
import torch

from jepalab.config import VALUE_FORMS, ValueConfig, load
from jepalab.data.collect import collect
from jepalab.data.store import TrajectoryStore
from jepalab.envs import make
from jepalab.eval.stats import wilson_ci
from jepalab.io import atomic_write_json, git_info, now_iso
from jepalab.models.value import (
    QUASIMETRIC,
    GoalValue,
    draw_goal,
    layout_mates,
    quasimetric_loss,
    steps_value,
    value_loss,
)
from jepalab.objectives.jepa import ema_update
from jepalab.planning import PlannerConfig, run_episode, step_energy

SETTINGS = [  # (horizon, samples, iterations, weights, energy)
    (8, 128, 3, "all", "l1"), (8, 128, 3, "final", "l1"), (16, 256, 4, "all", "l1"),
    (24, 256, 4, "all", "l1"), (32, 256, 5, "all", "l1"), (8, 128, 3, "all", "path"),
    (8, 128, 3, "final", "path"), (8, 128, 3, "all", "learned"), (8, 128, 3, "final", "learned"),
    (8, 128, 3, "final", "exact-pairs"), (8, 128, 3, "final", "exact-cover"),
    (8, 128, 3, "final", "quasimetric"),
]
VALUES = ("learned", "exact-pairs", "exact-cover", "quasimetric")  # planned with a GoalValue


def path_energy(u, weights: str):
    """goal latent -> cost: the shortest-path length of the predicted positions (the goal is
    the scene's own)."""

    def energy(z_goal: torch.Tensor):
        return step_energy(lambda latents: torch.from_numpy(
            u.path_length(latents[..., :2].double().numpy())).float(), weights)

    return energy


def exact_steps(u, states: np.ndarray, goals: np.ndarray) -> np.ndarray:
    """Shortest-path steps [T, G] from the agents of one episode's states [T, 4] (one layout)
    to goal points [G, 2], with the scene's own `path_length`."""
    u.wall_x, u.door_y = float(states[0, 2]), float(states[0, 3])
    out = np.empty((len(states), len(goals)), np.float32)
    for j, g in enumerate(goals):
        u.goal = np.asarray(g, np.float64)
        out[:, j] = u.path_length(states[:, :2].astype(np.float64)) / u.max_step
    return out


def learn_value(steps: int, batch: int = 256, seed: int = 0, form: str = "mlp",
                episodes: int = 300, targets: str = "learned", policy: str = "mixture:0.5",
                overrides: list[str] | None = None, layout_every: int = 1
                ) -> tuple[GoalValue, dict]:
    """The world model's cost-to-go learning (`ValueConfig` defaults, the same loss and goal
    sampling), on the true states of data collected as the demo's (300 episodes of `policy`).
    targets "exact-pairs" / "exact-cover": regress the same network on the exact cost-to-go
    instead, to the same hindsight goals / to 64 goal points drawn uniformly per layout;
    "quasimetric": `value.learning: quasimetric` (form metric, goals uniform in the episode).
    overrides: ValueConfig fields as KEY=VALUE (e.g. "penalty=100"). layout_every: the
    episodes share each layout K at a time (the scene's `layout_every`; goals from the other
    episodes of the layout with `--p_layout`)."""
    qrl = targets == "quasimetric"
    base = [f"{key}={val}" for key, val in (QUASIMETRIC if qrl else {"form": form}).items()]
    v = load(ValueConfig, None, base + list(overrides or []))
    if targets.startswith("exact") and v.p_layout > 0:
        raise SystemExit(f"{targets}: the exact steps are to the episode's own frames; "
                         "drop p_layout")
    if v.p_layout > 0 and layout_every < 2:
        raise SystemExit(f"p_layout={v.p_layout}: no two episodes share a wall; add "
                         "--layout-every K (K > 1)")
    with tempfile.TemporaryDirectory() as tmp:
        store = TrajectoryStore.open(collect(
            "two-rooms", episodes, f"{tmp}/data", policy=policy, image_size=16, max_steps=64,
            progress=False, scene_kwargs={"random_wall": True, "terminate_on_success": False,
                                          "layout_every": layout_every}))
        states = np.stack([store.series(e, "states") for e in range(store.num_episodes)])
        mates = layout_mates(store.layout_ids(), range(store.num_episodes))
    rng, (n_eps, frames) = np.random.default_rng(seed), states.shape[:2]
    if targets.startswith("exact"):  # goal points per episode and the exact steps to them
        goals = states[..., :2].copy()
        if targets == "exact-cover":
            wall, left = states[:, :1, 2], rng.random((n_eps, 64)) < 0.5  # half per room
            lo, hi = np.where(left, 0.06, wall + 0.06), np.where(left, wall - 0.06, 0.94)
            goals = np.stack([lo + (hi - lo) * rng.random((n_eps, 64)),
                              rng.uniform(0.06, 0.94, (n_eps, 64))], -1).astype(np.float32)
        u = make("two-rooms", image_size=16, random_wall=True).unwrapped
        table = torch.from_numpy(np.stack([exact_steps(u, states[e], goals[e])
                                           for e in range(n_eps)]))
        goals = torch.from_numpy(np.concatenate(
            [goals, np.broadcast_to(states[:, :1, 2:], (*goals.shape[:2], 2))], -1)).float()
    z = torch.from_numpy(states).float()
    torch.manual_seed(seed)
    value = GoalValue.from_config(z.shape[-1], v)
    target = copy.deepcopy(value).requires_grad_(False)
    opt = torch.optim.AdamW(value.parameters(), 1e-3, weight_decay=1e-4)
    t0 = time.perf_counter()
    for _ in range(steps):
        e, t = rng.integers(n_eps, size=batch), rng.integers(frames - 1, size=batch)
        ge, g = (e, rng.integers(goals.shape[1], size=batch)) if targets == "exact-cover" else (
            np.array(x) for x in zip(*[draw_goal(rng, int(ei), int(ti), [frames] * n_eps,
                                                 mates[ei], v) for ei, ti in zip(e, t)]))
        if qrl:
            loss, m = quasimetric_loss(value, z[e, t], z[e, t + 1], z[ge, g], v.penalty, v.cap)
        elif targets == "learned":
            k = torch.from_numpy(np.where((ge == e) & (g >= t), g - t, -1))
            loss, m = value_loss(value, target, z[e, t], z[e, t + 1], z[ge, g], k, v.expectile)
        else:
            y = steps_value(table[e, t, g], v.gamma)
            loss = (value(z[e, t], goals[e, g]) - y).square().mean()
            m = {"value_loss": float(loss.detach())}
        opt.zero_grad()
        loss.backward()
        opt.step()
        if targets == "learned":  # only TD reads the slow target copy
            ema_update(target, value, v.target_momentum)
    return value.eval().requires_grad_(False), {
        "targets": targets, "steps": steps, "batch": batch, "form": v.form, "episodes": episodes,
        "policy": policy, "overrides": list(overrides or []), "layout_every": layout_every,
        "seconds": time.perf_counter() - t0, **m}


def run(setting: tuple[int, int, int, str, str], episodes: int, max_steps: int,
        values: dict[str, GoalValue] | None = None) -> dict:
    horizon, samples, iterations, weights, kind = setting
    env = make("two-rooms", image_size=32, random_wall=True)
    u = env.unwrapped
    ok, t0 = [], time.perf_counter()
    for seed in range(episodes):
        obs, _ = env.reset(seed=seed)
        first = [True]

        def encode(pixels: torch.Tensor, first: list[bool] = first) -> torch.Tensor:
            xy = u.goal if first[0] else u.agent  # the goal frame is encoded first
            first[0] = False  # the state: agent x, y, then the episode's wall x and door y
            return torch.tensor(np.asarray([*xy, u.wall_x, u.door_y], np.float32))[None]

        def unroll_from(z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
            xy = torch.from_numpy(u.unroll(z0[:, :2].double().numpy(),
                                           actions.double().numpy())).float()
            return torch.cat([xy, z0[None, :, 2:].expand(*xy.shape[:2], 2)], -1)

        cfg = PlannerConfig(method="cem", horizon=horizon, samples=samples,
                            iterations=iterations, elites=16, action_dim=2, action_low=-1.0,
                            action_high=1.0)
        energy = None  # "l1": the contracts' goal_energy
        if kind == "path":
            energy = path_energy(u, weights)
        elif kind in VALUES:
            energy = (values or {})[kind].energy(weights)
        res = run_episode(env, encode, unroll_from, cfg, torch.Generator().manual_seed(seed),
                          replan_every=2, max_steps=max_steps, obs=obs, metric="l1",
                          weights=weights, energy=energy)
        ok.append(res.success)
    rate, lo, hi = wilson_ci(int(sum(ok)), len(ok))
    return {"horizon": horizon, "samples": samples, "iterations": iterations,
            "weights": weights, "energy": kind, "episodes": episodes, "success": rate,
            "ci95": [lo, hi],
            "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--max-steps", type=int, default=64)
    p.add_argument("--value-steps", type=int, default=3000)
    p.add_argument("--value-data", type=int, default=300, help="episodes the value learns from")
    p.add_argument("--value-form", choices=VALUE_FORMS, default="mlp")
    p.add_argument("--value-policy", default="mixture:0.5",
                   help="policy collecting the value's episodes (e.g. explore:40, tour:0.5)")
    p.add_argument("--value-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a ValueConfig field for the learned values (repeatable: penalty=100)")
    p.add_argument("--layout-every", type=int, default=1,
                   help="the value's episodes share each wall K at a time (goals from the "
                   "other episodes of a layout: --value-set p_layout=0.5)")
    p.add_argument("--only", choices=["l1", "path", *VALUES], help="one energy's rows")
    p.add_argument("--out", default="runs/bench/planning_ceiling.json")
    args = p.parse_args(argv)
    settings = [s for s in SETTINGS if args.only in (None, s[4])]
    trained = {kind: learn_value(args.value_steps, form=args.value_form,
                                 episodes=args.value_data, targets=kind, policy=args.value_policy,
                                 overrides=args.value_set,
                                 layout_every=args.layout_every)
               for kind in VALUES if any(s[4] == kind for s in settings)}
    values = {kind: value for kind, (value, _) in trained.items()}
    learning = {kind: info for kind, (_, info) in trained.items()}
    rows = [run(s, args.episodes, args.max_steps, values) for s in settings]
    print(f"two-rooms (random wall), perfect model, CEM, replan every 2, "
          f"{args.max_steps} steps, {args.episodes} episodes per row\n")
    print("| energy | horizon | samples x iterations | energy weights | success [95 % CI] |")
    print("|---|---:|---|---|---|")
    for r in rows:
        print(f"| {r['energy']} | {r['horizon']} | {r['samples']} x {r['iterations']} | "
              f"{r['weights']} | "
              f"{r['success']:.0%} [{r['ci95'][0]:.0%}, {r['ci95'][1]:.0%}] |")
    for kind, info in learning.items():
        print(f"\n{kind} value ({info['form']}): {info['steps']} steps x {info['batch']} in "
              f"{info['seconds']:.0f} s")
    atomic_write_json(args.out, {"benchmark": "planning_ceiling", "created": now_iso(),
                                 "git": git_info(), "value_learning": learning, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
