"""Action-conditioned joint embedding (PLDM, Sobal et al. 2025; eb_jepa's AC video JEPA):
encoder and latent dynamics trained together on trajectories, no pixel target, no EMA.

    z_t = pool_p(LN(f_θ(o_t)))                          (exactly the world model's latent)
    ẑ_0 = z_0,   ẑ_{t+1} = ẑ_t + g([ẑ_t, a_t])          (rolled out over the window's k actions)
    L = mean (ẑ_t − z_t)²                                prediction (no stop-gradient)
      + α·mean_k relu(γ − std z_k)  + β·(1/K)Σ_{k≠l} Cov(z)²_kl     variance, covariance (VICReg)
      + δ·mean (z_{t+1} − z_t)²                          temporal similarity
      + ω·mean (h([z_t, z_{t+1}]) − a_t)²                inverse dynamics

Why it suits planning: the temporal term pulls consecutive frames together while variance and
covariance spread the whole set apart, so distances in z follow the transition graph (a
spectral / Laplacian-eigenmap embedding): two points on either side of a wall are far apart
in z, points joined by a short path are close. A goal-distance energy then leads around
obstacles instead of into them. The inverse-dynamics term keeps what the actions change (the
agent) from being smoothed away with the static background (without it, eb_jepa reports
collapse with a random wall per episode).

The regularised representation is the one the world model and planner use (layer-normed tokens
averaged onto a p × p grid, `params.pool`), so the geometry carries over. `g` (the world
model's residual MLP, `ACMLP`, rolled out with its own `rollout`) and `h` are training-only
heads. Needs trajectory windows (`data.source: dataset`, `data.frames` 1): each item is k + 1
frames and their k actions (`params.steps`).

objective.params (all optional; weights follow eb_jepa's two-rooms recipe, rescaled to this
module's normalisation): steps k (4), pool (2), hidden (512), std_weight α (16),
cov_weight β (0.02 ≈ eb_jepa's 8 on its 1/(K(K−1)) scale at K = 512), time_weight δ (12),
idm_weight ω (1), gamma γ (1), center ("batch").

center "window" computes the variance and covariance of each frame minus its window's mean: a
feature that never changes within a window (the room layout) then counts as collapsed, so the
spread must come from what the actions move. (With "batch", static content alone can satisfy
the variance term; on two-rooms at a few hundred steps the layout then filled the latent and
the agent's position was barely decodable.)
"""

from __future__ import annotations

from typing import Literal, cast

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.utils.data import Dataset

from jepalab.config import Config, ObjectiveConfig, PretrainConfig, build
from jepalab.data.store import TrajectoryStore
from jepalab.errors import JepalabError
from jepalab.models.ac_predictor import ACMLP
from jepalab.models.mlp import mlp
from jepalab.objectives.base import Batch, Objective, register
from jepalab.objectives.vicreg import covariance_penalty, std_hinge
from jepalab.train import distributed


class PLDMParams(Config):
    steps: int = Field(4, ge=1, description="actions per training window (k + 1 frames)")
    pool: int = Field(2, ge=1, description="latent = tokens averaged onto a pool x pool grid")
    hidden: int = Field(512, ge=8, description="width of the dynamics and inverse-dynamics MLPs")
    std_weight: float = Field(16.0, ge=0.0)
    cov_weight: float = Field(0.02, ge=0.0)
    time_weight: float = Field(12.0, ge=0.0)
    idm_weight: float = Field(1.0, ge=0.0)
    gamma: float = Field(1.0, gt=0.0)
    center: Literal["batch", "window"] = Field(
        "batch", description="variance/covariance over the batch's frames, or of each frame "
        "minus its window's mean (only what changes within a window counts)")


@register
class PLDM(Objective):
    name = "pldm"
    needs_masks = False

    def __init__(self, cfg: ObjectiveConfig, run: PretrainConfig) -> None:
        super().__init__(cfg, run)
        self.params = build(PLDMParams, cfg.params, source="objective.params")
        self.action_dim = self.trajectory_store("trajectory windows with their actions").action_dim

    @classmethod
    def dataset(cls, store: TrajectoryStore, run: PretrainConfig) -> Dataset:
        from jepalab.data.loaders import TransitionDataset

        steps = build(PLDMParams, run.objective.params, source="objective.params").steps
        return TransitionDataset(store, steps)

    def build(self, encoder: nn.Module) -> nn.ModuleDict:
        p = self.params
        k = int(cast(int, encoder.embed_dim)) * p.pool**2
        return nn.ModuleDict({
            "encoder": encoder,
            "dynamics": ACMLP(k, self.action_dim, width=p.hidden, depth=2),
            "idm": mlp(2 * k, self.action_dim, p.hidden, depth=2),
        })

    def loss(self, batch: Batch, models: nn.ModuleDict) -> tuple[Tensor, dict[str, float]]:
        from jepalab.objectives.worldmodel import encode_latents

        x, a = batch.x, batch.actions
        if a is None or x.ndim != 5 or x.shape[1] != a.shape[1] + 1:
            raise JepalabError("pldm: batches need obs [B, k+1, C, H, W] and actions [B, k, A]")
        p, (b, t) = self.params, x.shape[:2]
        a = a.float()
        z = encode_latents(models["encoder"], x.flatten(0, 1), p.pool).view(b, t, -1)
        pred = cast(ACMLP, models["dynamics"]).rollout(z[:, 0], a)
        terms = {"prediction": (pred - z[:, 1:]).square().mean()}
        spread = z - z.mean(1, keepdim=True) if p.center == "window" else z
        flat = distributed.gather_with_grad(spread.flatten(0, 1))
        terms["variance"] = std_hinge(flat, p.gamma)
        terms["covariance"] = covariance_penalty(flat)
        terms["temporal"] = (z[:, 1:] - z[:, :-1]).square().mean()
        a_hat = models["idm"](torch.cat([z[:, :-1], z[:, 1:]], -1))
        terms["inverse_dynamics"] = (a_hat - a).square().mean()
        loss = (terms["prediction"] + p.std_weight * terms["variance"]
                + p.cov_weight * terms["covariance"] + p.time_weight * terms["temporal"]
                + p.idm_weight * terms["inverse_dynamics"])
        metrics = {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}}
        if batch.monitor:
            metrics["std"] = float(flat.detach().std(0).mean())
        return loss, metrics
