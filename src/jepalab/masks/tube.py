"""V-JEPA multi-block ("tube") masking on a 3-D token grid (T, H, W), T = frames / tubelet.

Several mask generators per batch, each its own (context, target) pair. A generator draws
`num_blocks` spatial rectangles per sample, each extended over a contiguous run of frames (all
of them at the default temporal_scale (1.0, 1.0)); the target is the union of its blocks (M = 1
target per sample) and the context is the complement. Sizes are drawn per sample, scale and
aspect independently, corners uniform over every position where a block fits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
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
    lerp,
    rectangles,
    span,
    uniform_start,
)


@dataclass(frozen=True)
class TubeGenerator:
    """One mask generator: spatial_scale / aspect of each block (as in multiblock), the fraction
    of frames each block spans (temporal_scale) and how many blocks form the target."""

    spatial_scale: tuple[float, float]
    num_blocks: int
    aspect: tuple[float, float] = (0.75, 1.5)
    temporal_scale: tuple[float, float] = (1.0, 1.0)

    @classmethod
    def parse(cls, i: int, spec: Any) -> TubeGenerator:
        if isinstance(spec, TubeGenerator):
            return spec
        if not isinstance(spec, Mapping):
            raise MaskError(f"mask param generators[{i}] must be a dict, got {spec!r}")
        known = ("spatial_scale", "num_blocks", "aspect", "temporal_scale")
        for key in spec:
            if key not in known:
                raise MaskError(f"unknown key '{key}' in mask param generators[{i}] "
                                f"(known: {', '.join(known)})")
        for key in known[:2]:
            if key not in spec:
                raise MaskError(f"mask param generators[{i}] needs '{key}'")
        p = f"generators[{i}]."
        return cls(
            spatial_scale=as_range(p + "spatial_scale", spec["spatial_scale"], 0.0, 1.0),
            num_blocks=as_int(p + "num_blocks", spec["num_blocks"], 1),
            aspect=as_range(p + "aspect", spec.get("aspect", cls.aspect), 0.0, None),
            temporal_scale=as_range(p + "temporal_scale",
                                    spec.get("temporal_scale", cls.temporal_scale), 0.0, 1.0),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"spatial_scale": list(self.spatial_scale), "num_blocks": self.num_blocks,
                "aspect": list(self.aspect), "temporal_scale": list(self.temporal_scale)}


# V-JEPA's two generators: 8 short-range blocks of 15 % and 2 long-range blocks of 70 %.
DEFAULT_GENERATORS: tuple[TubeGenerator, ...] = (
    TubeGenerator(spatial_scale=(0.15, 0.15), num_blocks=8),
    TubeGenerator(spatial_scale=(0.7, 0.7), num_blocks=2),
)


def frames_for(temporal_scale: float, t: int) -> int:
    """Frames a block spans: round(temporal_scale * T), clamped to [1, T]."""
    return min(max(int(temporal_scale * t + 0.5), 1), t)


class Tube:
    """Tube mask policy (V-JEPA).

    Params (the names `MaskConfig.params` may hold for kind "tube"):
      generators: list of dicts, one per mask generator, keys spatial_scale (lo, hi) in (0, 1],
                  num_blocks (int >= 1), aspect (lo, hi) height/width (default (0.75, 1.5)),
                  temporal_scale (lo, hi) in (0, 1] (default (1.0, 1.0) = all frames).
                  Default: the V-JEPA pair {0.15, 8 blocks} and {0.7, 2 blocks}.
      min_keep:   each context keeps at least this many tokens (default 4).
      max_tries:  draws per sample before a MaskError when min_keep fails (default 20).
    """

    kind = "tube"
    PARAMS = ("generators", "min_keep", "max_tries")

    def __init__(
        self,
        grid: Sequence[int],
        generators: Sequence[Mapping[str, Any] | TubeGenerator] = DEFAULT_GENERATORS,
        min_keep: int = 4,
        max_tries: int = 20,
    ) -> None:
        self.grid: tuple[int, ...] = as_grid(self.kind, grid, 3)
        if isinstance(generators, (str, Mapping)) or not isinstance(generators, Sequence) \
                or len(generators) == 0:
            raise MaskError(f"mask param generators must be a non-empty list of dicts, "
                            f"got {generators!r}")
        self.generators = tuple(TubeGenerator.parse(i, g) for i, g in enumerate(generators))
        self.min_keep = as_int("min_keep", min_keep, 1)
        self.max_tries = as_int("max_tries", max_tries, 1)
        for i, g in enumerate(self.generators):
            self._check_feasible(i, g)

    @property
    def config(self) -> dict[str, Any]:
        """Plain, JSON-safe dict; `build_mask_policy(**config)` rebuilds this policy."""
        return {"kind": self.kind, "grid": list(self.grid),
                "generators": [g.to_dict() for g in self.generators],
                "min_keep": self.min_keep, "max_tries": self.max_tries}

    def describe(self, i: int) -> str:
        return f"a {grid_str(self.grid)} grid with generators[{i}]={self.generators[i].to_dict()}"

    def _check_feasible(self, i: int, g: TubeGenerator) -> None:
        t, h, w = self.grid
        area = block_area_range(g.spatial_scale, g.aspect, h, w)[0]
        most = t * h * w - frames_for(g.temporal_scale[0], t) * area
        if most < self.min_keep:
            raise MaskError(f"cannot satisfy min_keep={self.min_keep} on {self.describe(i)}: "
                            f"the context can keep at most {most} tokens")

    def _draw(self, g: TubeGenerator, generator: torch.Generator, n: int) -> DenseMasks:
        """n samples of generator g (one rand call, so redraws stay deterministic)."""
        t, h, w = self.grid
        # (scale, aspect, top, left, temporal scale, first frame) per block.
        u = torch.rand(n, g.num_blocks, 6, generator=generator, dtype=torch.float64,
                       device=generator.device)
        rects = rectangles(u[..., :4], g.spatial_scale, g.aspect, h, w)  # [n, K, H, W]
        lo, hi = g.temporal_scale
        nf = torch.floor(lerp(u[..., 4], (lo, hi)) * t + 0.5).clamp(1, t).long()
        frames = span(uniform_start(u[..., 5], nf, t), nf, t)  # [n, K, T]
        blocks = frames[..., :, None, None] & rects[..., None, :, :]  # [n, K, T, H, W]
        target = blocks.any(1)  # [n, T, H, W]
        return DenseMasks(context=~target, targets=target.unsqueeze(1), blocks=blocks,
                          context_block=torch.ones_like(target))

    def sample_dense(self, generator: torch.Generator, batch_size: int) -> list[DenseMasks]:
        """One `DenseMasks` per generator: context [B, T, H, W], targets [B, 1, T, H, W]."""
        as_int("batch_size", batch_size, 1)
        return [
            draw_with_retries(partial(self._draw, g, generator), batch_size, self.min_keep,
                              self.max_tries, partial(self.describe, i))
            for i, g in enumerate(self.generators)
        ]

    def sample(self, generator: torch.Generator, batch_size: int) -> list[MaskSet]:
        """One MaskSet per generator: context [B, Nc], target [B, 1, Nt] (padded, see base)."""
        return [d.to_maskset() for d in self.sample_dense(generator, batch_size)]
