"""I-JEPA multi-block masking on a 2-D token grid (H, W).

Per sample: `npred` target rectangles and one context rectangle; the context keeps the context
rectangle minus the union of the targets (targets may overlap each other). Differences from the
reference collator, on purpose: scale and aspect ratio are separate draws; the top-left corner is
uniform over [0, H-h] x [0, W-w] inclusive, so blocks reach the last row/column; sizes are drawn
per sample (not one size per batch); the padding policy of `jepalab.masks.base` (pad, never
truncate); a bounded number of redraws, then a clear error instead of a hang.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from jepalab.masks.base import (
    DenseMasks,
    MaskError,
    MaskSet,
    as_grid,
    as_int,
    as_range,
    block_area_range,
    draw_with_retries,
    grid_str,
    rectangles,
)


class MultiBlock:
    """Multi-block mask policy (I-JEPA).

    Params (the names `MaskConfig.params` may hold for kind "multiblock"):
      npred:          number of target blocks M per sample (default 4).
      target_scale:   (lo, hi) fraction of H*W per target block, in (0, 1] (default (0.15, 0.2)).
      target_aspect:  (lo, hi) height/width ratio of target blocks, > 0 (default (0.75, 1.5)).
      context_scale:  (lo, hi) fraction of H*W of the context block (default (0.85, 1.0)).
      context_aspect: (lo, hi) aspect of the context block (default (1.0, 1.0)).
      min_keep:       the context keeps at least this many tokens (default 4); every block has
                      at least 1 token by construction.
      allow_overlap:  if True the context is not cut by the targets (NOT disjoint; default False).
      max_tries:      draws per sample before a MaskError when min_keep fails (default 20).

    Block size from scale s and aspect a: h = round(sqrt(s*H*W*a)), w = round(sqrt(s*H*W/a)),
    clamped to [1, H] / [1, W]; s and a uniform in their ranges, drawn independently.
    """

    kind = "multiblock"
    PARAMS = ("npred", "target_scale", "target_aspect", "context_scale", "context_aspect",
              "min_keep", "allow_overlap", "max_tries")

    def __init__(
        self,
        grid: Sequence[int],
        npred: int = 4,
        target_scale: tuple[float, float] = (0.15, 0.2),
        target_aspect: tuple[float, float] = (0.75, 1.5),
        context_scale: tuple[float, float] = (0.85, 1.0),
        context_aspect: tuple[float, float] = (1.0, 1.0),
        min_keep: int = 4,
        allow_overlap: bool = False,
        max_tries: int = 20,
    ) -> None:
        self.grid: tuple[int, ...] = as_grid(self.kind, grid, 2)
        self.npred = as_int("npred", npred, 1)
        self.target_scale = as_range("target_scale", target_scale, 0.0, 1.0)
        self.target_aspect = as_range("target_aspect", target_aspect, 0.0, None)
        self.context_scale = as_range("context_scale", context_scale, 0.0, 1.0)
        self.context_aspect = as_range("context_aspect", context_aspect, 0.0, None)
        self.min_keep = as_int("min_keep", min_keep, 1)
        if not isinstance(allow_overlap, bool):
            raise MaskError(f"mask param allow_overlap must be a bool, got {allow_overlap!r}")
        self.allow_overlap = allow_overlap
        self.max_tries = as_int("max_tries", max_tries, 1)
        self._check_feasible()

    @property
    def config(self) -> dict[str, Any]:
        """Plain, JSON-safe dict; `build_mask_policy(**config)` rebuilds this policy."""
        return {
            "kind": self.kind, "grid": list(self.grid), "npred": self.npred,
            "target_scale": list(self.target_scale), "target_aspect": list(self.target_aspect),
            "context_scale": list(self.context_scale),
            "context_aspect": list(self.context_aspect), "min_keep": self.min_keep,
            "allow_overlap": self.allow_overlap, "max_tries": self.max_tries,
        }

    def describe(self) -> str:
        return (f"a {grid_str(self.grid)} grid with npred={self.npred}, "
                f"target_scale={self.target_scale}, target_aspect={self.target_aspect}, "
                f"context_scale={self.context_scale}, context_aspect={self.context_aspect}")

    def _check_feasible(self) -> None:
        """Reject configs no draw can satisfy (an upper bound on the context size < min_keep)."""
        h, w = self.grid
        n = h * w
        ctx_max = block_area_range(self.context_scale, self.context_aspect, h, w)[1]
        tgt_min = block_area_range(self.target_scale, self.target_aspect, h, w)[0]
        # The context lies in its block and, unless overlap is allowed, outside every target.
        most = ctx_max if self.allow_overlap else min(ctx_max, n - tgt_min)
        if most < self.min_keep:
            raise MaskError(f"cannot satisfy min_keep={self.min_keep} on {self.describe()}: "
                            f"the context can keep at most {most} tokens")

    def _draw(self, generator: torch.Generator, n: int) -> DenseMasks:
        h, w = self.grid
        m = self.npred
        # One call per attempt: (scale, aspect, top, left) for M targets + the context block.
        u = torch.rand(n, m + 1, 4, generator=generator, dtype=torch.float64,
                       device=generator.device)
        targets = rectangles(u[:, :m], self.target_scale, self.target_aspect, h, w)  # [n,M,H,W]
        block = rectangles(u[:, m], self.context_scale, self.context_aspect, h, w)  # [n, H, W]
        context = block if self.allow_overlap else block & ~targets.any(1)
        return DenseMasks(context=context, targets=targets, blocks=targets, context_block=block)

    def sample_dense(self, generator: torch.Generator, batch_size: int) -> list[DenseMasks]:
        """One `DenseMasks`: context [B, H, W], targets [B, M, H, W]; deterministic per seed."""
        as_int("batch_size", batch_size, 1)
        dense = draw_with_retries(lambda k: self._draw(generator, k), batch_size, self.min_keep,
                                  self.max_tries, self.describe)
        return [dense]

    def sample(self, generator: torch.Generator, batch_size: int) -> list[MaskSet]:
        """A list of one MaskSet: context [B, Nc], targets [B, npred, Nt] (padded, see base)."""
        return [d.to_maskset() for d in self.sample_dense(generator, batch_size)]
