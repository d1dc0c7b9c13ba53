"""Masking policies: which tokens the context encoder sees and which it must predict.

    policy = build_mask_policy("multiblock", (14, 14), npred=4)
    masks = policy.sample(generator, batch_size)   # list[MaskSet]
    policy.config                                  # plain dict; build_mask_policy(**config)

Kinds: "multiblock" (I-JEPA, grid (H, W), params in `MultiBlock`) and "tube" (V-JEPA, grid
(T, H, W), params in `Tube`). Index and padding conventions are in `jepalab.masks.base`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jepalab.masks.base import (
    DenseMasks,
    MaskError,
    MaskPolicy,
    MaskSet,
    apply,
    indices_from_mask,
    mask_stats,
)
from jepalab.masks.multiblock import MultiBlock
from jepalab.masks.tube import DEFAULT_GENERATORS, Tube, TubeGenerator

POLICIES: dict[str, type[MultiBlock] | type[Tube]] = {"multiblock": MultiBlock, "tube": Tube}


def build_mask_policy(kind: str, grid: Sequence[int], **params: Any) -> MultiBlock | Tube:
    """Build a policy from its config; an unknown kind or param raises a MaskError naming it."""
    if kind not in POLICIES:
        raise MaskError(f"unknown mask kind '{kind}' (choose from {', '.join(POLICIES)})")
    cls = POLICIES[kind]
    for name in params:
        if name not in cls.PARAMS:
            raise MaskError(f"unknown {kind} mask param '{name}' (known: {', '.join(cls.PARAMS)})")
    return cls(grid, **params)


__all__ = [
    "DEFAULT_GENERATORS",
    "POLICIES",
    "DenseMasks",
    "MaskError",
    "MaskPolicy",
    "MaskSet",
    "MultiBlock",
    "Tube",
    "TubeGenerator",
    "apply",
    "build_mask_policy",
    "indices_from_mask",
    "mask_stats",
]
