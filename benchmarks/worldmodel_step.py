"""Training-step time of the world model, variants of its config timed side by side.

At the sizes of the two-rooms value benchmark's budget recipe (`benchmarks/value_planning.py`:
a micro ViT's 128-dim tokens on a 2 x 2 grid plus keypoints = 768 latent dims, MLP predictor
1,024 x 4, batch 256, k = 3 rollout steps, the quasimetric cost-to-go beside it), one step =
jepalab's own `train_step` (loss, backward, gradient clipping, AdamW, the value's extra updates)
on cached latents (what `LatentCache` feeds), in fp32 as the recipe trains.
Each variant is a comma-separated list of WorldModelConfig overrides; by default
`teacher_forcing` 1 and 0 (the rollout's loss only, `WorldModelConfig.teacher_forcing`). The
variants are timed in the same run, one step of each in turn, so machine load hits them alike;
`relative` is each median step time over the first variant's.

    python benchmarks/worldmodel_step.py [--steps 20] [--batch 256] [--out runs/bench/wm_step.json]
    python benchmarks/worldmodel_step.py teacher_forcing=0,value.updates=3 \
        teacher_forcing=0,value.updates=3,value.norm=l1
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from jepalab.config import WorldModelConfig, merge, parse_overrides
from jepalab.io import atomic_write_json
from jepalab.models.build import FrozenEncoder
from jepalab.models.vit import vit
from jepalab.objectives import Batch
from jepalab.objectives.worldmodel import WorldModelObjective
from jepalab.train.loop import make_optimizer, train_step

A, S = 2, 4
EMBED = 128  # the benchmark encoder's width (configs/demo/pretrain.yaml)
VALUE = {"form": "metric", "learning": "quasimetric", "p_layout": 0.5}


def setup(variant: str, batch_size: int, k: int) -> tuple:
    over = parse_overrides([kv for kv in variant.split(",") if kv])
    cfg = WorldModelConfig(**merge({
        "encoder": "unused", "data": {"path": "unused"}, "rollout_steps": k,
        "batch_size": batch_size, "precision": "fp32", "value": VALUE,
        "predictor": {"arch": "mlp", "dim": 1024, "depth": 4, "pool": 2, "keypoints": 2.0}},
        over))
    torch.manual_seed(0)
    enc = FrozenEncoder(vit("micro", img_size=64, patch_size=8, embed_dim=EMBED), "0" * 64, {})
    obj = WorldModelObjective(cfg, A, S)
    models = obj.build(enc)
    g = torch.Generator().manual_seed(1)  # one batch per variant, shaped by its config
    dim, goals = cfg.predictor.latent_dim(EMBED), cfg.value.updates
    batch = Batch(
        x=torch.randn(batch_size, k + 1, dim, generator=g), masks=[], generator=g,
        actions=torch.randn(batch_size, k, A, generator=g),
        states=torch.randn(batch_size, k + 1, S, generator=g),
        goals=torch.randn(batch_size, goals, dim, generator=g),
        goal_steps=torch.randint(-1, 30, (batch_size, goals), generator=g))
    return cfg, obj, models, make_optimizer(models, obj.trainable(models), cfg.optim.lr), batch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variants", nargs="*", default=["teacher_forcing=1", "teacher_forcing=0"],
                   help="comma-separated WorldModelConfig overrides per variant")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--out", default="runs/bench/wm_step.json")
    args = p.parse_args(argv)

    runs = {v: setup(v, args.batch, args.k) for v in args.variants}
    times: dict[str, list[float]] = {v: [] for v in runs}
    for i in range(args.steps + 2):  # two warm-up rounds
        for v, (cfg, obj, models, opt, batch) in runs.items():
            t = time.perf_counter()
            train_step(models, obj, opt, batch, cfg)
            if i >= 2:
                times[v].append(time.perf_counter() - t)
    med = {v: statistics.median(t) for v, t in times.items()}
    first = med[args.variants[0]]
    result = {
        "benchmark": "worldmodel_step", "batch": args.batch, "k": args.k,
        "predictor": "mlp 1024 x 4", "value": VALUE, "steps": args.steps,
        "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "step_s": med, "relative": {v: m / first for v, m in med.items()},
    }
    out = atomic_write_json(args.out, result)
    for v, m in med.items():
        print(f"{v or '(defaults)'}: {m:.3f} s per step (median of {args.steps}), "
              f"{m / first:.2f}x the first")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
