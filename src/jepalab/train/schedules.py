"""Schedules as pure functions of the step number (resume needs no state)."""

from __future__ import annotations

import math

from jepalab.config import OptimConfig


def lr_at(step: int, total: int, cfg: OptimConfig) -> float:
    """Linear warm-up from start_lr to lr, then cosine decay to min_lr."""
    if step < cfg.warmup_steps:
        return cfg.start_lr + (cfg.lr - cfg.start_lr) * step / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(frac, 1.0)))


def wd_at(step: int, total: int, cfg: OptimConfig) -> float:
    """Cosine schedule from weight_decay[0] to weight_decay[1] (I-JEPA raises it over training)."""
    lo, hi = cfg.weight_decay
    frac = min(step / max(1, total), 1.0)
    return hi + 0.5 * (lo - hi) * (1 + math.cos(math.pi * frac))
