"""Does a world model predict the push? The cube's motion, read off its rollouts with a probe.

For a world-model checkpoint trained on tabletop-push data: fit an MLP probe latent -> (ee x, y;
cube x, y) on the encoded frames of its first `--fit` training episodes; then, on its held-out
episodes, from every window start t roll the predictor out `--horizon` steps with the logged
actions and compare how far the cube and the ee move from t to t + k:
- true: the states;
- encoder: the probe of the encoded frame t + k minus the probe of frame t (what the latent
  shows, the ceiling of what this probe can read off a rollout);
- world model: the probe of the rollout's last latent minus the probe of frame t.
Windows are split by whether the cube truly moves more than `--moved` (the ee pushes it) or not.
Per group and body: the mean true displacement (cm), the share of it each readout recovers
(gain <d_hat, d> / <d, d>: 1 = all of it, 0 = none) and its mean error (cm).

    python benchmarks/push_contact.py WORLD_MODEL [--horizon 4] [--fit 300] [--moved 0.01]
        [--out runs/bench/push_contact.json]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from jepalab.data.store import TrajectoryStore
from jepalab.eval.probes import fit_mlp_probe
from jepalab.io import atomic_write_json, git_info, now_iso
from jepalab.train.worldmodel import load_world_model

COLS = [0, 1, 3, 4]  # TabletopEnv.state_names: ee_x, ee_y, cube_x, cube_y
BODIES = {"ee": slice(0, 2), "cube": slice(2, 4)}  # their columns in COLS


def readout(d_hat: np.ndarray, d: np.ndarray) -> dict[str, float]:
    """Displacements [N, 2] (m): gain of the estimate along the truth, mean error (cm)."""
    return {"gain": float((d_hat * d).sum() / max(float((d * d).sum()), 1e-12)),
            "error_cm": float(np.linalg.norm(d_hat - d, axis=1).mean() * 100)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("world_model", help="a world-model checkpoint trained on tabletop-push data")
    p.add_argument("--horizon", type=int, default=4, help="rollout steps k")
    p.add_argument("--fit", type=int, default=300, help="training episodes the probe fits on")
    p.add_argument("--moved", type=float, default=0.01, help="m: a window where the cube moves")
    p.add_argument("--out", default="runs/bench/push_contact.json")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    wm = load_world_model(args.world_model)
    store = TrajectoryStore.open(wm.manifest["data_path"], verify=False)

    def encoded(e: int) -> tuple[torch.Tensor, np.ndarray]:
        return wm.encode_frames(store.series(e, "frames")), store.series(e, "states")[:, COLS]

    fit = [encoded(e) for e in wm.manifest["split"]["train_episodes"][: args.fit]]
    probe = fit_mlp_probe(torch.cat([z for z, _ in fit]).double().numpy(),
                          np.concatenate([s for _, s in fit]),
                          groups=np.concatenate([[i] * len(s) for i, (_, s) in enumerate(fit)]))
    k, true, enc, pred = args.horizon, [], [], []
    for e in wm.val_episodes:
        z, s = encoded(e)
        a = torch.from_numpy(store.series(e, "actions")).float()
        n = len(a) - k + 1
        if n < 1:
            continue
        with torch.inference_mode():
            z_k = wm.rollout(z[:n], torch.stack([a[t : t + k] for t in range(n)]))[:, -1]
        at = probe.predict(z[:n].double().numpy())
        true.append(s[k : k + n] - s[:n])
        enc.append(probe.predict(z[k : k + n].double().numpy()) - at)
        pred.append(probe.predict(z_k.double().numpy()) - at)
    true, enc, pred = (np.concatenate(x) for x in (true, enc, pred))
    moved = np.linalg.norm(true[:, BODIES["cube"]], axis=1) > args.moved
    groups = {}
    for name, rows in (("cube moves", moved), ("cube still", ~moved)):
        groups[name] = {"windows": int(rows.sum())}
        for body, c in BODIES.items():
            d = true[rows, c]
            groups[name][body] = {
                "true_cm": float(np.linalg.norm(d, axis=1).mean() * 100),
                "encoder": readout(enc[rows, c], d), "world_model": readout(pred[rows, c], d)}
    print(f"{args.world_model}: {len(true)} held-out windows of {k} steps "
          f"({len(wm.val_episodes)} episodes), probe fitted on {len(fit)} episodes\n")
    print("| windows | body | true move (cm) | encoder: gain / error (cm) "
          "| world model: gain / error (cm) |")
    print("|---|---|---:|---|---|")
    for name, g in groups.items():
        for body in BODIES:
            r = g[body]
            print(f"| {name} ({g['windows']}) | {body} | {r['true_cm']:.2f} | "
                  f"{r['encoder']['gain']:.2f} / {r['encoder']['error_cm']:.2f} | "
                  f"{r['world_model']['gain']:.2f} / {r['world_model']['error_cm']:.2f} |")
    atomic_write_json(args.out, {
        "benchmark": "push_contact", "created": now_iso(), "git": git_info(),
        "world_model": args.world_model, "world_model_config": wm.manifest.get("config"),
        "horizon": k, "fit_episodes": len(fit), "moved_m": args.moved, "groups": groups,
        "seconds": time.perf_counter() - t0})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
