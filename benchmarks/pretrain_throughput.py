"""Images/s of one full I-JEPA training step, fp32 and bf16, as a share of measured matmul peak.

A step = target-encoder forward + context-encoder forward + predictor + loss + backward + AdamW
+ EMA: exactly `jepalab.train.loop.train_step` plus `objective.after_step`. FLOPs are counted
with torch's FlopCounterMode on one step (matmuls and attention; forward + backward).

    python benchmarks/pretrain_throughput.py [--quick] [--out runs/bench/pretrain_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from jepalab.config import PretrainConfig, build
from jepalab.masks import build_mask_policy
from jepalab.models.build import build_encoder
from jepalab.objectives import build_objective
from jepalab.train.loop import make_batch, make_optimizer, set_schedules, train_step

CASES = [  # (name, image size, patch, batch)
    ("vit_tiny 64px/p8", 64, 8, 64),
    ("vit_tiny 224px/p16", 224, 16, 16),
]
PRED = {"pred_depth": 6, "pred_dim": 384, "pred_heads": 12}  # I-JEPA's predictor width for ViT-T


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of a square matmul in `dtype` (best of reps)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def setup(size: int, patch: int, batch: int, precision: str):
    cfg = build(PretrainConfig, {
        "steps": 1000, "batch_size": batch, "precision": precision,
        "data": {"image_size": size},
        "model": {"preset": "tiny", "patch_size": patch, **PRED},
        "mask": {"kind": "multiblock", "params": {"min_keep": 10}},
    })
    torch.manual_seed(0)
    obj = build_objective(cfg)
    models = obj.build(build_encoder(cfg))
    policy = build_mask_policy("multiblock", models["encoder"].grid, **cfg.mask.params)
    opt = make_optimizer(models, obj.trainable(models), cfg.optim.lr)
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    return cfg, obj, models, policy, opt, x


def one_step(cfg, obj, models, policy, opt, x, step: int) -> None:
    set_schedules(opt, step, cfg)
    train_step(models, obj, opt, make_batch(x, step, cfg, policy, torch.device("cpu")), cfg)
    obj.after_step(models, step + 1, cfg.steps)


def measure(size: int, patch: int, batch: int, precision: str, steps: int) -> dict:
    cfg, obj, models, policy, opt, x = setup(size, patch, batch, precision)
    with FlopCounterMode(display=False) as fc:
        one_step(cfg, obj, models, policy, opt, x, 0)
    flops = fc.get_total_flops()
    one_step(cfg, obj, models, policy, opt, x, 1)  # warm-up
    times = []
    for s in range(steps):
        t = time.perf_counter()
        one_step(cfg, obj, models, policy, opt, x, 2 + s)
        times.append(time.perf_counter() - t)
    dt = sorted(times)[len(times) // 2]
    return {"images_per_s": batch / dt, "step_s": dt, "gflop_per_step": flops / 1e9,
            "gflops": flops / dt / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer timed steps")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--out", default="runs/bench/pretrain_throughput.json")
    args = ap.parse_args()
    steps = args.steps or (3 if args.quick else 8)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    print("# config: I-JEPA multiblock masks (4 targets, scale 0.15-0.2, aspect 0.75-1.5; "
          "context 0.85-1.0), predictor depth 6 / width 384, AdamW, EMA, loss l2 (layer-normed "
          f"targets); median of {steps} steps")
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"# matmul peak: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s")
    rows = []
    print("| case | precision | batch | images/s | GFLOP/step | GFLOP/s | % of bf16 peak |")
    print("|---|---|---|---|---|---|---|")
    for name, size, patch, batch in CASES:
        for precision in ("fp32", "bf16"):
            r = measure(size, patch, batch, precision, steps)
            r.update(case=name, precision=precision, batch=batch,
                     share_of_bf16_peak=r["gflops"] / peak["bf16"])
            rows.append(r)
            print(f"| {name} | {precision} | {batch} | {r['images_per_s']:.1f} | "
                  f"{r['gflop_per_step']:.1f} | {r['gflops']:.0f} | "
                  f"{100 * r['share_of_bf16_peak']:.0f} % |", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"peak_gflops": peak, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
