"""The planner's ceiling on two-rooms: MPC success with a *perfect* world model.

The latent is the agent's true (x, y) and the unroll is the scene's own collision rule (walls,
door, arena bounds; vectorised over candidates), so any failure is the planner's and the goal
energy's, not the representation's. Same planner, energy and episode settings as a contract's
controller; success with a Wilson 95 % CI per setting. No encoder is used.

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

SETTINGS = [  # (horizon, samples, iterations, weights)
    (8, 128, 3, "all"), (8, 128, 3, "final"), (16, 256, 4, "all"), (24, 256, 4, "all"),
    (32, 256, 5, "all"),
]


def move(env, p: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The scene's `_move` for many points at once: p [S, 2] by d [S, 2] -> [S, 2]."""
    xl, xr, dl, dh = env._slab()
    r = env.agent_radius
    k = max(1, int(np.ceil(np.abs(d).max() / (0.5 * (xr - xl)))))
    for _ in range(k):
        q = np.clip(p + d / k, r, 1 - r)
        inside = (xl < p[:, 0]) & (p[:, 0] < xr)
        q[inside, 1] = np.clip(q[inside, 1], dl, dh)
        cross = ~inside & (((p[:, 0] <= xl) & (xl < q[:, 0])) | ((q[:, 0] < xr) & (xr <= p[:, 0])))
        bx = np.where(p[:, 0] <= xl, xl, xr)
        with np.errstate(divide="ignore", invalid="ignore"):
            y_cross = p[:, 1] + (bx - p[:, 0]) / (q[:, 0] - p[:, 0]) * (q[:, 1] - p[:, 1])
        through = cross & (dl <= y_cross) & (y_cross <= dh)
        blocked = cross & ~through
        q[through, 1] = np.clip(q[through, 1], dl, dh)
        q[blocked, 0] = bx[blocked]
        p = q
    return p


def run(setting: tuple[int, int, int, str], episodes: int, max_steps: int) -> dict:
    horizon, samples, iterations, weights = setting
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
                p = move(u, p, a[:, t])
                out.append(p.copy())
            return torch.from_numpy(np.stack(out, 1)).float()

        cfg = PlannerConfig(method="cem", horizon=horizon, samples=samples,
                            iterations=iterations, elites=16, action_dim=2, action_low=-1.0,
                            action_high=1.0)
        res = run_episode(env, encode, unroll_from, cfg, torch.Generator().manual_seed(seed),
                          replan_every=2, max_steps=max_steps, obs=obs, metric="l1",
                          weights=weights)
        ok.append(res.success)
    rate, lo, hi = wilson_ci(int(sum(ok)), len(ok))
    return {"horizon": horizon, "samples": samples, "iterations": iterations,
            "weights": weights, "episodes": episodes, "success": rate, "ci95": [lo, hi],
            "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--max-steps", type=int, default=64)
    p.add_argument("--out", default="runs/bench/planning_ceiling.json")
    args = p.parse_args(argv)
    rows = [run(s, args.episodes, args.max_steps) for s in SETTINGS]
    print(f"two-rooms (random wall), perfect model, CEM, L1 goal energy, replan every 2, "
          f"{args.max_steps} steps, {args.episodes} episodes per row\n")
    print("| horizon | samples x iterations | energy weights | success [95 % CI] |")
    print("|---:|---|---|---|")
    for r in rows:
        print(f"| {r['horizon']} | {r['samples']} x {r['iterations']} | {r['weights']} | "
              f"{r['success']:.0%} [{r['ci95'][0]:.0%}, {r['ci95'][1]:.0%}] |")
    atomic_write_json(args.out, {"benchmark": "planning_ceiling", "created": now_iso(),
                                 "git": git_info(), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
