"""Planning with a JEPA world model in a scene against random-action and do-nothing baselines.

The demo's recipe (until 2026-12-05) on another scene: collect (mixture of scripted and
correlated-random episodes) -> I-JEPA encoder (configs/demo/pretrain.yaml) -> world model on
pooled latents (configs/worldmodel_pooled.yaml) -> MPC with CEM. Then the same reset seeds are
played by MPC, by uniformly random actions and by zero actions ("do nothing": velocity scenes
stay put), and, as a reference that reads the true state, the scene's scripted expert; success
with Wilson 95 % CIs, all measured in this run. Stages resume from OUT.

    python benchmarks/scene_control.py --scene tabletop-push [--episodes 20] [--out runs/bench/X]
        [--energy value]   # plan with the learned cost-to-go of configs/worldmodel_pooled.yaml
                           # (quasimetric steps to go, last predicted step) instead of L1
        [--data-episodes 200] [--wm-steps 2000] [--max-steps N]
        [--scene-set camera=top]   # a scene keyword (repeatable), for collection and evaluation
        [--wm-set predictor.pool=4]   # a WorldModelConfig field (repeatable)
        [--plan-set planner.horizon=4]   # a ControllerConfig field (repeatable)
        [--reuse runs/bench/Y]   # the data and encoder of an earlier run (same settings)

Episodes last 100 steps, Push-T's 300 (the scene's own limit; its scripted pusher often needs
more than 100), for collection and evaluation alike.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from jepalab.config import PretrainConfig, SceneConfig, WorldModelConfig, load
from jepalab.data.collect import collect
from jepalab.envs import make
from jepalab.errors import JepalabError
from jepalab.eval.control import run_episodes, summarize
from jepalab.eval.stats import wilson_ci
from jepalab.io import atomic_write_json, git_info, now_iso
from jepalab.train.loop import pretrain
from jepalab.train.worldmodel import load_world_model, train_worldmodel
from value_planning import WORLD_MODEL, controller  # benchmarks/: the same MPC and world model

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo"
MAX_STEPS = {"pusht": 300}


def hold(scene: str, obs: dict) -> np.ndarray:
    """The "do nothing" action: zero velocity, or (Push-T: absolute targets in [0, 512]^2) the
    agent's own position."""
    if scene == "pusht":
        return obs["state"][:2] / 256.0 - 1.0
    return np.zeros(2)


def baseline(scene: str, kw: dict, seeds: list[int], kind: str, max_steps: int
             ) -> tuple[list[bool], list[float]]:
    """(success, final distance) per episode of random or zero actions, or of the scene's
    scripted expert (a reference that reads the true state, not a baseline)."""
    env = make(scene, image_size=64, **kw)
    out, dist = [], []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        ok = False
        for _ in range(max_steps):
            a = (rng.uniform(-1, 1, env.action_space.shape) if kind == "random"
                 else env.unwrapped.expert_action(rng) if kind == "scripted expert"
                 else hold(scene, obs))
            obs, _, term, trunc, info = env.step(a.astype(np.float32))
            ok = bool(info["is_success"])
            if ok or term or trunc:
                break
        out.append(ok)
        dist.append(float(info["distance"]))
    env.close()
    return out, dist


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scene", default="tabletop-push")
    p.add_argument("--data-episodes", type=int, default=200)
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes per policy")
    p.add_argument("--max-steps", type=int, default=None, help="100; Push-T 300")
    p.add_argument("--energy", choices=["l1", "value"], default="l1",
                   help="the planner's energy: L1 to the goal latent (all steps) or the learned "
                        "cost-to-go (last step)")
    p.add_argument("--wm-steps", type=int, default=2000, help="world-model (and value) steps")
    p.add_argument("--scene-set", action="append", default=[], metavar="KEY=VALUE",
                   help="scene keyword for collection and evaluation, e.g. camera=top")
    p.add_argument("--wm-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a WorldModelConfig field, e.g. predictor.pool=4")
    p.add_argument("--plan-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a ControllerConfig field, e.g. planner.horizon=4 or correct=1.0")
    p.add_argument("--reuse", default=None, metavar="DIR",
                   help="take the data and the encoder from an earlier run's --out")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    args.max_steps = args.max_steps or MAX_STEPS.get(args.scene, 100)
    for item in args.scene_set:
        key, eq, _ = item.partition("=")
        if not (key and eq):
            raise JepalabError(f"--scene-set {item!r}: expected KEY=VALUE")
    scene = load(SceneConfig, None, [f"--name={args.scene}",
                                     *(f"--kwargs.{kv}" for kv in args.scene_set)])
    kw = scene.kwargs
    out = Path(args.out or f"runs/bench/scene_control/{args.scene}")
    base = Path(args.reuse) if args.reuse else out  # data and encoder
    times: dict[str, float] = {}

    t = time.perf_counter()
    data = collect(args.scene, args.data_episodes, base / "data", max_steps=args.max_steps,
                   image_size=64, scene_kwargs=kw)
    times["collect"] = time.perf_counter() - t
    t = time.perf_counter()
    enc = pretrain(load(PretrainConfig, DEMO / "pretrain.yaml", [
        f"--data.path={data}", f"--out_dir={base / 'pretrain'}"]), resume=True)
    times["pretrain"] = time.perf_counter() - t
    t = time.perf_counter()
    wm_path = train_worldmodel(load(WorldModelConfig, WORLD_MODEL, [
        f"--encoder={enc}", f"--data.path={data}", f"--out_dir={out / 'worldmodel'}",
        f"--steps={args.wm_steps}",
        *(["--value=null"] if args.energy == "l1" else []),
        *args.wm_set]), resume=True)
    times["worldmodel"] = time.perf_counter() - t

    seeds = [1_000_000 + e for e in range(args.episodes)]
    ctrl = controller(args.energy, "all" if args.energy == "l1" else "final", args.max_steps,
                      args.plan_set)
    t = time.perf_counter()
    mpc = summarize(run_episodes(load_world_model(wm_path), scene,
                                 ctrl, seeds))
    times["mpc"] = time.perf_counter() - t
    results = {"mpc (JEPA world model)": (round(mpc["success_rate"] * args.episodes),
                                          mpc["final_distance"], mpc["plan_time_per_step_s"])}
    for kind in ("random", "do-nothing", "scripted expert"):
        ok, dist = baseline(args.scene, kw, seeds, kind, args.max_steps)
        results[kind] = (sum(ok), float(np.mean(dist)), None)

    print(f"\n{args.scene}: {args.episodes} episodes per policy (same reset seeds), "
          f"{args.max_steps} steps; data {args.data_episodes} episodes; stages (s): "
          + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print("\n| policy | success [95 % CI] | mean final distance | planning / step |")
    print("|---|---|---:|---:|")
    rows = []
    for name, (k, dist, plan_s) in results.items():
        rate, lo, hi = wilson_ci(k, args.episodes)
        rows.append({"policy": name, "successes": k, "episodes": args.episodes,
                     "success": rate, "ci95": [lo, hi], "final_distance": dist,
                     "plan_time_per_step_s": plan_s})
        plan = f"{plan_s * 1e3:.0f} ms" if plan_s is not None else ""
        print(f"| {name} | {rate:.0%} [{lo:.0%}, {hi:.0%}] | {dist:.3f} | {plan} |")
    atomic_write_json(out / "scene_control.json", {
        "benchmark": "scene_control", "created": now_iso(), "git": git_info(),
        "scene": args.scene, "energy": args.energy, "data_episodes": args.data_episodes,
        "max_steps": args.max_steps, "scene_kwargs": kw, "wm_set": args.wm_set,
        "controller": ctrl.model_dump(mode="json"),
        "reuse": args.reuse,
        "wm_steps": args.wm_steps, "seconds": times, "rows": rows, "mpc": mpc})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
