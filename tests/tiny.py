"""Overrides that make any pretraining config tiny enough for a test (micro ViT, 32 px), and the
reader of a run's logged metrics."""

import json
from pathlib import Path

TINY = ["--data.image_size=32", "--data.num_images=64", "--batch_size=8", "--model.preset=micro",
        "--model.patch_size=8", "--model.pred_depth=1", "--model.pred_dim=32",
        "--model.pred_heads=2", "--optim.warmup_steps=2", "--precision=fp32",
        "--mask.params.min_keep=2", "--monitor_every=5", "--log_every=1"]


def logged(run: Path, key: str = "loss") -> list[float]:
    """One metric of every row of a run's metrics.jsonl, in order."""
    return [json.loads(ln)[key] for ln in (run / "metrics.jsonl").read_text().splitlines()]
