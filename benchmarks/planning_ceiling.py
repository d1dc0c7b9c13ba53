"""The planner's ceiling on two-rooms: MPC success with a *perfect* world model.

The latent is the agent's true (x, y) and the unroll is the scene's own collision rule (walls,
door, arena bounds; `TwoRoomsEnv.move`, vectorised over candidates), so any failure is the
planner's and the goal energy's, not the representation's. Same planner, energy and episode
settings as a contract's controller; success with a Wilson 95 % CI per setting. No encoder is
used. Two energies: "l1", the contracts' distance to the goal latent, and "path", the exact
cost-to-go (`TwoRoomsEnv.path_length`, the shortest way around the wall): the best a learned
value could do, to tell the search's limit from the energy's.

    python benchmarks/planning_ceiling.py [--episodes 20] [--out runs/bench/planning_ceiling.json]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from jepalab.envs import make
from jepalab.eval.stats import wilson_ci
from jepalab.io import atomic_write_json, git_info, now_iso
from jepalab.planning import PlannerConfig, run_episode

SETTINGS = [  # (horizon, samples, iterations, weights, energy)
    (8, 128, 3, "all", "l1"), (8, 128, 3, "final", "l1"), (16, 256, 4, "all", "l1"),
    (24, 256, 4, "all", "l1"), (32, 256, 5, "all", "l1"), (8, 128, 3, "all", "path"),
    (8, 128, 3, "final", "path"),
]


def path_energy(u, weights: str):
    """goal latent -> cost: the shortest-path length of the predicted positions (the goal is
    the scene's own)."""

    def energy(z_goal: torch.Tensor):
        def cost(latents: torch.Tensor) -> torch.Tensor:
            d = torch.from_numpy(u.path_length(latents.double().numpy())).float()
            return d.mean(1) if weights == "all" else d[:, -1]

        return cost

    return energy


def run(setting: tuple[int, int, int, str, str], episodes: int, max_steps: int) -> dict:
    horizon, samples, iterations, weights, kind = setting
    env = make("two-rooms", image_size=32, random_wall=True)
    u = env.unwrapped
    ok, t0 = [], time.perf_counter()
    for seed in range(episodes):
        obs, _ = env.reset(seed=seed)
        first = [True]

        def encode(pixels: torch.Tensor, first: list[bool] = first) -> torch.Tensor:
            xy = u.goal if first[0] else u.agent  # the goal frame is encoded first
            first[0] = False
            return torch.tensor(np.asarray(xy, np.float32))[None]

        def unroll_from(z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
            a = actions.double().numpy() * u.max_step
            p = np.repeat(z0.double().numpy(), a.shape[0], 0)
            out = []
            for t in range(a.shape[1]):
                p = u.move(p, a[:, t])
                out.append(p)
            return torch.from_numpy(np.stack(out, 1)).float()

        cfg = PlannerConfig(method="cem", horizon=horizon, samples=samples,
                            iterations=iterations, elites=16, action_dim=2, action_low=-1.0,
                            action_high=1.0)
        res = run_episode(env, encode, unroll_from, cfg, torch.Generator().manual_seed(seed),
                          replan_every=2, max_steps=max_steps, obs=obs, metric="l1",
                          weights=weights,
                          energy=path_energy(u, weights) if kind == "path" else None)
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
    p.add_argument("--out", default="runs/bench/planning_ceiling.json")
    args = p.parse_args(argv)
    rows = [run(s, args.episodes, args.max_steps) for s in SETTINGS]
    print(f"two-rooms (random wall), perfect model, CEM, replan every 2, "
          f"{args.max_steps} steps, {args.episodes} episodes per row\n")
    print("| energy | horizon | samples x iterations | energy weights | success [95 % CI] |")
    print("|---|---:|---|---|---|")
    for r in rows:
        print(f"| {r['energy']} | {r['horizon']} | {r['samples']} x {r['iterations']} | "
              f"{r['weights']} | "
              f"{r['success']:.0%} [{r['ci95'][0]:.0%}, {r['ci95'][1]:.0%}] |")
    atomic_write_json(args.out, {"benchmark": "planning_ceiling", "created": now_iso(),
                                 "git": git_info(), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
