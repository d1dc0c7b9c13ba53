"""Training throughput per objective at one preset: images/s and FLOPs of a full training step.

The entries of a comparison config (default: configs/compare/two_rooms.yaml) are resolved exactly
as `jepalab compare` resolves them (shared `pretrain` fields + the entry's overrides), on the
procedural shapes set at the config's image size (FLOPs and speed do not depend on the pixels).
A step is `train_step` + the objective's after-step update (EMA), as in training. FLOPs are
counted with FlopCounterMode on one step (forward + backward; matmuls, convolutions, attention).
All objectives are timed in the same run, round-robin (one step of each in turn), so a change
in machine load hits them alike; images/s uses the median step time.

    python benchmarks/objective_throughput.py [--config C] [--batch 16] [--steps 5]
        [--threads 1] [--out runs/bench/objective_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from jepalab.config import CompareConfig, PretrainConfig, build, load
from jepalab.eval.compare import entry_dict
from jepalab.eval.compare_budget import TrainingStep, count_flops


def entry_configs(c: CompareConfig, batch: int | None) -> dict[str, PretrainConfig]:
    out = {}
    for e in c.entries:
        if not e.train:
            continue
        d = entry_dict(c, e)
        d["data"] = {"source": "shapes", "image_size": c.scene.image_size, "num_images": 512}
        if batch:
            d["batch_size"] = batch
        d["precision"] = "fp32"  # this CPU has no native bf16 (auto would pick fp32 too)
        out[e.name] = build(PretrainConfig, d, source=f"entries ({e.name})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/compare/two_rooms.yaml")
    ap.add_argument("--batch", type=int, default=None, help="override the config's batch size")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per objective")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's); 1 avoids spin-waiting on a busy CPU")
    ap.add_argument("--out", default="runs/bench/objective_throughput.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    c = load(CompareConfig, args.config)
    cfgs = entry_configs(c, args.batch)
    first = next(iter(cfgs.values()))
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, load average "
          f"{load_start:.1f} at start (a shared machine slows every objective alike)")
    print(f"# {args.config}: {first.model.arch} {first.model.preset} (depth "
          f"{first.model.depth}, dim {first.model.embed_dim}), {c.scene.image_size}px / patch "
          f"{first.model.patch_size}, batch {first.batch_size}, fp32; median of {args.steps} "
          "round-robin steps after 1 warm-up")
    steps = {name: TrainingStep(cfg) for name, cfg in cfgs.items()}
    flops, times = {}, {name: [] for name in steps}
    for name, st in steps.items():
        batch = st.batch(0)
        flops[name] = count_flops(lambda st=st, batch=batch: st.run(0, batch))
        st.run(1)  # warm-up
    for s in range(args.steps):
        for name, st in steps.items():
            batch = st.batch(2 + s)  # data loading is not timed, as with workers in training
            t = time.perf_counter()
            st.run(2 + s, batch)
            times[name].append(time.perf_counter() - t)
    low = min(flops.values())
    rows = []
    print("| entry | objective | mask | images/s | step ms | GFLOP/step | GFLOP/s | FLOPs vs "
          "cheapest |")
    print("|---|---|---|---|---|---|---|---|")
    for name, cfg in cfgs.items():
        dt = statistics.median(times[name])
        r = {"entry": name, "objective": cfg.objective.name, "mask": cfg.mask.kind,
             "batch": cfg.batch_size, "images_per_s": cfg.batch_size / dt, "step_s": dt,
             "gflop_per_step": flops[name] / 1e9, "gflops": flops[name] / dt / 1e9,
             "flops_ratio": flops[name] / low, "step_times_s": times[name]}
        rows.append(r)
        print(f"| {name} | {r['objective']} | {r['mask']} | {r['images_per_s']:.1f} | "
              f"{1e3 * dt:.0f} | {r['gflop_per_step']:.2f} | {r['gflops']:.1f} | "
              f"{r['flops_ratio']:.2f}x |", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": args.config, "batch": first.batch_size,
                               "image_size": c.scene.image_size, "steps": args.steps,
                               "torch": torch.__version__, "threads": torch.get_num_threads(),
                               "loadavg_start": load_start,
                               "rows": rows}, indent=2))
    print(f"# written: {out}")


if __name__ == "__main__":
    main()
