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

`--dynamics learned` swaps the physics for a model learned from the same episodes: the world
models' residual MLP (`ACMLP`) on z, trained on its `--dynamics-k`-step rollout loss (L1, or L2
with `--dynamics-loss l2`; initial weights `--dynamics-init`), so the rows say whether learning
the contact from that data is what a world model falls short of.
`--members M` trains M of them (each on its own windows) and plans with their mean; with
`--disagreement w1,w2,...` each row runs once per weight w, the energy adding w x their spread
(PETS-style: plans where the members agree).

    python benchmarks/push_ceiling.py [--episodes 20] [--data 200] [--value-steps 3000]
        [--value-set norm=l1 ...] [--only expert|goal|task|shaped|value] [--goal-ee start|end]
        [--dynamics physics|learned] [--dynamics-steps 10000] [--dynamics-k 8] [--members 1]
        [--dynamics-loss l1|l2] [--dynamics-init trunc_normal|torch] [--disagreement 0,1,3]
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
from jepalab.models.ac_predictor import ACMLP
from jepalab.models.value import QUASIMETRIC, GoalValue, quasimetric_loss
from jepalab.planning import PlannerConfig, run_episode, step_energy
from push_contact import readout  # benchmarks/: the same gain and error of a move

ROWS = [("expert", None), ("goal", "start"), ("goal", "end"), ("task", "end"),
        ("shaped", "end"), ("value", "start"), ("value", "end")]  # (energy, goal ee)
SCALE = np.array([10, 10, 10, 10, 1, 1], np.float32)


def features(states: np.ndarray) -> np.ndarray:
    """States [..., 11] (TabletopEnv.state_names) -> z [..., 6]."""
    s = np.asarray(states, np.float32)
    yaw = 4 * s[..., 6:7]
    return np.concatenate([s[..., 0:2], s[..., 3:5], np.sin(yaw), np.cos(yaw)], -1) * SCALE


def collect_features(episodes: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """z [T, 6] and actions [T - 1, 2] of `episodes` collected push episodes (mixture:0.5)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = TrajectoryStore.open(collect("tabletop-push", episodes, f"{tmp}/data",
                                             image_size=16, max_steps=100, progress=False))
        eps = range(store.num_episodes)
        z = [torch.from_numpy(features(store.series(e, "states"))) for e in eps]
        a = [torch.from_numpy(store.series(e, "actions")).float() for e in eps]
    return z, a


def learn_value(z: list[torch.Tensor], steps: int, batch: int = 256, seed: int = 0,
                overrides: tuple[str, ...] = ()) -> tuple[GoalValue, dict]:
    """Quasimetric steps to go on the true states z of collected episodes; `overrides`:
    ValueConfig fields (KEY=VALUE) set after the quasimetric defaults."""
    v = load(ValueConfig, None, [f"{k}={x}" for k, x in QUASIMETRIC.items()]
             + list(overrides))
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
        "episodes": len(z), "frames": int(lens.sum()), "steps": steps, "batch": batch,
        "config": v.model_dump(mode="json"), "seconds": time.perf_counter() - t0, **m}


class Ensemble(torch.nn.Module):
    """`members` residual MLPs (the world models' `ACMLP`, width 512, depth 3) on z."""

    def __init__(self, members: int, init: str = "trunc_normal") -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(ACMLP(6, 2, width=512, depth=3, init=init)
                                           for _ in range(members))

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """z0 [S, 6], actions [S, H, 2] -> every member's rollout [M, S, H, 6]."""
        return torch.stack([m.rollout(z0, actions) for m in self.members])


def learn_dynamics(z: list[torch.Tensor], a: list[torch.Tensor], steps: int, k: int,
                   members: int = 1, loss_kind: str = "l1", init: str = "trunc_normal",
                   batch: int = 256, seed: int = 0, moved: float = 0.01
                   ) -> tuple[Ensemble, dict]:
    """An ensemble of residual MLPs on z, each on its own windows: k-step rollouts, L1 to the
    true z (`loss_kind` l2: squared; `init`: `PredictorConfig.init`). Held out: 5 % of the
    episodes; the ensemble mean's error after k steps, and on the windows where the cube moves
    more than `moved` m the share of that move it predicts (gain <d_hat, d> / <d, d>)."""
    keep = [i for i in range(len(z)) if len(a[i]) >= k]
    n_val = max(1, len(keep) // 20)
    lens = torch.tensor([len(x) for x in a])
    zp = torch.nn.utils.rnn.pad_sequence(z, batch_first=True)  # [E, T, 6]
    ap = torch.nn.utils.rnn.pad_sequence(a, batch_first=True)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = Ensemble(members, init)
    opt = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    steps_k = torch.arange(k + 1)

    def windows(eps: list[int], n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e = torch.as_tensor(np.asarray(eps)[rng.integers(len(eps), size=n)])
        t = (torch.from_numpy(rng.random(n)) * (lens[e] - k + 1)).long()
        zs = zp[e[:, None], t[:, None] + steps_k]
        return zs[:, 0], ap[e[:, None], t[:, None] + steps_k[:-1]], zs[:, 1:]

    t0 = time.perf_counter()
    for _ in range(steps):
        z0, acts, target = windows(keep[n_val:], batch * members)  # member m: the m-th slice
        pred = torch.cat([m.rollout(z0[i * batch:(i + 1) * batch],
                                    acts[i * batch:(i + 1) * batch])
                          for i, m in enumerate(model.members)])
        loss = ((pred - target).abs() if loss_kind == "l1" else (pred - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval().requires_grad_(False)
    z0, acts, target = windows(keep[:n_val], 4096)
    mean = model.rollout(z0, acts).mean(0)
    err = (mean - target).abs()  # [N, k, 6], in z units
    d, d_hat = ((x[:, -1, 2:4] - z0[:, 2:4]).numpy() / SCALE[2] for x in (target, mean))  # m
    hit = np.linalg.norm(d, axis=1) > moved
    return model, {
        "episodes": len(keep) - n_val, "members": members, "loss": loss_kind, "init": init,
        "steps": steps, "k": k, "batch": batch, "seconds": time.perf_counter() - t0,
        "train_loss": loss.item(),
        "val_l1_by_step": [float(x) for x in err.mean((0, 2))],
        "val_cube_cm_at_k": float(err[:, -1, 2:4].mean() * 100 / SCALE[2]),
        "val_ee_cm_at_k": float(err[:, -1, 0:2].mean() * 100 / SCALE[0]),
        "val_cube_moves": {"windows": int(hit.sum()), "of": len(hit),
                           **readout(d_hat[hit], d[hit])}}


def energy(kind: str, value: GoalValue | None, disagreement: float = 0.0):
    """The planner's energy of `kind`: goal z [1, 6] -> cost of predicted z [S, H, 6], read
    at the last step; an ensemble's rollouts come as [S, H, 7], the members' spread last,
    added times `disagreement`."""
    def of_goal(z_goal: torch.Tensor):
        g = z_goal.reshape(-1)

        def per_step(zx: torch.Tensor) -> torch.Tensor:
            z = zx[..., :6]
            spread = disagreement * zx[..., 6] if zx.shape[-1] > 6 else 0.0
            if kind == "value":
                assert value is not None
                return value.steps_to_go(z, g) + spread
            cost = (z - g)[..., 0 if kind == "goal" else 2:].abs().sum(-1) + spread
            if kind == "shaped":
                line = g[2:4] - z[..., 2:4]
                line = line / line.norm(dim=-1, keepdim=True).clamp_min(1e-6)
                behind = z[..., 2:4] - line * 10 * (CUBE_HALF + EE_RADIUS + 0.01)
                cost = cost + 0.3 * (z[..., :2] - behind).norm(dim=-1)
            return cost

        return step_energy(per_step, "final")

    return of_goal


def run(kind: str, goal_ee: str | None, episodes: int, value: GoalValue | None,
        model: Ensemble | None = None, disagreement: float = 0.0) -> dict:
    """One row: `episodes` MPC episodes under `kind`'s energy, unrolled by the physics or, when
    given, the learned `model` (its members' mean, and their spread when `disagreement`)."""
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
            if model is not None:
                every = model.rollout(z0.expand(len(actions), -1), actions.float())
                if not disagreement:
                    return every.mean(0)
                spread = every[..., :4].std(0, unbiased=False).norm(dim=-1, keepdim=True)
                return torch.cat([every.mean(0), spread], -1)
            return torch.from_numpy(features(u.unroll(actions.double().numpy())))

        res = run_episode(env, encode, unroll_from, cfg, torch.Generator().manual_seed(seed),
                          replan_every=2, max_steps=100, obs=obs,
                          energy=energy(kind, value, disagreement))
        ok.append(res.success)
        dist.append(res.final_distance)
        steps.append(res.steps)
    env.close()
    rate, lo, hi = wilson_ci(int(sum(ok)), len(ok))
    return {"energy": kind, "goal_ee": goal_ee, "disagreement": disagreement,
            "episodes": episodes, "success": rate,
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
    p.add_argument("--dynamics", choices=["physics", "learned"], default="physics",
                   help="unroll with the scene's physics or an MLP learned from --data")
    p.add_argument("--dynamics-steps", type=int, default=10000)
    p.add_argument("--dynamics-k", type=int, default=8, help="rollout steps of its loss")
    p.add_argument("--dynamics-loss", choices=["l1", "l2"], default="l1")
    p.add_argument("--dynamics-init", choices=["trunc_normal", "torch"], default="trunc_normal",
                   help="the MLP's initial weights (PredictorConfig.init)")
    p.add_argument("--members", type=int, default=1, help="learned dynamics: ensemble size")
    p.add_argument("--disagreement", default="0", help="weights w, comma-separated: rows "
                   "with energy += w x the members' spread of ee and cube (z units)")
    p.add_argument("--out", default="runs/bench/push_ceiling.json")
    args = p.parse_args(argv)
    rows = [r for r in ROWS if args.only in (None, r[0]) and args.goal_ee in (None, r[1])]
    value, learning, model, dynamics = None, None, None, None
    learned = args.dynamics == "learned"
    if learned or any(k == "value" for k, _ in rows):
        z, a = collect_features(args.data)
        if any(k == "value" for k, _ in rows):
            value, learning = learn_value(z, args.value_steps, overrides=tuple(args.value_set))
        if learned:
            model, dynamics = learn_dynamics(z, a, args.dynamics_steps, args.dynamics_k,
                                             args.members, args.dynamics_loss,
                                             args.dynamics_init)
    weights = [float(w) for w in args.disagreement.split(",")]
    if any(weights) and (not learned or args.members < 2):
        raise SystemExit("--disagreement needs --dynamics learned --members >= 2")
    results = [run(k, g, args.episodes, value, model, w) for k, g in rows for w in weights]
    what = (f"{args.members} MLP(s) learned from the same episodes" if learned
            else "perfect model")
    print(f"tabletop-push, {what}, CEM 8 x 128 x 3, re-plan every 2, 100 steps, "
          f"{args.episodes} episodes per row\n")
    print("| energy | goal: ee at | disagreement | success [95 % CI] | mean final distance (m) |")
    print("|---|---|---:|---|---:|")
    for r in results:
        print(f"| {r['energy']} | {r['goal_ee'] or '—'} | {r['disagreement']:g} | "
              f"{r['success']:.0%} "
              f"[{r['ci95'][0]:.0%}, {r['ci95'][1]:.0%}] | {r['final_distance']:.3f} |")
    if learning:
        print(f"\nvalue: {learning['steps']} steps x {learning['batch']} on "
              f"{learning['frames']} frames in {learning['seconds']:.0f} s")
    if dynamics:
        print(f"dynamics: {dynamics['steps']} steps in {dynamics['seconds']:.0f} s; held-out "
              f"error after {dynamics['k']} steps: cube {dynamics['val_cube_cm_at_k']:.2f} cm, "
              f"ee {dynamics['val_ee_cm_at_k']:.2f} cm; windows where the cube moves "
              f"({dynamics['val_cube_moves']['windows']} of {dynamics['val_cube_moves']['of']}): "
              f"gain {dynamics['val_cube_moves']['gain']:.2f}, error "
              f"{dynamics['val_cube_moves']['error_cm']:.2f} cm")
    atomic_write_json(args.out, {"benchmark": "push_ceiling", "created": now_iso(),
                                 "git": git_info(), "dynamics": args.dynamics,
                                 "dynamics_learning": dynamics, "value_learning": learning,
                                 "rows": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
