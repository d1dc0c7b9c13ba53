"""What an encoder's latent keeps, per state variable, checkpoint by checkpoint.

For each encoder checkpoint (or every `step_*` checkpoint of a pretraining run directory):
encode every `--every`-th frame of a collected dataset, average the layer-normed tokens onto a
`--pool` x `--pool` grid (the world model's pooled latent), fit a ridge probe of the true state
on the first episodes and report R^2 per state variable on the held-out last `--val` fraction
of episodes (1 = fully decodable, <= 0 = not at all). Alongside, the collapse statistics the
pretraining run logged at that step (`metrics.jsonl`: effective rank of the target tokens and
their std), and the share of the latent's variance that moves within an episode (the latent
standardised per dimension as the world model does, on the held-out episodes; on two-rooms only
the agent moves within an episode, so this is how much of what the world model predicts and
the planner's distance measures is the agent). Answers "does longer pretraining put the agent
into the latent?" without training a world model per checkpoint.

    python benchmarks/probe_budget.py --data runs/demo/data runs/exp/jepa_long \
        runs/demo/random_init [--pool 2] [--keypoints T] [--out runs/bench/probe_budget.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from jepalab.data.store import TrajectoryStore
from jepalab.errors import JepalabError
from jepalab.eval.compare import state_names
from jepalab.eval.probes import fit_linear_probe, probe_error
from jepalab.io import atomic_write_json, git_info, now_iso
from jepalab.models.build import FrozenEncoder, load_encoder, normalize_pixels
from jepalab.objectives.worldmodel import encode_latents
from jepalab.train.checkpoint import read_manifest


def checkpoints(paths: list[str]) -> list[Path]:
    """Each path as given when it is a checkpoint, else its run's `checkpoints/step_*`."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / "manifest.json").is_file():
            out.append(p)
            continue
        steps = sorted((p / "checkpoints").glob("step_*"))
        if not steps:
            raise JepalabError(f"{p}: neither a checkpoint nor a run with checkpoints/step_*")
        out += steps
    return out


def logged_collapse(ckpt: Path, step: int | None) -> dict[str, float]:
    """rankme / token_std that the checkpoint's run logged at its step ({} when none)."""
    log = ckpt.parent.parent / "metrics.jsonl"
    if step is None or not log.is_file():
        return {}
    rows = [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()]
    hit = [r for r in rows if r.get("step") == step and "rankme" in r]
    return {k: float(hit[-1][k]) for k in ("rankme", "token_std")} if hit else {}


@torch.no_grad()
def latents(enc: FrozenEncoder, store: TrajectoryStore, episodes: range, every: int, pool: int,
            keypoints: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled latents [N, D], states [N, S] and episode ids [N] of every `every`-th frame."""
    zs, ys, gs = [], [], []
    for e in episodes:
        ep = store.episode(e)
        x = normalize_pixels(torch.from_numpy(np.ascontiguousarray(ep["frames"][::every]))
                             .movedim(-1, -3))
        zs.append(encode_latents(enc.tokens, x, pool, keypoints=keypoints).numpy())
        ys.append(np.asarray(ep["states"][::every], np.float64))
        gs.append(np.full(len(ys[-1]), e))
    return np.concatenate(zs), np.concatenate(ys), np.concatenate(gs)


def within_episode_share(z: np.ndarray, groups: np.ndarray) -> float:
    """Share of the per-dimension standardised latents' variance left after removing each
    episode's mean."""
    z = (z - z.mean(0)) / (z.std(0) + 1e-6)
    _, inv = np.unique(groups, return_inverse=True)
    means = np.stack([z[inv == i].mean(0) for i in range(inv.max() + 1)])
    return float(((z - means[inv]) ** 2).sum() / (z**2).sum())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("encoders", nargs="+", help="checkpoints or pretraining run directories")
    p.add_argument("--data", required=True, help="a collected dataset (jepalab collect)")
    p.add_argument("--pool", type=int, default=2)
    p.add_argument("--keypoints", type=float, default=None, metavar="T",
                   help="also each channel's soft-argmax at temperature T (predictor.keypoints)")
    p.add_argument("--every", type=int, default=4)
    p.add_argument("--val", type=float, default=0.2, help="held-out fraction of episodes")
    p.add_argument("--ridge", type=float, default=1e-3)
    p.add_argument("--out", default="runs/bench/probe_budget.json")
    args = p.parse_args(argv)
    store = TrajectoryStore.open(args.data, verify=False)
    n = store.num_episodes
    n_val = max(1, round(n * args.val))
    if n_val >= n:
        raise JepalabError(f"--val {args.val}: leaves no training episodes of {n}")
    meta = store.manifest["meta"]
    names = state_names(meta["scene"], meta["scene_config"]["scene_kwargs"])
    rows = []
    for ckpt in checkpoints(args.encoders):
        t0 = time.perf_counter()
        enc = load_encoder(ckpt)
        z_tr, y_tr, _ = latents(enc, store, range(n - n_val), args.every, args.pool, args.keypoints)
        z_te, y_te, g_te = latents(enc, store, range(n - n_val, n), args.every, args.pool,
                                   args.keypoints)
        err = probe_error(fit_linear_probe(z_tr, y_tr, ridge=args.ridge), z_te, y_te, names)
        m = read_manifest(ckpt)
        obj = m.get("config", {}).get("objective", {})
        rows.append({"checkpoint": str(ckpt), "step": m.get("step"), "objective": obj.get("name"),
                     "objective_params": obj.get("params"), "r2": err["r2"],
                     "rmse": err["rmse"], "within_episode_share": within_episode_share(z_te, g_te),
                     **logged_collapse(ckpt, m.get("step")),
                     "seconds": time.perf_counter() - t0})
        print(f"{ckpt}: R^2 " + ", ".join(f"{k} {v:.2f}" for k, v in err["r2"].items()),
              flush=True)
    kp = f" + soft-argmax keypoints (T {args.keypoints})" if args.keypoints else ""
    print(f"\nridge probe of the {args.pool}x{args.pool}-pooled latent{kp}, R^2 on {n_val} "
          f"held-out episodes of {args.data}\n")
    print("| checkpoint | step | " + " | ".join(names)
          + " | within-episode variance | rank (logged) | token std (logged) |")
    print("|---|---:|" + "---|" * len(names) + "---:|---:|---:|")
    for r in rows:
        logged = (f"{r['rankme']:.1f} | {r['token_std']:.3f}" if "rankme" in r else "— | —")
        print(f"| {r['checkpoint']} | {r['step']} | "
              + " | ".join(f"{r['r2'][k]:.2f}" for k in names)
              + f" | {r['within_episode_share']:.3f} | {logged} |")
    atomic_write_json(args.out, {"benchmark": "probe_budget", "created": now_iso(),
                                 "git": git_info(), "data": args.data, "pool": args.pool,
                                 "keypoints": args.keypoints,
                                 "every": args.every, "val_episodes": n_val,
                                 "ridge": args.ridge, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
