"""Training-step time of the world model with and without its teacher-forced pass.

At the sizes of the two-rooms value benchmark's budget recipe (`benchmarks/value_planning.py`:
a micro ViT's 128-dim tokens on a 2 x 2 grid plus keypoints = 768 latent dims, MLP predictor
1,024 x 4, batch 256, k = 3 rollout steps, the quasimetric cost-to-go beside it), one step =
jepalab's own `train_step` (loss, backward, gradient clipping, AdamW) on cached latents (what
`LatentCache` feeds), in fp32 as the recipe trains.
`teacher_forcing` 1 (the default) and 0 (the rollout's loss only, `WorldModelConfig.
teacher_forcing`) are timed in the same run, one step of each in turn, so machine load hits both
alike; the ratio uses median step times.

    python benchmarks/worldmodel_step.py [--steps 20] [--batch 256] [--out runs/bench/wm_step.json]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from jepalab.config import WorldModelConfig
from jepalab.io import atomic_write_json
from jepalab.models.build import FrozenEncoder
from jepalab.models.vit import vit
from jepalab.objectives import Batch
from jepalab.objectives.worldmodel import WorldModelObjective
from jepalab.train.loop import make_optimizer, train_step

A, S = 2, 4
EMBED = 128  # the benchmark encoder's width (configs/demo/pretrain.yaml)
VALUE = {"form": "metric", "learning": "quasimetric", "p_layout": 0.5}


def setup(teacher_forcing: float, batch: int, k: int) -> tuple:
    cfg = WorldModelConfig(
        encoder="unused", data={"path": "unused"}, rollout_steps=k, batch_size=batch,
        precision="fp32", teacher_forcing=teacher_forcing, value=VALUE,
        predictor={"arch": "mlp", "dim": 1024, "depth": 4, "pool": 2, "keypoints": 2.0})
    torch.manual_seed(0)
    enc = FrozenEncoder(vit("micro", img_size=64, patch_size=8, embed_dim=EMBED), "0" * 64, {})
    obj = WorldModelObjective(cfg, A, S)
    models = obj.build(enc)
    return cfg, obj, models, make_optimizer(models, obj.trainable(models), cfg.optim.lr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--out", default="runs/bench/wm_step.json")
    args = p.parse_args(argv)

    runs = {tf: setup(tf, args.batch, args.k) for tf in (1.0, 0.0)}
    dim = runs[1.0][0].predictor.latent_dim(EMBED)
    g = torch.Generator().manual_seed(1)
    batch = Batch(
        x=torch.randn(args.batch, args.k + 1, dim, generator=g), masks=[], generator=g,
        actions=torch.randn(args.batch, args.k, A, generator=g),
        states=torch.randn(args.batch, args.k + 1, S, generator=g),
        goals=torch.randn(args.batch, 1, dim, generator=g),
        goal_steps=torch.randint(-1, 30, (args.batch, 1), generator=g))
    times: dict[float, list[float]] = {tf: [] for tf in runs}
    for i in range(args.steps + 2):  # two warm-up rounds
        for tf, (cfg, obj, models, opt) in runs.items():
            t = time.perf_counter()
            train_step(models, obj, opt, batch, cfg)
            if i >= 2:
                times[tf].append(time.perf_counter() - t)
    med = {tf: statistics.median(v) for tf, v in times.items()}
    result = {
        "benchmark": "worldmodel_step", "latent_dim": dim, "batch": args.batch, "k": args.k,
        "predictor": "mlp 1024 x 4", "value": VALUE, "steps": args.steps,
        "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "step_s": {"teacher_forcing=1": med[1.0], "teacher_forcing=0": med[0.0]},
        "speedup": med[1.0] / med[0.0],
    }
    out = atomic_write_json(args.out, result)
    print(f"step (median of {args.steps}): teacher forcing + rollout {med[1.0]:.3f} s, rollout "
          f"only {med[0.0]:.3f} s: {med[1.0] / med[0.0]:.2f}x  -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
