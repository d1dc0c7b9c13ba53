"""The planner's ceiling on two-rooms: MPC success with a *perfect* world model.

The latent is the agent's true (x, y) and the unroll is the scene's own collision rule (walls,
door, arena bounds; `TwoRoomsEnv.move`, vectorised over candidates), so any failure is the
planner's and the goal energy's, not the representation's. Same planner, energy and episode
settings as a contract's controller; success with a Wilson 95 % CI per setting. No encoder is
used. Three energies: "l1", the contracts' distance to the goal latent; "path", the exact
cost-to-go (`TwoRoomsEnv.path_length`, the shortest way around the wall): the best a learned
value could do, to tell the search's limit from the energy's; "learned", the cost-to-go that
`jepalab.models.value` learns (expectile TD on hindsight goals, the world model's `value`
defaults) from the demo's data (300 collected episodes, half scripted, half random), here on
the true state (agent x, y, wall x, door y) instead of a latent: what the learning itself
recovers of the gap between "l1" and "path".

    python benchmarks/planning_ceiling.py [--episodes 20] [--value-steps 3000]
        [--out runs/bench/planning_ceiling.json]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import numpy as np
import torch

from jepalab.config import VALUE_FORMS, ValueConfig
from jepalab.data.collect import collect
from jepalab.data.store import TrajectoryStore
from jepalab.envs import make
from jepalab.eval.stats import wilson_ci
from jepalab.io import atomic_write_json, git_info, now_iso
from jepalab.models.value import GoalValue, hindsight_goal, value_loss
from jepalab.objectives.jepa import ema_update
from jepalab.planning import PlannerConfig, run_episode, step_energy

SETTINGS = [  # (horizon, samples, iterations, weights, energy)
    (8, 128, 3, "all", "l1"), (8, 128, 3, "final", "l1"), (16, 256, 4, "all", "l1"),
    (24, 256, 4, "all", "l1"), (32, 256, 5, "all", "l1"), (8, 128, 3, "all", "path"),
    (8, 128, 3, "final", "path"), (8, 128, 3, "all", "learned"), (8, 128, 3, "final", "learned"),
]


def path_energy(u, weights: str):
    """goal latent -> cost: the shortest-path length of the predicted positions (the goal is
    the scene's own)."""

    def energy(z_goal: torch.Tensor):
        return step_energy(lambda latents: torch.from_numpy(
            u.path_length(latents[..., :2].double().numpy())).float(), weights)

    return energy


def learn_value(steps: int, batch: int = 256, seed: int = 0, form: str = "mlp",
                episodes: int = 300) -> tuple[GoalValue, dict]:
    """The world model's cost-to-go learning (`ValueConfig` defaults, the same loss and goal
    sampling), on the true states of data collected as the demo's (300 episodes by default)."""
    v = ValueConfig(form=form)
    with tempfile.TemporaryDirectory() as tmp:
        store = TrajectoryStore.open(collect(
            "two-rooms", episodes, f"{tmp}/data", image_size=16, max_steps=64, progress=False,
            scene_kwargs={"random_wall": True, "terminate_on_success": False}))
        z = torch.from_numpy(np.stack([store.episode(e)["states"]
                                       for e in range(store.num_episodes)])).float()
    torch.manual_seed(seed)
    value = GoalValue.from_config(z.shape[-1], v)
    target = copy.deepcopy(value).requires_grad_(False)
    opt = torch.optim.AdamW(value.parameters(), 1e-3, weight_decay=1e-4)
    rng, (n_eps, frames) = np.random.default_rng(seed), z.shape[:2]
    t0 = time.perf_counter()
    for _ in range(steps):
        e, t = rng.integers(n_eps, size=batch), rng.integers(frames - 1, size=batch)
        g = np.array([hindsight_goal(rng, int(ti), frames, v.gamma, v.p_current, v.p_future)
                      for ti in t])
        k = torch.from_numpy(np.where(g >= t, g - t, -1))
        loss, m = value_loss(value, target, z[e, t], z[e, t + 1], z[e, g], k, v.expectile)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema_update(target, value, v.target_momentum)
    return value.eval().requires_grad_(False), {
        "steps": steps, "batch": batch, "form": form, "episodes": episodes,
        "seconds": time.perf_counter() - t0, **m}


def run(setting: tuple[int, int, int, str, str], episodes: int, max_steps: int,
        value: GoalValue | None = None) -> dict:
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
            a = actions.double().numpy() * u.max_step
            p = np.repeat(z0[:, :2].double().numpy(), a.shape[0], 0)
            out = []
            for t in range(a.shape[1]):
                p = u.move(p, a[:, t])
                out.append(p)
            xy = torch.from_numpy(np.stack(out, 1)).float()
            return torch.cat([xy, z0[None, :, 2:].expand(*xy.shape[:2], 2)], -1)

        cfg = PlannerConfig(method="cem", horizon=horizon, samples=samples,
                            iterations=iterations, elites=16, action_dim=2, action_low=-1.0,
                            action_high=1.0)
        energy = None  # "l1": the contracts' goal_energy
        if kind == "path":
            energy = path_energy(u, weights)
        elif kind == "learned" and value is not None:
            energy = value.energy(weights)
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
    p.add_argument("--only", choices=["l1", "path", "learned"], help="one energy's rows")
    p.add_argument("--out", default="runs/bench/planning_ceiling.json")
    args = p.parse_args(argv)
    settings = [s for s in SETTINGS if args.only in (None, s[4])]
    learned = any(s[4] == "learned" for s in settings)
    value, learning = (learn_value(args.value_steps, form=args.value_form,
                                       episodes=args.value_data) if learned
                       else (None, None))
    rows = [run(s, args.episodes, args.max_steps, value) for s in settings]
    print(f"two-rooms (random wall), perfect model, CEM, replan every 2, "
          f"{args.max_steps} steps, {args.episodes} episodes per row\n")
    print("| energy | horizon | samples x iterations | energy weights | success [95 % CI] |")
    print("|---|---:|---|---|---|")
    for r in rows:
        print(f"| {r['energy']} | {r['horizon']} | {r['samples']} x {r['iterations']} | "
              f"{r['weights']} | "
              f"{r['success']:.0%} [{r['ci95'][0]:.0%}, {r['ci95'][1]:.0%}] |")
    if learning:
        print(f"\nlearned value ({learning['form']}): {learning['steps']} steps x "
              f"{learning['batch']} in "
              f"{learning['seconds']:.0f} s")
    atomic_write_json(args.out, {"benchmark": "planning_ceiling", "created": now_iso(),
                                 "git": git_info(), "value_learning": learning, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
