"""SimCLR-style contrastive baseline: InfoNCE (NT-Xent) between two augmented views.

    h = f_θ(aug(x)) mean-pooled,  z = normalize(proj(h)),  L = NT-Xent(z¹, z²; τ)

Same encoder, trainer and data as JEPA; no masks (`needs_masks = False`). The downstream
encoder is the online encoder (there is no EMA copy). Under data parallelism the projections are
gathered with gradients, so the negatives and the gradient are those of the global batch.

objective.params (all optional):
  temperature: τ of the softmax (default 0.1).
  proj_dims:   projector widths; hidden layers Linear-BN-ReLU, last Linear (default [4·D, 128]);
               BN over the global batch (`GlobalBatchNorm`).
  augment:     `AugmentParams` (crop, flip, colour jitter, grayscale; see objectives.augment).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from jepalab.config import Config, ObjectiveConfig, PretrainConfig, build
from jepalab.objectives.augment import AugmentParams, two_views
from jepalab.objectives.base import Batch, Objective, register
from jepalab.train import distributed
from jepalab.train.monitors import collapse_stats


class ContrastiveParams(Config):
    temperature: float = Field(0.1, gt=0.0)
    proj_dims: list[int] | None = Field(None, min_length=1, description="projector widths")
    augment: AugmentParams = Field(default_factory=lambda: AugmentParams())


class GlobalBatchNorm(nn.Module):
    """Batch normalisation of [B, K] with the statistics of the *global* batch (gathered across
    ranks with gradients), so a data-parallel run computes what one process would. No running
    statistics: projectors are training-only heads, so batch statistics are used in eval too."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x.float()
        g = distributed.gather_with_grad(x)
        mean, var = g.mean(0), g.var(0, unbiased=False)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


def projector(in_dim: int, dims: Sequence[int]) -> nn.Sequential:
    """MLP [B, in_dim] -> [B, dims[-1]]: Linear-BN-ReLU per hidden width, then a plain Linear."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in dims[:-1]:
        layers += [nn.Linear(d, h), GlobalBatchNorm(h), nn.ReLU(inplace=True)]
        d = h
    layers.append(nn.Linear(d, dims[-1]))
    return nn.Sequential(*layers)


def info_nce(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """NT-Xent (SimCLR) over the 2B samples of two views; z1, z2 [B, K] (normalised here).

    With u = normalize([z1; z2]) ([2B, K]) and s_ij = u_i·u_j / τ, the positive of i is its
    other view p(i) = i ± B, and every other sample except i itself is a negative:

        L = 1/(2B) Σ_i −log( exp(s_i,p(i)) / Σ_{j≠i} exp(s_ij) )

    E.g. identical views of B orthonormal vectors: s_i,p(i) = 1/τ and the 2B−2 negatives have
    s = 0, so L = −log(e^{1/τ} / (e^{1/τ} + 2B − 2)).
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"info_nce: z1, z2 must both be [B, K], got {z1.shape} and {z2.shape}")
    z = torch.cat([z1, z2])
    u = F.normalize(z.to(torch.promote_types(z.dtype, torch.float32)), dim=-1)  # fp32 at least
    n = u.shape[0]
    sim = (u @ u.T) / temperature
    sim = sim.masked_fill(torch.eye(n, dtype=torch.bool, device=u.device), float("-inf"))
    positive = torch.arange(n, device=u.device).roll(n // 2)
    return F.cross_entropy(sim, positive)


def joint_embed(
    batch: Batch, models: nn.ModuleDict, augment: AugmentParams
) -> tuple[Tensor, Tensor, Tensor]:
    """Both views through encoder (one forward) and projector.

    Returns tokens of view 1 [B, N, D] and the projections z1, z2 [B, K] (float)."""
    v1, v2 = two_views(batch.x, batch.generator, augment)
    h = models["encoder"](torch.cat([v1, v2]))  # [2B, N, D]
    z = models["projector"](h.mean(1)).float()
    z1, z2 = z.chunk(2)
    return h[: batch.x.shape[0]], z1, z2


@register
class Contrastive(Objective):
    name = "contrastive"
    needs_masks = False

    def __init__(self, cfg: ObjectiveConfig, run: PretrainConfig) -> None:
        super().__init__(cfg, run)
        self.params = build(ContrastiveParams, cfg.params, source="objective.params")

    def build(self, encoder: nn.Module) -> nn.ModuleDict:
        dim = cast(int, encoder.embed_dim)
        dims = self.params.proj_dims or [4 * dim, 128]
        return nn.ModuleDict({"encoder": encoder, "projector": projector(dim, dims)})

    def loss(self, batch: Batch, models: nn.ModuleDict) -> tuple[Tensor, dict[str, float]]:
        tokens, z1, z2 = joint_embed(batch, models, self.params.augment)
        g1, g2 = distributed.gather_with_grad(z1), distributed.gather_with_grad(z2)
        loss = info_nce(g1, g2, self.params.temperature)
        metrics = {"loss": float(loss.detach())}
        if batch.monitor:
            with torch.no_grad():
                u1, u2 = F.normalize(g1, dim=-1), F.normalize(g2, dim=-1)
                # top-1 retrieval of the other view among the other view's batch
                metrics["acc"] = float(((u1 @ u2.T).argmax(1) == torch.arange(len(u1),
                                        device=u1.device)).float().mean())
            metrics.update(collapse_stats(tokens.detach().float(), z1.detach(), z2.detach()))
        return loss, metrics
