"""The JEPA objective.

    z_c = f_θ(x_c),  ẑ_t = g_θ(z_c, m_t),  z_t = sg(f_ξ(x_t)),  L = mean ‖ẑ_t − z_t‖²


f_ξ is an exponential moving average of f_θ; its momentum is a pure function of the step number
(default 0.996 → 1.0, linear), so a resumed run needs no replay of a schedule generator.

On small, homogeneous data (a few hundred episodes of one scene) the EMA asymmetry alone does
not keep the embeddings apart: the targets become near-constant across images and the loss
falls towards zero (on two-rooms the effective rank of the tokens fell from 18 to 2.1 in 800
steps). objective.params adds C-JEPA's remedy (Mo & Tong 2024), VICReg's variance and
covariance terms on the context encoder's mean-pooled embedding across the (global) batch:

    L += μ·mean_k relu(γ − sqrt(Var s_k + ε)) + ν·(1/D) Σ_{k≠l} Cov(s)²_kl,   s = mean_n z_c

On clips the same hinge can also be put on what *moves*: the difference of consecutive frames'
pooled context embeddings, s_t = mean of frame t's context tokens,

    L += ω·mean_t mean_k relu(γ − sqrt(Var (s_{t+1} − s_t)_k + ε))

Static content (a room's layout) contributes nothing to s_{t+1} − s_t, so its spread must come
from what changes between frames (the agent): the variance term alone spreads the latent along
whatever differs across images, and on two-rooms that is mostly the layout.

objective.params (all optional): std_weight μ (0: off, the I-JEPA objective), cov_weight ν
(0), motion_weight ω (0; clips of >= 2 token frames only), gamma γ (1).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.profiler import record_function

from jepalab.config import Config, ObjectiveConfig, PretrainConfig, build
from jepalab.errors import JepalabError
from jepalab.models.vit import Predictor, gather_tokens
from jepalab.objectives.base import Batch, Objective, masked_mean, register
from jepalab.objectives.vicreg import covariance_penalty, std_hinge
from jepalab.train import distributed
from jepalab.train.monitors import collapse_stats


class JEPAParams(Config):
    std_weight: float = Field(0.0, ge=0.0, description="variance term weight μ (0: off)")
    cov_weight: float = Field(0.0, ge=0.0, description="covariance term weight ν (0: off)")
    motion_weight: float = Field(0.0, ge=0.0, description="frame-difference variance weight ω")
    gamma: float = Field(1.0, gt=0.0, description="target std γ of each pooled dimension")


def ema_momentum(step: int, total_steps: int, start: float, end: float) -> float:
    """Linear momentum schedule evaluated at `step` (0-based count of completed steps)."""
    frac = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return start + (end - start) * frac


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """ξ ← m ξ + (1 − m) θ, over all parameters at once."""
    t = [p for p in target.parameters()]
    o = [p.detach() for p in online.parameters()]
    torch._foreach_mul_(t, momentum)
    torch._foreach_add_(t, o, alpha=1.0 - momentum)


def latent_distance(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    """Per-token distance averaged over the embedding dimension: [..., D] -> [...]."""
    if kind == "l2":
        return (pred - target).pow(2).mean(-1)
    if kind == "l1":
        return (pred - target).abs().mean(-1)
    return F.smooth_l1_loss(pred, target, reduction="none").mean(-1)


def kept_mean(z: Tensor, keep: Tensor, group: Tensor | None = None, groups: int = 1) -> Tensor:
    """Mean of the kept tokens of z [B, N, D] (keep [B, N]) per group (group [B, N], values in
    [0, groups); default: one group) -> [B, groups, D], float32."""
    g = torch.zeros_like(keep, dtype=torch.long) if group is None else group
    w = F.one_hot(g, groups).float() * keep.unsqueeze(-1).float()  # [B, N, groups]
    return torch.einsum("bng,bnd->bgd", w, z.float()) / w.sum(1).unsqueeze(-1).clamp_min(1.0)


def frame_differences(z: Tensor, idx: Tensor, keep: Tensor, grid: tuple[int, ...]) -> Tensor:
    """Context tokens z [B, Nc, D] of a clip (flat indices idx [B, Nc] into a (T, H, W) grid,
    keep [B, Nc]) -> s_{t+1} - s_t [B, T-1, D], s_t the mean of frame t's kept tokens."""
    s = kept_mean(z, keep, idx // (grid[1] * grid[2]), grid[0])
    return s[:, 1:] - s[:, :-1]


@register
class JEPA(Objective):
    name = "jepa"

    def __init__(self, cfg: ObjectiveConfig, run: PretrainConfig) -> None:
        super().__init__(cfg, run)
        self.params = build(JEPAParams, cfg.params, source="objective.params")

    def build(self, encoder: nn.Module) -> nn.ModuleDict:
        if self.params.motion_weight and (len(encoder.grid) != 3 or encoder.grid[0] < 2):
            raise JepalabError(
                f"objective.params.motion_weight needs clips of >= 2 token frames "
                f"(data.frames / model.tubelet >= 2), got a token grid {tuple(encoder.grid)}")
        m = self.run.model
        predictor = Predictor(
            encoder.grid, encoder.embed_dim, m.pred_dim, m.pred_depth, m.pred_heads,
            pos=m.pos_embed, num_mask_tokens=m.pred_mask_tokens,
            grad_checkpointing=m.grad_checkpointing,
        )
        target = copy.deepcopy(encoder)
        target.requires_grad_(False)
        return nn.ModuleDict({"encoder": encoder, "predictor": predictor, "target_encoder": target})

    def trainable(self, models: nn.ModuleDict) -> list[str]:
        return ["encoder", "predictor"]

    def pairs(self, batch: Batch, models: nn.ModuleDict) -> list[tuple[Tensor, Tensor, Tensor]]:
        """For each mask set: (predicted [B, M, Nt, D], target [B, M, Nt, D], keep [B, M, Nt]).

        The record_function labels name the forward phases in profiler traces (no cost otherwise).
        """
        with torch.no_grad(), record_function("jepa/target_encoder"):
            h = models["target_encoder"](batch.x)  # [B, N, D]
            if self.cfg.target_layernorm:
                h = F.layer_norm(h, h.shape[-1:])
        out, self._pooled, self._moves = [], [], []
        for ms in batch.masks:
            with record_function("jepa/context_encoder"):
                z = models["encoder"](batch.x, ms.context_idx, ms.context_keep)
            if self.params.std_weight or self.params.cov_weight:  # per-image mean of kept tokens
                self._pooled.append(kept_mean(z, ms.context_keep)[:, 0])
            if self.params.motion_weight:
                self._moves.append(frame_differences(z, ms.context_idx, ms.context_keep,
                                                     models["encoder"].grid))
            with record_function("jepa/predictor"):
                pred = models["predictor"](
                    z, ms.context_idx, ms.context_keep, ms.target_idx, ms.target_keep
                )
            b, m, nt = ms.target_idx.shape
            with record_function("jepa/gather_targets"):
                tgt = gather_tokens(h, ms.target_idx.reshape(b, m * nt)).reshape(b, m, nt, -1)
            out.append((pred, tgt, ms.target_keep))
        self._last_targets = h
        return out

    def loss(self, batch: Batch, models: nn.ModuleDict) -> tuple[Tensor, dict[str, float]]:
        pairs = self.pairs(batch, models)
        losses = [
            masked_mean(latent_distance(p.float(), t.float(), self.cfg.loss), k)
            for p, t, k in pairs
        ]
        loss = torch.stack(losses).mean()
        prm, terms = self.params, {}  # the regularisers, on the global batch
        if self._pooled:
            pooled = [distributed.gather_with_grad(s) for s in self._pooled]
            terms["variance"] = (prm.std_weight, torch.stack(
                [std_hinge(s, prm.gamma) for s in pooled]).mean())
            terms["covariance"] = (prm.cov_weight, torch.stack(
                [covariance_penalty(s) for s in pooled]).mean())
        if self._moves:  # the variance of what changes between frames
            d = [distributed.gather_with_grad(m) for m in self._moves]  # [B, T-1, D] each
            terms["motion"] = (prm.motion_weight, torch.stack(
                [std_hinge(m[:, t], prm.gamma) for m in d for t in range(m.shape[1])]).mean())
        parts = {"prediction": float(loss.detach())} if terms else {}
        for name, (weight, term) in terms.items():
            parts[name] = float(term.detach())
            loss = loss + weight * term
        metrics = {"loss": float(loss.detach()), **parts}
        if batch.monitor:
            preds = torch.cat([p[k].detach().float() for p, _, k in pairs])
            tgts = torch.cat([t[k].float() for _, t, k in pairs])
            metrics.update(collapse_stats(self._last_targets.detach().float(), preds, tgts))
        return loss, metrics

    def after_step(self, models: nn.ModuleDict, step: int, total_steps: int) -> dict[str, float]:
        m = ema_momentum(step, total_steps, *self.cfg.ema)
        with record_function("jepa/ema"):
            ema_update(models["target_encoder"], models["encoder"], m)
        return {"ema": m}

    def eval_encoder(self, models: nn.ModuleDict) -> nn.Module:
        return models["target_encoder"]
