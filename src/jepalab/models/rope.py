"""Rotary position embeddings (RoPE) over 2-D / 3-D token grids, applied to q and k in attention.

The head dimension is split into one chunk per grid axis ((t,) h, w), each of
`2 * ((head_dim // n_axes) // 2)` channels; the leftover channels (head_dim minus the rotated ones)
are passed through unrotated. Within an axis chunk of d channels, channel pair (2i, 2i+1) is
rotated by the angle pos * ω_i with ω_i = 10000^(-i / (d/2)), i < d/2.

Two variants:
- "rope": the rotation above (each pair uses one frequency), so every chunk is an orthogonal map:
  norms are preserved and q·k depends only on the position difference.
- "rope_vjepa2": the layout V-JEPA 2's released weights were trained with. It always uses three
  axes (images are a single frame, t = 0) and gives channel j of a chunk the frequency
  ω_{j mod d/2} (the d/2 frequencies are concatenated twice instead of repeated per pair), while
  still mixing the pair (2i, 2i+1). That map is not a rotation; it is reproduced exactly because
  the pretrained weights depend on it.

Tables are precomputed for the full grid ([N, head_dim] cos and sin); masked inputs gather the
rows of the kept tokens, so every token is rotated by its own grid position.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

RopeVariant = Literal["rope", "rope_vjepa2"]


def axis_dim(head_dim: int, n_axes: int) -> int:
    """Channels rotated per grid axis (even); the remainder of head_dim stays unrotated."""
    d = 2 * ((head_dim // n_axes) // 2)
    if d == 0:
        raise ValueError(f"head dim {head_dim} is too small for RoPE over {n_axes} axes")
    return d


def grid_coords(grid: tuple[int, ...]) -> Tensor:
    """Row-major token coordinates of a grid: [prod(grid), len(grid)] float64."""
    mesh = torch.meshgrid(*[torch.arange(g, dtype=torch.float64) for g in grid], indexing="ij")
    return torch.stack([m.flatten() for m in mesh], dim=1)


def rope_angles(coords: Tensor, head_dim: int, variant: RopeVariant = "rope") -> Tensor:
    """coords [N, A] (positions along each axis) -> per-channel angles [N, head_dim] (float64).

    Unrotated channels get angle 0 (cos 1, sin 0).
    """
    n, n_axes = coords.shape
    d = axis_dim(head_dim, n_axes)
    omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2.0))
    parts = []
    for a in range(n_axes):
        f = coords[:, a : a + 1].double() * omega  # [N, d/2]
        parts.append(f.repeat_interleave(2, dim=1) if variant == "rope" else torch.cat([f, f], 1))
    parts.append(coords.new_zeros(n, head_dim - n_axes * d, dtype=torch.float64))
    return torch.cat(parts, dim=1)


def rope_tables(
    grid: tuple[int, ...], head_dim: int, variant: RopeVariant = "rope"
) -> tuple[Tensor, Tensor]:
    """(cos, sin), each [prod(grid), head_dim] float32, for every token of the grid."""
    if variant not in ("rope", "rope_vjepa2"):
        raise ValueError(f"unknown RoPE variant '{variant}' (choose from rope, rope_vjepa2)")
    if variant == "rope_vjepa2" and len(grid) == 2:
        grid = (1, *grid)  # V-JEPA 2 treats an image as one frame: the time position is 0
    ang = rope_angles(grid_coords(grid), head_dim, variant)
    return ang.cos().float(), ang.sin().float()


def rotate_pairs(x: Tensor) -> Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...) along the last axis."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [B, H, N, d] with cos/sin [B or 1, N, d] -> rotated x [B, H, N, d]."""
    cos = cos.to(x.dtype).unsqueeze(1)
    sin = sin.to(x.dtype).unsqueeze(1)
    return x * cos + rotate_pairs(x) * sin


class Rotary(nn.Module):
    """Precomputed RoPE tables of one token grid; `forward(idx)` gives the rows of the tokens used.

    forward(None) -> (cos, sin) [1, N, d] for the full grid; forward(idx [B, K]) -> [B, K, d].
    Tables are non-persistent buffers: they follow `.to(device)` and never enter a checkpoint.
    """

    cos: Tensor
    sin: Tensor

    def __init__(self, grid: tuple[int, ...], head_dim: int, variant: RopeVariant) -> None:
        super().__init__()
        self.variant = variant
        cos, sin = rope_tables(grid, head_dim, variant)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, idx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if idx is None:
            return self.cos[None], self.sin[None]
        return self.cos[idx], self.sin[idx]
