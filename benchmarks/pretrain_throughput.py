"""Images/s of one full I-JEPA training step, fp32 and bf16, as a share of measured matmul peaks.

A step = target-encoder forward + context-encoder forward + predictor + loss + backward + AdamW
(+ gradient clipping) + EMA: exactly `jepalab.train.loop.train_step` plus `objective.after_step`,
with masks drawn by `make_batch` as in training. FLOPs are counted with torch's FlopCounterMode
on one step (matmuls, convolutions and attention, forward + backward; padded tokens are packed
away, so this counts the work actually done). Peaks are measured in the same run: the best of a
square and a transformer-shaped matmul, fp32 and bf16. Shares are reported against both: on CPUs
without native bf16 (AVX2), bf16 is emulated and its "peak" is far below fp32's, so the fp32 share
is the meaningful one there.

bf16 steps are expensive where bf16 is emulated: a bf16 case is timed only when its estimated
step time (the fp32 step scaled by the measured fp32/bf16 matmul speed ratio) fits
`--bf16-budget` seconds; otherwise the row says "skipped" with the estimate (never a number
presented as measured).

    python benchmarks/pretrain_throughput.py [--quick] [--profile] [--out PATH]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import (
    FlopCounterMode,
    register_flop_formula,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

from jepalab.config import PretrainConfig, build
from jepalab.io import atomic_write_json
from jepalab.masks import build_mask_policy
from jepalab.models.build import build_encoder
from jepalab.objectives import build_objective
from jepalab.train.loop import (
    compile_trainable,
    make_batch,
    make_optimizer,
    set_schedules,
    train_step,
)

CASES = [  # (name, image size, patch, batch)
    ("vit_tiny 64px/p8", 64, 8, 64),
    ("vit_tiny 224px/p16", 224, 16, 16),
]
PRESET = "tiny"  # ViT-tiny: dim 192, depth 12, heads 3
PRED = {"pred_depth": 6, "pred_dim": 384, "pred_heads": 12}
MASK = {"kind": "multiblock", "params": {"min_keep": 10}}
STEP = ("target fwd (no grad) + LN targets + context fwd + predictor + l2 loss + backward + "
        "clip 1.0 + AdamW + EMA")

# CPU flash attention has no FLOP formula in torch: count it like the CUDA kernels (2 matmuls
# forward, 4 backward).
_aten = torch.ops.aten


@register_flop_formula(_aten._scaled_dot_product_flash_attention_for_cpu, get_raw=True)
def _sdpa_cpu(query, key, value, *args, out_val=None, **kwargs) -> int:
    return sdpa_flop_count(query.shape, key.shape, value.shape)


@register_flop_formula(_aten._scaled_dot_product_flash_attention_for_cpu_backward, get_raw=True)
def _sdpa_cpu_bwd(grad_out, query, key, value, *args, out_val=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape, value.shape)


def matmul_peak(dtype: torch.dtype, reps: int) -> dict[str, float]:
    """GFLOP/s of torch.mm in `dtype` on a square and a ViT-shaped problem, and of F.linear
    (the path nn.Linear takes, a different kernel for bf16 on CPU) on the latter; best of reps."""
    shapes = {"square": (2048, 2048, 2048) if dtype == torch.float32 else (1024, 1024, 1024),
              "tokens x 384 x 1536": (4096, 384, 1536)}
    out = {}
    for name, (m, k, n) in shapes.items():
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        a @ b
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
        out[name] = 2 * m * k * n / best / 1e9
    m, k, n = shapes["tokens x 384 x 1536"]
    a, w = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
    torch.nn.functional.linear(a, w)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.nn.functional.linear(a, w)
        best = min(best, time.perf_counter() - t)
    out["F.linear tokens x 384 x 1536"] = 2 * m * k * n / best / 1e9
    out["peak"] = max(out.values())
    return out


def make_cfg(size: int, patch: int, batch: int, precision: str, preset: str = PRESET,
             device: str = "cpu", compile: bool = False) -> PretrainConfig:
    return build(PretrainConfig, {
        "steps": 1000, "batch_size": batch, "precision": precision, "device": device,
        "compile": compile, "data": {"image_size": size},
        "model": {"preset": preset, "patch_size": patch, **PRED},
        "mask": MASK,
    })


def setup(size: int, patch: int, batch: int, precision: str, preset: str = PRESET,
          device: str = "cpu", compile: bool = False):
    """Models, optimizer and masks as `jepalab pretrain` builds them; x: a uint8 batch in host
    memory (as a loader yields it), moved to `device` by each step's `make_batch`."""
    cfg = make_cfg(size, patch, batch, precision, preset, device, compile)
    torch.manual_seed(0)
    obj = build_objective(cfg)
    models = obj.build(build_encoder(cfg)).to(device)
    if compile:
        compile_trainable(obj, models)
    policy = build_mask_policy("multiblock", models["encoder"].grid, **cfg.mask.params)
    opt = make_optimizer(models, obj.trainable(models), cfg.optim.lr)
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    if device != "cpu":
        x = x.pin_memory()
    return cfg, obj, models, policy, opt, x


def one_step(cfg, obj, models, policy, opt, x, step: int) -> None:
    set_schedules(opt, step, cfg)
    batch = make_batch(x, step, cfg, policy, torch.device(cfg.device))
    train_step(models, obj, opt, batch, cfg)
    obj.after_step(models, step + 1, cfg.steps)
    if cfg.device == "cuda":
        torch.cuda.synchronize()  # the step's time is its kernels' time, not their launch


def config_line(name: str, size: int, patch: int, batch: int, policy) -> str:
    mc = {k: v for k, v in policy.config.items() if k not in ("kind", "max_tries")}
    return (f"# config {name}: preset vit_{PRESET} (dim 192, depth 12, heads 3), img {size}, "
            f"patch {patch}, batch {batch}, predictor depth {PRED['pred_depth']} / dim "
            f"{PRED['pred_dim']} / heads {PRED['pred_heads']}, masks multiblock {mc}; "
            f"step = {STEP}")


def measure(size: int, patch: int, batch: int, precision: str, steps: int,
            preset: str = PRESET, device: str = "cpu", compile: bool = False) -> dict:
    """The first step (FLOP-counted) is the warm-up; the median of the next `steps` is reported.
    Under `compile` the FLOPs are counted on an eager copy (the counter does not see inside
    compiled graphs) and the first `steps` steps after the compiling one are warm-up too."""
    cfg, obj, models, policy, opt, x = setup(size, patch, batch, precision, preset, device)
    t = time.perf_counter()
    with FlopCounterMode(display=False) as fc:
        one_step(cfg, obj, models, policy, opt, x, 0)
    first = time.perf_counter() - t
    flops = fc.get_total_flops()
    done = 1
    if compile:
        del models, opt
        cfg, obj, models, policy, opt, x = setup(size, patch, batch, precision, preset, device,
                                                 compile=True)
        t = time.perf_counter()
        for done in range(steps + 1):
            one_step(cfg, obj, models, policy, opt, x, done)
        first = time.perf_counter() - t  # compiling, with its recompiles for new mask sizes
        done += 1
    times = []
    for s in range(steps):
        t = time.perf_counter()
        one_step(cfg, obj, models, policy, opt, x, done + s)
        times.append(time.perf_counter() - t)
    dt = statistics.median(times) if times else first
    return {"images_per_s": batch / dt, "step_s": dt, "step_times_s": times,
            "first_step_s": first, "gflop_per_step": flops / 1e9, "gflops": flops / dt / 1e9,
            "timed_steps": len(times)}


CATEGORIES = [  # (category, substrings of op names), first match wins
    ("attention (SDPA)", ("scaled_dot_product", "_flash_attention")),
    ("matmul (linear fwd/bwd)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear")),
    ("gathers/packing/copies", ("copy_", "index_select", "index_copy", "gather", "cat",
                                "repeat_interleave", "index", "nonzero", "scatter", "zeros")),
    ("optimizer/EMA (foreach)", ("_foreach", "addcdiv", "addcmul", "lerp", "sqrt")),
    ("norms", ("layer_norm",)),
    ("gelu", ("gelu",)),
    ("conv (patch embed)", ("convolution",)),
]


def profile_step(size: int, patch: int, batch: int, rows: int) -> dict:
    """Profile one fp32 step: top ops by self time, phases, and time by op category."""
    cfg, obj, models, policy, opt, x = setup(size, patch, batch, "fp32")
    one_step(cfg, obj, models, policy, opt, x, 0)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        one_step(cfg, obj, models, policy, opt, x, 1)
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=rows))
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    phases = {e.key: e.cpu_time_total / 1e6 for e in events
              if e.key.startswith("jepa/") or e.key.startswith("Optimizer.step")}
    fwd = sum(v for k, v in phases.items() if k.startswith("jepa/") and k != "jepa/ema")
    opt_t = sum(v for k, v in phases.items() if k.startswith("Optimizer.step"))
    phases["backward + clip + rest (= total - the above)"] = (
        total - fwd - opt_t - phases.get("jepa/ema", 0.0))
    cats: dict[str, float] = defaultdict(float)
    for e in events:
        if e.key.startswith(("jepa/", "Optimizer.", "autograd::", "##")):
            continue  # labels, not ops (their ops are counted below them)
        cat = next((c for c, subs in CATEGORIES if any(s in e.key for s in subs)), "other")
        cats[cat] += e.self_cpu_time_total / 1e6
    print(f"\n# profile of one fp32 step, {size}px (total {total:.2f} s of op self-time)")
    print("| phase | s | share |\n|---|---|---|")
    for k, v in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v:.2f} | {100 * v / total:.0f} % |")
    print("\n| op category (self time) | s | share |\n|---|---|---|")
    for k, v in sorted(cats.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v:.2f} | {100 * v / total:.0f} % |")
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:rows]
    return {"total_s": total, "phases_s": phases, "categories_s": dict(cats),
            "top_ops": [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "calls": e.count}
                        for e in top]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer timed steps")
    ap.add_argument("--steps", type=int, default=None, help="timed fp32 steps per case")
    ap.add_argument("--bf16-steps", type=int, default=0,
                    help="timed bf16 steps after the first (0: report the first step itself)")
    ap.add_argument("--bf16-budget", type=float, default=30.0,
                    help="seconds a bf16 case may take (estimated); above it the case is skipped")
    ap.add_argument("--cases", default="64,224", help="image sizes to run (of 64,224)")
    ap.add_argument("--profile", action="store_true",
                    help="also profile one fp32 step of the 224 px case")
    ap.add_argument("--out", default="benchmarks/results/pretrain_throughput.json")
    args = ap.parse_args()
    steps = args.steps or (2 if args.quick else 4)
    sizes = {int(s) for s in args.cases.split(",")}
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    peak = {"fp32": matmul_peak(torch.float32, 5), "bf16": matmul_peak(torch.bfloat16, 2)}
    for k, v in peak.items():
        shapes = ", ".join(f"{s} {g:.1f}" for s, g in v.items() if s != "peak")
        print(f"# matmul peak {k}: {v['peak']:.1f} GFLOP/s ({shapes})")
    slow = peak["fp32"]["peak"] / peak["bf16"]["peak"]
    rows, fp32_step = [], {}
    bf16_how = (f"median of {args.bf16_steps} steps after the first" if args.bf16_steps
                else "the first (FLOP-counted) step itself, warm-up included")
    print(f"# fp32: median of {steps} steps after one FLOP-counted warm-up step; bf16: "
          f"{bf16_how}, if estimated to fit {args.bf16_budget:.0f} s")
    for name, size, patch, batch in CASES:
        if size not in sizes:
            continue
        _, _, _, policy, _, _ = setup(size, patch, batch, "fp32")
        print(config_line(name, size, patch, batch, policy), flush=True)
    print("\n| case | precision | batch | images/s | step s | GFLOP/step | GFLOP/s | "
          "% of fp32 peak | % of bf16 peak |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, size, patch, batch in CASES:
        if size not in sizes:
            continue
        for precision in ("fp32", "bf16"):
            if precision == "bf16":
                est = fp32_step[name] * slow * (1 + args.bf16_steps)  # incl. the first step
                if est > args.bf16_budget:
                    r = {"skipped": True, "estimated_step_s": fp32_step[name] * slow,
                         "reason": f"emulated bf16: est. {est:.0f} s > budget"}
                    rows.append({"case": name, "precision": precision, "batch": batch, **r})
                    print(f"| {name} | bf16 | {batch} | skipped: est. "
                          f"{r['estimated_step_s']:.0f} s/step (fp32 step x {slow:.0f}, the "
                          "measured fp32/bf16 matmul ratio) | | | | | |", flush=True)
                    continue
            n = steps if precision == "fp32" else args.bf16_steps
            r = measure(size, patch, batch, precision, n)
            if precision == "fp32":
                fp32_step[name] = r["step_s"]
            r.update(case=name, precision=precision, batch=batch,
                     share_of_fp32_peak=r["gflops"] / peak["fp32"]["peak"],
                     share_of_bf16_peak=r["gflops"] / peak["bf16"]["peak"])
            rows.append(r)
            print(f"| {name} | {precision} | {batch} | {r['images_per_s']:.2f} | "
                  f"{r['step_s']:.2f} | {r['gflop_per_step']:.0f} | {r['gflops']:.1f} | "
                  f"{100 * r['share_of_fp32_peak']:.0f} % | "
                  f"{100 * r['share_of_bf16_peak']:.0f} % |", flush=True)
    prof = None
    if args.profile:
        prof = profile_step(224, 16, 16, rows=15)
    out = {"args": vars(args), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "config": {"preset": PRESET, **PRED, "mask": MASK, "step": STEP,
                      "cases": [c for c in CASES if c[1] in sizes]},
           "peak_gflops": peak, "rows": rows, "profile_224": prof}
    atomic_write_json(Path(args.out), out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
