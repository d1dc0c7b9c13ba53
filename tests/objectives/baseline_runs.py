"""A tiny pretraining run of any objective through the real CLI, and its logged rows."""

from __future__ import annotations

import json
from pathlib import Path

from jepalab.cli import main
from tiny import TINY


def pretrain_rows(out: Path, objective: str, steps: int, *extra: str) -> list[dict]:
    args = ["pretrain", "--quiet", f"--out_dir={out}", f"--steps={steps}",
            f"--ckpt_every={steps}", f"--objective.name={objective}", *TINY, *extra]
    assert main(args) == 0
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


def loss_ratio(rows: list[dict], k: int = 10) -> float:
    """Mean loss of the last k steps over the mean of the first k."""
    losses = [r["loss"] for r in rows]
    return (sum(losses[-k:]) / k) / (sum(losses[:k]) / k)
