"""VICReg baseline (Bardes, Ponce & LeCun 2022): two views, an expander, three terms.

    z = expander(mean-pool f_θ(aug(x)))      [B, K] per view
    L = λ·mean (z¹ − z²)²  +  μ·½ Σ_views mean_k relu(γ − sqrt(Var z_k + ε))
        + ν·Σ_views (1/K) Σ_{k≠l} Cov(z)_kl²

Same encoder, trainer and data as JEPA; no masks. The variance and covariance are batch
statistics: under data parallelism the expander outputs are gathered with gradients, so they
are those of the global batch (as in the reference implementation).

objective.params (all optional):
  sim_weight λ (25), std_weight μ (25), cov_weight ν (1) — the paper's values;
  gamma γ (1.0), eps ε (1e-4);
  proj_dims:  expander widths (default [4·D, 4·D, 4·D], the paper's 4× ratio, 3 layers);
  augment:    `AugmentParams` (see objectives.augment).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from jepalab.config import Config, ObjectiveConfig, PretrainConfig, build
from jepalab.objectives.augment import AugmentParams
from jepalab.objectives.base import Batch, Objective, register
from jepalab.objectives.contrastive import joint_embed, projector
from jepalab.train import distributed
from jepalab.train.monitors import collapse_stats


class VICRegParams(Config):
    sim_weight: float = Field(25.0, ge=0.0)
    std_weight: float = Field(25.0, ge=0.0)
    cov_weight: float = Field(1.0, ge=0.0)
    gamma: float = Field(1.0, gt=0.0)
    eps: float = Field(1e-4, ge=0.0)
    proj_dims: list[int] | None = Field(None, min_length=1, description="expander widths")
    augment: AugmentParams = Field(default_factory=lambda: AugmentParams())


def _off_diagonal_sq_sum(c: Tensor) -> Tensor:
    return c.pow(2).sum() - c.diagonal().pow(2).sum()


def vicreg_terms(
    z1: Tensor, z2: Tensor, gamma: float = 1.0, eps: float = 1e-4
) -> dict[str, Tensor]:
    """The three unweighted VICReg terms of z1, z2 [B, K] (B >= 2).

    invariance: mean squared difference (0 for identical views);
    variance:   mean over both views and dimensions of relu(γ − sqrt(var + ε)) (γ − sqrt(ε) for
                collapsed embeddings, i.e. identical rows);
    covariance: per view, sum of squared off-diagonal covariances / K, summed over the views.
    """
    if z1.shape != z2.shape or z1.dim() != 2 or z1.shape[0] < 2:
        raise ValueError(f"vicreg_terms: z1, z2 must both be [B>=2, K], got {z1.shape}/{z2.shape}")
    z1, z2 = z1.float(), z2.float()
    return {
        "invariance": F.mse_loss(z1, z2),
        "variance": (std_hinge(z1, gamma, eps) + std_hinge(z2, gamma, eps)) / 2,
        "covariance": covariance_penalty(z1) + covariance_penalty(z2),
    }


def std_hinge(z: Tensor, gamma: float = 1.0, eps: float = 1e-4) -> Tensor:
    """mean_k relu(γ − sqrt(Var z_k + ε)) of z [B, K] (the variance term of one view)."""
    return F.relu(gamma - torch.sqrt(z.var(0) + eps)).mean()


def covariance_penalty(z: Tensor) -> Tensor:
    """(1/K) Σ_{k≠l} Cov(z)_kl² of z [B, K] (the covariance term of one view)."""
    z = z - z.mean(0)
    return _off_diagonal_sq_sum(z.T @ z / (z.shape[0] - 1)) / z.shape[1]


@register
class VICReg(Objective):
    name = "vicreg"
    needs_masks = False

    def __init__(self, cfg: ObjectiveConfig, run: PretrainConfig) -> None:
        super().__init__(cfg, run)
        self.params = build(VICRegParams, cfg.params, source="objective.params")

    def build(self, encoder: nn.Module) -> nn.ModuleDict:
        dim = cast(int, encoder.embed_dim)
        dims = self.params.proj_dims or [4 * dim] * 3
        return nn.ModuleDict({"encoder": encoder, "projector": projector(dim, dims)})

    def loss(self, batch: Batch, models: nn.ModuleDict) -> tuple[Tensor, dict[str, float]]:
        p = self.params
        tokens, z1, z2 = joint_embed(batch, models, p.augment)
        terms = vicreg_terms(
            distributed.gather_with_grad(z1), distributed.gather_with_grad(z2), p.gamma, p.eps
        )
        loss = (
            p.sim_weight * terms["invariance"]
            + p.std_weight * terms["variance"]
            + p.cov_weight * terms["covariance"]
        )
        metrics = {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}}
        if batch.monitor:
            metrics.update(collapse_stats(tokens.detach().float(), z1.detach(), z2.detach()))
        return loss, metrics
