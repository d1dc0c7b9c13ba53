"""Pixel throughput of the scenes, of dataset collection and of the dataset loaders.

1. Scene frames/s at 64x64 on ONE core (process pinned to one CPU, torch.set_num_threads(1)):
   reset + step with correlated random actions, every frame rendered; resets count as frames.
2. Collection frames/s of `jepalab.data.collect` on two-rooms with 2 workers (and 1 for
   reference; tabletop-push too), wall clock including worker start-up and chunk writes.
3. Loader samples/s: FrameDataset and ClipDataset (8 frames) through a DataLoader
   (batch 64, shuffled), with 0 and 2 workers, timed after the first batch.

    python benchmarks/env_throughput.py [--quick] [--out runs/bench/env_throughput.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

import jepalab  # noqa: E402
from jepalab.data.collect import collect  # noqa: E402
from jepalab.data.policies import make_policy  # noqa: E402
from jepalab.data.store import TrajectoryStore  # noqa: E402
from jepalab.envs import make  # noqa: E402
from jepalab.io import atomic_write_json  # noqa: E402

# torch is imported inside functions: spawned collection workers re-import this module, and
# a module-level torch import would add its start-up time to every worker.

SCENES = {  # scene -> target frames/s on one core at 64x64
    "two-rooms": 5000,
    "tabletop-push": 1000,
    "tabletop-reach": 1000,
    "pusht": 800,
}


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import mujoco

        mj = mujoco.__version__
    except ImportError:
        mj = "not installed"
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "mujoco": mj,
        "MUJOCO_GL": os.environ.get("MUJOCO_GL"),
        "jepalab": jepalab.__version__,
    }


def scene_fps(name: str, seconds: float) -> float:
    """Frames/s of reset+step with correlated random actions (pixels rendered every step)."""
    env = make(name, image_size=64)
    policy = make_policy("random", env.action_space)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    policy.reset(rng)
    for _ in range(20):  # warm-up (JIT/EGL context, caches)
        obs, *_ = env.step(policy.act(env, obs, rng))
    frames, seed = 0, 1
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        obs, _, terminated, truncated, _ = env.step(policy.act(env, obs, rng))
        frames += 1
        if terminated or truncated:
            obs, _ = env.reset(seed=seed)
            policy.reset(rng)
            frames, seed = frames + 1, seed + 1
    fps = frames / (time.perf_counter() - start)
    env.close()
    return fps


def collection_fps(scene: str, out: Path, episodes: int, workers: int) -> tuple[float, int]:
    start = time.perf_counter()
    collect(scene, episodes, out, workers=workers, progress=False)
    elapsed = time.perf_counter() - start
    n = TrajectoryStore.open(out, verify=False).num_frames
    return n / elapsed, n


def loader_sps(ds: Any, workers: int, batches: int) -> float:
    import torch
    from torch.utils.data import DataLoader

    from jepalab.data.loaders import seed_worker

    loader = DataLoader(
        ds,
        batch_size=64,
        shuffle=True,
        num_workers=workers,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(0),
    )
    it = iter(loader)
    next(it)  # worker start-up and first maps excluded
    n, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            n += len(next(it))
        except StopIteration:
            break
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short runs (about 20 s)")
    p.add_argument("--out", default="runs/bench/env_throughput.json")
    args = p.parse_args()
    import torch

    from jepalab.data.loaders import ClipDataset, FrameDataset

    torch.set_num_threads(1)
    info = machine()
    print(
        f"machine: {info['cpu']}, {info['cpus']} CPUs, python {info['python']}, numpy "
        f"{info['numpy']}, torch {info['torch']}, mujoco {info['mujoco']}, "
        f"MUJOCO_GL={info['MUJOCO_GL']}"
    )
    rows: list[dict[str, Any]] = []
    seconds = 1.5 if args.quick else 5.0
    all_cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if all_cpus:
        os.sched_setaffinity(0, {min(all_cpus)})  # one core, renderer threads included
    for name, target in SCENES.items():
        row: dict[str, Any] = {
            "what": f"{name} env step+render, 1 core",
            "unit": "frames/s",
            "target": target,
        }
        try:
            row["value"] = scene_fps(name, seconds)
        except (ImportError, RuntimeError) as e:  # a missing extra (mujoco, gym-pusht, EGL)
            row["value"], row["note"] = None, f"skipped: {type(e).__name__}: {e}"
        rows.append(row)
    if all_cpus:
        os.sched_setaffinity(0, all_cpus)

    # two-rooms is the brief's case; tabletop-push (a slower scene) shows where workers pay off.
    runs = [("two-rooms", 24 if args.quick else 200)]
    if next(r for r in rows if r["what"].startswith("tabletop-push"))["value"] is not None:
        runs.append(("tabletop-push", 4 if args.quick else 30))
    with tempfile.TemporaryDirectory() as tmp:
        for scene, episodes in runs:
            for workers in (1, 2):
                out = Path(tmp) / f"{scene}-w{workers}"
                fps, n = collection_fps(scene, out, episodes, workers)
                rows.append(
                    {
                        "what": f"{scene} collect, {workers} worker(s), {n} frames",
                        "unit": "frames/s",
                        "value": fps,
                        "target": None,
                    }
                )
        store = TrajectoryStore.open(Path(tmp) / "two-rooms-w2")
        batches = 20 if args.quick else 100
        for label, ds in (
            ("FrameDataset", FrameDataset(store)),
            ("ClipDataset T=8", ClipDataset(store, frames=8)),
        ):
            for workers in (0, 2):
                rows.append(
                    {
                        "what": f"{label} DataLoader b64, {workers} workers",
                        "unit": "samples/s",
                        "value": loader_sps(ds, workers, batches),
                        "target": None,
                    }
                )

    print("\n| measurement | throughput | target | meets |")
    print("|---|---:|---:|:---:|")
    for r in rows:
        value = "skipped" if r["value"] is None else f"{r['value']:,.0f} {r['unit']}"
        target = f">= {r['target']:,}" if r["target"] else ""
        ok = (
            ""
            if r["value"] is None or not r["target"]
            else ("yes" if r["value"] >= r["target"] else "NO")
        )
        print(f"| {r['what']} | {value} | {target} | {ok} |")
        if r.get("note"):
            print(f"|   note: {r['note']} | | | |")
    atomic_write_json(
        args.out,
        {"benchmark": "env_throughput", "quick": args.quick, "machine": info, "results": rows},
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
