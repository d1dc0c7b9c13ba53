"""GPU training throughput: images/s and MFU of one I-JEPA step for ViT-L/16 at 224 px.

The step is `pretrain_throughput.py`'s (jepalab's own `train_step` + EMA, multiblock masks drawn
on the host per step, uint8 pixels from pinned memory), on the large preset (dim 1,024, depth
24, 16 heads), in fp32 (TF32 off), bf16 autocast, and bf16 autocast under `torch.compile`.
FLOPs are counted on the first (eager) step by torch's FlopCounterMode. MFU is reported against
the chip's dense bf16 spec (H100 / H200 SXM: 989.4 TFLOP/s) and against an 8192^3 bf16 matmul
measured in the same run. Needs a CUDA device; nothing else in jepalab does.

    python benchmarks/gpu_throughput.py [--batch 128] [--steps 10] [--profile] [--out P]
        [--cases fp32,bf16,bf16+compile] [--cudnn-sdp]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

from jepalab.io import atomic_write_json, git_info, now_iso
from jepalab.masks import build_mask_policy
from jepalab.models.vit import additive_mask
from jepalab.train.loop import pick_device
from pretrain_throughput import MASK, PRED, STEP, measure, one_step, setup

SPEC_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4}  # dense, SXM, per the data sheets


def matmul_peak_tflops(n: int = 8192, reps: int = 10) -> float:
    """Mean TFLOP/s of `reps` bf16 n^3 matmuls on random data, after 3 warm-ups."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def mask_draw_ms(batch: int, reps: int = 20) -> float:
    """Host time to draw one step's multiblock masks (inside every step's time)."""
    policy = build_mask_policy("multiblock", (224 // 16, 224 // 16), **MASK["params"])
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        policy.sample(gen, batch)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def profile_step(preset: str, batch: int, rows: int = 25) -> dict:
    """Profile one eager bf16 step (after two warm-ups): top ops by device and by host time."""
    cfg, obj, models, policy, opt, x = setup(224, 16, batch, "bf16", preset, "cuda")
    for step in range(2):
        one_step(cfg, obj, models, policy, opt, x, step)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        one_step(cfg, obj, models, policy, opt, x, 2)
    ev = prof.key_averages()
    print(ev.table(sort_by="self_device_time_total", row_limit=rows))
    print(ev.table(sort_by="self_cpu_time_total", row_limit=15))
    top = sorted(ev, key=lambda e: -e.self_device_time_total)[:rows]
    return {
        "device_s": sum(e.self_device_time_total for e in ev) / 1e6,
        "host_s": sum(e.self_cpu_time_total for e in ev) / 1e6,
        "launches": sum(e.count for e in ev if "LaunchKernel" in e.key),
        "top_device": [{"op": e.key, "self_device_s": e.self_device_time_total / 1e6,
                        "calls": e.count} for e in top]}


def attention_ms(batch: int, heads: int, n: int, d: int, reps: int = 20) -> dict:
    """fwd+bwd ms of one SDPA call at the encoder's shape: no mask (as the target encoder), and
    with the context encoder's additive key mask [B, 1, 1, N] under each usable backend."""
    q, k, v = (torch.randn(batch, heads, n, d, device="cuda", dtype=torch.bfloat16,
                           requires_grad=True) for _ in range(3))
    keep = torch.rand(batch, 1, 1, n, device="cuda") > 0.3
    keep[..., 0] = True
    cases = {"no mask": None, "additive key mask": additive_mask(keep, torch.bfloat16),
             "bool key mask": keep}
    out = {}
    for name, mask in cases.items():
        for backend in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
            try:
                with sdpa_kernel(getattr(SDPBackend, backend)):
                    for i in range(reps + 3):
                        if i == 3:
                            torch.cuda.synchronize()
                            t = time.perf_counter()
                        F.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()
                    torch.cuda.synchronize()
                out[f"{name} / {backend}"] = 1e3 * (time.perf_counter() - t) / reps
            except RuntimeError:
                out[f"{name} / {backend}"] = None
    for key, ms in out.items():
        print(f"# SDPA fwd+bwd {batch}x{heads}x{n}x{d} {key}: "
              f"{'unusable' if ms is None else f'{ms:.2f} ms'}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="large")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps per row")
    p.add_argument("--cases", default="fp32,bf16,bf16+compile",
                   help="rows to time, of fp32, bf16, bf16+compile")
    p.add_argument("--cudnn-sdp", action="store_true",
                   help="re-enable cuDNN's SDPA kernels, which the trainer turns off on CUDA")
    p.add_argument("--profile", action="store_true",
                   help="also profile one eager bf16 step and time SDPA's backends")
    p.add_argument("--out", default="runs/bench/gpu_throughput.json")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("gpu_throughput.py: no CUDA device (this benchmark measures the GPU)")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    pick_device("cuda")  # the trainer's device set-up (it turns cuDNN's SDPA off)
    torch.backends.cuda.enable_cudnn_sdp(args.cudnn_sdp)
    name = torch.cuda.get_device_name()
    spec = next((v for k, v in SPEC_BF16_TFLOPS.items() if k in name), None)
    peak = matmul_peak_tflops()
    print(f"# {name}, torch {torch.__version__}, CUDA {torch.version.cuda}; bf16 8192^3 matmul "
          f"{peak:.0f} TFLOP/s; spec {spec or '?'} TFLOP/s")
    print(f"# config: preset vit_{args.preset}, img 224, patch 16, batch {args.batch}, predictor "
          f"depth {PRED['pred_depth']} / dim {PRED['pred_dim']} / heads {PRED['pred_heads']}, "
          f"masks {MASK}; step = {STEP}; median of {args.steps} steps")
    masks = mask_draw_ms(args.batch)
    print(f"# host mask draw for one step: {masks:.1f} ms")
    head = {
        "benchmark": "gpu_throughput", "created": now_iso(), "git": git_info(), "gpu": name,
        "torch": torch.__version__, "cuda": torch.version.cuda, "spec_bf16_tflops": spec,
        "matmul_peak_bf16_tflops": peak, "mask_draw_ms": masks,
        "cudnn_sdp": args.cudnn_sdp,
        "config": {"preset": args.preset, "image_size": 224, "patch": 16, "batch": args.batch,
                   **PRED, "mask": MASK, "step": STEP, "steps": args.steps}}
    rows: list[dict] = []
    if args.profile:
        head["attention_ms"] = attention_ms(args.batch, 16, 196, 64)
        head["profile_bf16"] = profile_step(args.preset, args.batch)
        atomic_write_json(Path(args.out), head)
    cases = [(c.split("+")[0], c.endswith("+compile")) for c in args.cases.split(",") if c]
    print("\n| precision | compile | images/s | step ms | GFLOP/step | TFLOP/s | MFU (spec) | "
          "MFU (measured peak) | first step(s) s | peak memory GiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for precision, comp in cases:
        torch.cuda.reset_peak_memory_stats()
        r = measure(224, 16, args.batch, precision, args.steps, args.preset, "cuda", comp)
        tflops = r["gflops"] / 1e3
        r.update(precision=precision, compile=comp, tflops=tflops,
                 mfu_spec=tflops / spec if spec else None, mfu_measured_peak=tflops / peak,
                 peak_memory_gib=torch.cuda.max_memory_allocated() / 2**30)
        rows.append(r)
        mfu = f"{100 * r['mfu_spec']:.1f} %" if spec else "?"
        print(f"| {precision} | {'yes' if comp else 'no'} | {r['images_per_s']:,.0f} | "
              f"{1e3 * r['step_s']:.1f} | {r['gflop_per_step']:,.0f} | {tflops:.1f} | {mfu} | "
              f"{100 * r['mfu_measured_peak']:.1f} % | {r['first_step_s']:.1f} | "
              f"{r['peak_memory_gib']:.1f} |", flush=True)
        torch.cuda.empty_cache()
        print("# step ms: " + " ".join(f"{1e3 * t:.0f}" for t in r["step_times_s"]))
        head["rows"] = rows
        atomic_write_json(Path(args.out), head)  # after every row: a killed run keeps some
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
