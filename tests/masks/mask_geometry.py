"""Helpers shared by the mask tests: recover rectangles and check their sizes are reachable."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def bbox(mask: Tensor) -> tuple[int, int, int, int]:
    """[H, W] bool -> (top, left, height, width) of the bounding box of the True cells."""
    rows = mask.any(1).nonzero().flatten()
    cols = mask.any(0).nonzero().flatten()
    top, left = int(rows[0]), int(cols[0])
    return top, left, int(rows[-1]) - top + 1, int(cols[-1]) - left + 1


def is_rectangle(mask: Tensor) -> bool:
    top, left, h, w = bbox(mask)
    return int(mask.sum()) == h * w and bool(mask[top:top + h, left:left + w].all())


def grid_mask(idx: Tensor, keep: Tensor, n: int) -> Tensor:
    """Real indices of one padded list -> [n] bool (asserts there are no duplicates)."""
    real = idx[keep]
    assert real.unique().numel() == real.numel(), "duplicate indices"
    out = torch.zeros(n, dtype=torch.bool)
    out[real] = True
    return out


def reachable(h: int, w: int, grid_h: int, grid_w: int, scale: tuple[float, float],
              aspect: tuple[float, float], eps: float = 1e-9) -> bool:
    """Could h = round(sqrt(s*N*a)), w = round(sqrt(s*N/a)) (clamped) come from s, a in range?

    Rounding puts sqrt(s*N*a) in [h - 0.5, h + 0.5] (wider at the clamps), likewise for w; the
    ratio of the two is a and their product is s*N, which gives intervals to intersect.
    """
    def interval(v: int, side: int) -> tuple[float, float]:
        lo = 0.0 if v == 1 else v - 0.5
        hi = math.inf if v == side else v + 0.5
        return lo, hi

    n = grid_h * grid_w
    h_lo, h_hi = interval(h, grid_h)
    w_lo, w_hi = interval(w, grid_w)
    a_lo = h_lo / w_hi if w_hi != math.inf else 0.0
    a_hi = h_hi / w_lo if w_lo > 0 else math.inf
    s_lo, s_hi = h_lo * w_lo / n, h_hi * w_hi / n
    return (a_lo <= aspect[1] + eps and a_hi >= aspect[0] - eps
            and s_lo <= scale[1] + eps and s_hi >= scale[0] - eps)


def check_padded(idx: Tensor, keep: Tensor) -> None:
    """Sorted ascending within each list, padding (index 0, keep False) only at the end."""
    flat_idx = idx.reshape(-1, idx.shape[-1])
    flat_keep = keep.reshape(-1, keep.shape[-1])
    for row, k in zip(flat_idx, flat_keep):
        n_real = int(k.sum())
        assert bool(k[:n_real].all()) and not bool(k[n_real:].any()), "padding not at the end"
        assert bool((row[n_real:] == 0).all()), "pad index must be 0"
        assert bool((row[1:n_real] > row[: n_real - 1]).all()), "not strictly ascending"
