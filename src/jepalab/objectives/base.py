"""The objective interface shared by JEPA and the baselines.

An objective builds the modules it needs around a given encoder, computes
`loss(batch, models) -> (loss, metrics)`, and may update non-trained modules after each
optimizer step (the EMA target encoder). The trainer, encoder and data never change with it.
Adding an objective = one module with a class decorated by `@register`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from jepalab.config import ObjectiveConfig, PretrainConfig
from jepalab.data.store import TrajectoryStore
from jepalab.errors import JepalabError
from jepalab.masks.base import MaskSet
from jepalab.train import distributed


@dataclass
class Batch:
    """x: images [B, C, H, W] or clips [B, T, C, H, W], float, normalised.
    masks: mask sets for this batch (empty for objectives that need none).
    generator: this step's generator (augmentations); monitor: compute collapse statistics.
    actions [B, T-1, A] and states [B, T, S]: present for transition data (world models).
    goals [B, G, D] and goal_steps [B, G]: G hindsight goal latents per window and their steps
    from the window's first frame (< 0: not later in the episode), for a learned cost-to-go
    (one goal per value update of the step)."""

    x: Tensor
    masks: list[MaskSet]
    generator: torch.Generator
    monitor: bool = False
    actions: Tensor | None = None
    states: Tensor | None = None
    goals: Tensor | None = None
    goal_steps: Tensor | None = None


class Objective:
    name: ClassVar[str] = ""
    needs_masks: ClassVar[bool] = True

    def __init__(self, cfg: ObjectiveConfig, run: PretrainConfig) -> None:
        self.cfg = cfg
        self.run = run

    @classmethod
    def dataset(cls, store: TrajectoryStore, run: PretrainConfig) -> Dataset:
        """The items this objective trains on from a trajectory store (`data.source: dataset`):
        frames, or clips when `data.frames` > 1. Objectives that learn from labels or actions
        return items that carry them (dicts with obs / states / actions)."""
        from jepalab.data.loaders import ClipDataset, FrameDataset

        d = run.data
        return ClipDataset(store, d.frames, d.stride) if d.frames > 1 else FrameDataset(store)

    def trajectory_store(self, what: str) -> TrajectoryStore:
        """The training dataset, for objectives that read labels or actions from single-frame
        trajectory data (`what` they learn from goes into the one-line error otherwise)."""
        d = self.run.data
        if d.source != "dataset" or d.frames != 1:
            raise JepalabError(
                f"objective.name: '{self.name}' learns from {what}; needs data.source 'dataset' "
                f"and data.frames 1, got {d.source!r}, {d.frames}"
            )
        return TrajectoryStore.open(d.path, verify=False)

    def build(self, encoder: nn.Module) -> nn.ModuleDict:
        """All modules of this objective; must include 'encoder'."""
        raise NotImplementedError

    def trainable(self, models: nn.ModuleDict) -> list[str]:
        """Names of the modules the optimizer trains."""
        return list(models.keys())

    def loss(self, batch: Batch, models: nn.ModuleDict) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def extra_steps(self, batch: Batch, models: nn.ModuleDict
                    ) -> Iterator[tuple[Tensor, dict[str, float]]]:
        """Losses of further optimizer steps on the same batch after the main one, each
        computed only once the step before it has been taken (a generator), for a part of the
        models that trains more often than the rest; none by default."""
        return iter(())

    def after_step(self, models: nn.ModuleDict, step: int, total_steps: int) -> dict[str, float]:
        """Called after each optimizer step (step = number of steps done); returns metrics."""
        return {}

    def eval_encoder(self, models: nn.ModuleDict) -> nn.Module:
        """The encoder downstream tasks should use."""
        return models["encoder"]


OBJECTIVES: dict[str, type[Objective]] = {}


def register(cls: type[Objective]) -> type[Objective]:
    OBJECTIVES[cls.name] = cls
    return cls


def build_objective(run: PretrainConfig) -> Objective:
    name = run.objective.name
    if name not in OBJECTIVES:
        known = ", ".join(sorted(OBJECTIVES))
        raise JepalabError(f"objective.name: unknown objective '{name}' (choose from {known})")
    return OBJECTIVES[name](run.objective, run)


def masked_mean(values: Tensor, keep: Tensor) -> Tensor:
    """Mean of values [...] over positions where keep [...] is True, over the *global* batch.

    Under data parallelism the denominator is the valid count summed over ranks, scaled by the
    world size because DDP averages gradients: the gradient then equals a single-process run's.
    """
    w = keep.to(values.dtype)
    count = distributed.global_sum(w.sum()).clamp_min(1.0)
    return (values * w).sum() * distributed.world_size() / count
