"""Batch augmentations for the joint-embedding baselines (SimCLR-style views), in plain torch.

    views = two_views(x, generator, AugmentParams())   # x [B, C, H, W] or [B, T, C, H, W]

Every random draw comes from the step's `torch.Generator`, so a step's views are a pure function
of (seed, step) and a resumed run sees the same views. Per sample: a random resized crop (one
`affine_grid` + `grid_sample`, flip folded into the same affine map), then with probability
`jitter_p` colour jitter (brightness, contrast, saturation, hue — applied in this fixed order,
whereas torchvision shuffles the order), then grayscale with probability `grayscale`. No blur:
at 32–64 px it erases most of the signal (SimCLR also drops it for CIFAR). Clips get one draw
per clip, shared by all frames, so the augmentation never fakes motion.

Under data parallelism the parameters are drawn for the *global* batch and each rank takes its
rows, so every sample gets the same views whatever the world size.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor

from jepalab.config import Config
from jepalab.models.build import PIXEL_MEAN, PIXEL_STD
from jepalab.train import distributed


class AugmentParams(Config):
    """`objective.params.augment` of the contrastive and VICReg objectives."""

    crop_scale: tuple[float, float] = Field(default=(0.2, 1.0), description="crop area fraction")
    crop_ratio: tuple[float, float] = Field(default=(3 / 4, 4 / 3), description="width/height")
    flip: float = Field(default=0.5, ge=0.0, le=1.0, description="horizontal flip probability")
    jitter_p: float = Field(default=0.8, ge=0.0, le=1.0, description="colour-jitter probability")
    brightness: float = Field(default=0.4, ge=0.0, le=1.0)
    contrast: float = Field(default=0.4, ge=0.0, le=1.0)
    saturation: float = Field(default=0.4, ge=0.0, le=1.0)
    hue: float = Field(default=0.1, ge=0.0, le=0.5, description="max hue shift, in turns")
    grayscale: float = Field(default=0.2, ge=0.0, le=1.0, description="grayscale probability")

    @model_validator(mode="after")
    def _ranges(self) -> AugmentParams:
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"augment.crop_scale must satisfy 0 < lo <= hi <= 1, got {lo, hi}")
        lo, hi = self.crop_ratio
        if not 0.0 < lo <= hi:
            raise ValueError(f"augment.crop_ratio must satisfy 0 < lo <= hi, got {lo, hi}")
        return self


def _global_rows(b: int) -> tuple[int, slice]:
    """(global batch size, this rank's rows) for a local batch of b (equal shards, rank order)."""
    if not distributed.active():
        return b, slice(0, b)
    rank, world = dist.get_rank(), distributed.world_size()
    return b * world, slice(rank * b, (rank + 1) * b)


def uniform(generator: torch.Generator, b: int, *shape: int) -> Tensor:
    """[b, *shape] uniforms in [0, 1) for this rank's rows of the global batch (CPU)."""
    n, rows = _global_rows(b)
    return torch.rand(n, *shape, generator=generator)[rows]


def _lerp(u: Tensor, lo: float, hi: float) -> Tensor:
    return lo + u * (hi - lo)


def crop_affine(u: Tensor, p: AugmentParams) -> Tensor:
    """u [B, 5] uniforms (scale, log-ratio, x, y, flip) -> affine maps [B, 2, 3].

    The map takes output coordinates in [-1, 1] to input coordinates: a crop of width sw and
    height sh (fractions of the image side), centred inside the image, mirrored when flipped.
    """
    area = _lerp(u[:, 0], *p.crop_scale)
    ratio = torch.exp(_lerp(u[:, 1], math.log(p.crop_ratio[0]), math.log(p.crop_ratio[1])))
    sw = torch.sqrt(area * ratio).clamp(max=1.0)
    sh = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (2 * u[:, 2] - 1) * (1 - sw)
    cy = (2 * u[:, 3] - 1) * (1 - sh)
    sign = torch.where(u[:, 4] < p.flip, -1.0, 1.0)
    theta = torch.zeros(u.shape[0], 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sw * sign, cx
    theta[:, 1, 1], theta[:, 1, 2] = sh, cy
    return theta


def _gray(x: Tensor) -> Tensor:
    """[N, 3, H, W] in [0, 1] -> luma [N, 1, H, W] (ITU-R 601 weights)."""
    w = x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _hue_rotate(x: Tensor, angle: Tensor) -> Tensor:
    """Rotate the chroma of [N, 3, H, W] by angle [N] radians in YIQ space (a linear hue shift)."""
    to_yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    c, s = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(angle.shape[0], 3, 3, dtype=x.dtype, device=x.device)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    m = torch.linalg.inv(to_yiq) @ rot @ to_yiq  # [N, 3, 3]
    return torch.einsum("nij,njhw->nihw", m, x)


def colour(x: Tensor, u: Tensor, p: AugmentParams) -> Tensor:
    """x [N, 3, H, W] in [0, 1]; u [N, 6] uniforms (apply?, b, c, s, h, gray?) -> jittered x."""
    on = (u[:, 0] < p.jitter_p).to(x.dtype)

    def factor(v: Tensor, amount: float) -> Tensor:  # 1 when jitter is off for the sample
        return (1 + on * _lerp(v, -amount, amount)).view(-1, 1, 1, 1)

    x = (x * factor(u[:, 1], p.brightness)).clamp(0, 1)
    mean = _gray(x).mean((1, 2, 3), keepdim=True)
    x = ((x - mean) * factor(u[:, 2], p.contrast) + mean).clamp(0, 1)
    g = _gray(x)
    x = ((x - g) * factor(u[:, 3], p.saturation) + g).clamp(0, 1)
    x = _hue_rotate(x, on * _lerp(u[:, 4], -p.hue, p.hue) * 2 * math.pi).clamp(0, 1)
    gray = (u[:, 5] < p.grayscale).view(-1, 1, 1, 1)
    return torch.where(gray, _gray(x).expand_as(x), x)


def augment(x: Tensor, generator: torch.Generator, p: AugmentParams) -> Tensor:
    """One random view of a batch of normalised pixels: [B, C, H, W] or [B, T, C, H, W] -> same."""
    video = x.dim() == 5
    b = x.shape[0]
    t = x.shape[1] if video else 1
    frames = x.reshape(b * t, *x.shape[-3:])
    if frames.shape[1] != 3:
        raise ValueError(f"augment: expected 3 colour channels, got shape {tuple(x.shape)}")
    u = uniform(generator, b, 11).repeat_interleave(t, dim=0)  # [B*T, 11], one draw per clip
    theta = crop_affine(u[:, :5], p).to(device=x.device, dtype=frames.dtype)
    grid = F.affine_grid(theta, list(frames.shape), align_corners=False)
    out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = colour(out * PIXEL_STD + PIXEL_MEAN, u[:, 5:].to(device=x.device, dtype=out.dtype), p)
    return ((out - PIXEL_MEAN) / PIXEL_STD).reshape(x.shape)


def views(x: Tensor, generator: torch.Generator, p: AugmentParams, n: int) -> list[Tensor]:
    """n independent augmentations of the same batch (the positives of each sample).

    Runs outside autocast: pixel arithmetic in bf16 would quantise the colours."""
    with torch.autocast(x.device.type, enabled=False):
        return [augment(x, generator, p) for _ in range(n)]


def two_views(x: Tensor, generator: torch.Generator, p: AugmentParams) -> tuple[Tensor, Tensor]:
    v1, v2 = views(x, generator, p, 2)
    return v1, v2
