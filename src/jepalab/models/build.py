"""Build encoders from config and load them back from checkpoints; the one pixel normalisation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from jepalab.config import PretrainConfig, build
from jepalab.errors import JepalabError
from jepalab.models.conv import ConvEncoder
from jepalab.models.vit import vit
from jepalab.train.checkpoint import checkpoint_sha, load_checkpoint

PIXEL_MEAN, PIXEL_STD = 0.5, 0.25


def normalize_pixels(x: Tensor) -> Tensor:
    """uint8 pixels, channels-first ([..., 3, H, W]) -> float input for every encoder."""
    return (x.float() / 255.0 - PIXEL_MEAN) / PIXEL_STD


def build_encoder(cfg: PretrainConfig) -> nn.Module:
    m, d = cfg.model, cfg.data
    if m.arch == "conv":
        if d.frames > 1:
            raise JepalabError(
                "model.arch 'conv' is image-only; use 'vit' for video (data.frames > 1)"
            )
        return ConvEncoder(d.image_size, m.patch_size, embed_dim=m.embed_dim or 128)
    return vit(
        m.preset,
        img_size=d.image_size,
        patch_size=m.patch_size,
        frames=d.frames,
        tubelet=m.tubelet,
        depth=m.depth,
        embed_dim=m.embed_dim,
        num_heads=m.num_heads,
        grad_checkpointing=m.grad_checkpointing,
        pos=m.pos_embed,
    )


class FrozenEncoder(nn.Module):
    """A pretrained encoder for downstream use: uint8 pixels [B, H, W, 3] -> tokens / pooled.

    A video encoder reads an image as a static clip (the frame repeated over its clip length,
    as V-JEPA evaluates images) and returns its tokens averaged over time: one token per
    spatial cell, so world models, probes and planners take image and video encoders alike.
    `grid` is that per-frame token grid; clips [B, T, H, W, 3] still pass through whole.
    """

    def __init__(self, encoder: nn.Module, sha256: str, config: dict[str, Any]) -> None:
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.sha256 = sha256
        self.config = config

    @property
    def embed_dim(self) -> int:
        return self.encoder.embed_dim

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(self.encoder.grid[-2:])

    def forward(self, pixels: Tensor) -> Tensor:
        """pixels uint8 [B, H, W, 3] -> tokens [B, N, D] (N = prod(grid)); a video encoder's
        clips [B, T, H, W, 3] -> its tokens [B, T' * N, D]."""
        return self.tokens(normalize_pixels(pixels.movedim(-1, -3)))

    def tokens(self, x: Tensor) -> Tensor:
        """`forward` on normalised input: images [B, C, H, W] (or clips [B, T, C, H, W])."""
        frames = getattr(self.encoder, "frames", 1)
        if frames == 1 or x.ndim == 5:
            return self.encoder(x)
        tokens = self.encoder(x[:, None].expand(-1, frames, -1, -1, -1))
        return tokens.view(x.shape[0], self.encoder.grid[0], -1, tokens.shape[-1]).mean(1)

    def pooled(self, pixels: Tensor) -> Tensor:
        return self.forward(pixels).mean(1)


def load_pretrain(path: str | Path) -> tuple[PretrainConfig, Any, nn.ModuleDict]:
    """(config, objective, all modules) of a pretraining checkpoint, hashes verified."""
    from jepalab.objectives import build_objective

    manifest, tensors = load_checkpoint(path, names=("model",))
    if manifest.get("kind") != "pretrain":
        raise JepalabError(f"{path}: not a pretraining checkpoint (kind={manifest.get('kind')})")
    cfg = build(PretrainConfig, manifest["config"], source=f"{path}/manifest.json")
    objective = build_objective(cfg)
    models = objective.build(build_encoder(cfg))
    models.load_state_dict(tensors["model"])
    return cfg, objective, models.eval()


def load_encoder(path: str | Path) -> FrozenEncoder:
    """The downstream encoder of a pretraining checkpoint (the EMA target for JEPA)."""
    cfg, objective, models = load_pretrain(path)
    return FrozenEncoder(
        objective.eval_encoder(models), checkpoint_sha(path), cfg.model_dump(mode="json")
    )
