"""MAE baseline (He et al. 2022): reconstruct the pixels of masked patches.

    z_v = f_θ(x_v)   (visible tokens only)     x̂_m = d_θ(z_v, m)     L = mean_m ‖x̂_m − t_m‖²

Which patches are visible: the mask policy's context when the run has one (mask.kind
'multiblock'/'tube': JEPA and MAE then see exactly the same masks — the matched comparison and
the default of configs/mae_tiny.yaml); with mask.kind 'none', MAE's own uniform random masking
at `mask_ratio` (default 0.75, the paper's), drawn from the step's generator. The loss covers
every non-visible patch (`loss_on: masked`, as MAE) or only the policy's target blocks
(`loss_on: targets`, the tokens JEPA predicts). t_m is the patch's pixels, normalised per patch
to zero mean and unit variance (`norm_pix: true`, MAE's better variant) or raw (normalised-input
units). Images and clips (tubelets) alike; the downstream encoder is the online encoder.

The decoder is narrow, as in MAE: encoder tokens projected to `model.pred_dim`, learned mask
tokens at the masked positions, fixed sin-cos positions, `model.pred_depth` blocks of
`model.pred_heads` heads (the JEPA predictor's size, so both heads get the same capacity),
then a linear map to the patch's pixels.
"""

from __future__ import annotations

from typing import Literal, cast

import torch
from einops import rearrange
from pydantic import Field
from torch import Tensor, nn

from jepalab.config import Config, ObjectiveConfig, PretrainConfig, build
from jepalab.errors import JepalabError
from jepalab.masks.base import MaskSet, indices_from_mask
from jepalab.models.vit import Transformer, _init_weights, gather_tokens, key_mask, sincos_pos_embed
from jepalab.objectives.augment import uniform
from jepalab.objectives.base import Batch, Objective, masked_mean, register
from jepalab.train.monitors import collapse_stats

DEFAULT_MASK_RATIO = 0.75


class MAEParams(Config):
    norm_pix: bool = Field(True, description="per-patch normalised pixel targets")
    mask_ratio: float | None = Field(
        None, gt=0.0, lt=1.0, description="random masking ratio; only with mask.kind 'none'"
    )
    loss_on: Literal["masked", "targets"] = "masked"


def patchify(x: Tensor, patch: int, tubelet: int | None = None) -> Tensor:
    """Images [B, C, H, W] -> [B, N, p·p·C]; clips [B, T, C, H, W] -> [B, N, u·p·p·C] with
    tubelets of u frames. Token order = the encoder's (row-major over (t,) h, w)."""
    if x.dim() == 4:
        return rearrange(x, "b c (h p) (w q) -> b (h w) (p q c)", p=patch, q=patch)
    if tubelet is None:
        raise ValueError(f"patchify: clips {tuple(x.shape)} need a tubelet size")
    return rearrange(
        x, "b (t u) c (h p) (w q) -> b (t h w) (u p q c)", u=tubelet, p=patch, q=patch
    )


def pixel_targets(patches: Tensor, norm: bool) -> Tensor:
    """[B, N, P] -> targets [B, N, P] (float); per-patch mean/variance normalised if `norm`."""
    t = patches.float()
    if not norm:
        return t
    mean, var = t.mean(-1, keepdim=True), t.var(-1, keepdim=True)
    return (t - mean) / (var + 1e-6).sqrt()


def random_masking(generator: torch.Generator, b: int, n: int, ratio: float) -> MaskSet:
    """MAE masking: per sample a uniform random subset of n − round(n·ratio) visible tokens
    (at least 1 visible and 1 masked). context = visible [B, Nv], targets = masked [B, 1, Nm]."""
    n_vis = min(max(n - round(n * ratio), 1), n - 1)
    order = uniform(generator, b, n).argsort(1)
    vis = order[:, :n_vis].sort(1).values
    masked = order[:, n_vis:].sort(1).values
    return MaskSet(vis, torch.ones_like(vis, dtype=torch.bool),
                   masked[:, None], torch.ones(b, 1, n - n_vis, dtype=torch.bool))


def visible_and_masked(ms: MaskSet, n: int, loss_on: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(visible idx, keep) [B, Nv] and (reconstructed idx, keep) [B, Nm] of a mask set.

    loss_on 'masked': every token not in the context; 'targets': the union of the target blocks."""
    b = ms.context_idx.shape[0]
    if loss_on == "targets":
        idx, keep = ms.target_idx.reshape(b, -1), ms.target_keep.reshape(b, -1)
    else:
        idx, keep = ms.context_idx, ms.context_keep
    # scatter_add, not scatter: padding entries repeat index 0 and must not erase a real 0
    dense = torch.zeros(b, n, dtype=torch.int32, device=idx.device)
    dense.scatter_add_(1, idx, keep.to(torch.int32))
    chosen = dense > 0
    m_idx, m_keep = indices_from_mask(chosen if loss_on == "targets" else ~chosen)
    return ms.context_idx, ms.context_keep, m_idx, m_keep


class MAEDecoder(nn.Module):
    """forward(z [B, Nv, D], vis_idx [B, Nv], vis_keep, m_idx [B, Nm], m_keep) -> [B, Nm, P]."""

    def __init__(
        self, grid: tuple[int, ...], embed_dim: int, dim: int, depth: int, heads: int, out: int
    ) -> None:
        super().__init__()
        self.proj_in = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_pos_embed(dim, grid), persistent=False)
        self.trunk = Transformer(dim, depth, heads, 4.0, False)
        self.head = nn.Linear(dim, out)
        self.apply(_init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(
        self, z: Tensor, vis_idx: Tensor, vis_keep: Tensor, m_idx: Tensor, m_keep: Tensor
    ) -> Tensor:
        pos = cast(Tensor, self.pos_embed).to(z.dtype)
        vis = self.proj_in(z) + pos[vis_idx]
        masked = self.mask_token.to(z.dtype) + pos[m_idx]
        out = self.trunk(torch.cat([vis, masked], 1), key_mask(torch.cat([vis_keep, m_keep], 1)))
        return self.head(out[:, vis.shape[1] :])


@register
class MAE(Objective):
    name = "mae"
    needs_masks = True  # uses the policy's masks when the run has one, else its own

    def __init__(self, cfg: ObjectiveConfig, run: PretrainConfig) -> None:
        super().__init__(cfg, run)
        self.params = build(MAEParams, cfg.params, source="objective.params")
        kind = run.mask.kind
        if kind != "none" and self.params.mask_ratio is not None:
            raise JepalabError(
                f"objective.params.mask_ratio applies to MAE's random masking (mask.kind 'none'); "
                f"mask.kind is '{kind}', whose masks are used instead"
            )
        if kind == "none" and self.params.loss_on == "targets":
            raise JepalabError(
                "objective.params.loss_on 'targets' needs a mask policy's target blocks; "
                "mask.kind is 'none'"
            )
        self.mask_ratio = self.params.mask_ratio or DEFAULT_MASK_RATIO
        self.tubelet = run.model.tubelet if run.data.frames > 1 else None

    def build(self, encoder: nn.Module) -> nn.ModuleDict:
        m = self.run.model
        out = m.patch_size**2 * 3 * (self.tubelet or 1)
        grid, dim = cast(tuple[int, ...], encoder.grid), cast(int, encoder.embed_dim)
        decoder = MAEDecoder(grid, dim, m.pred_dim, m.pred_depth, m.pred_heads, out)
        return nn.ModuleDict({"encoder": encoder, "decoder": decoder})

    def loss(self, batch: Batch, models: nn.ModuleDict) -> tuple[Tensor, dict[str, float]]:
        x, enc = batch.x, models["encoder"]
        target = pixel_targets(patchify(x, self.run.model.patch_size, self.tubelet),
                               self.params.norm_pix)  # [B, N, P]
        b, n = target.shape[:2]
        decoder = cast(MAEDecoder, models["decoder"])
        if target.shape[-1] != decoder.head.out_features or n != enc.num_tokens:
            raise JepalabError(
                f"mae: input {tuple(x.shape)} does not match the encoder grid {enc.grid} "
                f"with model.patch_size {self.run.model.patch_size}"
            )
        masks = batch.masks or [random_masking(batch.generator, b, n, self.mask_ratio).to(x.device)]
        losses, preds, tgts, visible = [], [], [], 0.0
        for ms in masks:
            v_idx, v_keep, m_idx, m_keep = visible_and_masked(ms, n, self.params.loss_on)
            pred = decoder(enc(x, v_idx, v_keep), v_idx, v_keep, m_idx, m_keep)
            tgt = gather_tokens(target, m_idx)
            losses.append(masked_mean((pred.float() - tgt).pow(2).mean(-1), m_keep))
            preds.append(pred.detach()[m_keep].float())
            tgts.append(tgt[m_keep])
            visible += float(v_keep.sum()) / (b * n)
        loss = torch.stack(losses).mean()
        metrics = {"loss": float(loss.detach()), "visible": visible / len(masks)}
        if batch.monitor:
            with torch.no_grad():  # the downstream view: the encoder on whole inputs
                tokens = enc(x).float()
            metrics.update(collapse_stats(tokens, torch.cat(preds), torch.cat(tgts)))
        return loss, metrics
