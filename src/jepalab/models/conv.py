"""A small convolutional encoder for fast CPU work, with the same token contract as the ViT.

`forward(x [B, C, H, W], idx=None, keep=None) -> tokens [B, N|K, D]`, one token per cell of the
(H/patch, W/patch) feature grid. With `idx`, patches outside the kept set are zeroed in the input
before the convolutions (a conv net cannot drop tokens), then the kept cells are gathered.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from jepalab.models.vit import gather_tokens


class ConvEncoder(nn.Module):
    def __init__(
        self,
        img_size: int = 64,
        patch_size: int = 8,
        in_chans: int = 3,
        embed_dim: int = 128,
        width: int = 32,
    ) -> None:
        super().__init__()
        levels = int(math.log2(patch_size))
        if 2**levels != patch_size:
            raise ValueError(f"conv encoder needs a power-of-two patch_size, got {patch_size}")
        self.patch = patch_size
        self.embed_dim = embed_dim
        self.grid: tuple[int, ...] = (img_size // patch_size, img_size // patch_size)
        layers: list[nn.Module] = [nn.Conv2d(in_chans, width, 3, padding=1), nn.GELU()]
        ch = width
        for _ in range(levels):
            layers += [
                nn.Conv2d(ch, ch * 2, 4, stride=2, padding=1),
                nn.GroupNorm(8, ch * 2),
                nn.GELU(),
            ]
            ch *= 2
        layers += [nn.Conv2d(ch, embed_dim, 1)]
        self.net = nn.Sequential(*layers)

    @property
    def num_tokens(self) -> int:
        return math.prod(self.grid)

    def forward(self, x: Tensor, idx: Tensor | None = None, keep: Tensor | None = None) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"conv encoder takes images [B, C, H, W], got shape {tuple(x.shape)}")
        if idx is not None:
            x = x * self._pixel_mask(idx, keep, x)
        tokens = self.net(x).flatten(2).transpose(1, 2)
        return tokens if idx is None else gather_tokens(tokens, idx)

    encode = forward

    def pooled(self, x: Tensor) -> Tensor:
        return self.forward(x).mean(1)

    def _pixel_mask(self, idx: Tensor, keep: Tensor | None, x: Tensor) -> Tensor:
        b = x.shape[0]
        cells = torch.zeros(b, self.num_tokens, dtype=x.dtype, device=x.device)
        src = torch.ones_like(idx, dtype=x.dtype) if keep is None else keep.to(x.dtype)
        cells.scatter_(1, idx, src)
        gh, gw = self.grid
        cells = cells.view(b, 1, gh, 1, gw, 1).expand(b, 1, gh, self.patch, gw, self.patch)
        return cells.reshape(b, 1, gh * self.patch, gw * self.patch)
