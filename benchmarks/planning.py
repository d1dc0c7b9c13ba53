"""Planning time per MPC step versus samples x horizon, and world-model forward throughput.

Two world models (`--arch`), run autoregressively over the horizon with all candidates in one
batch: `mlp` (default) is jepalab's ACMLP at the demo world model's size (latent 512 = 128-d
tokens pooled onto 2x2, width 512, depth 3, A=2); `transformer` is the token-level, block-causal
ACTransformer (V-JEPA 2-AC style) over the micro ViT's 8x8 tokens of 128 dims, width 256,
depth 4, 4 heads, 2 frames of context: the largest world model the configs ship
(configs/worldmodel_two_rooms.yaml). One "step" is one plan call (what MPC spends per env
step with replan_every=1): `iterations` unroll calls of samples x horizon transitions, plus the
planner's own sampling and distribution updates ("overhead" = plan time not spent inside the
unroll). `--dtype bf16` runs the unroll under bf16 autocast.

    python benchmarks/planning.py [--quick] [--arch mlp|transformer] [--device cpu] [--out P]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from jepalab.io import atomic_write_json, git_info, now_iso
from jepalab.models.ac_predictor import ACMLP, ACPredictor, ACTransformer
from jepalab.planning import PlannerConfig, goal_energy, plan

A = 2  # two-rooms actions
ARCHS = {  # name -> (predictor factory, latent shape of one frame)
    # the demo's world model (configs/demo/worldmodel.yaml): micro-ViT tokens (D=128) pooled
    # onto a 2x2 grid -> latent 512, residual MLP width 512, depth 3
    "mlp": (lambda: ACMLP(512, A, 0, width=512, depth=3), (512,)),
    "transformer": (lambda: ACTransformer(128, (8, 8), A, 0, width=256, depth=4, heads=4,
                                          context=2), (64, 128)),
}


def unroll_from(model: ACPredictor, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """z0 [1, ...], actions [S, H, A] -> [S, H, ...] (what WorldModel.unroll_from runs)."""
    return model.rollout(z0.expand(actions.shape[0], *z0.shape[1:]), actions)


def flops_per_transition(model: ACPredictor, shape: tuple[int, ...], device: str) -> float:
    """The mean over a 4-step rollout of 8 candidates (for the transformer, the first step
    attends to one frame and the later ones to its `context` of 2)."""
    z0 = torch.zeros(1, *shape, device=device)
    a = torch.zeros(8, 4, A, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        unroll_from(model, z0, a)
    return fc.get_total_flops() / (8 * 4)


def machine(device: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu,
            "python": platform.python_version(), "device": device}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def time_plan(model: ACPredictor, shape: tuple[int, ...], method: str, samples: int,
              horizon: int, iterations: int, repeats: int, device: str, amp) -> dict[str, Any]:
    gen = torch.Generator(device=device).manual_seed(0)
    z0 = torch.randn(1, *shape, generator=gen, device=device)
    goal = torch.randn(*shape, generator=gen, device=device)
    cfg = PlannerConfig(method=method, horizon=horizon, samples=samples, iterations=iterations,
                        action_dim=A)
    cost = goal_energy(goal)
    unroll_s = [0.0]

    def unroll(actions: torch.Tensor) -> torch.Tensor:
        t = time.perf_counter()
        with amp():
            z = unroll_from(model, z0, actions).float()
        sync(device)
        unroll_s[0] += time.perf_counter() - t
        return z

    plan(unroll, cost, cfg, gen)  # warm-up (allocator, kernels)
    times, shares = [], []
    for _ in range(repeats):
        unroll_s[0] = 0.0
        t = time.perf_counter()
        plan(unroll, cost, cfg, gen)
        sync(device)
        dt = time.perf_counter() - t
        times.append(dt)
        shares.append(unroll_s[0] / dt)
    med = statistics.median(times)
    transitions = samples * horizon * iterations
    return {"method": method, "samples": samples, "horizon": horizon, "iterations": iterations,
            "plan_ms_median": 1e3 * med, "plan_ms_min": 1e3 * min(times),
            "unroll_share": statistics.median(shares),
            "transitions_per_s": transitions / med}


def time_forward(model: ACPredictor, shape: tuple[int, ...], batch: int, repeats: int,
                 device: str, amp, flops: float) -> dict[str, Any]:
    gen = torch.Generator(device=device).manual_seed(0)
    z = torch.randn(batch, 1, *shape, generator=gen, device=device)
    a = torch.rand(batch, 1, A, generator=gen, device=device) * 2 - 1
    reps = max(1, 20_000 // batch)  # ~20k transitions per timing
    with torch.inference_mode(), amp():
        model(z, a)
        times = []
        for _ in range(repeats):
            sync(device)
            t = time.perf_counter()
            for _ in range(reps):
                model(z, a)
            sync(device)
            times.append((time.perf_counter() - t) / reps)
    med = statistics.median(times)
    return {"batch": batch, "ms_per_forward": 1e3 * med, "transitions_per_s": batch / med,
            "gflops": batch * flops / med / 1e9}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2x2 grid, 3 repeats")
    p.add_argument("--out", default="runs/bench/planning.json")
    p.add_argument("--device", default="cpu")
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--methods", default="cem,mppi")
    p.add_argument("--arch", choices=sorted(ARCHS), default="mlp")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    args = p.parse_args(argv)

    samples = [64, 256] if args.quick else [64, 256, 1024]
    horizons = [5, 10] if args.quick else [5, 10, 20]
    batches = [256, 1024] if args.quick else [64, 256, 1024, 4096]
    repeats = 3 if args.quick else 7
    mach = machine(args.device)
    print(f"machine: torch {mach['torch']}, {mach['threads']} threads, {mach['cpu']}, "
          f"python {mach['python']}, device {mach.get('gpu', args.device)}, {args.dtype}")

    torch.manual_seed(0)  # weights only; planning draws from its own generator
    make, shape = ARCHS[args.arch]
    model = make().to(args.device).eval()
    dev_type = torch.device(args.device).type

    def amp():
        if args.dtype == "bf16":
            return torch.autocast(dev_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    flops = flops_per_transition(model, shape, args.device)
    plans = [time_plan(model, shape, m, s, h, args.iterations, repeats, args.device, amp)
             for m in args.methods.split(",") for s in samples for h in horizons]
    fwd = [time_forward(model, shape, b, repeats, args.device, amp, flops) for b in batches]

    print(f"\nPlanning time per step (one plan call, {args.iterations} iterations, "
          f"{type(model).__name__} {args.arch}, latent {list(shape)}, A={A}); "
          f"median of {repeats}\n")
    print("| method | samples | horizon | ms / step | unroll share | transitions/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in plans:
        print(f"| {r['method']} | {r['samples']} | {r['horizon']} | {r['plan_ms_median']:.2f} | "
              f"{r['unroll_share']:.0%} | {r['transitions_per_s']:,.0f} |")
    print(f"\nWorld-model forward (one step, inference mode, "
          f"{flops / 1e3:,.0f} kFLOP/transition)\n")
    print("| batch | ms / forward | transitions/s | GFLOP/s |")
    print("|---:|---:|---:|---:|")
    for r in fwd:
        print(f"| {r['batch']} | {r['ms_per_forward']:.3f} | {r['transitions_per_s']:,.0f} | "
              f"{r['gflops']:.1f} |")
    out = atomic_write_json(args.out, {
        "benchmark": "planning", "created": now_iso(), "git": git_info(), "machine": mach,
        "model": {"kind": type(model).__name__, "arch": args.arch, "latent_shape": list(shape),
                  "action_dim": A, "params": sum(p.numel() for p in model.parameters()),
                  "flops_per_transition": flops, "dtype": args.dtype},
        "quick": args.quick, "repeats": repeats, "plans": plans, "forward": fwd})
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
