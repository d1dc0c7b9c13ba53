"""Two-rooms (random wall) with a learned cost-to-go: the issue's target setting, measured.

The demo's recipe until 2026-12-05 (collect 300 episodes -> encoder, configs/demo/pretrain.yaml
with the chosen objective -> world model on 2x2-pooled latents, configs/worldmodel_pooled.yaml)
plus `value`: the world model also learns a cost-to-go (`jepalab.models.value`). The same reset
seeds are then planned with the contracts' energy (L1 distance to the goal latent, all steps) and
with the learned value (steps to go from the last predicted step); CEM horizon 8 x 128 x 3, re-plan
every 2, 64 steps. Prints success with Wilson 95 % CIs, the wall time of every stage, planning time
per episode, where each energy's episodes ended (`endings`), and how well the value reads encoded
frames (`value_vs_path`). Stages resume from OUT (then their times cover only what was left).

    python benchmarks/value_planning.py [--objective jepa] [--episodes 100] [--out runs/bench/X]
        [--data DATASET] [--encoder CHECKPOINT]   # reuse instead of collecting / pretraining
        [--collect 300] [--policy mixture:0.5]    # episodes collected when --data is not given
        [--layout-every 1]                        # ... sharing each wall K at a time (goals
                                                  # from a layout's other episodes: p_layout)
        [--pool 2] [--wm-steps 2000]              # the world model's latent grid and length
        [--wm-batch 128] [--wm-dim 512] [--wm-depth 3]  # its batch, predictor width, depth
                                                  # (--wm-set predictor.arch=conv: a conv
                                                  # net over the grid, width = channels)
        [--value-form diff]                       # ValueConfig.form (before 2026-11-30: mlp)
        [--value-learning quasimetric]            # learned as a distance (form metric, goals
                                                  # drawn uniformly from the episode)
        [--energies value value-true]             # plan with these energies only; value-true:
                                                  # the value with the scene's true dynamics
        [--value-set consistency=0.05 ...]        # any ValueConfig field
        [--wm-set rollout_steps=8 ...]            # any WorldModelConfig field
        [--plan-set planner.samples=256 ...]      # any ControllerConfig field of the planning
                                                  # (correct=1.0: EpisodeCorrection)
        [--on-policy 200]                         # then MPC with that world model on N fresh
                                                  # layouts, and a second world model trained
                                                  # on the data plus those episodes
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from jepalab.config import (
    VALUE_FORMS,
    ControllerConfig,
    PretrainConfig,
    SceneConfig,
    ValueConfig,
    WorldModelConfig,
    build,
    merge,
    parse_overrides,
    read_yaml,
)
from jepalab.data.collect import Recorder, collect
from jepalab.data.store import Episode, TrajectoryStore
from jepalab.envs import make
from jepalab.eval.control import planner_config, run_episodes, summarize
from jepalab.eval.downstream import spearman
from jepalab.io import atomic_write_json, git_info, now_iso
from jepalab.models.value import QUASIMETRIC
from jepalab.planning.mpc import run_episode
from jepalab.train.loop import pretrain
from jepalab.train.worldmodel import load_world_model, train_worldmodel

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo"
WORLD_MODEL = DEMO.parent / "worldmodel_pooled.yaml"  # the demo's until 2026-12-05
# (row, controller.metric, controller.weights); "value-true" plans the same learned value with
# the scene's own dynamics (`true_model`): what a perfect world model would give it.
ENERGIES = [("l1", "l1", "all"), ("value", "value", "final"), ("value-true", "value", "final")]


def controller(metric: str, weights: str, max_steps: int, plan_set: list[str]) -> ControllerConfig:
    """The benchmarks' MPC (CEM horizon 8 x 128 x 3, 16 elites, re-plan every 2) with
    `plan_set` (KEY=VALUE ControllerConfig fields) on top; scene_control.py plans with it too."""
    return build(ControllerConfig, merge(
        {"planner": {"method": "cem", "horizon": 8, "samples": 128, "iterations": 3,
                     "elites": 16}, "replan_every": 2, "max_steps": max_steps,
         "metric": metric, "weights": weights},
        parse_overrides(plan_set)), source="--plan-set")


def true_model(wm):
    """The planner's unroll from the scene's true dynamics (`TwoRoomsEnv.unroll`)
    on encoded frames: each candidate's final position is rendered (`render_at`) and encoded;
    the earlier steps repeat it, so only weights "final" read it right."""
    def build(env):
        u = env.unwrapped

        def unroll_from(z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
            end = u.unroll(u.agent[None], actions.double().numpy())[:, -1]
            z = wm.encode(torch.from_numpy(np.stack([u.render_at(q) for q in end])))
            return z[:, None].expand(-1, actions.shape[1], *z.shape[1:])

        return unroll_from

    return build


def fresh_layouts(wm, count: int, first_seed: int):
    """Fresh random-wall layouts (reset seeds first_seed + i): yields i, the scene and its
    encoded goal frame."""
    env = make("two-rooms", image_size=64, random_wall=True)
    try:
        for i in range(count):
            env.reset(seed=first_seed + i)
            u = env.unwrapped
            with torch.inference_mode():
                yield i, u, wm.encode(torch.from_numpy(np.asarray(u.render_goal()).copy())[None])
    finally:
        env.close()


def value_vs_path(wm, episodes: int = 30, points: int = 40) -> dict[str, float]:
    """How well the learned value reads encoded frames: agents placed at random free points of
    fresh random-wall layouts, steps_to_go to the layout's goal frame vs the true shortest path
    (`TwoRoomsEnv.path_length` / max_step). Spearman per layout (mean) and mean |error|."""
    rhos, errors = [], []
    for i, u, goal in fresh_layouts(wm, episodes, 2_000_000):
        rng = np.random.default_rng(i)
        pts = rng.uniform(0.05, 0.95, (points, 2))
        pts = pts[np.abs(pts[:, 0] - u.wall_x) > 0.06]
        frames = np.stack([u.set_agent(p)["pixels"] for p in pts])
        with torch.inference_mode():
            d = wm.value.steps_to_go(wm.encode(torch.from_numpy(frames)), goal).numpy()
        true = u.path_length(pts) / u.max_step
        rhos.append(spearman(d, true))
        errors.append(float(np.abs(d - true).mean()))
    return {"layouts": episodes, "spearman": float(np.mean(rhos)),
            "mean_abs_error_steps": float(np.mean(errors))}


def touch(u) -> float:
    """How far from the wall's centre line an agent pressed against it sits (1 cm off it)."""
    return u.wall_thickness / 2 + u.agent_radius + 0.01


def start_face(u) -> tuple[float, float]:
    """The start room's side of the wall (-1 left, 1 right) and the x of an agent pressed
    against that face."""
    side = -1.0 if u.agent[0] < u.wall_x else 1.0
    return side, u.wall_x + side * touch(u)


WALL_MOVES = ("into the wall", "along it to the door", "along it away from the door",
              "away from the wall")


def wall_push(wm, layouts: int = 40, steps: int = 8) -> dict:
    """What the value makes of an agent pressed against the wall, away from the door (1 cm from
    it on the start's side of fresh layouts, goal behind the wall). `steps` steps of each of
    four straight moves (WALL_MOVES), read at the last step through the world model and with
    the scene's true dynamics (the frame it ends in, encoded): the mean learned steps to go and
    how often each move reads best (a slide along the wall may pass the door's row). Pushing
    into the wall does not move the agent, so through the world model it should read no
    progress (`predicted_progress_steps`); `progress_by_step`: the same after each of the steps
    (where the model's error starts and how it compounds)."""
    start, moved, into = [], [], []
    read: dict[str, list[np.ndarray]] = {"world_model": [], "true": []}
    for _, u, goal in fresh_layouts(wm, layouts, 3_000_000):
        side, x = start_face(u)
        ys = np.linspace(0.1, 0.9, 9)
        ys = ys[np.abs(ys - u.door_y) > 0.2]
        for y in ys:
            actions = np.zeros((len(WALL_MOVES), steps, 2))
            actions[0, :, 0], actions[3, :, 0] = -side, side
            actions[1, :, 1] = np.sign(u.door_y - y)
            actions[2, :, 1] = -actions[1, :, 1]
            here = np.array([x, y])
            end = u.unroll(np.repeat(here[None], len(actions), 0), actions)[:, -1]
            moved.append(np.abs(end[0] - here).max())
            with torch.inference_mode():
                z0 = wm.encode(torch.from_numpy(u.render_at(here))[None])
                z = wm.rollout(z0.expand(len(actions), -1), torch.from_numpy(actions).float())
                z_true = wm.encode(torch.from_numpy(np.stack([u.render_at(q) for q in end])))
                start.append(float(wm.value.steps_to_go(z0, goal)[0]))
                into.append(wm.value.steps_to_go(z[0], goal.expand(steps, -1)).numpy())
                read["world_model"].append(wm.value.steps_to_go(z[:, -1], goal).numpy())
                read["true"].append(wm.value.steps_to_go(z_true, goal).numpy())
    d0 = np.array(start)
    by = {k: np.stack(v) for k, v in read.items()}  # [starts, moves]
    return {"pushes": len(d0), "steps": steps, "true_moved": float(np.mean(moved)),
            "steps_to_go_start": float(d0.mean()),
            "steps_to_go_after": float(by["world_model"][:, 0].mean()),
            "predicted_progress_steps": float((d0 - by["world_model"][:, 0]).mean()),
            "progress_by_step": (d0[:, None] - np.stack(into)).mean(0).tolist(),
            "moves": {move: {**{f"steps_to_go_{k}": float(v[:, i].mean()) for k, v in by.items()},
                             **{f"reads_best_{k}": int((v.argmin(1) == i).sum())
                                for k, v in by.items()}}
                      for i, move in enumerate(WALL_MOVES)}}


def wall_face(wm, layouts: int = 40, first_seed: int = 1_000_000) -> dict:
    """The value along the wall's face: the agent pressed against the start room's face at
    heights 4 cm apart, in the layouts of reset seeds first_seed + i (the evaluation's episodes)
    whose goal is behind the wall, read in steps to go on encoded frames. The way round passes
    the door, so the face's minimum should lie at the door's height; `off_door` lists the
    layouts whose minimum lies beyond the door's opening (a local minimum a short-horizon
    planner stops in), with the true path minus the value's reading there (> 0: it reads the
    goal nearer than it is)."""
    ys = np.arange(0.06, 0.95, 0.04)
    off, under, count = [], [], 0
    for i, u, goal in fresh_layouts(wm, layouts, first_seed):
        side, x = start_face(u)
        if (u.goal[0] < u.wall_x) == (side < 0):
            continue
        count += 1
        pts = np.c_[np.full(len(ys), x), ys]
        with torch.inference_mode():
            frames = torch.from_numpy(np.stack([u.render_at(p) for p in pts]))
            d = wm.value.steps_to_go(wm.encode(frames), goal).numpy()
        k = int(d.argmin())
        if abs(ys[k] - u.door_y) > u.door_width / 2:
            off.append(i)
            under.append(float(u.path_length(pts[k : k + 1])[0] / u.max_step - d[k]))
    return {"layouts": count, "off_door": off, "off_door_underestimate_steps": under}


def endings(rows) -> dict[str, int]:
    """Where two-rooms MPC episodes (`run_episodes` rows) ended: at the goal, in the start's
    room pressed against the wall (within 1 cm of touching it), elsewhere in the start's room,
    or in the goal's room short of the goal."""
    env = make("two-rooms", image_size=16, random_wall=True)
    out = dict.fromkeys(["reached", "start room, at the wall", "start room, elsewhere",
                         "goal room, short"], 0)
    for r in rows:
        env.reset(seed=r.reset_seed)
        u, (x, _, wall, _) = env.unwrapped, r.final_state
        if r.success:
            out["reached"] += 1
        elif (x < wall) == (u.agent[0] < wall):  # u.agent: the start after the reset
            out["start room, at the wall" if abs(x - wall) <= touch(u)
                else "start room, elsewhere"] += 1
        else:
            out["goal room, short"] += 1
    env.close()
    return out


def on_policy(wm, data: str | Path, count: int, out: Path, ctrl: ControllerConfig) -> Path:
    """The world model's own mistakes as data (DAgger for a model): MPC with `wm` and `ctrl` on
    `count` fresh layouts of the data's scene (the reset seeds after the data's, so its
    `layout_every` groups them too), appended as episodes of policy "mpc" to a copy of the data
    (its chunks hard-linked: a store only ever adds files). Resumes from what `out` holds."""
    if not (out / "manifest.json").exists():
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(data, tmp, copy_function=os.link)
        tmp.rename(out)
    store = TrajectoryStore.open(out)
    meta = store.meta["scene_config"]
    every = int(meta["scene_kwargs"].get("layout_every", 1))
    ours = [s for s, p in zip(store.episode_seeds, store.manifest["episodes"]["policy"])
            if p == "mpc"]
    first = ((max(set(store.episode_seeds) - set(ours)) // every) + 1) * every
    env = Recorder(make("two-rooms", image_size=meta["image_size"], **meta["scene_kwargs"]))
    cfg, energy = planner_config(ctrl, env.action_space), wm.value_energy(ctrl.weights)
    batch: list[Episode] = []
    for seed in tqdm(range(first + len(ours), first + count), desc="on-policy", unit="ep"):
        obs, _ = env.reset(seed=seed)
        with torch.inference_mode():
            res = run_episode(env, wm.encode, wm.unroll_from, cfg,
                              torch.Generator().manual_seed(seed), replan_every=ctrl.replan_every,
                              max_steps=ctrl.max_steps, obs=obs, energy=energy)
        batch.append(env.episode("mpc", terminated=res.success))
        if len(batch) == 20 or seed == first + count - 1:
            store.append_episodes(batch)
            batch = []
    env.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objective", default="jepa", help="pretraining objective of the encoder")
    p.add_argument("--episodes", type=int, default=100, help="evaluation episodes per energy")
    p.add_argument("--data", default=None, help="an existing two-rooms dataset (skip collect)")
    p.add_argument("--collect", type=int, default=300, help="episodes to collect without --data")
    p.add_argument("--policy", default="mixture:0.5", help="collection policy without --data")
    p.add_argument("--layout-every", type=int, default=1,
                   help="collected episodes share each wall K at a time (scene layout_every)")
    p.add_argument("--encoder", default=None, help="an existing encoder (skip pretraining)")
    p.add_argument("--pool", type=int, default=2, help="world-model latent grid (pool x pool)")
    p.add_argument("--wm-steps", type=int, default=2000, help="world-model (and value) steps")
    p.add_argument("--value-form", choices=VALUE_FORMS, default="diff",
                   help="the value's form (ValueConfig.form)")
    p.add_argument("--value-learning", choices=["td", "quasimetric"], default="td",
                   help="ValueConfig.learning; quasimetric sets form metric and uniform goals")
    p.add_argument("--wm-batch", type=int, default=128, help="world-model batch size")
    p.add_argument("--wm-dim", type=int, default=512,
                   help="the predictor's width (MLP units, conv channels)")
    p.add_argument("--wm-depth", type=int, default=3, help="the predictor's depth (hidden layers)")
    p.add_argument("--energies", nargs="+", choices=[r for r, _, _ in ENERGIES],
                   default=["l1", "value"], help="plan with these energies")
    p.add_argument("--value-set", action="append", default=[], metavar="KEY=VALUE",
                   help="set a ValueConfig field (consistency=0.05), after --value-learning")
    p.add_argument("--wm-set", action="append", default=[], metavar="KEY=VALUE",
                   help="set a WorldModelConfig field (rollout_steps=8), after the --wm-* flags")
    p.add_argument("--plan-set", action="append", default=[], metavar="KEY=VALUE",
                   help="set a ControllerConfig field (planner.horizon=16, replan_every=1)")
    p.add_argument("--on-policy", type=int, default=0, metavar="N",
                   help="MPC on N fresh layouts with the world model, then a second world model "
                        "on the data plus them (planned with)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    # Every ValueConfig field is set here, so the rows do not depend on the demo's own value.
    value = {**ValueConfig().model_dump(), "form": args.value_form}
    if args.value_learning == "quasimetric":
        value.update(QUASIMETRIC)
    value.update(parse_overrides(args.value_set))
    out = Path(args.out or f"runs/bench/value_planning/{args.objective}")
    times: dict[str, float] = {}

    t = time.perf_counter()
    data = args.data or collect("two-rooms", args.collect, out / "data", max_steps=64,
                                image_size=64, policy=args.policy,
                                scene_kwargs={"random_wall": True,
                                              "terminate_on_success": False,
                                              **({"layout_every": args.layout_every}
                                                 if args.layout_every > 1 else {})})
    times["collect"] = time.perf_counter() - t
    t = time.perf_counter()
    mask = [] if args.objective in ("jepa", "mae") else ["--mask.kind=none"]
    base = read_yaml(DEMO / "pretrain.yaml")
    if args.objective != "jepa":  # the demo's objective.params are JEPA's (variance/covariance)
        base["objective"].pop("params", None)
    enc = args.encoder or pretrain(build(PretrainConfig, merge(base, parse_overrides([
        f"--data.path={data}", f"--out_dir={out / 'pretrain'}",
        f"--objective.name={args.objective}", *mask])), source=str(DEMO / "pretrain.yaml")),
        resume=True)
    times["pretrain"] = time.perf_counter() - t

    def world_model(data: str | Path, where: Path) -> Path:
        base = merge(read_yaml(WORLD_MODEL), {"value": value})  # None stays None
        return train_worldmodel(build(WorldModelConfig, merge(base, parse_overrides([
            f"--encoder={enc}", f"--data.path={data}", f"--out_dir={where}",
            f"--predictor.pool={args.pool}",
            f"--steps={args.wm_steps}", f"--batch_size={args.wm_batch}",
            f"--predictor.dim={args.wm_dim}", f"--predictor.depth={args.wm_depth}",
            *args.wm_set])), source=str(WORLD_MODEL)), resume=True)

    t = time.perf_counter()
    wm_path = world_model(data, out / "worldmodel")
    times["worldmodel+value"] = time.perf_counter() - t
    if args.on_policy:  # a cheaper search collects: 64 samples x 2 iterations
        t = time.perf_counter()
        data = on_policy(load_world_model(wm_path), data, args.on_policy, out / "data+mpc",
                         controller("value", "final", 64, ["planner.samples=64",
                                                       "planner.iterations=2",
                                                       "planner.elites=8"]))
        times["on-policy episodes"] = time.perf_counter() - t
        t = time.perf_counter()
        wm_path = world_model(data, out / "worldmodel+mpc")
        times["worldmodel+value on data+mpc"] = time.perf_counter() - t
    wm = load_world_model(wm_path)
    reading = value_vs_path(wm)
    wall = wall_push(wm)
    face = wall_face(wm)
    last = json.loads((wm_path.parents[1] / "metrics.jsonl").read_text().splitlines()[-1])
    fit = {k: last.get(k, float("nan"))  # final step's batch (no tf_loss if teacher_forcing=0)
           for k in ("tf_loss", "rollout_loss", "copy_loss")}

    seeds = [1_000_000 + e for e in range(args.episodes)]
    scene = SceneConfig(name="two-rooms", kwargs={"random_wall": True})
    rows = []
    for row, metric, weights in (e for e in ENERGIES if e[0] in args.energies):
        ctrl = controller(metric, weights, 64, args.plan_set)
        t = time.perf_counter()
        model = true_model(wm) if row == "value-true" else None
        eps = run_episodes(wm, scene, ctrl, seeds, model=model)
        times[f"plan {row}"] = time.perf_counter() - t
        rows.append({"energy": row, "weights": ctrl.weights, **summarize(eps),
                     "endings": endings(eps)})

    print(f"\ntwo-rooms (random wall), encoder objective {args.objective}, {args.episodes} "
          f"episodes per energy (same reset seeds); stages (s): "
          + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print(f"value vs true path length on encoded frames ({reading['layouts']} layouts): "
          f"Spearman {reading['spearman']:.2f}, mean error "
          f"{reading['mean_abs_error_steps']:.1f} steps")
    print(f"pushing into the wall for {wall['steps']} steps ({wall['pushes']} starts; the scene "
          f"moves the agent {wall['true_moved']:.3f}): the world model's last step reads "
          f"{wall['predicted_progress_steps']:.1f} steps of progress "
          f"({wall['steps_to_go_start']:.1f} -> {wall['steps_to_go_after']:.1f} to go); after "
          "each step: " + " ".join(f"{v:.1f}" for v in wall["progress_by_step"]))
    print(f"pressed against the wall, {wall['steps']} steps of each move: steps to go through the "
          "world model / with the true dynamics (times read best, of "
          f"{wall['pushes']})")
    for move, m in wall["moves"].items():
        print(f"  {move}: {m['steps_to_go_world_model']:.1f} ({m['reads_best_world_model']}) / "
              f"{m['steps_to_go_true']:.1f} ({m['reads_best_true']})")
    print(f"the value along the start room's face of the wall ({face['layouts']} evaluation "
          f"layouts, goal behind it): lowest away from the door in {len(face['off_door'])} "
          f"(episodes {face['off_door']}; true path minus the value there, steps: "
          + ", ".join(f"{v:.1f}" for v in face["off_door_underestimate_steps"]) + ")")
    print(f"world model at its last step (L1, per latent dim): teacher forcing "
          f"{fit['tf_loss']:.4f}, rollout {fit['rollout_loss']:.4f}, nothing moves "
          f"{fit['copy_loss']:.4f}")
    print("\n| energy | success [95 % CI] | mean final distance | planning / episode |")
    print("|---|---|---:|---:|")
    for r in rows:
        lo, hi = r["success_ci95"]
        print(f"| {r['energy']} ({r['weights']}) | {r['success_rate']:.0%} [{lo:.0%}, {hi:.0%}] | "
              f"{r['final_distance']:.3f} | {r['plan_time_per_episode_s']:.1f} s |")
    for r in rows:
        print(f"{r['energy']}: episodes ended " + ", ".join(
            f"{k} {v}" for k, v in r["endings"].items()))
    atomic_write_json(out / "value_planning.json", {
        "benchmark": "value_planning", "created": now_iso(), "git": git_info(),
        "objective": args.objective, "pool": args.pool, "wm_steps": args.wm_steps,
        "wm_batch": args.wm_batch, "wm_dim": args.wm_dim, "wm_depth": args.wm_depth,
        "value_form": value["form"], "value_learning": args.value_learning,
        "value": value, "wm_set": args.wm_set, "plan_set": args.plan_set,
        "episodes_collected": None if args.data else args.collect,
        "policy": None if args.data else args.policy,
        "layout_every": None if args.data else args.layout_every,
        "on_policy": args.on_policy,
        "encoder": str(enc), "world_model": str(wm_path),
        "seconds": times, "value_vs_path": reading, "wall_push": wall, "wall_face": face,
        "world_model_fit": fit,
        "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
