"""SIGReg baseline (LeJEPA, Balestriero & LeCun 2025): views pulled to their centre, embeddings
pushed towards an isotropic Gaussian by a sliced characteristic-function test.

    z_v = proj(mean-pool f_θ(aug_v(x)))              [B, K] for each of V views
    L   = (1 − λ)·mean_v ‖z_v − z̄‖²/K  +  λ·mean_v SIGReg(z_v)

    SIGReg(z) = mean over S random unit directions a of  EP(z·a),
    EP(u)     = N ∫_{−t_max}^{t_max} |φ̂_u(t) − e^{−t²/2}|² e^{−t²/2} dt,
    φ̂_u(t)    = mean_n e^{i t u_n}   (the empirical characteristic function)

EP is the Epps–Pulley statistic of the 1-D projections against N(0, 1) (trapezoid rule on
[0, t_max], doubled — the integrand is even). It replaces VICReg's hand-built variance and
covariance terms with one goodness-of-fit test; there is no EMA, stop-gradient or predictor.
The directions are drawn each step from the step's generator (identical on every rank); under
data parallelism the projections are gathered with gradients, so the statistic is the global
batch's. Same encoder, trainer and data as JEPA; no masks; downstream encoder = the encoder.

objective.params (all optional): lamb λ (0.02, LeJEPA's minimal example), views V (2, the
same two encoder passes per image as contrastive/VICReg), num_slices S (256), knots (17),
t_max (3.0), proj_dims (default [4·D, 4·D, 16]), augment (`AugmentParams`).
"""

from __future__ import annotations

from typing import cast

import torch
from pydantic import Field
from torch import Tensor, nn

from jepalab.config import Config, ObjectiveConfig, PretrainConfig, build
from jepalab.objectives.augment import AugmentParams, views
from jepalab.objectives.base import Batch, Objective, register
from jepalab.objectives.contrastive import projector
from jepalab.train import distributed
from jepalab.train.monitors import collapse_stats


class SIGRegParams(Config):
    lamb: float = Field(0.02, gt=0.0, lt=1.0, description="weight of SIGReg (λ)")
    views: int = Field(2, ge=2)
    num_slices: int = Field(256, ge=1)
    knots: int = Field(17, ge=3)
    t_max: float = Field(3.0, gt=0.0)
    proj_dims: list[int] | None = Field(None, min_length=1, description="projector widths")
    augment: AugmentParams = Field(default_factory=lambda: AugmentParams())


def epps_pulley(u: Tensor, t_max: float = 3.0, knots: int = 17) -> Tensor:
    """Epps–Pulley statistic of each column of u [N, S] against N(0, 1) -> [S]."""
    t = torch.linspace(0.0, t_max, knots, dtype=u.dtype, device=u.device)
    phi = torch.exp(-0.5 * t * t)
    dt = t_max / (knots - 1)
    w = torch.full_like(t, 2 * dt)
    w[0] = w[-1] = dt  # trapezoid on [0, t_max], doubled for [−t_max, 0]
    ut = u.unsqueeze(-1) * t  # [N, S, T]
    err = (ut.cos().mean(0) - phi).square() + ut.sin().mean(0).square()  # [S, T]
    return (err @ (w * phi)) * u.shape[0]


def sigreg(z: Tensor, directions: Tensor, t_max: float = 3.0, knots: int = 17) -> Tensor:
    """Mean Epps–Pulley statistic of z [N, K] projected on unit directions [K, S] -> scalar."""
    return epps_pulley(z.float() @ directions, t_max, knots).mean()


def random_directions(generator: torch.Generator, k: int, s: int) -> Tensor:
    """[k, s] unit columns, uniform on the sphere (CPU)."""
    a = torch.randn(k, s, generator=generator)
    return a / a.norm(dim=0, keepdim=True)


@register
class SIGReg(Objective):
    name = "sigreg"
    needs_masks = False

    def __init__(self, cfg: ObjectiveConfig, run: PretrainConfig) -> None:
        super().__init__(cfg, run)
        self.params = build(SIGRegParams, cfg.params, source="objective.params")

    def build(self, encoder: nn.Module) -> nn.ModuleDict:
        dim = cast(int, encoder.embed_dim)
        dims = self.params.proj_dims or [4 * dim, 4 * dim, 16]
        return nn.ModuleDict({"encoder": encoder, "projector": projector(dim, dims)})

    def loss(self, batch: Batch, models: nn.ModuleDict) -> tuple[Tensor, dict[str, float]]:
        p, b = self.params, batch.x.shape[0]
        h = models["encoder"](torch.cat(views(batch.x, batch.generator, p.augment, p.views)))
        local = models["projector"](h.mean(1)).float().reshape(p.views, b, -1)  # [V, B, K]
        z = torch.stack([distributed.gather_with_grad(zv) for zv in local])  # global batch
        invariance = (z - z.mean(0)).square().mean()
        a = random_directions(batch.generator, z.shape[-1], p.num_slices).to(z.device)
        reg = torch.stack([sigreg(zv, a, p.t_max, p.knots) for zv in z]).mean()
        loss = (1 - p.lamb) * invariance + p.lamb * reg
        metrics = {"loss": float(loss.detach()), "invariance": float(invariance.detach()),
                   "sigreg": float(reg.detach())}
        if batch.monitor:
            zl = local.detach()
            metrics.update(collapse_stats(h[:b].detach().float(), zl[0], zl[1]))
        return loss, metrics
