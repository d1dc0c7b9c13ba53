"""Mask sets, the mask-policy contract and the helpers every policy shares.

Token indices address the flattened token grid, row-major: `idx = h*W + w` for images and
`idx = t*H*W + h*W + w` for video. Policies draw dense boolean grids (`DenseMasks`) and convert
them to padded index lists (`MaskSet`).

Padding policy: samples in a batch keep different numbers of tokens. Index lists are sorted
ascending within a sample and padded *at the end* to the batch maximum with index 0 and
keep=False. Nothing is truncated (the I-JEPA collator cuts every sample to the batch minimum,
which throws away context and target tokens); consumers must honour the keep masks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

import torch
from torch import Tensor

from jepalab.errors import JepalabError


class MaskError(JepalabError, ValueError):
    """A bad mask config or an unsatisfiable mask constraint (also a ValueError)."""


@dataclass(frozen=True)
class MaskSet:
    """One batch of (context, targets) index lists.

    context_idx:  [B, Nc] int64, sorted ascending per sample, padded with 0 at the end.
    context_keep: [B, Nc] bool, True = real token, False = padding.
    target_idx:   [B, M, Nt] int64, M target blocks per sample, each sorted and end-padded.
    target_keep:  [B, M, Nt] bool.
    """

    context_idx: Tensor
    context_keep: Tensor
    target_idx: Tensor
    target_keep: Tensor

    def __post_init__(self) -> None:
        c, ck, t, tk = self.context_idx, self.context_keep, self.target_idx, self.target_keep
        if c.ndim != 2 or ck.shape != c.shape:
            raise MaskError(f"MaskSet.context_idx/keep must be [B, Nc], got {c.shape}/{ck.shape}")
        if t.ndim != 3 or tk.shape != t.shape or t.shape[0] != c.shape[0]:
            raise MaskError(
                f"MaskSet.target_idx/keep must be [B, M, Nt] with B={c.shape[0]}, "
                f"got {t.shape}/{tk.shape}"
            )
        if c.dtype != torch.int64 or t.dtype != torch.int64:
            raise MaskError(f"MaskSet indices must be int64, got {c.dtype}/{t.dtype}")
        if ck.dtype != torch.bool or tk.dtype != torch.bool:
            raise MaskError(f"MaskSet keep masks must be bool, got {ck.dtype}/{tk.dtype}")

    @property
    def num_targets(self) -> int:
        """M, the number of target blocks per sample."""
        return int(self.target_idx.shape[1])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MaskSet:
        moved = {f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                 for f in fields(self)}
        return MaskSet(**moved)


@dataclass(frozen=True)
class DenseMasks:
    """The same batch as boolean grids (for tests, plots and conversion to a `MaskSet`).

    context:       [B, *grid] bool, the context tokens.
    targets:       [B, M, *grid] bool, the M targets.
    blocks:        [B, K, *grid] bool, the rectangles/tubes the targets were built from
                   (multiblock: K = M, blocks == targets; tube: K = num_blocks, target = union).
    context_block: [B, *grid] bool, the region the context was cut from (before removing targets).
    """

    context: Tensor
    targets: Tensor
    blocks: Tensor
    context_block: Tensor

    def to_maskset(self) -> MaskSet:
        b, m = self.targets.shape[:2]
        c_idx, c_keep = indices_from_mask(self.context.reshape(b, -1))
        t_idx, t_keep = indices_from_mask(self.targets.reshape(b, m, -1))
        return MaskSet(c_idx, c_keep, t_idx, t_keep)


class MaskPolicy(Protocol):
    grid: tuple[int, ...]

    @property
    def config(self) -> dict[str, Any]: ...

    def sample(self, generator: torch.Generator, batch_size: int) -> list[MaskSet]: ...

    def sample_dense(self, generator: torch.Generator, batch_size: int) -> list[DenseMasks]: ...


def indices_from_mask(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Boolean mask [..., N] -> (idx [..., K] int64, keep [..., K] bool), K = max count.

    Indices of True positions, ascending, then padding (index 0, keep=False) at the end.
    """
    counts = mask.sum(-1)
    k = int(counts.max()) if counts.numel() else 0
    # A stable sort on "not selected" puts selected positions first, in ascending order.
    order = torch.sort((~mask).to(torch.int8), dim=-1, stable=True).indices[..., :k]
    keep = torch.arange(k, device=mask.device) < counts.unsqueeze(-1)
    return order.masked_fill(~keep, 0), keep


def apply(tokens: Tensor, idx: Tensor) -> Tensor:
    """Gather tokens at indices: tokens [B, N, D], idx [B, K] -> [B, K, D] ([B, *S] -> [B, *S, D]).

    Padded positions (index 0) gather token 0; mask them with the matching keep tensor.
    """
    if idx.shape[0] != tokens.shape[0] or tokens.ndim != 3:
        raise MaskError(f"apply: tokens must be [B, N, D] and idx [B, ...] with the same B, "
                        f"got {tuple(tokens.shape)} and {tuple(idx.shape)}")
    b, d = tokens.shape[0], tokens.shape[-1]
    flat = idx.reshape(b, -1)
    out = torch.gather(tokens, 1, flat.unsqueeze(-1).expand(-1, -1, d))
    return out.reshape(*idx.shape, d)


def mask_stats(masks: Sequence[MaskSet]) -> dict[str, float]:
    """Mean real tokens and padded fraction of context and targets, averaged over mask sets."""
    out = {"context_tokens": 0.0, "target_tokens": 0.0, "context_pad": 0.0, "target_pad": 0.0}
    for ms in masks:
        b, m = ms.target_keep.shape[:2]
        out["context_tokens"] += float(ms.context_keep.sum()) / b
        out["target_tokens"] += float(ms.target_keep.sum()) / (b * m)
        out["context_pad"] += 1.0 - float(ms.context_keep.float().mean())
        out["target_pad"] += 1.0 - float(ms.target_keep.float().mean())
    return {k: v / max(len(masks), 1) for k, v in out.items()}


# ---------------------------------------------------------------- validation helpers


def as_range(name: str, value: Any, lo_open: float, hi_closed: float | None) -> tuple[float, float]:
    """Validate a (lo, hi) pair with lo_open < lo <= hi (<= hi_closed)."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise MaskError(f"mask param {name} must be a pair (lo, hi), got {value!r}") from None
    bad_hi = hi_closed is not None and hi > hi_closed
    if not (lo > lo_open and lo <= hi) or bad_hi or not math.isfinite(hi):
        top = f" <= {hi_closed}" if hi_closed is not None else ""
        raise MaskError(f"mask param {name} must satisfy {lo_open} < lo <= hi{top}, got {value!r}")
    return lo, hi


def as_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MaskError(f"mask param {name} must be an integer >= {minimum}, got {value!r}")
    return value


def as_grid(kind: str, grid: Any, ndim: int) -> tuple[int, ...]:
    try:
        dims = tuple(grid)
    except TypeError:
        dims = ()
    if len(dims) != ndim or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1
                                    for d in dims):
        shape = "(H, W)" if ndim == 2 else "(T, H, W)"
        raise MaskError(f"{kind} mask grid must be {ndim} positive ints {shape}, got {grid!r}")
    return dims


def grid_str(grid: Sequence[int]) -> str:
    return "x".join(str(d) for d in grid)


# ---------------------------------------------------------------- block geometry


def _round_half_up(x: Tensor | float) -> Any:
    return torch.floor(x + 0.5) if isinstance(x, Tensor) else math.floor(x + 0.5)


def block_size(scale: Tensor, aspect: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
    """Block height/width for scale s (fraction of h*w) and aspect a (height/width).

    bh = round(sqrt(s*h*w*a)), bw = round(sqrt(s*h*w/a)), clamped to [1, h] / [1, w].
    """
    area = scale * (h * w)
    bh = _round_half_up(torch.sqrt(area * aspect)).clamp(1, h).long()
    bw = _round_half_up(torch.sqrt(area / aspect)).clamp(1, w).long()
    return bh, bw


def block_size_bounds(scale: tuple[float, float], aspect: tuple[float, float], h: int, w: int
                      ) -> tuple[int, int, int, int]:
    """(min height, max height, min width, max width) reachable by `block_size` (it is monotone)."""
    def clamp(x: float, side: int) -> int:
        return min(max(_round_half_up(math.sqrt(x)), 1), side)
    n = h * w
    return (clamp(scale[0] * n * aspect[0], h), clamp(scale[1] * n * aspect[1], h),
            clamp(scale[0] * n / aspect[1], w), clamp(scale[1] * n / aspect[0], w))


def block_area_range(scale: tuple[float, float], aspect: tuple[float, float], h: int, w: int
                     ) -> tuple[int, int]:
    """(min, max) block area reachable by `block_size`, exact up to float ties.

    Area grows with the scale, so the extremes lie at scale lo / hi; along the aspect the size is
    piecewise constant, so checking every rounding breakpoint and a point inside every piece is
    exhaustive.
    """
    def extreme(s: float, pick: Callable[[list[int]], int]) -> int:
        n = s * h * w
        cuts = [(k + 0.5) ** 2 / n for k in range(h + 1)]
        cuts += [n / (k + 0.5) ** 2 for k in range(w + 1)]
        pts = sorted({aspect[0], aspect[1], *(c for c in cuts if aspect[0] < c < aspect[1])})
        pts += [(a + b) / 2 for a, b in zip(pts, pts[1:])]
        areas = []
        for a in pts:
            bh = min(max(_round_half_up(math.sqrt(n * a)), 1), h)
            bw = min(max(_round_half_up(math.sqrt(n / a)), 1), w)
            areas.append(bh * bw)
        return pick(areas)
    return extreme(scale[0], min), extreme(scale[1], max)


def lerp(u: Tensor, rng: tuple[float, float]) -> Tensor:
    return rng[0] + u * (rng[1] - rng[0])


def uniform_start(u: Tensor, size: Tensor, side: int) -> Tensor:
    """Start in [0, side - size] inclusive (every row/column reachable), from u in [0, 1)."""
    return torch.minimum(torch.floor(u * (side - size + 1)).long(), side - size)


def span(start: Tensor, size: Tensor, side: int) -> Tensor:
    """[...] starts and sizes -> [..., side] bool, True on [start, start + size)."""
    pos = torch.arange(side, device=start.device)
    return (pos >= start.unsqueeze(-1)) & (pos < (start + size).unsqueeze(-1))


def rectangles(u: Tensor, scale: tuple[float, float], aspect: tuple[float, float], h: int, w: int
               ) -> Tensor:
    """u [..., 4] uniforms (scale, aspect, top, left) -> rectangles [..., h, w] bool.

    Scale and aspect come from separate draws; the top-left corner is uniform over every
    position where the block fits, so blocks can touch the last row and column.
    """
    bh, bw = block_size(lerp(u[..., 0], scale), lerp(u[..., 1], aspect), h, w)
    rows = span(uniform_start(u[..., 2], bh, h), bh, h)
    cols = span(uniform_start(u[..., 3], bw, w), bw, w)
    return rows.unsqueeze(-1) & cols.unsqueeze(-2)


def draw_with_retries(
    draw: Callable[[int], DenseMasks], batch_size: int, min_keep: int, max_tries: int,
    describe: Callable[[], str],
) -> DenseMasks:
    """Draw a batch; redraw only the samples whose context keeps < min_keep tokens.

    Each sample gets at most `max_tries` draws, then a MaskError (never an endless loop).
    `describe()` names the grid and parameters for the message.
    """
    out = draw(batch_size)
    kept = out.context.reshape(batch_size, -1).sum(1)
    best = kept.clone()
    for _ in range(max_tries - 1):
        bad = (kept < min_keep).nonzero().flatten()
        if bad.numel() == 0:
            return out
        redo = draw(int(bad.numel()))
        for f in fields(out):
            getattr(out, f.name)[bad] = getattr(redo, f.name)
        kept[bad] = redo.context.reshape(bad.numel(), -1).sum(1)
        best = torch.maximum(best, kept)
    if bool((kept < min_keep).any()):
        raise MaskError(
            f"cannot satisfy min_keep={min_keep} on {describe()}: after {max_tries} tries a "
            f"sample's context kept at most {int(best[kept < min_keep].min())} tokens; "
            "lower min_keep or the target scales"
        )
    return out
