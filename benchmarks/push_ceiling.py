"""The planner's ceiling on tabletop-push: MPC with a *perfect* model (the MuJoCo scene itself).

The latent is the true state, z = (ee x, y; cube x, y, all x10 so 1 cm reads 0.1; sin and cos
of 4 x the cube's yaw, its symmetry), and the unroll is the scene's own physics
(`TabletopEnv.unroll`), so a failure is the energy's or the search's, never a representation's
or a world model's. The CEM and episodes are scene_control's (horizon 8 x 128 x 3, re-plan every
2, 100 steps, reset seeds 1,000,000 + i); every energy scores the last predicted state. Rows:

- expert: the scripted pusher that collects half of the data (no planning);
- goal: L1 between z and the goal state's z (ee and cube): the state-space twin of the
  contracts' L1 to the goal image's latent;
- task: the cube's terms of that L1 alone (where the ee is does not count);
- shaped: task + the ee's distance to the point behind the cube on its line to the goal: a
  hand-written cost that knows a push starts by getting behind the object;
- value: quasimetric steps to go (`value.learning: quasimetric`, the world models' settings)
  learned on the true states of `--data` collected episodes (policy mixture:0.5).
"goal" and "value" run twice: towards the goal state with the ee at its start (the scene's goal
image before 2026-12-01) and with the ee where a straight push ends (`push_end`, its goal now).

    python benchmarks/push_ceiling.py [--episodes 20] [--data 200] [--value-steps 3000]
        [--value-set norm=l1 ...] [--only expert|goal|task|shaped|value] [--goal-ee start|end]
        [--out runs/bench/push_ceiling.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from jepalab.config import ValueConfig, load
from jepalab.data.collect import collect
from jepalab.data.store import TrajectoryStore
from jepalab.envs import make
from jepalab.envs.tabletop import CUBE_HALF, EE_RADIUS
from jepalab.eval.stats import wilson_ci
from jepalab.io import atomic_write_json, git_info, now_iso
from jepalab.models.value import QUASIMETRIC, GoalValue, quasimetric_loss
from jepalab.planning import PlannerConfig, run_episode, step_energy

ROWS = [("expert", None), ("goal", "start"), ("goal", "end"), ("task", "end"),
        ("shaped", "end"), ("value", "start"), ("value", "end")]  # (energy, goal ee)
SCALE = np.array([10, 10, 10, 10, 1, 1], np.float32)


def features(states: np.ndarray) -> np.ndarray:
    """States [..., 11] (TabletopEnv.state_names) -> z [..., 6]."""
    s = np.asarray(states, np.float32)
    yaw = 4 * s[..., 6:7]
    return np.concatenate([s[..., 0:2], s[..., 3:5], np.sin(yaw), np.cos(yaw)], -1) * SCALE


def learn_value(episodes: int, steps: int, batch: int = 256, seed: int = 0,
                overrides: tuple[str, ...] = ()) -> tuple[GoalValue, dict]:
    """Quasimetric steps to go on the true states of `episodes` collected push episodes;
    `overrides`: ValueConfig fields (KEY=VALUE) set after the quasimetric defaults."""
    v = load(ValueConfig, None, [f"--{k}={x}" for k, x in QUASIMETRIC.items()]
             + [f"--{kv}" for kv in overrides])
    with tempfile.TemporaryDirectory() as tmp:
        store = TrajectoryStore.open(collect("tabletop-push", episodes, f"{tmp}/data",
                                             image_size=16, max_steps=100, progress=False))
        z = [torch.from_numpy(features(store.series(e, "states")))
             for e in range(store.num_episodes)]
    lens = np.array([len(x) for x in z])
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    value = GoalValue.from_config(z[0].shape[-1], v)
    opt = torch.optim.AdamW(value.parameters(), 1e-3, weight_decay=1e-4)
    t0 = time.perf_counter()
    for _ in range(steps):
        e = rng.integers(len(z), size=batch)
        t = (rng.random(batch) * (lens[e] - 1)).astype(int)  # a transition t -> t + 1
        g = (rng.random(batch) * lens[e]).astype(int)  # a goal anywhere in the episode
        pick = [torch.stack([z[i][j] for i, j in zip(e, idx)]) for idx in (t, t + 1, g)]
        loss, m = quasimetric_loss(value, *pick, v.penalty, v.cap)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return value.eval().requires_grad_(False), {
        "episodes": episodes, "frames": int(lens.sum()), "steps": steps, "batch": batch,
        "config": v.model_dump(mode="json"), "seconds": time.perf_counter() - t0, **m}


def energy(kind: str, value: GoalValue | None):
    """The planner's energy of `kind`: goal z [1, 6] -> cost of predicted z [S, H, 6], read
    at the last step."""
    def of_goal(z_goal: torch.Tensor):
        g = z_goal.reshape(-1)

        def per_step(z: torch.Tensor) -> torch.Tensor:
            if kind == "value":
                assert value is not None
                return value.steps_to_go(z, g)
            cost = (z - g)[..., 0 if kind == "goal" else 2:].abs().sum(-1)
            if kind == "shaped":
                line = g[2:4] - z[..., 2:4]
                line = line / line.norm(dim=-1, keepdim=True).clamp_min(1e-6)
                behind = z[..., 2:4] - line * 10 * (CUBE_HALF + EE_RADIUS + 0.01)
                cost = cost + 0.3 * (z[..., :2] - behind).norm(dim=-1)
            return cost

        return step_energy(per_step, "final")

    return of_goal


def run(kind: str, goal_ee: str | None, episodes: int, value: GoalValue | None) -> dict:
    env = make("tabletop-push", image_size=16)
    u = env.unwrapped
    cfg = PlannerConfig(method="cem", horizon=8, samples=128, iterations=3, elites=16,
                        action_dim=2)
    ok, dist, steps, t0 = [], [], [], time.perf_counter()
    for i in range(episodes):
        seed = 1_000_000 + i
        obs, _ = env.reset(seed=seed)
        if kind == "expert":
            rng, n, info = np.random.default_rng(seed), 0, {}
            while n < 100:
                obs, _, term, trunc, info = env.step(u.expert_action(rng))
                n += 1
                if info["is_success"] or term or trunc:
                    break
            ok.append(bool(info["is_success"]))
            dist.append(float(info["distance"]))
            steps.append(n)
            continue
        goal = u.goal_state.copy()
        if goal_ee == "start":
            goal[:2] = obs["state"][:2]
        first = [True]

        def encode(pixels: torch.Tensor, first: list[bool] = first,
                   goal: np.ndarray = goal) -> torch.Tensor:
            state = goal if first[0] else u._state()  # the goal frame is encoded first
            first[0] = False
            return torch.from_numpy(features(state))[None]

        def unroll_from(z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(features(u.unroll(actions.double().numpy())))

        res = run_episode(env, encode, unroll_from, cfg, torch.Generator().manual_seed(seed),
                          replan_every=2, max_steps=100, obs=obs,
                          energy=energy(kind, value))
        ok.append(res.success)
        dist.append(res.final_distance)
        steps.append(res.steps)
    env.close()
    rate, lo, hi = wilson_ci(int(sum(ok)), len(ok))
    return {"energy": kind, "goal_ee": goal_ee, "episodes": episodes, "success": rate,
            "ci95": [lo, hi], "final_distance": float(np.mean(dist)),
            "steps": float(np.mean(steps)), "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--data", type=int, default=200, help="episodes the value learns from")
    p.add_argument("--value-steps", type=int, default=3000)
    p.add_argument("--value-set", action="append", default=[], metavar="KEY=VALUE",
                   help="set a ValueConfig field (norm=l1) after the quasimetric defaults")
    p.add_argument("--only", choices=sorted({k for k, _ in ROWS}), help="one energy's rows")
    p.add_argument("--goal-ee", choices=["start", "end"], help="only rows towards this goal")
    p.add_argument("--out", default="runs/bench/push_ceiling.json")
    args = p.parse_args(argv)
    rows = [r for r in ROWS if args.only in (None, r[0]) and args.goal_ee in (None, r[1])]
    value, learning = None, None
    if any(k == "value" for k, _ in rows):
        value, learning = learn_value(args.data, args.value_steps,
                                      overrides=tuple(args.value_set))
    results = [run(k, g, args.episodes, value) for k, g in rows]
    print(f"tabletop-push, perfect model, CEM 8 x 128 x 3, re-plan every 2, 100 steps, "
          f"{args.episodes} episodes per row\n")
    print("| energy | goal: ee at | success [95 % CI] | mean final distance (m) |")
    print("|---|---|---|---:|")
    for r in results:
        print(f"| {r['energy']} | {r['goal_ee'] or '—'} | {r['success']:.0%} "
              f"[{r['ci95'][0]:.0%}, {r['ci95'][1]:.0%}] | {r['final_distance']:.3f} |")
    if learning:
        print(f"\nvalue: {learning['steps']} steps x {learning['batch']} on "
              f"{learning['frames']} frames in {learning['seconds']:.0f} s")
    atomic_write_json(args.out, {"benchmark": "push_ceiling", "created": now_iso(),
                                 "git": git_info(), "value_learning": learning,
                                 "rows": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
