"""No pretraining, trained end to end from the downstream labels: the "supervised" baseline.

    ŝ = W · pool_p(LN(f_θ(x)))        L = mean_d ((ŝ_d − s_d) / σ_d)²

The encoder and a linear head regress each frame's scene state s (the labels a downstream task
would use: agent/object positions, layout) from its pixels, on the same frames, steps and batch as
the self-supervised entries, so it spends the same intervention budget (the dataset's
environment interactions) plus their labels. The head reads the encoder's tokens exactly as the
world model does (layer-normed, averaged onto a p × p grid, `params.pool`, default 2), so what
the labels teach is where the world model looks. σ_d is the per-dimension std of the states in
the global batch (detached, floored at `params.min_std`), so state dimensions of different scales
weigh alike. Needs trajectory data with states (`data.source: dataset`, single frames).
"""

from __future__ import annotations

from typing import cast

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.utils.data import Dataset

from jepalab.config import Config, ObjectiveConfig, PretrainConfig, build
from jepalab.data.store import TrajectoryStore
from jepalab.errors import JepalabError
from jepalab.objectives.base import Batch, Objective, register
from jepalab.train import distributed


class SupervisedParams(Config):
    pool: int = Field(2, ge=1, description="the head reads tokens averaged onto a pool x pool grid")
    min_std: float = Field(1e-2, gt=0.0, description="floor of the per-dimension state std")


@register
class Supervised(Objective):
    name = "supervised"
    needs_masks = False

    @classmethod
    def dataset(cls, store: TrajectoryStore, run: PretrainConfig) -> Dataset:
        from jepalab.data.loaders import FrameDataset

        return FrameDataset(store, labels=True)  # each frame with its scene state

    def __init__(self, cfg: ObjectiveConfig, run: PretrainConfig) -> None:
        super().__init__(cfg, run)
        self.params = build(SupervisedParams, cfg.params, source="objective.params")
        self.state_dim = self.trajectory_store("the scene states of single frames").state_dim

    def build(self, encoder: nn.Module) -> nn.ModuleDict:
        width = int(cast(int, encoder.embed_dim)) * self.params.pool**2
        return nn.ModuleDict({"encoder": encoder, "head": nn.Linear(width, self.state_dim)})

    def loss(self, batch: Batch, models: nn.ModuleDict) -> tuple[Tensor, dict[str, float]]:
        from jepalab.objectives.worldmodel import encode_latents

        if batch.states is None:
            raise JepalabError("supervised: the batch has no states (data without labels)")
        s = batch.states.float()
        pred = models["head"](encode_latents(models["encoder"], batch.x, self.params.pool))
        with torch.no_grad():
            std = distributed.gather_with_grad(s).std(0).clamp_min(self.params.min_std)
        loss = ((pred.float() - s) / std).square().mean()
        return loss, {"loss": float(loss.detach()),
                      "state_rmse": float((pred.detach() - s).square().mean().sqrt())}
